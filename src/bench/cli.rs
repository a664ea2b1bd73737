//! The `bench` command's flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use matrixinfer_runtime::config::{parse_seconds, parse_seconds_or_zero, parse_size};
use matrixinfer_runtime::runtime::DriverChoice;

/// Options of the scrape-overhead harness.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Payload shape of the simulated engine (see `simulate --help`).
    #[arg(long, default_value = "vllm-v1")]
    pub flavor: String,
    /// Payload size of the simulated engine: bytes, or with a k/m suffix.
    #[arg(long, default_value = "114k", value_parser = parse_size)]
    pub size: usize,
    /// CPU the simulated engine spends per /metrics answer, in microseconds (a real engine's prometheus_client takes ~3000 for 114 KB; 0: as fast as it goes).
    #[arg(long, default_value_t = 0)]
    pub engine_cpu_us: u64,
    /// Measure this engine's metrics URL instead of starting the simulated engine.
    #[arg(long, value_name = "URL")]
    pub engine_url: Option<String>,
    /// Engine kind for the sidecar [default: sglang for sglang-* flavors, else vllm].
    #[arg(long)]
    pub engine: Option<String>,
    /// Requests per second of the open-loop latency phase.
    #[arg(long, default_value_t = 100.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Connections, in both phases.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub connections: u16,
    /// Seconds of the latency phase.
    #[arg(long, default_value = "20", value_parser = parse_seconds)]
    pub duration: Duration,
    /// Seconds of load before each path is measured.
    #[arg(long, default_value = "2", value_parser = parse_seconds)]
    pub warmup: Duration,
    /// Seconds of the closed-loop throughput phase; 0 skips it.
    #[arg(long, default_value = "5", value_parser = parse_seconds_or_zero)]
    pub throughput_duration: Duration,
    /// I/O drivers to run the sidecar with, in turn.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "io-uring,epoll"
    )]
    pub drivers: Vec<DriverChoice>,
    /// Sidecar worker threads [default: the sidecar's, 1].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// Also measure through the sidecar with this WASM filter.
    #[arg(long, value_name = "PATH")]
    pub filter: Option<PathBuf>,
    /// The filter's config string.
    #[arg(long, value_name = "CONFIG")]
    pub filter_config: Option<String>,
    /// Also measure another sidecar in front of the same engine: its metrics URL.
    #[arg(long, value_name = "URL")]
    pub target_url: Option<String>,
    /// That sidecar's process id, for its CPU time and memory.
    #[arg(long, value_name = "PID")]
    pub target_pid: Option<u32>,
    /// Sidecars started to measure exec to the first /health 200 (KV bridge on); 0 skips it.
    #[arg(long, default_value_t = 20)]
    pub startup_runs: usize,
    /// Encodings to ask for, each path measured with each: gzip as Prometheus asks on every scrape, plain (identity) as the floor.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "gzip,plain")]
    pub encodings: Vec<Encoding>,
    /// Serve the simulated payload through the real prometheus_client library (Python, as vLLM and SGLang do) and measure that engine.
    #[arg(long, conflicts_with = "engine_url")]
    pub prometheus_client: bool,
    /// The process id of the engine at --engine-url, for its CPU per scrape (the Pod's CPU).
    #[arg(long, value_name = "PID", requires = "engine_url")]
    pub engine_pid: Option<u32>,
    /// A /v1/download_model body to start on each sidecar before measuring it (forced async).
    #[arg(long, value_name = "JSON")]
    pub during_download: Option<String>,
    /// Also write the results as JSON to this file (- for standard output).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also draw the run as an SVG picture to this file: each path's latency distribution, the sidecars' CPU per scrape and memory.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// Parses a positive request rate.
fn parse_rate(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate <= 1e6 => Ok(rate),
        _ => Err(format!(
            "{value:?} is not a rate between 0 and 1000000 per second"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("100"), Ok(100.0));
        for bad in ["0", "-1", "x", "2e6"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}

/// What a scrape asks the server to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Encoding {
    /// `Accept-Encoding: gzip`, as Prometheus sends on every scrape.
    Gzip,
    /// No `Accept-Encoding`: the body as it is.
    Plain,
}

impl Encoding {
    /// Its name in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Plain => "plain",
        }
    }
}
