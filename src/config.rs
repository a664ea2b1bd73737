//! Command line and environment: the flags of DESIGN.md section 1, the
//! environment variables the Python sidecar reads, and the runtime's own
//! options (each a flag with an environment fallback; flag beats
//! environment beats default).
//!
//! clap does the reading: a missing required flag or a malformed value
//! exits 2 with a usage message. [`Config::from_args`] then checks what
//! clap cannot (the engine name, the engine URL) and resolves addresses.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::access::{Access, Secret};
use crate::engine::{Engine, UnsupportedEngine};
use crate::filter::{FilterLimits, FilterSpec, OnError, Recovery};
use crate::http::{ConnectionLimit, DEFAULT_MAX_CONNECTIONS, Limits, ServerConfig};
use crate::kv_events::{Index, KvEventsConfig, RedisTarget};
use crate::runtime::DriverChoice;
use crate::upstream::{EndpointError, EngineEndpoint};

/// The command line: the sidecar's options, or a subcommand. The
/// subcommands (`C`) are the binary's: `simulate`, `demo` and `bench` are
/// not part of this library, and their arguments live beside them.
#[derive(Debug, Parser)]
#[command(
    name = "matrixinfer-runtime",
    version,
    about = "Sidecar for LLM inference engines: standardized metrics, model and LoRA downloads, KV-cache events.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli<C: Subcommand> {
    /// A helper mode instead of the sidecar.
    #[command(subcommand)]
    pub command: Option<C>,
    /// The sidecar's options.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The sidecar's options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Inference engine: vllm or sglang (case-insensitive; vllmdisaggregated = vllm).
    #[arg(short = 'E', long, required = true)]
    pub engine: Option<String>,
    /// Listen address.
    #[arg(short = 'H', long, default_value = "0.0.0.0")]
    pub host: String,
    /// Listen port.
    #[arg(short = 'P', long, default_value_t = 9000)]
    pub port: u16,
    /// Base URL of the engine.
    #[arg(short = 'B', long, default_value = "http://localhost:8000")]
    pub engine_base_url: String,
    /// Path of the engine's Prometheus metrics.
    #[arg(short = 'M', long, default_value = "/metrics")]
    pub engine_metrics_path: String,
    /// Pod identity ($(POD_NAME).$(NAMESPACE)), used in Redis keys.
    #[arg(short = 'I', long, required = true)]
    pub pod: Option<String>,
    /// Model name, used in Redis keys.
    #[arg(short = 'N', long, required = true)]
    pub model: Option<String>,
    /// Timeout of every engine call, in seconds.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30", value_parser = parse_seconds)]
    pub request_timeout: Duration,
    /// A WASM filter (.wasm) to reshape the metrics with; repeat to chain filters, applied in order.
    #[arg(long = "filter", value_name = "PATH")]
    pub filters: Vec<PathBuf>,
    /// The config string of a filter: the first --filter-config goes to the first --filter, and so on.
    #[arg(long = "filter-config", value_name = "CONFIG")]
    pub filter_configs: Vec<String>,
    /// Filters when no --filter is given: a JSON array of {"path": "...", "config": "..."}.
    #[arg(long, env = "MATRIXINFER_FILTERS", hide = true)]
    pub filters_json: Option<String>,
    /// Milliseconds one filter call may take before it is stopped.
    #[arg(long, env = "MATRIXINFER_FILTER_DEADLINE_MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub filter_deadline_ms: u64,
    /// Memory cap of each filter instance, in MiB.
    #[arg(long, env = "MATRIXINFER_FILTER_MEMORY_MB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub filter_memory_mb: u64,
    /// Largest output of one filter call, in MiB.
    #[arg(long, env = "MATRIXINFER_FILTER_MAX_OUTPUT_MB", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub filter_max_output_mb: u64,
    /// Consecutive failures after which a filter is switched off.
    #[arg(long, env = "MATRIXINFER_FILTER_MAX_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub filter_max_failures: u32,
    /// What a failed filter call does to the scrape: serve the filter's families unfiltered, drop them, or fail the scrape with a 502 naming the filter.
    #[arg(long, env = "MATRIXINFER_FILTER_ON_ERROR", value_enum, default_value_t = OnError::Unfiltered)]
    pub filter_on_error: OnError,
    /// Milliseconds a switched-off filter waits before it is tried again; doubles after each failed trial.
    #[arg(long, env = "MATRIXINFER_FILTER_COOLDOWN_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub filter_cooldown_ms: u64,
    /// The longest cool-down of a switched-off filter, in milliseconds.
    #[arg(long, env = "MATRIXINFER_FILTER_MAX_COOLDOWN_MS", default_value_t = 600_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub filter_max_cooldown_ms: u64,
    /// Seconds LoRA calls keep retrying an engine that refuses connections (it may be starting).
    #[arg(long, env = "MATRIXINFER_ENGINE_RETRY_WINDOW", default_value = "30", value_parser = parse_seconds)]
    pub engine_retry_window: Duration,
    /// Downloads and LoRA operations that may run at once; beyond it a request is answered 429 with Retry-After.
    #[arg(long, env = "MATRIXINFER_MAX_CONCURRENT_JOBS", default_value_t = crate::download::jobs::MAX_CONCURRENT_JOBS as u16, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_jobs: u16,
    /// Do not bridge the engine's KV-cache events into Redis.
    #[arg(long, env = "MATRIXINFER_NO_KV_EVENTS")]
    pub no_kv_events: bool,
    /// ZMQ endpoint of the engine's KV-cache events [default: $VLLM_ZMQ_ENDPOINT or $SGLANG_ZMQ_ENDPOINT, else tcp://localhost:5557].
    #[arg(long, value_name = "ENDPOINT")]
    pub kv_events_endpoint: Option<String>,
    /// Topic of the KV-cache events; empty accepts every topic [default: $VLLM_ZMQ_TOPIC_FILTER or "kv-events" for vLLM, $SGLANG_ZMQ_TOPIC_FILTER or empty for SGLang].
    #[arg(long, value_name = "TOPIC")]
    pub kv_events_topic: Option<String>,
    /// KV event batches held while Redis is unavailable; later ones are dropped and counted.
    #[arg(long, env = "MATRIXINFER_KV_EVENTS_BUFFER", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub kv_events_buffer: u32,
    /// Redis host of the KV index (the password comes from $REDIS_PASSWORD only, to keep it out of `ps`).
    #[arg(long, env = "REDIS_HOST", default_value = "redis-server")]
    pub redis_host: String,
    /// Redis port.
    #[arg(long, env = "REDIS_PORT", default_value_t = 6379)]
    pub redis_port: u16,
    /// Redis database number.
    #[arg(long, env = "REDIS_DB", default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub redis_db: i64,
    /// Bearer token the mutating endpoints (downloads, LoRA load and unload) require; prefer the environment variable, which `ps` does not show [default: none, the API is open].
    #[arg(
        long,
        env = "MATRIXINFER_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub api_token: Option<Secret>,
    /// A directory downloads and LoRA adapters may be written under; repeat for several ($MATRIXINFER_ALLOWED_ROOTS: separated by ':') [default: anywhere].
    #[arg(long = "allowed-root", value_name = "DIR")]
    pub allowed_roots: Vec<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs, reason = "documented on the type")]
    pub server: ServerArgs,
}

