//! Hostile: `filter` allocates memory without bound, writing to every
//! MiB it gets. Proves the runtime's memory cap stops it (the failed
//! allocation aborts, which traps).
//!
//! Config: selectors as for `passthrough` (default `*`).

#![deny(unsafe_code)]

use std::hint::black_box;

use matrixinfer_filter::{RawFilter, export_raw_filter, parse_list};

const MIB: usize = 1 << 20;

/// The filter: only its selectors.
pub struct HostileMemory {
    selectors: Vec<String>,
}

impl RawFilter for HostileMemory {
    fn new(config: &str) -> Result<Self, String> {
        Ok(HostileMemory {
            selectors: parse_list(config),
        })
    }

    fn selectors(&self) -> Vec<String> {
        self.selectors.clone()
    }

    fn filter_raw(&mut self, _input: &[u8], _output: &mut Vec<u8>) {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Non-zero fill: every page is written, not just reserved.
            hoard.push(black_box(vec![0xA5; MIB]));
            black_box(&mut hoard);
        }
    }
}

export_raw_filter!(HostileMemory);
