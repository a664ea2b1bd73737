//! The harness's floor: a proxy that forwards the engine's bytes as they
//! arrive, on the sidecar's own runtime, sockets, HTTP layer and engine
//! client, and does nothing else (no scan, no relabel, no compression
//! unless asked, no sidecar metrics). What the sidecar spends beyond it
//! is what relabeling and the rest cost; what it spends is the kernel's
//! copies in and out, which no user-space change removes.
//!
//! Run as the hidden `bench-forward` command, which the harness starts.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use matrixinfer_runtime::http::gzip::GzipEncoder;
use matrixinfer_runtime::http::server::{self, Service};
use matrixinfer_runtime::http::{Request, Responder, ServerConfig, StreamBuffers};
use matrixinfer_runtime::pipeline::CONTENT_TYPE;
use matrixinfer_runtime::runtime::{self, DriverChoice};
use matrixinfer_runtime::shutdown::Shutdown;
use matrixinfer_runtime::upstream::{EngineClient, EngineEndpoint, Resolver, Target};

/// Options of `bench-forward`.
#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// The engine's base URL.
    #[arg(long)]
    pub upstream: String,
    /// The engine's metrics path.
    #[arg(long, default_value = "/metrics")]
    pub metrics_path: String,
    /// Port to listen on, on 127.0.0.1 (0: any).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// I/O driver.
    #[arg(long, value_enum, default_value = "auto")]
    pub io_driver: DriverChoice,
}

/// Response bytes gathered before a write, as the sidecar does.
const FLUSH_AT: usize = 32 * 1024;

/// Forwards every request's answer from the engine's metrics path.
struct Forward {
    engine: EngineClient,
    /// Buffers between requests, one set per request in flight.
    idle: RefCell<Vec<Buffers>>,
}

/// Read buffer, response buffers and compression state.
type Buffers = (Vec<u8>, Vec<u8>, Vec<u8>, GzipEncoder);

impl Service for Forward {
    async fn call(&self, req: Request, res: &mut Responder<'_>) -> io::Result<()> {
        let mut buffers = self.idle.borrow_mut().pop().unwrap_or_default();
        let result = self.forward(&req, res, &mut buffers).await;
        self.idle.borrow_mut().push(buffers);
        result
    }
}

impl Forward {
    async fn forward(
        &self,
        req: &Request,
        res: &mut Responder<'_>,
        buffers: &mut Buffers,
    ) -> io::Result<()> {
        let (read, plain, wire, gzip) = buffers;
        let mut exchange = match self.engine.get(Target::Metrics, read).await {
            Ok(exchange) => exchange,
            Err(e) => return res.error(StatusCode::BAD_GATEWAY, &e.to_string()).await,
        };
        let gzip = req.accept_gzip.then_some(gzip);
        let buffers = StreamBuffers { plain, wire, gzip };
        let mut body = res.stream(StatusCode::OK, CONTENT_TYPE, buffers).await?;
        loop {
            match exchange
                .read(|data| body.buf().extend_from_slice(data))
                .await
            {
                Ok(true) if body.buf().len() >= FLUSH_AT => body.flush().await?,
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Err(io::Error::other(e.to_string())),
            }
        }
        drop(exchange);
        body.finish().await
    }
}

/// Runs the forwarding proxy until SIGTERM.
pub fn run(args: ForwardArgs, shutdown: Arc<Shutdown>) -> Result<(), super::BoxError> {
    let endpoint = EngineEndpoint::parse(&args.upstream)?;
    let resolver = Arc::new(Resolver::start(&endpoint.hostname, endpoint.port)?);
    resolver.wait_first(Duration::from_secs(10))?;
    let listeners = runtime::bind(([127, 0, 0, 1], args.port).into(), 1)?;
    let addr = listeners[0].local_addr()?;
    let workers = runtime::start("forward", args.io_driver, listeners, &shutdown, {
        let shutdown = shutdown.clone();
        move |start| {
            let engine = EngineClient::new(
                endpoint.clone(),
                resolver.clone(),
                &args.metrics_path,
                Duration::from_secs(10),
            );
            let forward = Forward {
                engine,
                idle: RefCell::new(Vec::new()),
            };
            server::serve(
                start.listener,
                Rc::new(forward),
                Rc::new(ServerConfig::default()),
                shutdown.clone(),
            )
        }
    })?;
    tracing::info!("listening on http://{addr}");
    workers.join()?;
    Ok(())
}
