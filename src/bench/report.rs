//! The harness's results: a table for people, JSON for tools, and the
//! targets of DESIGN.md section 8 checked against them.

use std::fmt::Write as _;

use serde::Serialize;

use super::BenchArgs;
use super::load::Sample;
use matrixinfer_runtime::runtime::{self, DriverChoice};

const MIB: f64 = 1024.0 * 1024.0;

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// How it ran.
    pub settings: Settings,
    /// One entry per path, `direct` first.
    pub paths: Vec<PathReport>,
    /// Exec to the first `/health` 200, when measured.
    pub startup: Option<super::startup::StartupReport>,
}

/// The machine.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// Cores available to this process.
    pub cores: usize,
    /// From `/proc/cpuinfo`.
    pub cpu: String,
    /// From `/proc/sys/kernel/osrelease`.
    pub kernel: String,
}

/// The run's settings.
#[derive(Debug, Serialize)]
pub struct Settings {
    /// Engine kind the sidecar was told.
    pub engine: String,
    /// Simulated payload shape, or the engine URL.
    pub payload: String,
    /// Simulated payload size in bytes (0 for an external engine).
    pub payload_bytes: usize,
    /// CPU the simulated engine spent per answer, in microseconds.
    pub engine_cpu_us: u64,
    /// Open-loop rate of the latency phase.
    pub rate: f64,
    /// Connections in both phases.
    pub connections: usize,
    /// Seconds of the latency phase.
    pub duration_s: f64,
    /// Seconds of the throughput phase.
    pub throughput_duration_s: f64,
    /// Whether gzip was asked for.
    pub gzip: bool,
    /// A download ran while the sidecars were measured.
    pub during_download: bool,
}

/// One path's figures. Latencies in milliseconds, memory in MiB.
#[derive(Debug, Serialize)]
pub struct PathReport {
    /// `direct`, `sidecar`, `sidecar+filter` or `target`.
    pub path: String,
    /// The sidecar's I/O driver.
    pub driver: Option<String>,
    #[serde(skip)]
    is_sidecar: bool,
    /// Completed requests in the latency phase.
    pub requests: usize,
    /// Failed requests in both phases.
    pub errors: u64,
    /// Rate actually achieved in the latency phase.
    pub achieved_rate: f64,
    /// Latency quantiles, open loop, from each request's due time.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Worst.
    pub max_ms: f64,
    /// Over `direct`.
    pub added_p50_ms: Option<f64>,
    /// Over `direct`.
    pub added_p99_ms: Option<f64>,
    /// Over `direct`.
    pub added_p999_ms: Option<f64>,
    /// Closed-loop requests per second.
    pub throughput_rps: Option<f64>,
    /// Throughput over `direct`'s.
    pub throughput_ratio: Option<f64>,
    /// CPU time of the measured process per scrape in the latency phase.
    pub cpu_us_per_scrape: Option<f64>,
    /// RSS after a few scrapes, before load.
    pub rss_idle_mib: Option<f64>,
    /// The anonymous part of `rss_idle_mib` (the rest is mapped files,
    /// mostly the binary's code, shared through the page cache).
    pub rss_anon_idle_mib: Option<f64>,
    /// Median RSS during the latency phase.
    pub rss_steady_mib: Option<f64>,
    /// Peak RSS (VmHWM) after both phases.
    pub rss_peak_mib: Option<f64>,
    /// State of the background download after the measurement.
    pub download: Option<String>,
    /// Every latency of the latency phase in milliseconds, sorted (for
    /// `--plot`).
    #[serde(skip)]
    pub latencies_ms: Vec<f64>,
}

impl PathReport {
    /// A path's figures from its samples; memory as `[idle, anonymous
    /// part of idle, steady, peak]` bytes.
    pub fn new(
        path: &str,
        driver: Option<DriverChoice>,
        is_sidecar: bool,
        latency: &Sample,
        throughput: Option<&Sample>,
        cpu_us_per_scrape: Option<f64>,
        memory: [Option<u64>; 4],
    ) -> PathReport {
        let mib = |bytes: Option<u64>| bytes.map(|b| b as f64 / MIB);
        PathReport {
            path: path.to_owned(),
            driver: driver.map(|d| d.as_str().to_owned()),
            is_sidecar,
            requests: latency.latencies.len(),
            errors: latency.errors + throughput.map_or(0, |t| t.errors),
            achieved_rate: latency.rate(),
            p50_ms: latency.quantile_ms(0.5),
            p99_ms: latency.quantile_ms(0.99),
            p999_ms: latency.quantile_ms(0.999),
            max_ms: latency.quantile_ms(1.0),
            added_p50_ms: None,
            added_p99_ms: None,
            added_p999_ms: None,
            throughput_rps: throughput.map(Sample::rate),
            throughput_ratio: None,
            cpu_us_per_scrape,
            rss_idle_mib: mib(memory[0]),
            rss_anon_idle_mib: mib(memory[1]),
            rss_steady_mib: mib(memory[2]),
            rss_peak_mib: mib(memory[3]),
            download: None,
            latencies_ms: {
                let mut sorted = latency.latencies.clone();
                sorted.sort_unstable();
                sorted.into_iter().map(|ns| ns as f64 / 1e6).collect()
            },
        }
    }
}

