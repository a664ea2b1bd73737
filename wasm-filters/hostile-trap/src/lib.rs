//! Hostile: `filter` panics, which with `panic = "abort"` is a wasm
//! `unreachable` trap. Proves the runtime serves the scrape unfiltered and
//! rebuilds the instance.
//!
//! Config: selectors as for `passthrough` (default `*`).

#![deny(unsafe_code)]

use matrixinfer_filter::{RawFilter, export_raw_filter, parse_list};

/// The filter: only its selectors.
pub struct HostileTrap {
    selectors: Vec<String>,
}

impl RawFilter for HostileTrap {
    fn new(config: &str) -> Result<Self, String> {
        Ok(HostileTrap {
            selectors: parse_list(config),
        })
    }

    fn selectors(&self) -> Vec<String> {
        self.selectors.clone()
    }

    fn filter_raw(&mut self, input: &[u8], _output: &mut Vec<u8>) {
        panic!(
            "hostile-trap: deliberate panic on {} bytes of input",
            input.len()
        );
    }
}

export_raw_filter!(HostileTrap);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic = "deliberate panic"]
    fn panics() {
        let _ = matrixinfer_filter::run_raw::<HostileTrap>("", b"x 1\n");
    }
}
