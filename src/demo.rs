//! `demo`: a simulated engine and the sidecar in front of it, in one
//! process, so that a fresh machine can see the whole job with one command.

use std::error::Error;
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::config::{Config, DemoArgs, Listen, ServerArgs, SimulateArgs};
use crate::engine::Engine;
use crate::filter::FilterSpec;
use crate::runtime::DriverChoice;
use crate::shutdown::Shutdown;
use crate::upstream::EngineEndpoint;
use crate::{sidecar, sim};

/// Runs the demo until SIGTERM/SIGINT.
pub fn run(args: DemoArgs, shutdown: Arc<Shutdown>) -> Result<(), Box<dyn Error + Send + Sync>> {
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
        io_driver: DriverChoice::Auto,
    };
    let engine = sim::start(&simulate, shutdown.clone())?;
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
        max_connections: crate::http::DEFAULT_MAX_CONNECTIONS,
    };
    let config = Config {
        engine: kind,
        listen: Listen {
            host: Ipv4Addr::UNSPECIFIED.to_string(),
            port: args.port,
        },
        endpoint: EngineEndpoint::parse(&format!("http://{}", engine.addr))?,
        metrics_path: "/metrics".into(),
        pod: "demo-pod.default".into(),
        model: simulate.model.clone(),
        request_timeout: std::time::Duration::from_secs(30),
        engine_retry_window: std::time::Duration::from_secs(30),
        max_concurrent_jobs: crate::download::jobs::MAX_CONCURRENT_JOBS,
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
    sidecar.join();
    engine.join();
    Ok(())
}
