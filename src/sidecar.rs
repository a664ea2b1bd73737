//! The sidecar process: listeners, workers, and the drain on shutdown.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use crate::app::App;
use crate::config::{Config, ConfigError};
use crate::download::jobs::Jobs;
use crate::filter::{FilterChain, FilterHost, LoadError};
use crate::http::server;
use crate::kv_events::KvEvents;
use crate::lora::Lora;
use crate::net::UrlError;
use crate::runtime::{self, DriverChoice, IoDriver, Workers, WorkersPanicked};
use crate::shutdown::Shutdown;
use crate::stats::{MetricsSection, Stats};
use crate::upstream::{EngineClient, EnginePresence, Resolver};

/// How long the start waits for the first lookup of the engine's name
/// before it listens anyway (scrapes answer 502 until the name resolves).
const FIRST_LOOKUP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// A running sidecar.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on (the real port when 0 was asked for).
    pub addr: SocketAddr,
    workers: Workers,
    kv_events: Option<KvEvents>,
}

impl Running {
    /// Blocks until every worker has drained and stopped, and the KV
    /// event bridge has written what it had queued. An error names the
    /// workers that ended by a panic, which stopped the others.
    pub fn join(self) -> Result<(), WorkersPanicked> {
        let workers = self.workers.join();
        if let Some(kv_events) = self.kv_events {
            kv_events.join();
        }
        workers
    }
}

