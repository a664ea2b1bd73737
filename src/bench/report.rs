//! The harness's results: a table for people, JSON for tools, and the
//! targets of DESIGN.md section 8 checked against them.

use std::fmt::Write as _;

use serde::Serialize;

use super::BenchArgs;
use super::cli::Encoding;
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
    /// The engine is the simulated one, which gzips at level 1 where
    /// `prometheus_client` (vLLM's, SGLang's) gzips at 9.
    pub simulated_engine: bool,
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
    /// The encodings each path was measured with.
    pub encodings: Vec<String>,
    /// A download ran while the sidecars were measured.
    pub during_download: bool,
}

/// One path's figures. Latencies in milliseconds, memory in MiB.
#[derive(Debug, Serialize)]
pub struct PathReport {
    /// `direct`, `forward` (the floor), `sidecar`, `sidecar+filter` or
    /// `target`.
    pub path: String,
    /// The sidecar's I/O driver.
    pub driver: Option<String>,
    /// `gzip` or `plain`.
    pub encoding: String,
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
    /// The engine's CPU time per scrape meanwhile.
    pub engine_cpu_us_per_scrape: Option<f64>,
    /// The Pod's: the engine's plus, through a proxy, the proxy's.
    pub pod_cpu_us_per_scrape: Option<f64>,
    /// CPU per scrape over the forwarding proxy's (same driver and
    /// encoding): what the sidecar adds to the floor.
    pub cpu_over_forward: Option<f64>,
    /// A gzip scrape's CPU over a plain one's, on the same path.
    pub gzip_over_plain: Option<f64>,
    /// The Pod's CPU per scrape over direct's (same encoding).
    pub pod_cpu_over_direct: Option<f64>,
    /// Added p50 over direct's p50 (same encoding).
    pub added_p50_over_direct: Option<f64>,
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
        encoding: Encoding,
        latency: &Sample,
        throughput: Option<&Sample>,
        cpu_us_per_scrape: Option<f64>,
        memory: [Option<u64>; 4],
    ) -> PathReport {
        let mib = |bytes: Option<u64>| bytes.map(|b| b as f64 / MIB);
        PathReport {
            path: path.to_owned(),
            driver: driver.map(|d| d.as_str().to_owned()),
            encoding: encoding.as_str().to_owned(),
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
            engine_cpu_us_per_scrape: None,
            pod_cpu_us_per_scrape: None,
            cpu_over_forward: None,
            gzip_over_plain: None,
            pod_cpu_over_direct: None,
            added_p50_over_direct: None,
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
    pub fn new(args: &BenchArgs, engine: &str, label: &str) -> Report {
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
                payload: label.to_owned(),
                simulated_engine: args.engine_url.is_none() && !args.prometheus_client,
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
                encodings: args
                    .encodings
                    .iter()
                    .map(|e| e.as_str().to_owned())
                    .collect(),
                during_download: args.during_download.is_some(),
            },
            paths: Vec::new(),
            startup: None,
        }
    }

    /// Fills in each path's figures relative to `direct` (same
    /// encoding), to the forwarding proxy (same driver and encoding) and
    /// to its own plain scrape.
    pub fn compare(&mut self) {
        for p in &mut self.paths {
            p.pod_cpu_us_per_scrape = match p.path.as_str() {
                "direct" => p.cpu_us_per_scrape,
                _ => p
                    .cpu_us_per_scrape
                    .zip(p.engine_cpu_us_per_scrape)
                    .map(|(a, b)| a + b),
            };
        }
        let find = |paths: &[PathReport], path: &str, driver: Option<&str>, encoding: &str| {
            paths.iter().position(|p| {
                p.path == path && p.driver.as_deref() == driver && p.encoding == encoding
            })
        };
        let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b.max(1e-9));
        for i in 0..self.paths.len() {
            let p = &self.paths[i];
            let (driver, encoding) = (p.driver.as_deref(), p.encoding.as_str());
            let direct = find(&self.paths, "direct", None, encoding)
                .map(|d| &self.paths[d])
                .filter(|_| p.path != "direct");
            let forward = find(&self.paths, "forward", driver, encoding)
                .map(|f| &self.paths[f])
                .filter(|_| p.path.starts_with("sidecar"));
            let plain = find(&self.paths, &p.path, driver, "plain")
                .map(|q| &self.paths[q])
                .filter(|_| encoding == "gzip");
            let added = direct.map(|d| {
                [
                    p.p50_ms - d.p50_ms,
                    p.p99_ms - d.p99_ms,
                    p.p999_ms - d.p999_ms,
                ]
            });
            let throughput = direct.and_then(|d| ratio(p.throughput_rps, d.throughput_rps));
            let pod = direct.and_then(|d| ratio(p.pod_cpu_us_per_scrape, d.pod_cpu_us_per_scrape));
            let added_over = direct.map(|d| (p.p50_ms - d.p50_ms) / d.p50_ms.max(1e-9));
            let over_forward =
                forward.and_then(|f| ratio(p.cpu_us_per_scrape, f.cpu_us_per_scrape));
            let over_plain = plain.and_then(|q| ratio(p.cpu_us_per_scrape, q.cpu_us_per_scrape));
            let p = &mut self.paths[i];
            if let Some([p50, p99, p999]) = added {
                (p.added_p50_ms, p.added_p99_ms, p.added_p999_ms) =
                    (Some(p50), Some(p99), Some(p999));
            }
            p.throughput_ratio = throughput;
            p.pod_cpu_over_direct = pod;
            p.added_p50_over_direct = added_over;
            p.cpu_over_forward = over_forward;
            p.gzip_over_plain = over_plain;
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
            "{}{size} ({}); latency: {} req/s open loop over {} connections for {} s; throughput: {} connections closed loop for {} s; Prometheus's headers, {}{}",
            s.payload,
            s.engine,
            s.rate,
            s.connections,
            s.duration_s,
            s.connections,
            s.throughput_duration_s,
            s.encodings.join(" and "),
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
            "{:<15} {:<9} {:<5} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7} {:>8} {:>8} {:>8} {:>16} {:>6}",
            "path",
            "driver",
            "enc",
            "p50 ms",
            "p99 ms",
            "+p50 ms",
            "+p99 ms",
            "req/s",
            "ratio",
            "CPU µs",
            "engine µs",
            "Pod µs",
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
                "{:<15} {:<9} {:<5} {:>8.3} {:>8.3} {:>8} {:>8} {:>9} {:>7} {:>8} {:>8} {:>8} {:>16} {:>6}",
                p.path,
                p.driver.as_deref().unwrap_or("-"),
                p.encoding,
                p.p50_ms,
                p.p99_ms,
                opt(p.added_p50_ms, 3),
                opt(p.added_p99_ms, 3),
                opt(p.throughput_rps, 0),
                p.throughput_ratio
                    .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
                opt(p.cpu_us_per_scrape, 0),
                opt(p.engine_cpu_us_per_scrape, 0),
                opt(p.pod_cpu_us_per_scrape, 0),
                rss,
                p.errors,
            );
            if let Some(download) = &p.download {
                let _ = writeln!(out, "{:<15} download after the measurement: {download}", "");
            }
        }
        let sidecars = self
            .paths
            .iter()
            .filter(|p| p.path.starts_with("sidecar") || p.path == "target");
        for p in sidecars.filter(|p| p.encoding == "gzip" || !self.has_gzip()) {
            let plain = self
                .paths
                .iter()
                .find(|q| q.path == p.path && q.driver == p.driver && q.encoding == "plain");
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
            let check = |out: &mut String, what: &str, value: Option<f64>, ok: bool, note: &str| {
                let (shown, verdict) = match value {
                    Some(v) => (format!("{v:.3}"), if ok { "met" } else { "MISSED" }),
                    None => ("-".to_owned(), "not measured"),
                };
                let _ = writeln!(out, "  {what:<44} {shown:>9}  {verdict:<12} {note}");
            };
            let within = |v: Option<f64>, limit: f64| v.is_some_and(|v| v <= limit);
            let over_forward = plain.and_then(|q| q.cpu_over_forward);
            check(
                &mut out,
                "CPU per plain scrape <= 1.25x forward's",
                over_forward,
                within(over_forward, 1.25),
                "(x)",
            );
            check(
                &mut out,
                "CPU per gzip scrape <= 1.3x a plain one's",
                p.gzip_over_plain,
                within(p.gzip_over_plain, 1.3),
                "(x)",
            );
            let engine_note = if self.settings.simulated_engine {
                "; the simulated engine gzips at level 1, prometheus_client at 9: \
                 --prometheus-client measures vLLM's"
            } else {
                ""
            };
            check(
                &mut out,
                "Pod CPU per scrape < direct's",
                p.pod_cpu_over_direct,
                p.pod_cpu_over_direct.is_some_and(|v| v < 1.0),
                &format!("(x, {} scrapes, engine + sidecar{engine_note})", p.encoding),
            );
            check(
                &mut out,
                "added p50 <= 0.2x direct p50",
                p.added_p50_over_direct,
                within(p.added_p50_over_direct, 0.2),
                "(x)",
            );
            check(
                &mut out,
                "throughput >= 90% of direct",
                p.throughput_ratio,
                p.throughput_ratio.is_some_and(|v| v >= 0.9),
                "(x; the target holds against an engine that spends what prometheus_client does)",
            );
            let idle_limit = if p.path == "sidecar" { 8.0 } else { 12.0 };
            check(
                &mut out,
                &format!("RSS idle <= {idle_limit} MB"),
                p.rss_idle_mib,
                within(p.rss_idle_mib, idle_limit * 1e6 / MIB),
                &p.rss_anon_idle_mib
                    .map(|anon| format!("(MiB; anonymous {anon:.1}, the rest mapped files)"))
                    .unwrap_or_default(),
            );
            check(
                &mut out,
                "RSS peak <= 40 MB",
                p.rss_peak_mib,
                within(p.rss_peak_mib, 40e6 / MIB),
                "(MiB; the target is for 64 connections of 1 MB)",
            );
        }
        if let Some(startup) = &self.startup {
            let _ = writeln!(out);
            out.push_str(&startup.table());
            let _ = writeln!(
                out,
                "  start-up <= 20 ms: {}",
                if startup.p50_ms <= 20.0 {
                    "met"
                } else {
                    "MISSED"
                }
            );
        }
        out
    }

    fn has_gzip(&self) -> bool {
        self.paths.iter().any(|p| p.encoding == "gzip")
    }
}