impl Report {
    /// An empty report for this run.
    pub fn new(args: &BenchArgs, engine: &str, simulated: Option<u32>) -> Report {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        Report {
            machine: Machine {
                cores: runtime::available_cores(),
                cpu,
                kernel,
            },
            settings: Settings {
                engine: engine.to_owned(),
                payload: match (&args.engine_url, simulated) {
                    (Some(url), _) => url.clone(),
                    (None, _) => format!("simulated {}", args.flavor),
                },
                payload_bytes: if args.engine_url.is_some() {
                    0
                } else {
                    args.size
                },
                engine_cpu_us: args.engine_cpu_us,
                rate: args.rate,
                connections: args.connections.into(),
                duration_s: args.duration.as_secs_f64(),
                throughput_duration_s: args.throughput_duration.as_secs_f64(),
                gzip: args.gzip,
                during_download: args.during_download.is_some(),
            },
            paths: Vec::new(),
            startup: None,
        }
    }

    /// Fills in each path's figures relative to `direct`.
    pub fn compare(&mut self) {
        let Some((direct, others)) = self.paths.split_first_mut() else {
            return;
        };
        for path in others {
            path.added_p50_ms = Some(path.p50_ms - direct.p50_ms);
            path.added_p99_ms = Some(path.p99_ms - direct.p99_ms);
            path.added_p999_ms = Some(path.p999_ms - direct.p999_ms);
            if let (Some(ours), Some(theirs)) = (path.throughput_rps, direct.throughput_rps) {
                path.throughput_ratio = Some(ours / theirs.max(1e-9));
            }
        }
    }

    /// The table, then the targets checked.
    pub fn table(&self) -> String {
        let s = &self.settings;
        let m = &self.machine;
        let mut out = String::new();
        let mut size = if s.payload_bytes > 0 {
            format!(" {} KiB", s.payload_bytes / 1024)
        } else {
            String::new()
        };
        if s.engine_cpu_us > 0 {
            let _ = write!(size, ", {} µs engine CPU per answer", s.engine_cpu_us);
        }
        let _ = writeln!(
            out,
            "{}{size} ({}); latency: {} req/s open loop over {} connections for {} s; throughput: {} connections closed loop for {} s{}{}",
            s.payload,
            s.engine,
            s.rate,
            s.connections,
            s.duration_s,
            s.connections,
            s.throughput_duration_s,
            if s.gzip { "; gzip" } else { "" },
            if s.during_download {
                "; with a download running"
            } else {
                ""
            },
        );
        let _ = writeln!(
            out,
            "machine: {} cores, {}, Linux {}",
            m.cores, m.cpu, m.kernel
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<15} {:<9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7} {:>9} {:>16} {:>7}",
            "path",
            "driver",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "+p50 ms",
            "+p99 ms",
            "req/s",
            "ratio",
            "CPU µs/scr",
            "RSS MiB idle/st/pk",
            "errors"
        );
        for p in &self.paths {
            let opt = |v: Option<f64>, digits: usize| {
                v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
            };
            let rss = match (p.rss_idle_mib, p.rss_steady_mib, p.rss_peak_mib) {
                (None, None, None) => "-".to_owned(),
                (idle, steady, peak) => {
                    format!("{}/{}/{}", opt(idle, 1), opt(steady, 1), opt(peak, 1))
                }
            };
            let _ = writeln!(
                out,
                "{:<15} {:<9} {:>8.3} {:>8.3} {:>8.3} {:>8} {:>8} {:>9} {:>7} {:>9} {:>16} {:>7}",
                p.path,
                p.driver.as_deref().unwrap_or("-"),
                p.p50_ms,
                p.p99_ms,
                p.p999_ms,
                opt(p.added_p50_ms, 3),
                opt(p.added_p99_ms, 3),
                opt(p.throughput_rps, 0),
                p.throughput_ratio
                    .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
                opt(p.cpu_us_per_scrape, 0),
                rss,
                p.errors,
            );
            if let Some(download) = &p.download {
                let _ = writeln!(out, "{:<15} download after the measurement: {download}", "");
            }
        }
        for p in self.paths.iter().filter(|p| p.is_sidecar) {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "targets (DESIGN.md section 8), {}{}:",
                p.path,
                p.driver
                    .as_deref()
                    .map(|d| format!(" {d}"))
                    .unwrap_or_default()
            );
            let check = |out: &mut String,
                         what: &str,
                         value: Option<f64>,
                         unit: &str,
                         ok: fn(f64) -> bool,
                         when: &str| {
                let (shown, verdict) = match value {
                    Some(v) => (
                        format!("{v:.3} {unit}"),
                        if ok(v) { "met" } else { "MISSED" },
                    ),
                    None => ("-".to_owned(), "not measured"),
                };
                let _ = writeln!(out, "  {what:<34} {shown:>14}  {verdict:<12} {when}");
            };
            check(
                &mut out,
                "added latency p50 <= 0.1 ms",
                p.added_p50_ms,
                "ms",
                |v| v <= 0.1,
                "(target at 114 KB, 100 req/s)",
            );
            check(
                &mut out,
                "added latency p99 <= 0.5 ms",
                p.added_p99_ms,
                "ms",
                |v| v <= 0.5,
                "(target at 114 KB, 100 req/s)",
            );
            check(
                &mut out,
                "throughput >= 90% of direct",
                p.throughput_ratio.map(|r| r * 100.0),
                "%",
                |v| v >= 90.0,
                "(target at 4 connections)",
            );
            check(
                &mut out,
                "RSS idle <= 16 MB",
                p.rss_idle_mib,
                "MiB",
                |v| v <= 16.0,
                &p.rss_anon_idle_mib
                    .map(|anon| format!("(anonymous {anon:.1} MiB, the rest mapped files)"))
                    .unwrap_or_default(),
            );
            check(
                &mut out,
                "RSS peak <= 48 MB",
                p.rss_peak_mib,
                "MiB",
                |v| v <= 48.0,
                "(target at 64 connections, 1 MB)",
            );
        }
        if let Some(startup) = &self.startup {
            let _ = writeln!(out);
            out.push_str(&startup.table());
        }
        out
    }
}