/// Options of the listening server, shared by every mode.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Worker threads, each with its own runtime and listener [default: one per core].
    #[arg(long, env = "MATRIXINFER_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// I/O driver: io_uring where the kernel allows it, else epoll.
    #[arg(
        long,
        env = "MATRIXINFER_IO_DRIVER",
        value_enum,
        default_value = "auto"
    )]
    pub io_driver: DriverChoice,
    /// Seconds a keep-alive connection may wait for its next request.
    #[arg(long, env = "MATRIXINFER_IDLE_TIMEOUT", default_value = "120", value_parser = parse_seconds)]
    pub idle_timeout: Duration,
    /// Seconds a request may take to arrive once started (slow clients get 408).
    #[arg(long, env = "MATRIXINFER_READ_TIMEOUT", default_value = "15", value_parser = parse_seconds)]
    pub read_timeout: Duration,
    /// Largest request line plus headers, in bytes (431 beyond).
    #[arg(long, env = "MATRIXINFER_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// Largest request body, in bytes (413 beyond).
    #[arg(long, env = "MATRIXINFER_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "MATRIXINFER_SHUTDOWN_GRACE", default_value = "20", value_parser = parse_seconds)]
    pub shutdown_grace: Duration,
    /// Client connections kept open at once, across workers; more are answered 503 and closed.
    #[arg(long, env = "MATRIXINFER_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = parse_max_connections)]
    pub max_connections: usize,
}

