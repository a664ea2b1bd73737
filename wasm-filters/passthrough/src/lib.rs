//! Serves its input unchanged: the cost of the filter machinery alone, for
//! benchmarks and tests.
//!
//! Config: the selectors, separated by newlines or commas; `*` (everything)
//! when none is given. The token `!copy` (never a selector) makes it copy
//! its input to its output, as a filter that rewrites every byte would,
//! instead of answering "unchanged" (filter ABI version 2).

#![deny(unsafe_code)]

use matrixinfer_filter::{RawFilter, export_raw_filter, parse_list};

/// The token that asks for the copy.
const COPY: &str = "!copy";

/// The filter: its selectors, and whether it copies.
pub struct Passthrough {
    selectors: Vec<String>,
    copy: bool,
}

impl RawFilter for Passthrough {
    fn new(config: &str) -> Result<Self, String> {
        let mut selectors = parse_list(config);
        let copy = selectors.iter().any(|s| s == COPY);
        selectors.retain(|s| s != COPY);
        if selectors.is_empty() {
            selectors.push("*".to_owned());
        }
        Ok(Passthrough { selectors, copy })
    }

    fn selectors(&self) -> Vec<String> {
        self.selectors.clone()
    }

    fn changes(&mut self, _input: &[u8]) -> bool {
        self.copy
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
        for config in ["", "!copy"] {
            assert_eq!(run_raw::<Passthrough>(config, &input).unwrap(), input);
        }
    }

    #[test]
    fn answers_unchanged_unless_asked_to_copy() {
        let input = b"x 1\n";
        assert!(!Passthrough::new("").unwrap().changes(input));
        assert!(!Passthrough::new("x").unwrap().changes(input));
        let mut copying = Passthrough::new("vllm:*, !copy").unwrap();
        assert!(copying.changes(input));
        assert_eq!(copying.selectors(), ["vllm:*"]);
        let mut out = Vec::new();
        copying.filter_raw(input, &mut out);
        assert_eq!(out, input);
    }

    #[test]
    fn selectors_from_config() {
        assert_eq!(Passthrough::new("").unwrap().selectors(), ["*"]);
        assert_eq!(Passthrough::new("!copy").unwrap().selectors(), ["*"]);
        let p = Passthrough::new("vllm:*\nsglang:num_queue_reqs, x").unwrap();
        assert_eq!(p.selectors(), ["vllm:*", "sglang:num_queue_reqs", "x"]);
        assert!(
            run_raw::<Passthrough>("a b", b"")
                .unwrap_err()
                .contains("invalid selector")
        );
    }
}
