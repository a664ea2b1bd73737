//! A simulated inference engine: `/metrics` and `/health` as vLLM and
//! SGLang serve them, and their LoRA endpoints.
//!
//! No real engine runs on a CI machine, so this stands in for one: the
//! demo's upstream, and the upstream of the integration tests and the
//! scrape benchmark. Its payloads are synthesized from the engines' own
//! metric inventories ([`payload`]) with values that move between scrapes;
//! it can also serve a fixed file, gzip like SGLang, use chunked transfer
//! encoding, and answer slowly.
//!
//! # Layout
//!
//! - [`SimulateArgs`] (`args.rs`): the `simulate` command's flags;
//! - `engine.rs`: the routes and what each answers;
//! - `serve.rs`: its own small HTTP/1.1 serving (keep-alive, pipelining,
//!   Content-Length request bodies, Content-Length or chunked answers).
//!   It shares no code with the sidecar on purpose: the engine the tests
//!   and benchmarks run against must not inherit the bugs, or the speed,
//!   of the server they measure;
//! - `runtime.rs`: a thread per worker, each with its own monoio runtime
//!   (io_uring, else epoll) and its own `SO_REUSEPORT` listener;
//! - [`payload`]: the payload synthesizer; [`lora`]: the LoRA endpoints.
//!
//! [`start`] returns a [`Running`] engine, which runs until
//! [`Running::stop`].

mod args;
mod engine;
pub mod lora;
pub mod payload;
mod runtime;
mod serve;

use std::error::Error;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use args::{DriverChoice, SimulateArgs};
use engine::{Options, SimEngine, Source};
use payload::{Flavor, PayloadSpec};
pub use serve::Stop;

/// A running simulated engine.
#[derive(Debug)]
pub struct Running {
    /// Its address.
    pub addr: SocketAddr,
    /// The shape it serves, when generated.
    pub flavor: Option<Flavor>,
    stop: Arc<Stop>,
    workers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Asks every worker to stop: listeners close, idle connections close,
    /// requests in flight finish (for up to a second). Returns at once.
    pub fn stop(&self) {
        self.stop.trigger();
    }

    /// A handle that stops the engine, for another thread.
    pub fn stop_handle(&self) -> Arc<Stop> {
        self.stop.clone()
    }

    /// Blocks until every worker has returned (after [`Running::stop`]).
    pub fn join(self) {
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

/// Starts the simulated engine; it runs until [`Running::stop`].
pub fn start(args: &SimulateArgs) -> Result<Running, Box<dyn Error + Send + Sync>> {
    let flavor = Flavor::parse(&args.flavor).ok_or_else(|| {
        let names: Vec<_> = Flavor::ALL.iter().map(|f| f.name()).collect();
        format!(
            "unknown flavor {:?}; one of: {}",
            args.flavor,
            names.join(", ")
        )
    })?;
    let source = match &args.payload_file {
        Some(path) => {
            let bytes =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Source::File(bytes.into())
        }
        None => Source::Generated(PayloadSpec {
            flavor,
            target_bytes: args.size,
            multiprocess: args.multiprocess,
            model: args.model.clone(),
            seed: args.seed,
        }),
    };
    let listen = resolve_listen(&args.host, args.port)?;
    let listeners = runtime::bind(listen, usize::from(args.workers.max(1)))
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listeners[0].local_addr()?;
    let options = Options {
        gzip: args.gzip,
        chunked: args.chunked,
        delay: Duration::from_millis(args.delay_ms),
        lora_delay: Duration::from_millis(args.lora_delay_ms),
        render_cpu: Duration::from_micros(args.render_cpu_us),
        sglang: flavor.is_sglang(),
    };
    let lora = Arc::new(lora::SimLora::default());
    let generated = matches!(source, Source::Generated(_));
    let stop = Arc::new(Stop::default());
    let serving = stop.clone();
    let workers = runtime::start(
        "engine",
        args.io_driver,
        listeners,
        move |index, listener| {
            let engine = SimEngine::new(&source, options, lora.clone(), index);
            serve::serve(listener, engine, serving.clone())
        },
    )?;
    tracing::info!(
        flavor = flavor.name(),
        size = args.size,
        "simulated engine listening on http://{addr}"
    );
    Ok(Running {
        addr,
        flavor: generated.then_some(flavor),
        stop,
        workers,
    })
}

/// Resolves a listen host and port (`[::1]` as well as `::1`).
fn resolve_listen(host: &str, port: u16) -> Result<SocketAddr, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("invalid value for --host: cannot resolve {host:?}"))
}
