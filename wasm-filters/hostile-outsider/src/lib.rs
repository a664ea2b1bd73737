//! Hostile: selects `vllm:num_requests_waiting` but also outputs a
//! `vllm:num_requests_running` family, which it did not select and which
//! real vLLM scrapes contain. Proves the runtime rejects output that
//! touches families a filter did not select.
//!
//! Config: none (ignored).

#![deny(unsafe_code)]

use matrixinfer_filter::{Families, Family, Filter, export_filter};

/// The family it selects.
pub const SELECTED: &str = "vllm:num_requests_waiting";
/// The family it outputs without having selected it.
pub const OUTSIDER: &str = "vllm:num_requests_running";

/// The filter; it has no state.
pub struct HostileOutsider;

impl Filter for HostileOutsider {
    fn new(_config: &str) -> Result<Self, String> {
        Ok(HostileOutsider)
    }

    fn selectors(&self) -> Vec<String> {
        vec![SELECTED.to_owned()]
    }

    fn filter(&mut self, families: &mut Families) {
        let mut outsider =
            Family::new_gauge(OUTSIDER, "Number of requests in model execution batches.");
        outsider.push_sample([("engine", "0")], 999.0);
        families.push(outsider);
    }
}

export_filter!(HostileOutsider);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_a_family_it_did_not_select() {
        let input = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 1\n";
        let out = matrixinfer_filter::run::<HostileOutsider>("", input).unwrap();
        assert_eq!(
            out,
            format!(
                "{input}# HELP {OUTSIDER} Number of requests in model execution batches.\n\
                 # TYPE {OUTSIDER} gauge\n{OUTSIDER}{{engine=\"0\"}} 999\n"
            )
        );
        assert!(!matrixinfer_filter::matches(
            &HostileOutsider.selectors(),
            OUTSIDER
        ));
    }
}
