//! `demo`: a simulated engine and the sidecar in front of it, in one
//! process, so that a fresh machine can see the whole job with one command.

use std::error::Error;
use std::net::Ipv4Addr;
use std::sync::Arc;

use std::path::PathBuf;

use clap::Args;
use matrixinfer_runtime::config::{Config, Listen, ServerArgs};
use matrixinfer_runtime::engine::Engine;
use matrixinfer_runtime::filter::FilterSpec;
use matrixinfer_runtime::runtime::DriverChoice;
use matrixinfer_runtime::shutdown::Shutdown;
use matrixinfer_runtime::upstream::EngineEndpoint;
use matrixinfer_runtime::{http, sidecar};
use sim::SimulateArgs;

/// Options of the demo.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Port of the sidecar.
    #[arg(long, default_value_t = 9000)]
    pub port: u16,
    /// Port of the simulated engine.
    #[arg(long, default_value_t = 8000)]
    pub engine_port: u16,
    /// Payload shape of the simulated engine (see `simulate --help`).
    #[arg(long, default_value = "vllm-v1")]
    pub flavor: String,
    /// A WASM filter for the sidecar (repeatable), as for the sidecar itself.
    #[arg(long = "filter", value_name = "PATH")]
    pub filters: Vec<PathBuf>,
    /// The config string of a filter, by position.
    #[arg(long = "filter-config", value_name = "CONFIG")]
    pub filter_configs: Vec<String>,
}

/// Runs the demo until SIGTERM/SIGINT.
pub(crate) fn run(
    args: DemoArgs,
    shutdown: Arc<Shutdown>,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let simulate = SimulateArgs {
        flavor: args.flavor.clone(),
        host: "127.0.0.1".into(),
        port: args.engine_port,
        size: 114 * 1024,
        multiprocess: false,
        model: "meta-llama/Llama-3.1-8B-Instruct".into(),
        seed: 0,
        gzip: false,
        chunked: false,
        payload_file: None,
        delay_ms: 0,
        lora_delay_ms: 0,
        render_cpu_us: 0,
        workers: 1,
        io_driver: sim::DriverChoice::Auto,
    };
    let engine = sim::start(&simulate)?;
    let kind = match engine.flavor {
        Some(flavor) if flavor.is_sglang() => Engine::Sglang,
        _ => Engine::Vllm,
    };
    let server = ServerArgs {
        workers: Some(1),
        io_driver: DriverChoice::Auto,
        idle_timeout: std::time::Duration::from_secs(120),
        read_timeout: std::time::Duration::from_secs(15),
        max_header_bytes: 16 * 1024,
        max_body_bytes: 1024 * 1024,
        shutdown_grace: std::time::Duration::from_secs(5),
        max_connections: http::DEFAULT_MAX_CONNECTIONS,
    };
    let config = Config {
        engine: kind,
        listen: Listen {
            host: Ipv4Addr::UNSPECIFIED.to_string(),
            port: args.port,
        },
        endpoint: EngineEndpoint::parse(&format!("http://{}", engine.addr))?,
        metrics_path: "/metrics".into(),
        metric_prefix: matrixinfer_runtime::prom::standard::DEFAULT_PREFIX.into(),
        pod: "demo-pod.default".into(),
        model: simulate.model.clone(),
        request_timeout: std::time::Duration::from_secs(30),
        engine_retry_window: std::time::Duration::from_secs(30),
        max_concurrent_jobs: crate::download::jobs::MAX_CONCURRENT_JOBS,
        max_queued_jobs: crate::download::jobs::MAX_QUEUED_JOBS,
        filters: args
            .filters
            .iter()
            .zip(
                args.filter_configs
                    .iter()
                    .cloned()
                    .chain(std::iter::repeat(String::new())),
            )
            .map(|(path, config)| FilterSpec {
                path: path.clone(),
                config,
            })
            .collect(),
        filter_limits: Default::default(),
        workers: 1,
        io_driver: DriverChoice::Auto,
        server: server.server_config(),
        // The simulated engine publishes no KV events.
        kv_events: None,
        access: Default::default(),
    };
    let sidecar = sidecar::start(config, shutdown)?;
    tracing::info!(
        "demo ready: curl http://localhost:{}/metrics | grep matrixinfer:",
        sidecar.addr.port()
    );
    let stopped = sidecar.join();
    // The sidecar has drained: the engine behind it may go.
    engine.stop();
    engine.join();
    Ok(stopped?)
}
