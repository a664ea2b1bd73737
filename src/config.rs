//! Command line and environment: the flags of DESIGN.md section 1, the
//! environment variables the Python sidecar reads, and the runtime's own
//! options (each a flag with an environment fallback; flag beats
//! environment beats default).
//!
//! clap does the reading: a missing required flag or a malformed value
//! exits 2 with a usage message. [`Config::from_args`] then checks what
//! clap cannot (the engine name, the engine URL); it resolves nothing:
//! names are looked up when the sidecar starts.
//!
//! - [`server`]: the listening server's options, shared by every mode;
//! - [`listen`]: the listen address, resolved at bind time;
//! - [`kv`]: the KV event bridge's settings over the engine's variables;
//! - [`parse`]: durations, sizes and paths as the flags spell them.

mod kv;
mod listen;
mod parse;
mod server;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use listen::{Listen, resolve_listen};
use parse::normalize_path;
pub use parse::{parse_seconds, parse_seconds_or_zero, parse_size};
pub use server::ServerArgs;

use crate::access::{Access, Secret};
use crate::engine::{Engine, UnsupportedEngine};
use crate::filter::{FilterLimits, FilterSpec, OnError, Recovery};
use crate::http::ServerConfig;
use crate::kv_events::KvEventsConfig;
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
    /// Prefix of the standardized metric names: matrixinfer (matrixinfer:num_requests_waiting), kthena for upstream's current name, or any metric-name prefix.
    #[arg(long, env = "MATRIXINFER_METRIC_PREFIX", default_value = crate::prom::standard::DEFAULT_PREFIX)]
    pub metric_prefix: String,
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
    /// Downloads and LoRA loads that may run at once; beyond it a request is answered 429 with Retry-After.
    #[arg(long, env = "MATRIXINFER_MAX_CONCURRENT_JOBS", default_value_t = crate::download::jobs::MAX_CONCURRENT_JOBS as u16, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_jobs: u16,
    /// Downloads and LoRA loads that may wait for a place when --max-concurrent-jobs run (async ones are answered 202 with state "queued"); beyond it a request is answered 429 with Retry-After.
    #[arg(long, env = "MATRIXINFER_MAX_QUEUED_JOBS", default_value_t = crate::download::jobs::MAX_QUEUED_JOBS as u16, value_parser = clap::value_parser!(u16).range(0..=10_000))]
    pub max_queued_jobs: u16,
    /// Do not bridge the engine's KV-cache events into Redis.
    #[arg(long, env = "MATRIXINFER_NO_KV_EVENTS")]
    pub no_kv_events: bool,
    /// ZMQ endpoint of the engine's KV-cache events [default: $VLLM_ZMQ_ENDPOINT or $SGLANG_ZMQ_ENDPOINT, else tcp://localhost:5557].
    #[arg(long, value_name = "ENDPOINT")]
    pub kv_events_endpoint: Option<String>,
    /// Topic of the KV-cache events; empty accepts every topic [default: $VLLM_ZMQ_TOPIC_FILTER or "kv-events" for vLLM, $SGLANG_ZMQ_TOPIC_FILTER or empty for SGLang].
    #[arg(long, value_name = "TOPIC")]
    pub kv_events_topic: Option<String>,
    /// ZMQ endpoint of the engine's KV event replay buffer (vLLM's `KVEventsConfig.replay_endpoint`, e.g. tcp://localhost:5558); a sequence gap asks it for the lost batches.
    #[arg(
        long,
        env = "MATRIXINFER_KV_EVENTS_REPLAY_ENDPOINT",
        value_name = "ENDPOINT"
    )]
    pub kv_events_replay_endpoint: Option<String>,
    /// KV event batches held while Redis is unavailable; later ones are dropped and counted.
    #[arg(long, env = "MATRIXINFER_KV_EVENTS_BUFFER", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub kv_events_buffer: u32,
    /// Redis host of the KV index; $REDIS_URL (environment only: redis://[user@]host[:port][/db], rediss:// for TLS) replaces host, port and database. The password comes from $REDIS_PASSWORD (or $REDIS_URL) only, to keep it out of `ps`.
    #[arg(long, env = "REDIS_HOST", default_value = "redis-server")]
    pub redis_host: String,
    /// Redis port.
    #[arg(long, env = "REDIS_PORT", default_value_t = 6379)]
    pub redis_port: u16,
    /// Redis database number.
    #[arg(long, env = "REDIS_DB", default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub redis_db: i64,
    /// Connect to Redis over TLS, trusting the system roots, $SSL_CERT_FILE and $SSL_CERT_DIR (a rediss:// $REDIS_URL does too).
    #[arg(long, env = "REDIS_TLS", value_parser = clap::builder::BoolishValueParser::new())]
    pub redis_tls: bool,
    /// Redis ACL user to log in as (`AUTH user password`) [default: the user of $REDIS_URL, else Redis's default user].
    #[arg(long, env = "REDIS_USERNAME", value_name = "USER")]
    pub redis_username: Option<String>,
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
    /// Prefix of the standardized names (checked, without its `:`).
    pub metric_prefix: String,
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
    /// Downloads and LoRA loads that wait for a place, at most.
    pub max_queued_jobs: usize,
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
        let metric_prefix =
            crate::prom::standard::check_prefix(&args.metric_prefix).map_err(|e| {
                ConfigError::Invalid {
                    option: "--metric-prefix",
                    reason: e.to_string(),
                }
            })?;
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
            kv::kv_events_config(&args, engine, &pod, &model, |name| std::env::var(name).ok())?;
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
            metric_prefix,
            pod,
            model,
            request_timeout: args.request_timeout,
            engine_retry_window: args.engine_retry_window,
            max_concurrent_jobs: usize::from(args.max_concurrent_jobs),
            max_queued_jobs: usize::from(args.max_queued_jobs),
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
        Some(json) if !json.trim().is_empty() => crate::filter::specs_from_json(json)
            .map_err(|e| invalid("MATRIXINFER_FILTERS", crate::errors::chain(&e))),
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests;