/// Why the sidecar could not start; each keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A filter did not load.
    #[error("cannot load the WASM filters")]
    Filters(#[source] LoadError),
    /// The listen address does not resolve.
    #[error("cannot resolve the listen address")]
    Resolve(#[source] ConfigError),
    /// The port cannot be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The engine URL is unusable for LoRA calls.
    #[error("invalid engine URL for LoRA calls")]
    EngineUrl(#[source] UrlError),
    /// The KV event bridge did not start.
    #[error("cannot start the KV event bridge")]
    KvEvents(#[source] crate::kv_events::StartError),
    /// A thread (workers, helpers) did not start.
    #[error("cannot start the {what} threads")]
    Threads {
        /// Which.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Binds, starts the workers and returns; the workers stop when
/// `shutdown` is triggered.
pub fn start(config: Config, shutdown: Arc<Shutdown>) -> Result<Running, StartError> {
    crate::startup::mark("configuration");
    let guard = shutdown.clone();
    let _starting = guard.starting();
    runtime::raise_open_files_limit(config.server.connections.max());
    // Filters load before the port opens: until they have, nothing could
    // answer on it.
    let filters = Arc::new(
        FilterHost::load(&config.filters, config.filter_limits).map_err(StartError::Filters)?,
    );
    crate::startup::mark("filters");
    {
        let filters = filters.clone();
        shutdown.on_hangup(move || {
            if filters.is_empty() {
                tracing::info!("SIGHUP: no filter configured, nothing to reload");
                return;
            }
            // The outcome is logged by the reload itself.
            match filters.reload_in_background() {
                Ok(Some(_)) => tracing::info!("SIGHUP: reloading the filters"),
                Ok(None) => tracing::info!("SIGHUP: a filter reload is already running"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: cannot start a reload"),
            }
        });
    }
    // Names resolve here, at start, never while arguments are parsed.
    let listen = config.listen.resolve().map_err(StartError::Resolve)?;
    // The engine's name is looked up on a thread of its own, never on a
    // worker; the first answer is awaited here, on the starting thread.
    let resolver =
        Resolver::start(&config.endpoint.hostname, config.endpoint.port).map_err(|source| {
            StartError::Threads {
                what: "engine-dns",
                source,
            }
        })?;
    if let Err(e) = resolver.wait_first(FIRST_LOOKUP_PATIENCE) {
        tracing::warn!(
            url = %config.endpoint.base_url,
            error = %e,
            "the engine host does not resolve yet; it is looked up again every {}s, and scrapes answer 502 until it resolves",
            crate::upstream::RESOLVE_TTL.as_secs()
        );
    }
    let resolver = Arc::new(resolver);
    crate::startup::mark("engine_name");
    let cores = runtime::available_cores();
    if config.workers > cores {
        tracing::warn!(
            workers = config.workers,
            cores,
            "more workers than the cores this container may use (CPU affinity and cpu.max quota); they take turns on them"
        );
    }
    let listeners = runtime::bind(listen, config.workers).map_err(|source| StartError::Listen {
        addr: listen,
        source,
    })?;
    let addr = listeners[0]
        .local_addr()
        .map_err(|source| StartError::Listen {
            addr: listen,
            source,
        })?;
    crate::startup::mark("listeners");
    let jobs = Arc::new(Jobs::new(
        config.max_concurrent_jobs,
        config.max_queued_jobs,
    ));
    {
        // Running downloads stop with the process; what they fetched is
        // kept and resumed by the next request for the same directory.
        let jobs = jobs.clone();
        shutdown.on_trigger(move || jobs.cancel_all());
    }
    let lora = Lora::new(
        config.engine,
        &config.endpoint.base_url,
        config.request_timeout,
        jobs.clone(),
    )
    .map_err(StartError::EngineUrl)?
    .with_retry_window(config.engine_retry_window);
    let lora = Arc::new(lora);
    let mut sections: Vec<Arc<dyn MetricsSection>> = vec![
        config.server.connections.clone(),
        config.server.panics.clone(),
        jobs.clone(),
        lora.clone(),
        filters.clone(),
    ];
    crate::startup::mark("jobs_and_lora");
    let presence = Arc::new(EnginePresence::default());
    let kv_events = match config.kv_events.clone() {
        Some(kv) => {
            let bridge = KvEvents::start(kv, shutdown.clone(), &resolver, presence.clone())
                .map_err(StartError::KvEvents)?;
            sections.push(bridge.stats());
            Some(bridge)
        }
        None => {
            tracing::info!("KV events: off");
            None
        }
    };
    crate::startup::mark("kv_bridge");
    let stats = Arc::new(Stats::new(config.workers, config.engine.as_str(), sections));
    let server_config = config.server.clone();
    let endpoint = config.endpoint.clone();
    let metrics_path = config.metrics_path.clone();
    let table =
        crate::prom::standard::with_prefix(config.engine.metric_table(), &config.metric_prefix);
    let access = Arc::new(config.access);
    let timeout = config.request_timeout;
    let worker_stats = stats.clone();
    let workers = runtime::start(
        "worker",
        config.io_driver,
        listeners,
        &shutdown.clone(),
        move |start| {
            let engine =
                EngineClient::new(endpoint.clone(), resolver.clone(), &metrics_path, timeout)
                    .reporting_to(presence.clone());
            let app = Rc::new(App::new(
                start.index,
                worker_stats.clone(),
                engine,
                lora.clone(),
                FilterChain::new(filters.clone()),
                access.clone(),
                table,
            ));
            server::serve(
                start.listener,
                app,
                Rc::new(server_config.clone()),
                shutdown.clone(),
            )
        },
    )
    .map_err(|source| StartError::Threads {
        what: "worker",
        source,
    })?;
    crate::startup::mark("workers");
    stats.set_drivers(workers.drivers().to_vec());
    report_drivers(config.io_driver, workers.drivers());
    let proxies = crate::net::outbound::proxies();
    if !proxies.is_direct() {
        tracing::info!("outbound proxies: {}", proxies.describe());
    }
    tracing::info!(
        engine = %config.engine,
        engine_url = %config.endpoint.base_url,
        workers = config.workers,
        startup_ms = ?crate::startup::summary(),
        "listening on http://{addr}"
    );
    Ok(Running {
        addr,
        workers,
        kv_events,
    })
}

/// Why the sidecar stopped other than by a signal.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// It could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A worker ended by a panic and took the process down with it.
    #[error(transparent)]
    WorkersPanicked(#[from] WorkersPanicked),
}

/// Runs until shutdown.
pub fn run(config: Config, shutdown: Arc<Shutdown>) -> Result<(), RunError> {
    start(config, shutdown)?.join()?;
    tracing::info!("stopped");
    Ok(())
}

/// Says which I/O driver is in use, loudly when io_uring was wanted.
pub fn report_drivers(choice: DriverChoice, drivers: &[IoDriver]) {
    let driver = drivers.first().copied().unwrap_or(IoDriver::Epoll);
    if choice == DriverChoice::Auto && driver == IoDriver::Epoll {
        tracing::warn!(
            "io_uring is unavailable here (blocked by seccomp, an old kernel or a low memlock limit); using epoll"
        );
    }
    tracing::info!(driver = driver.as_str(), "I/O driver");
}
