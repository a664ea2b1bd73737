//! The sidecar's own metrics, kept per worker and summed when scraped.
//!
//! Each worker thread writes only its own [`WorkerStats`] (cache-line
//! aligned, relaxed atomics), so counting costs no contention on the
//! scrape path; [`Stats::render`] adds the workers up and appends the
//! `matrixinfer_runtime_*` families to the scrape it is part of.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::prom::expo;
use crate::runtime::IoDriver;

/// Upper bounds of the scrape duration histogram, in seconds.
pub const SCRAPE_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why an engine call failed, as counted (the `reason` label of
/// `matrixinfer_runtime_upstream_errors_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection.
    Connect,
    /// Too slow.
    Timeout,
    /// A non-2xx status.
    Status,
    /// Not HTTP as we know it.
    Protocol,
    /// The connection failed midway.
    Io,
    /// The body ended early.
    Truncated,
}

impl Failure {
    /// Every reason, in label order.
    pub const ALL: [Failure; 6] = [
        Failure::Connect,
        Failure::Timeout,
        Failure::Status,
        Failure::Protocol,
        Failure::Io,
        Failure::Truncated,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Status => "status",
            Failure::Protocol => "protocol",
            Failure::Io => "io",
            Failure::Truncated => "truncated",
        }
    }
}

/// How a scrape of `/metrics` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScrapeOutcome {
    /// The standardized exposition was served in full.
    Ok,
    /// The engine failed before the response started (502/504).
    EngineError,
    /// The engine failed mid-body; the response was cut off.
    Aborted,
    /// The client went away or stopped reading.
    ClientGone,
    /// A filter failed under `--filter-on-error fail` (502).
    FilterFailed,
}

impl ScrapeOutcome {
    const ALL: [ScrapeOutcome; 5] = [
        ScrapeOutcome::Ok,
        ScrapeOutcome::EngineError,
        ScrapeOutcome::Aborted,
        ScrapeOutcome::ClientGone,
        ScrapeOutcome::FilterFailed,
    ];

    fn label(self) -> &'static str {
        match self {
            ScrapeOutcome::Ok => "ok",
            ScrapeOutcome::EngineError => "engine_error",
            ScrapeOutcome::Aborted => "aborted",
            ScrapeOutcome::ClientGone => "client_gone",
            ScrapeOutcome::FilterFailed => "filter_failed",
        }
    }
}

/// One worker's counters. Only that worker writes them.
#[derive(Debug)]
#[repr(align(128))]
pub struct WorkerStats {
    scrapes: [AtomicU64; ScrapeOutcome::ALL.len()],
    scrape_duration: Histogram,
    upstream_bytes: AtomicU64,
    upstream_errors: [AtomicU64; Failure::ALL.len()],
    copies_dropped: AtomicU64,
}

impl Default for WorkerStats {
    fn default() -> WorkerStats {
        WorkerStats {
            scrapes: Default::default(),
            scrape_duration: Histogram::new(&SCRAPE_BUCKETS),
            upstream_bytes: AtomicU64::new(0),
            upstream_errors: Default::default(),
            copies_dropped: AtomicU64::new(0),
        }
    }
}

impl WorkerStats {
    /// Records a finished scrape.
    pub fn scrape(&self, outcome: ScrapeOutcome, took: Duration) {
        let index = ScrapeOutcome::ALL
            .iter()
            .position(|&o| o == outcome)
            .unwrap_or(0);
        self.scrapes[index].fetch_add(1, Relaxed);
        self.scrape_duration.observe(took);
    }

    /// Counts body bytes received from the engine.
    pub fn upstream_bytes(&self, bytes: u64) {
        self.upstream_bytes.fetch_add(bytes, Relaxed);
    }

    /// Counts a failed engine call by its reason.
    pub fn upstream_error(&self, reason: Failure) {
        self.upstream_errors[reason as usize].fetch_add(1, Relaxed);
    }