impl ServerArgs {
    /// The connection settings these options describe.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            limits: Limits {
                max_head: self.max_header_bytes,
                max_body: self.max_body_bytes,
            },
            idle_timeout: self.idle_timeout,
            read_timeout: self.read_timeout,
            write_timeout: self.read_timeout.max(Duration::from_secs(30)),
            shutdown_grace: self.shutdown_grace,
            connections: Arc::new(ConnectionLimit::new(self.max_connections)),
        }
    }

    /// Worker threads to run.
    pub fn worker_count(&self) -> usize {
        self.workers
            .map_or_else(crate::runtime::available_cores, usize::from)
    }
}

fn parse_max_connections(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "expected a whole number of connections, at least 1: {text:?}"
        )),
    }
}

/// The sidecar's resolved configuration.
#[derive(Debug)]
pub struct Config {
    /// The engine beside us.
    pub engine: Engine,
    /// Where to listen (resolved when the sidecar binds).
    pub listen: Listen,
    /// Where the engine is.
    pub endpoint: EngineEndpoint,
    /// The engine's metrics path.
    pub metrics_path: String,
    /// Pod identity.
    pub pod: String,
    /// Model name.
    pub model: String,
    /// Timeout of every engine call.
    pub request_timeout: Duration,
    /// How long LoRA calls retry an engine that refuses connections.
    pub engine_retry_window: Duration,
    /// Downloads and LoRA operations run at once, at most.
    pub max_concurrent_jobs: usize,
    /// WASM filters, in order.
    pub filters: Vec<FilterSpec>,
    /// Their limits.
    pub filter_limits: FilterLimits,
    /// Worker threads.
    pub workers: usize,
    /// I/O driver choice.
    pub io_driver: DriverChoice,
    /// Connection settings.
    pub server: ServerConfig,
    /// The KV event bridge, unless switched off.
    pub kv_events: Option<KvEventsConfig>,
    /// The API token and the directories writes are confined to.
    pub access: Access,
}

/// A configuration the runtime cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--engine` names an engine we do not support.
    #[error(transparent)]
    Engine(#[from] UnsupportedEngine),
    /// `--engine-base-url` is unusable.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// Another option is unusable.
    #[error("invalid value for {option}: {reason}")]
    Invalid {
        /// The option.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    /// The process exit code: 1 for an unsupported engine (as the Python
    /// sidecar), 2 (usage) for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ConfigError::Engine(_) => 1,
            _ => 2,
        }
    }
}

