//! LoRA load and unload counters and latencies, and their metrics
//! families.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::Lora;
use crate::prom::expo;
use crate::stats::{Histogram, MetricsSection};

/// Load and unload counters.
#[derive(Debug)]
pub(super) struct LoraStats {
    /// `[operation][outcome]`.
    outcomes: [[AtomicU64; 5]; 2],
    /// By operation.
    latency: [Histogram; 2],
}

impl Default for LoraStats {
    fn default() -> Self {
        LoraStats {
            outcomes: Default::default(),
            latency: [0; 2].map(|_| Histogram::new(&LATENCY_BUCKETS)),
        }
    }
}

const OPERATIONS: [&str; 2] = ["load", "unload"];
const OUTCOMES: [&str; 5] = [
    "ok",
    "engine_error",
    "download_error",
    "unreachable",
    "bad_request",
];
const LATENCY_BUCKETS: [f64; 11] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// What was done.
#[derive(Clone, Copy)]
pub(super) enum Operation {
    Load = 0,
    Unload = 1,
}

/// How it ended.
#[derive(Clone, Copy)]
pub(super) enum Outcome {
    Ok = 0,
    EngineError = 1,
    DownloadError = 2,
    Unreachable = 3,
    BadRequest = 4,
}

impl LoraStats {
    pub(super) fn record(&self, operation: Operation, outcome: Outcome, took: Duration) {
        let op = operation as usize;
        self.outcomes[op][outcome as usize].fetch_add(1, Relaxed);
        self.latency[op].observe(took);
    }
}

impl MetricsSection for Lora {
    fn render(&self, out: &mut Vec<u8>) {
        let name = "matrixinfer_runtime_lora_operations_total";
        expo::header(out, name, "counter", "LoRA loads and unloads by outcome.");
        for (op, operation) in OPERATIONS.iter().enumerate() {
            for (i, outcome) in OUTCOMES.iter().enumerate() {
                let value = self.stats.outcomes[op][i].load(Relaxed);
                expo::sample(
                    out,
                    name,
                    &[("operation", operation), ("outcome", outcome)],
                    value,
                );
            }
        }
        let name = "matrixinfer_runtime_lora_operation_duration_seconds";
        expo::header(
            out,
            name,
            "histogram",
            "Time to download and load, or to unload, a LoRA adapter.",
        );
        for (op, operation) in OPERATIONS.iter().enumerate() {
            self.stats.latency[op].render(out, name, &[("operation", operation)]);
        }
    }
}
