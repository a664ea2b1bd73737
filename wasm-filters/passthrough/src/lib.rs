//! Copies its input to its output unchanged: the cost of the filter
//! machinery alone, for benchmarks and tests.
//!
//! Config: the selectors, separated by newlines or commas; `*` (everything)
//! when empty.

#![deny(unsafe_code)]

use matrixinfer_filter::{RawFilter, export_raw_filter, parse_list};

/// The filter: only its selectors.
pub struct Passthrough {
    selectors: Vec<String>,
}

impl RawFilter for Passthrough {
    fn new(config: &str) -> Result<Self, String> {
        Ok(Passthrough {
            selectors: parse_list(config),
        })
    }

    fn selectors(&self) -> Vec<String> {
        self.selectors.clone()
    }

    fn filter_raw(&mut self, input: &[u8], output: &mut Vec<u8>) {
        output.extend_from_slice(input);
    }
}

export_raw_filter!(Passthrough);

#[cfg(test)]
mod tests {
    use super::*;
    use matrixinfer_filter::run_raw;

    #[test]
    fn copies_a_real_payload() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/vllm-v1.prom");
        let input = std::fs::read(path).unwrap();
        assert_eq!(run_raw::<Passthrough>("", &input).unwrap(), input);
    }

    #[test]
    fn selectors_from_config() {
        assert_eq!(Passthrough::new("").unwrap().selectors(), ["*"]);
        let p = Passthrough::new("vllm:*\nsglang:num_queue_reqs, x").unwrap();
        assert_eq!(p.selectors(), ["vllm:*", "sglang:num_queue_reqs", "x"]);
        assert!(
            run_raw::<Passthrough>("a b", b"")
                .unwrap_err()
                .contains("invalid selector")
        );
    }
}
