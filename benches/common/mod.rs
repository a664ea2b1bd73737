//! What the benches share: the simulated engine's payloads, and emptying
//! the caches before a cold run.
//!
//! A scrape on the 2-vCPU VMs measured finds little of the last one in any
//! cache, the last level included (docs/benchmarks.md, "A scrape finds the
//! caches empty"), so the cold rows write [`EVICT`] bytes elsewhere before
//! each run (not timed): more than those VMs' 32 MiB of L3.

#![allow(dead_code, reason = "each bench uses a part of this module")]

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, BenchmarkId};
use sim::payload::{Flavor, Payload, PayloadSpec};

/// The simulated engine's `flavor` payload of about `size` bytes.
pub fn payload(flavor: Flavor, size: usize) -> Vec<u8> {
    let spec = PayloadSpec {
        flavor,
        target_bytes: size,
        multiprocess: false,
        model: "meta-llama/Llama-3.1-8B-Instruct".into(),
        seed: 7,
    };
    let mut body = Vec::new();
    Payload::new(spec).render(&mut body);
    body
}

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

/// A cold row: `run` timed on `input`, the caches emptied before each run.
pub fn bench_cold(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    input: &[u8],
    evictor: &mut Evictor,
    mut run: impl FnMut(&[u8]) -> usize,
) {
    group.bench_with_input(id, input, |b, input| {
        b.iter_batched(
            || evictor.evict(),
            |()| run(black_box(input)),
            BatchSize::PerIteration,
        )
    });
}
