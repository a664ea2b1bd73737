//! `GET /metrics`, the whole path in one function: read this first.
//!
//! [1] the engine client sends the GET and yields the body as it arrives
//! (chunked framing removed, gzip inflated); [2] the scanner cuts it into
//! lines and [3] the relabeler writes every line, and at the end the
//! standardized copies, through [4] the filter stage's routes, which send
//! the families a WASM filter selects to it and the rest on to [5] the
//! response, streamed out chunked, gzipped when the client asked. At the
//! end the filters run over what they were sent, and the sidecar's own
//! metrics follow.
//! Nothing holds the whole payload: memory per scrape is a few buffers
//! (but under `--filter-on-error fail`, where the response is held until
//! the filters have run, so that a failure can still be a 502), and a
//! worker runs at most [`MAX_SCRAPES`] scrapes at once: the rest wait for
//! one to end, so memory stays bounded however many clients scrape at once.

use std::cell::{Cell, RefCell};
use std::io;
use std::sync::Arc;
use std::time::Instant;

use event_listener::Event;
use http::StatusCode;

use crate::errors;
use crate::filter::{FilterChain, OnError, Routes};
use crate::http::gzip::GzipEncoder;
use crate::http::{Request, Responder, StreamBuffers};
use crate::prom::Relabeler;
use crate::prom::standard::StandardName;
use crate::stats::{ScrapeOutcome, Stats, WorkerStats};
use crate::upstream::{EngineClient, Target, UpstreamError};

/// The content type of the classic text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Response bytes gathered before a write to the client.
const FLUSH_AT: usize = 32 * 1024;
/// Scrapes a worker runs at once. A scrape is CPU work on the worker's
/// one thread, so more at once add memory (a scratch set and a deflate
/// state each, up to a few MB for a 1 MB payload), not speed.
pub const MAX_SCRAPES: usize = 4;
/// Scratch sets kept per worker between scrapes: one per scrape that may
/// run at once.
const MAX_IDLE_SCRATCH: usize = MAX_SCRAPES;

/// One worker's metrics path: its engine client, filter instances and the
/// buffers scrapes reuse.
#[derive(Debug)]
pub struct MetricsPath {
    /// This worker's engine client.
    pub engine: EngineClient,
    /// This worker's filter instances.
    pub filters: RefCell<FilterChain>,
    stats: Arc<Stats>,
    worker: usize,
    table: &'static [StandardName],
    scratch: RefCell<Vec<Scratch>>,
    /// Scrapes running on this worker, and what wakes one waiting for a
    /// turn.
    running: Cell<usize>,
    turn: Event,
}

/// Buffers and state one scrape works in, reused by the next.
#[derive(Debug)]
struct Scratch {
    /// Socket reads from the engine.
    read: Vec<u8>,
    /// Response body before compression.
    plain: Vec<u8>,
    /// Compressed response body.
    wire: Vec<u8>,
    /// Compression state, created on first use.
    gzip: Option<GzipEncoder>,
    /// Relabeling state.
    relabeler: Relabeler,
    /// Where each family goes: the filter stage's state.
    routes: Routes,
}

impl MetricsPath {
    /// Worker `worker`'s metrics path.
    pub fn new(
        worker: usize,
        stats: Arc<Stats>,
        engine: EngineClient,
        filters: FilterChain,
        table: &'static [StandardName],
    ) -> MetricsPath {
        MetricsPath {
            engine,
            filters: RefCell::new(filters),
            stats,
            worker,
            table,
            scratch: RefCell::new(Vec::new()),
            running: Cell::new(0),
            turn: Event::new(),
        }
    }

    fn worker_stats(&self) -> &WorkerStats {
        self.stats.worker(self.worker)
    }

    fn take_scratch(&self) -> Scratch {
        self.scratch.borrow_mut().pop().unwrap_or_else(|| Scratch {
            read: Vec::new(),
            plain: Vec::new(),
            wire: Vec::new(),
            gzip: None,
            relabeler: Relabeler::new(self.table),
            routes: Routes::default(),
        })
    }

    fn put_scratch(&self, scratch: Scratch) {
        let mut pool = self.scratch.borrow_mut();
        if pool.len() < MAX_IDLE_SCRATCH {
            pool.push(scratch);
        }
    }

    /// Waits until fewer than [`MAX_SCRAPES`] scrapes run here.
    async fn turn(&self) -> Turn<'_> {
        loop {
            if self.running.get() < MAX_SCRAPES {
                self.running.set(self.running.get() + 1);
                return Turn(self);
            }
            let listener = self.turn.listen();
            // One worker thread: nothing ends a scrape between the check
            // and `listen`, but a wake-up may have been given to a waiter
            // that has since gone (its client closed); look again.
            if self.running.get() < MAX_SCRAPES {
                continue;
            }
            listener.await;
        }
    }

    /// Serves one scrape.
    pub async fn serve(&self, req: &Request, res: &mut Responder<'_>) -> io::Result<()> {
        let _turn = self.turn().await;
        let started = Instant::now();
        let mut scratch = self.take_scratch();
        let (outcome, result) = scrape(self, req, res, &mut scratch).await;
        self.worker_stats()
            .copies_dropped(scratch.relabeler.dropped_copies());
        self.put_scratch(scratch);
        self.worker_stats().scrape(outcome, started.elapsed());
        result
    }
}

