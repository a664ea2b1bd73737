//! `GET /metrics`, the whole path in one function: read this first.
//!
//! [1] the engine client sends the GET and yields the body as it arrives
//! (chunked framing removed, gzip inflated); [2] the scanner cuts it into
//! lines and [3] the relabeler writes every line through (but the families
//! a WASM filter selects) and collects the standardized copies; [5] the
//! response streams out chunked, gzipped when the client asked. At the end
//! come the standardized families, [4] the filters' output, the sidecar's
//! own metrics.
//! Nothing holds the whole payload: memory per scrape is a few buffers
//! (but under `--filter-on-error fail`, where the response is held until
//! the filters have run, so that a failure can still be a 502).

use std::io;
use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;

use crate::app::{App, Scratch};
use crate::errors;
use crate::filter::OnError;
use crate::http::{Request, Responder, StreamBuffers};
use crate::prom::relabel::Router;
use crate::stats::ScrapeOutcome;
use crate::upstream::{Target, UpstreamError};

/// The content type of the classic text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Response bytes gathered before a write to the client.
const FLUSH_AT: usize = 32 * 1024;

/// Serves one scrape.
pub async fn serve_metrics(app: &App, req: &Request, res: &mut Responder<'_>) -> io::Result<()> {
    let started = Instant::now();
    let mut scratch = app.take_scratch();
    let (outcome, result) = scrape(app, req, res, &mut scratch).await;
    app.worker_stats()
        .copies_dropped(scratch.relabeler.dropped_copies());
    app.put_scratch(scratch);
    app.worker_stats().scrape(outcome, started.elapsed());
    result
}

async fn scrape(
    app: &App,
    req: &Request,
    res: &mut Responder<'_>,
    scratch: &mut Scratch,
) -> (ScrapeOutcome, io::Result<()>) {
    let stats = app.worker_stats();
    let Scratch {
        read,
        plain,
        wire,
        gzip,
        relabeler,
    } = scratch;

    // [1] The engine's answer, up to its head.
    let exchange = match app.engine.get(Target::Metrics, read).await {
        Ok(exchange) if exchange.is_success() => Ok(exchange),
        Ok(exchange) => Err(exchange.into_status_error().await),
        Err(e) => Err(e),
    };
    let mut exchange = match exchange {
        Ok(exchange) => exchange,
        Err(e) => return (ScrapeOutcome::EngineError, engine_failed(app, res, e).await),
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

    // [4] The filter set this scrape uses throughout, and the families
    // the relabeler diverts to it.
    let filter_set = {
        let filters = app.filters.borrow();
        (!filters.is_empty()).then(|| filters.begin())
    };
    relabeler.set_router(filter_set.clone().map(|set| set as Arc<dyn Router>));
    let hold = filter_set.is_some() && app.filter_host.limits.on_error == OnError::Fail;

    // [2] + [3] Lines through the relabeler as they arrive, [5] out.
    relabeler.reset();
    loop {
        match exchange.read(|data| relabeler.feed(data, body.buf())).await {
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
                return (ScrapeOutcome::EngineError, engine_failed(app, res, e).await);
            }
        }
    }
    stats.upstream_bytes(exchange.wire_bytes());
    drop(exchange);
    relabeler.finish_body(body.buf());
    // [4] The families the filters selected, through them.
    if let Some(set) = &filter_set {
        let ran = app.filters.borrow_mut().run(set, relabeler, body.buf());
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
    app.stats.render(body.buf());
    relabeler.close(body.buf());
    match body.finish().await {
        Ok(()) => (ScrapeOutcome::Ok, Ok(())),
        Err(e) => (ScrapeOutcome::ClientGone, Err(e)),
    }
}

/// 502 when the engine fails, 504 when it is too slow.
async fn engine_failed(app: &App, res: &mut Responder<'_>, error: UpstreamError) -> io::Result<()> {
    app.worker_stats().upstream_error(error.reason());
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
