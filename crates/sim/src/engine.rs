//! The routes of the simulated engine and what each answers: `/metrics`
//! (generated or from a file; gzip, chunked, slow, CPU-bound on request),
//! `/health`, the LoRA endpoints of the flavor's engine, `/sim/lora`.

use std::cell::RefCell;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, FlushCompress};
use http::{Method, StatusCode};

use crate::lora::SimLora;
use crate::payload::{Payload, PayloadSpec};
use crate::serve::request::Request;
use crate::serve::response::{Responder, deflate};

/// The content type of `/metrics`, as `prometheus_client` serves it.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the simulated engine serves.
#[derive(Clone, Debug)]
pub(crate) enum Source {
    /// A payload synthesized per scrape.
    Generated(PayloadSpec),
    /// A file's bytes, the same every time.
    File(Arc<[u8]>),
}

/// How the engine answers, beyond what it serves.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    /// Gzip `/metrics` for clients that accept it.
    pub gzip: bool,
    /// Send `/metrics` chunked.
    pub chunked: bool,
    /// Wait before answering `/metrics`.
    pub delay: Duration,
    /// Wait before answering a LoRA call.
    pub lora_delay: Duration,
    /// CPU to burn rendering `/metrics`.
    pub render_cpu: Duration,
    /// SGLang's LoRA endpoints instead of vLLM's.
    pub sglang: bool,
}

/// One worker's simulated engine.
pub(crate) struct SimEngine {
    payload: Option<RefCell<Payload>>,
    file: Option<Arc<[u8]>>,
    options: Options,
    /// The rendered body, reused across scrapes.
    body: RefCell<Vec<u8>>,
    /// The compressed body, reused across scrapes.
    packed: RefCell<Vec<u8>>,
    /// Deflate state (a few hundred kilobytes), reused across scrapes.
    gzip: RefCell<Option<Compress>>,
    lora: Arc<SimLora>,
}

impl SimEngine {
    /// Worker `worker`'s engine: a generated payload gets its own seed per
    /// worker, so that workers' values differ as separate processes' would.
    pub(crate) fn new(
        source: &Source,
        options: Options,
        lora: Arc<SimLora>,
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
            packed: RefCell::default(),
            gzip: RefCell::default(),
            lora,
        }
    }

    /// Answers one request.
    pub(crate) async fn call(&self, req: &Request, res: &mut Responder<'_>) -> io::Result<()> {
        match (req.path.as_str(), &req.method) {
            (path, &Method::POST) if path.ends_with("load_lora_adapter") => {
                self.lora(req, res).await
            }
            ("/sim/lora", &Method::GET) => res.json(StatusCode::OK, &self.lora.report()).await,
            ("/metrics", &Method::GET) => self.metrics(req, res).await,
            // vLLM and SGLang answer 200 with an empty body.
            ("/health", &Method::GET) => res.send(StatusCode::OK, &[], b"").await,
            ("/metrics" | "/health", _) => res.method_not_allowed("GET").await,
            _ => res.error(StatusCode::NOT_FOUND, "Not Found").await,
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
        let rendering = Instant::now();
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
        let mut gzip = self
            .gzip
            .borrow_mut()
            .take()
            // Level 1, as the sidecar's: cheap, and text still shrinks tenfold.
            .unwrap_or_else(|| Compress::new_gzip(Compression::fast(), 15));
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
        gzip: &mut Compress,
    ) -> io::Result<()> {
        let compress = self.options.gzip && req.accept_gzip;
        if self.options.chunked {
            let gzip = compress.then_some(gzip);
            return res
                .send_chunked(StatusCode::OK, CONTENT_TYPE, body, gzip)
                .await;
        }
        if compress {
            let mut packed = std::mem::take(&mut *self.packed.borrow_mut());
            packed.clear();
            gzip.reset();
            deflate(gzip, body, &mut packed, FlushCompress::Finish)?;
            let headers = [("content-type", CONTENT_TYPE), ("content-encoding", "gzip")];
            let result = res.send(StatusCode::OK, &headers, &packed).await;
            *self.packed.borrow_mut() = packed;
            return result;
        }
        res.send(StatusCode::OK, &[("content-type", CONTENT_TYPE)], body)
            .await
    }

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
