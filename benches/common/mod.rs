//! What the benches share: emptying the caches before a cold run.
//!
//! A scrape on the 2-vCPU VMs measured finds little of the last one in any
//! cache, the last level included (docs/benchmarks.md, "A scrape finds the
//! caches empty"), so the cold rows write [`EVICT`] bytes elsewhere before
//! each run (not timed): more than those VMs' 32 MiB of L3.

use std::hint::black_box;

/// Bytes written between the runs of a cold row.
pub const EVICT: usize = 96 << 20;

/// Memory written to push everything else out of the caches.
pub struct Evictor(Vec<u8>);

impl Evictor {
    pub fn new() -> Evictor {
        Evictor(vec![0u8; EVICT])
    }

    /// Evicts the caches: a write to every line of the buffer.
    pub fn evict(&mut self) {
        for (i, byte) in self.0.iter_mut().enumerate().step_by(64) {
            *byte = byte.wrapping_add(i as u8);
        }
        black_box(&mut self.0);
    }
}