    /// Counts standard families left out because their source was too big.
    pub fn copies_dropped(&self, n: u64) {
        if n > 0 {
            self.copies_dropped.fetch_add(n, Relaxed);
        }
    }
}

/// The one duration histogram: any thread may record into it (relaxed
/// atomics); per-worker ones are summed when rendered.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per-bucket counts (not cumulative); the last is `+Inf`.
    counts: Box<[AtomicU64]>,
    nanos: AtomicU64,
}

impl Histogram {
    /// An empty histogram with these upper bounds, in seconds.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            nanos: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Relaxed);
        self.nanos.fetch_add(took.as_nanos() as u64, Relaxed);
    }

    /// Appends its samples (the family header is the caller's).
    pub fn render(&self, out: &mut Vec<u8>, name: &str, labels: &[(&str, &str)]) {
        Histogram::render_sum([self], out, name, labels);
    }

    /// Appends the samples of the sum of `parts`, which share their
    /// bounds (one per worker); nothing when there are none.
    pub fn render_sum<'a>(
        parts: impl IntoIterator<Item = &'a Histogram>,
        out: &mut Vec<u8>,
        name: &str,
        labels: &[(&str, &str)],
    ) {
        let mut parts = parts.into_iter().peekable();
        let Some(first) = parts.peek() else {
            return;
        };
        let bounds = first.bounds;
        let mut counts = vec![0u64; bounds.len() + 1];
        let mut nanos = 0u64;
        for part in parts {
            debug_assert_eq!(part.bounds, bounds);
            for (sum, count) in counts.iter_mut().zip(part.counts.iter()) {
                *sum += count.load(Relaxed);
            }
            nanos += part.nanos.load(Relaxed);
        }
        expo::histogram(out, name, labels, bounds, &counts, nanos as f64 / 1e9);
    }
}

/// A part of the process (downloads, LoRA, …) with metrics of its own,
/// appended after the per-worker ones.
pub trait MetricsSection: Send + Sync + std::fmt::Debug {
    /// Appends its families.
    fn render(&self, out: &mut Vec<u8>);
}

/// Every worker's counters plus process-wide facts.
#[derive(Debug)]
pub struct Stats {
    workers: Box<[WorkerStats]>,
    drivers: OnceLock<Vec<IoDriver>>,
    engine: &'static str,
    sections: Vec<Arc<dyn MetricsSection>>,
}

impl Stats {
    /// Counters for `workers` workers.
    pub fn new(
        workers: usize,
        engine: &'static str,
        sections: Vec<Arc<dyn MetricsSection>>,
    ) -> Stats {
        Stats {
            workers: (0..workers.max(1))
                .map(|_| WorkerStats::default())
                .collect(),
            drivers: OnceLock::new(),
            engine,
            sections,
        }
    }

    /// The counters of worker `index`.
    pub fn worker(&self, index: usize) -> &WorkerStats {
        &self.workers[index % self.workers.len()]
    }

    /// Records which I/O driver each worker ended up on.
    pub fn set_drivers(&self, drivers: Vec<IoDriver>) {
        let _ = self.drivers.set(drivers);
    }

    /// Appends the `matrixinfer_runtime_*` families.
    pub fn render(&self, out: &mut Vec<u8>) {
        let sum = |f: &dyn Fn(&WorkerStats) -> &AtomicU64| -> u64 {
            self.workers.iter().map(|w| f(w).load(Relaxed)).sum()
        };

        expo::header(
            out,
            "matrixinfer_runtime_info",
            "gauge",
            "Runtime version and the engine it serves.",
        );
        expo::sample(
            out,
            "matrixinfer_runtime_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("engine", self.engine),
            ],
            1u64,
        );