impl Config {
    /// Checks and resolves the parsed options.
    pub fn from_args(args: ServeArgs) -> Result<Config, ConfigError> {
        let required = |value: Option<String>, option| {
            value.ok_or(ConfigError::Invalid {
                option,
                reason: "missing".into(),
            })
        };
        let filters = filter_specs(&args)?;
        let engine = Engine::parse(&required(args.engine.clone(), "--engine")?)?;
        let listen = Listen {
            host: args.host.clone(),
            port: args.port,
        };
        let endpoint = EngineEndpoint::parse(&args.engine_base_url)?;
        let metrics_path = normalize_path(&args.engine_metrics_path);
        let filter_limits = FilterLimits {
            deadline: Duration::from_millis(args.filter_deadline_ms),
            memory: args.filter_memory_mb as usize * 1024 * 1024,
            max_output: args.filter_max_output_mb as usize * 1024 * 1024,
            recovery: Recovery {
                max_failures: args.filter_max_failures,
                cooldown: Duration::from_millis(args.filter_cooldown_ms),
                max_cooldown: Duration::from_millis(
                    args.filter_max_cooldown_ms.max(args.filter_cooldown_ms),
                ),
            },
            on_error: args.filter_on_error,
        };
        let pod = required(args.pod.clone(), "--pod")?;
        let model = required(args.model.clone(), "--model")?;
        let kv_events =
            kv_events_config(&args, engine, &pod, &model, |name| std::env::var(name).ok());
        let roots = allowed_roots(
            &args.allowed_roots,
            std::env::var_os("MATRIXINFER_ALLOWED_ROOTS"),
        );
        let access =
            Access::new(args.api_token.clone(), &roots).map_err(|e| ConfigError::Invalid {
                option: "--allowed-root",
                reason: e.to_string(),
            })?;
        Ok(Config {
            engine,
            listen,
            endpoint,
            metrics_path,
            pod,
            model,
            request_timeout: args.request_timeout,
            engine_retry_window: args.engine_retry_window,
            max_concurrent_jobs: usize::from(args.max_concurrent_jobs),
            filters,
            filter_limits,
            workers: args.server.worker_count(),
            io_driver: args.server.io_driver,
            server: args.server.server_config(),
            kv_events,
            access,
        })
    }
}

