//! Hostile: `filter` returns bytes that are not exposition text. Proves
//! the runtime validates output before serving it.
//!
//! Config: selectors as for `passthrough` (default `*`).

#![deny(unsafe_code)]

use matrixinfer_filter::{RawFilter, export_raw_filter, parse_list};

/// What it returns instead of metrics.
pub const GARBAGE: &[u8] = b"\x00\x01not metrics {{{\n";

/// The filter: only its selectors.
pub struct HostileGarbage {
    selectors: Vec<String>,
}

impl RawFilter for HostileGarbage {
    fn new(config: &str) -> Result<Self, String> {
        Ok(HostileGarbage {
            selectors: parse_list(config),
        })
    }

    fn selectors(&self) -> Vec<String> {
        self.selectors.clone()
    }

    fn filter_raw(&mut self, _input: &[u8], output: &mut Vec<u8>) {
        output.extend_from_slice(GARBAGE);
    }
}

export_raw_filter!(HostileGarbage);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_does_not_parse() {
        let out = matrixinfer_filter::run_raw::<HostileGarbage>("", b"x 1\n").unwrap();
        assert!(matrixinfer_filter::parse(std::str::from_utf8(&out).unwrap()).is_err());
    }
}