        expo::header(
            out,
            "matrixinfer_runtime_io_driver",
            "gauge",
            "Worker threads by I/O driver (io_uring, or epoll where io_uring is unavailable).",
        );
        let drivers = self.drivers.get().map(Vec::as_slice).unwrap_or_default();
        for driver in [IoDriver::IoUring, IoDriver::Epoll] {
            let n = drivers.iter().filter(|&&d| d == driver).count() as u64;
            expo::sample(
                out,
                "matrixinfer_runtime_io_driver",
                &[("driver", driver.as_str())],
                n,
            );
        }

        expo::header(
            out,
            "matrixinfer_runtime_scrapes_total",
            "counter",
            "Scrapes of /metrics by outcome.",
        );
        for (i, outcome) in ScrapeOutcome::ALL.iter().enumerate() {
            let n = sum(&|w| &w.scrapes[i]);
            expo::sample(
                out,
                "matrixinfer_runtime_scrapes_total",
                &[("outcome", outcome.label())],
                n,
            );
        }

        let name = "matrixinfer_runtime_scrape_duration_seconds";
        expo::header(
            out,
            name,
            "histogram",
            "Time to serve /metrics, engine fetch included.",
        );
        Histogram::render_sum(
            self.workers.iter().map(|w| &w.scrape_duration),
            out,
            name,
            &[],
        );

        let name = "matrixinfer_runtime_upstream_bytes_total";
        expo::header(
            out,
            name,
            "counter",
            "Body bytes received from the engine's metrics endpoint.",
        );
        expo::sample(out, name, &[], sum(&|w| &w.upstream_bytes));

        let name = "matrixinfer_runtime_upstream_errors_total";
        expo::header(out, name, "counter", "Failed engine calls by reason.");
        for (i, reason) in Failure::ALL.iter().map(|r| r.as_str()).enumerate() {
            expo::sample(
                out,
                name,
                &[("reason", reason)],
                sum(&|w| &w.upstream_errors[i]),
            );
        }

        let name = "matrixinfer_runtime_standard_copies_dropped_total";
        expo::header(
            out,
            name,
            "counter",
            "Standard families left out of a scrape because their source exceeded the copy cap.",
        );
        expo::sample(out, name, &[], sum(&|w| &w.copies_dropped));

        for section in &self.sections {
            section.render(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_workers() {
        let stats = Stats::new(2, "vllm", Vec::new());
        stats.set_drivers(vec![IoDriver::IoUring, IoDriver::Epoll]);
        stats
            .worker(0)
            .scrape(ScrapeOutcome::Ok, Duration::from_micros(300));
        stats
            .worker(1)
            .scrape(ScrapeOutcome::Ok, Duration::from_millis(3));
        stats
            .worker(1)
            .scrape(ScrapeOutcome::EngineError, Duration::from_secs(60));
        stats.worker(0).upstream_bytes(100);
        stats.worker(1).upstream_bytes(23);
        stats.worker(1).upstream_error(Failure::Timeout);
        let mut out = Vec::new();
        stats.render(&mut out);
        let text = String::from_utf8(out).unwrap();
        for line in [
            "matrixinfer_runtime_io_driver{driver=\"io_uring\"} 1",
            "matrixinfer_runtime_io_driver{driver=\"epoll\"} 1",
            "matrixinfer_runtime_scrapes_total{outcome=\"ok\"} 2",
            "matrixinfer_runtime_scrapes_total{outcome=\"engine_error\"} 1",
            "matrixinfer_runtime_scrape_duration_seconds_bucket{le=\"0.0005\"} 1",
            "matrixinfer_runtime_scrape_duration_seconds_bucket{le=\"0.005\"} 2",
            "matrixinfer_runtime_scrape_duration_seconds_bucket{le=\"10\"} 2",
            "matrixinfer_runtime_scrape_duration_seconds_bucket{le=\"+Inf\"} 3",
            "matrixinfer_runtime_scrape_duration_seconds_count 3",
            "matrixinfer_runtime_upstream_bytes_total 123",
            "matrixinfer_runtime_upstream_errors_total{reason=\"timeout\"} 1",
            "matrixinfer_runtime_upstream_errors_total{reason=\"connect\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
