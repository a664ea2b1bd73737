//! Hostile: `filter` never returns. Proves the runtime's per-call deadline
//! (epoch interruption) stops it.
//!
//! Config: selectors as for `passthrough` (default `*`).

#![deny(unsafe_code)]

use std::hint::black_box;

use matrixinfer_filter::{RawFilter, export_raw_filter, parse_list};

/// The filter: only its selectors.
pub struct HostileLoop {
    selectors: Vec<String>,
}

impl RawFilter for HostileLoop {
    fn new(config: &str) -> Result<Self, String> {
        Ok(HostileLoop {
            selectors: parse_list(config),
        })
    }

    fn selectors(&self) -> Vec<String> {
        self.selectors.clone()
    }

    fn filter_raw(&mut self, _input: &[u8], _output: &mut Vec<u8>) {
        // black_box keeps the optimizer from proving the loop does nothing.
        let mut spins = 0u64;
        loop {
            spins = black_box(spins).wrapping_add(1);
        }
    }
}

export_raw_filter!(HostileLoop);
