//! A simulated inference engine: `/metrics` and `/health` as vLLM and
//! SGLang serve them.
//!
//! No real engine runs on a CI machine, so this stands in for one: the
//! quickstart's default upstream, and the upstream of the integration
//! tests and benchmarks. Its payloads are synthesized from the engines'
//! own metric inventories ([`payload`]) with values that move between
//! scrapes; it can also serve a fixed file, gzip like SGLang, use chunked
//! transfer encoding, and answer slowly.

pub mod lora;
pub mod payload;

use std::cell::RefCell;
use std::error::Error;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::config::{SimulateArgs, resolve_listen};
use crate::http::gzip::GzipEncoder;
use crate::http::{Request, Responder, ServerConfig, Service, StreamBuffers, server};
use crate::pipeline::CONTENT_TYPE;
use crate::runtime::{self, Workers};
use crate::shutdown::Shutdown;
use payload::{Flavor, Payload, PayloadSpec};

/// What the simulated engine serves.
#[derive(Clone, Debug)]
enum Source {
    Generated(PayloadSpec),
    File(Arc<[u8]>),
}

/// A running simulated engine.
#[derive(Debug)]
pub struct Running {
    /// Its address.
    pub addr: SocketAddr,
    /// The shape it serves, when generated.
    pub flavor: Option<Flavor>,
    workers: Workers,
}

impl Running {
    /// Blocks until it stops.
    pub fn join(self) {
        self.workers.join();
    }
}

/// Starts the simulated engine; it stops when `shutdown` is triggered.
pub fn start(
    args: &SimulateArgs,
    shutdown: Arc<Shutdown>,
) -> Result<Running, Box<dyn Error + Send + Sync>> {
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
    let workers = runtime::start("engine", args.io_driver, listeners, move |start| {
        let engine = Rc::new(SimEngine::new(&source, options, lora.clone(), start.index));
        server::serve(
            start.listener,
            engine,
            Rc::new(ServerConfig::default()),
            shutdown.clone(),
        )
    })?;
    tracing::info!(
        flavor = flavor.name(),
        size = args.size,
        "simulated engine listening on http://{addr}"
    );
    Ok(Running {
        addr,
        flavor: generated.then_some(flavor),
        workers,
    })
}

/// Runs the simulated engine until shutdown.
pub fn run(
    args: SimulateArgs,
    shutdown: Arc<Shutdown>,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    start(&args, shutdown)?.join();
    Ok(())
}

#[derive(Clone, Copy, Debug)]
struct Options {
    gzip: bool,
    chunked: bool,
    delay: Duration,
    lora_delay: Duration,
    render_cpu: Duration,
    sglang: bool,
}

/// One worker's simulated engine.
struct SimEngine {
    payload: Option<RefCell<Payload>>,
    file: Option<Arc<[u8]>>,
    options: Options,
    body: RefCell<Vec<u8>>,
    gzip: RefCell<Option<GzipEncoder>>,
    lora: Arc<lora::SimLora>,
}

impl SimEngine {
    fn new(
        source: &Source,
        options: Options,
        lora: Arc<lora::SimLora>,
        worker: usize,
    ) -> SimEngine {
        let (payload, file) = match source {
            Source::Generated(spec) => {
                let spec = PayloadSpec {
                    seed: spec.seed.wrapping_add(worker as u64),
                    ..spec.clone()
                };
                (Some(RefCell::new(Payload::new(spec))), None)
            }
            Source::File(bytes) => (None, Some(bytes.clone())),
        };
        SimEngine {
            payload,
            file,
            options,
            body: RefCell::default(),
            gzip: RefCell::default(),
            lora,
        }
    }

    async fn metrics(&self, req: &Request, res: &mut Responder<'_>) -> io::Result<()> {
        if !self.options.delay.is_zero() {
            monoio::time::sleep(self.options.delay).await;
        }
        // Taken out of the cells: other requests on this worker may run
        // while this one awaits its writes.
        let mut body = std::mem::take(&mut *self.body.borrow_mut());
        body.clear();
        let rendering = std::time::Instant::now();
        match (&self.payload, &self.file) {
            (Some(payload), _) => payload.borrow_mut().render(&mut body),
            (None, Some(file)) => body.extend_from_slice(file),
            (None, None) => {}
        }
        // A real engine renders with prometheus_client, in Python, holding
        // its thread: modelled as CPU burnt on this worker.
        while rendering.elapsed() < self.options.render_cpu {
            std::hint::spin_loop();
        }
        let mut gzip = self.gzip.borrow_mut().take().unwrap_or_default();
        let result = self.send(req, res, &body, &mut gzip).await;
        *self.gzip.borrow_mut() = Some(gzip);
        *self.body.borrow_mut() = body;
        result
    }

    async fn send(
        &self,
        req: &Request,
        res: &mut Responder<'_>,
        body: &[u8],
        gzip: &mut GzipEncoder,
    ) -> io::Result<()> {
        let compress = self.options.gzip && req.accept_gzip;
        if self.options.chunked {
            let (mut plain, mut wire) = (Vec::new(), Vec::new());
            let buffers = StreamBuffers {
                plain: &mut plain,
                wire: &mut wire,
                gzip: compress.then_some(gzip),
            };
            let mut stream = res.stream(StatusCode::OK, CONTENT_TYPE, buffers).await?;
            for piece in body.chunks(16 * 1024) {
                stream.buf().extend_from_slice(piece);
                stream.flush().await?;
            }
            return stream.finish().await;
        }
        if compress {
            gzip.reset();
            let mut compressed = Vec::with_capacity(body.len() / 4);
            gzip.encode(body, &mut compressed)?;
            gzip.finish(&mut compressed)?;
            let headers = [("content-type", CONTENT_TYPE), ("content-encoding", "gzip")];
            return res.send(StatusCode::OK, &headers, &compressed).await;
        }
        res.send(StatusCode::OK, &[("content-type", CONTENT_TYPE)], body)
            .await
    }
}

impl SimEngine {
    async fn lora(&self, req: &Request, res: &mut Responder<'_>) -> io::Result<()> {
        let _in_flight = self.lora.begin();
        if !self.options.lora_delay.is_zero() {
            monoio::time::sleep(self.options.lora_delay).await;
        }
        let (status, content_type, body) = match (self.options.sglang, req.path.as_str()) {
            (false, "/v1/load_lora_adapter") => self.lora.vllm_load(&req.body),
            (false, "/v1/unload_lora_adapter") => self.lora.vllm_unload(&req.body),
            (true, "/load_lora_adapter") => self.lora.sglang_load(&req.body),
            (true, "/unload_lora_adapter") => self.lora.sglang_unload(&req.body),
            _ => return res.error(StatusCode::NOT_FOUND, "Not Found").await,
        };
        res.send(status, &[("content-type", content_type)], &body)
            .await
    }
}

impl Service for SimEngine {
    async fn call(&self, req: Request, res: &mut Responder<'_>) -> io::Result<()> {
        match (req.path.as_str(), &req.method) {
            (path, &Method::POST) if path.ends_with("load_lora_adapter") => {
                self.lora(&req, res).await
            }
            ("/sim/lora", &Method::GET) => res.json(StatusCode::OK, &self.lora.report()).await,
            ("/metrics", &Method::GET) => self.metrics(&req, res).await,
            // vLLM and SGLang answer 200 with an empty body.
            ("/health", &Method::GET) => res.send(StatusCode::OK, &[], b"").await,
            ("/metrics" | "/health", _) => res.method_not_allowed("GET").await,
            _ => res.error(StatusCode::NOT_FOUND, "Not Found").await,
        }
    }
}
