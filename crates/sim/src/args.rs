//! The `simulate` command's flags, and the two small parsers they need.

use std::path::PathBuf;

use clap::Args;

/// Options of the simulated engine.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Payload shape: vllm-v1, vllm-0.10, vllm-v0, sglang-0.5 or sglang-0.4.
    #[arg(long, default_value = "vllm-v1")]
    pub flavor: String,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Listen port.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Approximate payload size: bytes, or with a k/m suffix.
    #[arg(long, default_value = "114k", value_parser = parse_size)]
    pub size: usize,
    /// Render as prometheus_client's multiprocess mode (no _created, _sum lines first).
    #[arg(long)]
    pub multiprocess: bool,
    /// Model name in the payload's labels.
    #[arg(long, default_value = "meta-llama/Llama-3.1-8B-Instruct")]
    pub model: String,
    /// Seed of the simulated activity.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Gzip the body when the client accepts it (as SGLang does).
    #[arg(long)]
    pub gzip: bool,
    /// Send the body with Transfer-Encoding: chunked instead of Content-Length.
    #[arg(long)]
    pub chunked: bool,
    /// Serve this file's bytes as the payload instead of a generated one.
    #[arg(long)]
    pub payload_file: Option<PathBuf>,
    /// Milliseconds to wait before answering /metrics.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Milliseconds to wait before answering a LoRA load or unload.
    #[arg(long, default_value_t = 0)]
    pub lora_delay_ms: u64,
    /// Microseconds of CPU to spend rendering each /metrics answer, to model a real engine (prometheus_client takes ~3 ms for 114 KB).
    #[arg(long, default_value_t = 0)]
    pub render_cpu_us: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub workers: u16,
    /// I/O driver.
    #[arg(long, value_enum, default_value = "auto")]
    pub io_driver: DriverChoice,
}

/// Which I/O driver the workers ask for (the sidecar's `--io-driver`
/// values, re-declared here: this crate does not depend on the sidecar).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverChoice {
    /// io_uring when it works here, epoll otherwise.
    Auto,
    /// io_uring or fail.
    IoUring,
    /// epoll, even where io_uring works.
    Epoll,
}

/// Parses a size: `1048576`, `114k`, `1m` (binary multiples). The same
/// rules as the sidecar's `--size` parser, which this crate cannot use.
pub(crate) fn parse_size(value: &str) -> Result<usize, String> {
    let value = value.trim();
    let lower = value.to_ascii_lowercase();
    let (digits, multiplier) = match lower.strip_suffix(['k', 'm']) {
        Some(digits) if lower.ends_with('k') => (digits, 1024),
        Some(digits) => (digits, 1024 * 1024),
        None => (lower.as_str(), 1),
    };
    let n: usize = digits
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a size"))?;
    n.checked_mul(multiplier)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{value:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("114k"), Ok(114 * 1024));
        assert_eq!(parse_size("1M"), Ok(1024 * 1024));
        assert_eq!(parse_size("5000"), Ok(5000));
        for bad in ["0", "k", "1g", "-1k"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