/// A running scrape's place; the next waiting scrape gets it on drop.
struct Turn<'a>(&'a MetricsPath);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.running.set(self.0.running.get() - 1);
        self.0.turn.notify_additional(1);
    }
}

async fn scrape(
    path: &MetricsPath,
    req: &Request,
    res: &mut Responder<'_>,
    scratch: &mut Scratch,
) -> (ScrapeOutcome, io::Result<()>) {
    let stats = path.worker_stats();
    let Scratch {
        read,
        plain,
        wire,
        gzip,
        relabeler,
        routes,
    } = scratch;

    // [1] The engine's answer, up to its head.
    let exchange = match path.engine.get(Target::Metrics, read).await {
        Ok(exchange) if exchange.is_success() => Ok(exchange),
        Ok(exchange) => Err(exchange.into_status_error().await),
        Err(e) => Err(e),
    };
    let mut exchange = match exchange {
        Ok(exchange) => exchange,
        Err(e) => {
            return (
                ScrapeOutcome::EngineError,
                engine_failed(path, res, e).await,
            );
        }
    };

    // [5] Our answer's head: the engine is there, so it is a 200 (sent
    // with the first body bytes; until then an engine failure can still
    // become a 502).
    let gzip = match req.accept_gzip {
        true => Some(gzip.get_or_insert_with(Default::default)),
        false => None,
    };
    let buffers = StreamBuffers { plain, wire, gzip };
    let mut body = match res.stream(StatusCode::OK, CONTENT_TYPE, buffers).await {
        Ok(body) => body,
        Err(e) => return (ScrapeOutcome::ClientGone, Err(e)),
    };

    // [4] The filter set this scrape uses throughout: the routes divert
    // the families its filters select. Under `--filter-on-error fail` the
    // response is held until they have run.
    let hold = {
        let filters = path.filters.borrow();
        let set = (!filters.is_empty()).then(|| filters.begin());
        routes.begin(set);
        routes.set().is_some() && filters.host().limits.on_error == OnError::Fail
    };

    // [2] + [3] Lines through the relabeler as they arrive, [4] routed,
    // [5] out.
    relabeler.reset();
    loop {
        match exchange
            .read(|data| relabeler.feed(data, &mut routes.sink(body.buf())))
            .await
        {
            Ok(true) if !hold && body.buf().len() >= FLUSH_AT => {
                if let Err(e) = body.flush().await {
                    return (ScrapeOutcome::ClientGone, Err(e));
                }
            }
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                stats.upstream_bytes(exchange.wire_bytes());
                // Nothing sent yet (the head waits for the first body
                // bytes): the scraper gets a proper 502 or 504.
                let Some(res) = body.abandon() else {
                    // Too late for that: the body stops short and the
                    // connection closes, so the scraper sees a failed
                    // scrape rather than a complete-looking partial one.
                    stats.upstream_error(e.reason());
                    tracing::warn!(error = %errors::chain(&e), "engine metrics body failed midway; response aborted");
                    return (ScrapeOutcome::Aborted, Ok(()));
                };
                return (
                    ScrapeOutcome::EngineError,
                    engine_failed(path, res, e).await,
                );
            }
        }
    }
    stats.upstream_bytes(exchange.wire_bytes());
    drop(exchange);
    relabeler.finish_body(&mut routes.sink(body.buf()));
    // [4] The families the filters selected, through them.
    if routes.set().is_some() {
        let ran = path.filters.borrow_mut().run(routes, body.buf());
        if let Err(failed) = ran {
            let detail = format!("Scrape refused by --filter-on-error fail: {failed}");
            let Some(res) = body.abandon() else {
                tracing::warn!("{detail}; response aborted");
                return (ScrapeOutcome::FilterFailed, Ok(()));
            };
            return (
                ScrapeOutcome::FilterFailed,
                res.error(StatusCode::BAD_GATEWAY, &detail).await,
            );
        }
    }
    path.stats.render(body.buf());
    relabeler.close(body.buf());
    match body.finish().await {
        Ok(()) => (ScrapeOutcome::Ok, Ok(())),
        Err(e) => (ScrapeOutcome::ClientGone, Err(e)),
    }
}

/// 502 when the engine fails, 504 when it is too slow.
async fn engine_failed(
    path: &MetricsPath,
    res: &mut Responder<'_>,
    error: UpstreamError,
) -> io::Result<()> {
    path.worker_stats().upstream_error(error.reason());
    let detail = format!(
        "Failed to fetch metrics from engine: {}",
        errors::chain(&error)
    );
    tracing::warn!("{detail}");
    let status = if error.is_timeout() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::BAD_GATEWAY
    };
    res.error(status, &detail).await
}