/// The `--allowed-root` flags, else `MATRIXINFER_ALLOWED_ROOTS` split
/// like `PATH` (empty: none, so an empty variable in a manifest means off).
fn allowed_roots(flags: &[PathBuf], env: Option<std::ffi::OsString>) -> Vec<PathBuf> {
    if !flags.is_empty() {
        return flags.to_vec();
    }
    env.map(|value| {
        std::env::split_paths(&value)
            .filter(|root| !root.as_os_str().is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// The bridge's settings: flags, then the variables the Python sidecar
/// reads (per engine), then its defaults. `env` reads the environment.
fn kv_events_config(
    args: &ServeArgs,
    engine: Engine,
    pod: &str,
    model: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Option<KvEventsConfig> {
    if args.no_kv_events {
        return None;
    }
    let names = engine.kv_events_env();
    let endpoint = args
        .kv_events_endpoint
        .clone()
        .or_else(|| env(names.endpoint).filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "tcp://localhost:5557".to_owned());
    let topic = args
        .kv_events_topic
        .clone()
        .or_else(|| env(names.topic))
        .unwrap_or_else(|| names.default_topic.to_owned());
    Some(KvEventsConfig {
        endpoint: endpoint.trim().to_owned(),
        topic,
        redis: RedisTarget {
            host: args.redis_host.clone(),
            port: args.redis_port,
            db: args.redis_db,
            password: env("REDIS_PASSWORD")
                .filter(|p| !p.is_empty())
                .map(Secret::new),
        },
        index: Index {
            engine,
            pod: pod.to_owned(),
            model: model.to_owned(),
        },
        buffer: args.kv_events_buffer as usize,
    })
}

/// The filters of `--filter`/`--filter-config`, or of `MATRIXINFER_FILTERS`.
fn filter_specs(args: &ServeArgs) -> Result<Vec<FilterSpec>, ConfigError> {
    let invalid = |option, reason: String| ConfigError::Invalid { option, reason };
    if args.filter_configs.len() > args.filters.len() {
        return Err(invalid(
            "--filter-config",
            "more --filter-config than --filter options".into(),
        ));
    }
    if !args.filters.is_empty() {
        let configs = args
            .filter_configs
            .iter()
            .cloned()
            .chain(std::iter::repeat(String::new()));
        return Ok(args
            .filters
            .iter()
            .zip(configs)
            .map(|(path, config)| FilterSpec {
                path: path.clone(),
                config,
            })
            .collect());
    }
    match &args.filters_json {
        Some(json) if !json.trim().is_empty() => {
            crate::filter::specs_from_json(json).map_err(|e| invalid("MATRIXINFER_FILTERS", e))
        }
        _ => Ok(Vec::new()),
    }
}

/// A listen host and port, as given: names are resolved when the sidecar
/// binds, not while arguments are parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    /// Host name or address (IPv6 with or without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Listen {
    /// The address to bind.
    pub fn resolve(&self) -> Result<SocketAddr, ConfigError> {
        resolve_listen(&self.host, self.port)
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') && !self.host.starts_with('[') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Resolves a listen host and port.
pub fn resolve_listen(host: &str, port: u16) -> Result<SocketAddr, ConfigError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| ConfigError::Invalid {
            option: "--host",
            reason: format!("cannot resolve {host:?}"),
        })
}

fn normalize_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

/// Parses a positive number of seconds (fractions allowed).
pub fn parse_seconds(value: &str) -> Result<Duration, String> {
    let seconds: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds.is_finite() && seconds <= 86_400.0 * 365.0) {
        return Err(format!("{value:?} must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a number of seconds that may be zero.
pub fn parse_seconds_or_zero(value: &str) -> Result<Duration, String> {
    if value.trim().parse::<f64>() == Ok(0.0) {
        return Ok(Duration::ZERO);
    }
    parse_seconds(value)
}

/// Parses a size: `1048576`, `114k`, `1m` (binary multiples).
pub fn parse_size(value: &str) -> Result<usize, String> {
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
    fn allowed_roots_from_flags_else_the_variable() {
        let flags = [PathBuf::from("/models")];
        assert_eq!(allowed_roots(&flags, Some("/a:/b".into())), flags);
        assert_eq!(
            allowed_roots(&[], Some("/a::/b:".into())),
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert!(allowed_roots(&[], Some("".into())).is_empty());
        assert!(allowed_roots(&[], None).is_empty());
    }

    /// No subcommands: the binary's are tested beside them.
    #[derive(Debug, Subcommand)]
    enum NoCommand {}

    fn parse(args: &[&str]) -> Result<Cli<NoCommand>, clap::Error> {
        Cli::try_parse_from(std::iter::once("matrixinfer-runtime").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let cli = parse(&["-E", "vllm", "-I", "pod.ns", "-N", "llama"]).unwrap();
        assert!(cli.command.is_none());
        let config = Config::from_args(cli.serve).unwrap();
        assert_eq!(config.engine, Engine::Vllm);
        assert_eq!(
            config.listen.resolve().unwrap(),
            "0.0.0.0:9000".parse().unwrap()
        );
        assert_eq!(config.endpoint.base_url, "http://localhost:8000");
        assert_eq!(config.metrics_path, "/metrics");
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        assert_eq!(
            (config.pod.as_str(), config.model.as_str()),
            ("pod.ns", "llama")
        );
    }

    #[test]
    fn long_flags() {
        let cli = parse(&[
            "--engine",
            "SGLang",
            "--host",
            "127.0.0.1",
            "--port",
            "9100",
            "--engine-base-url",
            "http://127.0.0.1:30000",
            "--engine-metrics-path",
            "stats",
            "--pod",
            "p",
            "--model",
            "m",
            "--request-timeout",
            "2.5",
            "--workers",
            "3",
            "--io-driver",
            "epoll",
        ])
        .unwrap();
        let config = Config::from_args(cli.serve).unwrap();
        assert_eq!(config.engine, Engine::Sglang);
        assert_eq!(
            config.listen.resolve().unwrap(),
            "127.0.0.1:9100".parse().unwrap()
        );
        assert_eq!(config.metrics_path, "/stats");
        assert_eq!(config.request_timeout, Duration::from_millis(2500));
        assert_eq!(config.workers, 3);
        assert_eq!(config.io_driver, DriverChoice::Epoll);
    }

    #[test]
    fn missing_required_flags_are_usage_errors() {
        let err = parse(&["-E", "vllm", "-I", "p"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--model"), "{err}");
    }

    #[test]
    fn unsupported_engine_exits_one() {
        let cli = parse(&["-E", "tgi", "-I", "p", "-N", "m"]).unwrap();
        let err = Config::from_args(cli.serve).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert_eq!(
            err.to_string(),
            "Unsupported engine: tgi. Supported engine: vllm, sglang"
        );
    }

    #[test]
    fn bad_values() {
        assert!(parse(&["-E", "vllm", "-I", "p", "-N", "m", "--request-timeout", "0"]).is_err());
        assert!(parse(&["-E", "vllm", "-I", "p", "-N", "m", "--workers", "0"]).is_err());
        let cli = parse(&["-E", "vllm", "-I", "p", "-N", "m", "-B", "https://x"]).unwrap();
        assert_eq!(Config::from_args(cli.serve).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn kv_events_settings() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let args = |extra: &[&str]| {
            let mut all = vec!["-E", "vllm", "-I", "p", "-N", "m"];
            all.extend_from_slice(extra);
            parse(&all).unwrap().serve
        };
        let resolve =
            |serve: &ServeArgs, engine, vars| kv_events_config(serve, engine, "p", "m", env(vars));

        let vllm = resolve(&args(&[]), Engine::Vllm, &[]).unwrap();
        assert_eq!(vllm.endpoint, "tcp://localhost:5557");
        assert_eq!(vllm.topic, "kv-events");
        assert_eq!(
            (vllm.redis.host.as_str(), vllm.redis.port, vllm.redis.db),
            ("redis-server", 6379, 0)
        );
        assert_eq!(vllm.redis.password, None);
        let sglang = resolve(&args(&[]), Engine::Sglang, &[]).unwrap();
        assert_eq!(sglang.topic, "");

        let vars: &[(&str, &str)] = &[
            ("VLLM_ZMQ_ENDPOINT", "tcp://engine:6000"),
            ("VLLM_ZMQ_TOPIC_FILTER", ""),
            ("SGLANG_ZMQ_ENDPOINT", "tcp://sglang:7000"),
            ("SGLANG_ZMQ_TOPIC_FILTER", "sg"),
            ("REDIS_PASSWORD", "secret"),
        ];
        let vllm = resolve(&args(&[]), Engine::Vllm, vars).unwrap();
        assert_eq!(
            (vllm.endpoint.as_str(), vllm.topic.as_str()),
            ("tcp://engine:6000", "")
        );
        assert_eq!(
            vllm.redis.password.as_ref().map(Secret::expose),
            Some("secret")
        );
        let sglang = resolve(&args(&[]), Engine::Sglang, vars).unwrap();
        assert_eq!(
            (sglang.endpoint.as_str(), sglang.topic.as_str()),
            ("tcp://sglang:7000", "sg")
        );

        // Flags beat the environment.
        let flags = args(&[
            "--kv-events-endpoint",
            "ipc:///tmp/kv",
            "--kv-events-topic",
            "t",
            "--redis-host",
            "10.0.0.1",
            "--redis-port",
            "6380",
            "--redis-db",
            "2",
            "--kv-events-buffer",
            "8",
        ]);
        let flagged = resolve(&flags, Engine::Vllm, vars).unwrap();
        assert_eq!(
            (flagged.endpoint.as_str(), flagged.topic.as_str()),
            ("ipc:///tmp/kv", "t")
        );
        assert_eq!(
            (
                flagged.redis.host.as_str(),
                flagged.redis.port,
                flagged.redis.db
            ),
            ("10.0.0.1", 6380, 2)
        );
        assert_eq!(flagged.buffer, 8);

        assert!(resolve(&args(&["--no-kv-events"]), Engine::Vllm, vars).is_none());
        assert!(parse(&["-E", "vllm", "-I", "p", "-N", "m", "--redis-db", "-1"]).is_err());
    }

    #[test]
    fn values() {
        assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "x", "inf", "NaN", ""] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("114k"), Ok(114 * 1024));
        assert_eq!(parse_size("1M"), Ok(1024 * 1024));
        assert_eq!(parse_size("5000"), Ok(5000));
        for bad in ["0", "k", "1g", "-1k"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
