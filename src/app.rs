//! The sidecar's HTTP service: its routes, and the state each worker keeps.
//!
//! This is the one place that knows the URL paths; each handler lives with
//! the concern it serves (the metrics path in [`crate::pipeline`]).

use std::io;
use std::sync::Arc;

use http::{Method, StatusCode};

use crate::access::{Access, Denied};
use crate::download::{self, jobs::Jobs};
use crate::errors;
use crate::filter::{FilterChain, FilterHost};
use crate::http::{Request, Responder, Service};
use crate::lora::{self, Lora};
use crate::pipeline::MetricsPath;
use crate::prom::standard::StandardName;
use crate::stats::Stats;
use crate::upstream::EngineClient;

/// One worker's instance of the sidecar.
#[derive(Debug)]
pub struct App {
    /// This worker's metrics path (its engine client and filter
    /// instances).
    pub metrics: MetricsPath,
    /// Downloads of the whole process.
    pub jobs: Arc<Jobs>,
    /// LoRA adapters of the whole process.
    pub lora: Arc<Lora>,
    /// The filters of the process (for reloads).
    pub filter_host: Arc<FilterHost>,
    /// The API token and the directories writes are confined to.
    pub access: Arc<Access>,
}

impl App {
    /// Worker `worker`'s instance.
    pub fn new(
        worker: usize,
        stats: Arc<Stats>,
        engine: EngineClient,
        lora: Arc<Lora>,
        filters: FilterChain,
        access: Arc<Access>,
        table: &'static [StandardName],
    ) -> App {
        App {
            jobs: lora.jobs().clone(),
            lora,
            filter_host: filters.host().clone(),
            metrics: MetricsPath::new(worker, stats, engine, filters, table),
            access,
        }
    }

    /// Compiles the configured filters again, off the worker, and swaps
    /// them in; 422 (the running set stays) when one fails to load, 409
    /// while another reload runs.
    async fn reload_filters(&self, res: &mut Responder<'_>) -> io::Result<()> {
        let outcome = match self.filter_host.reload_in_background() {
            Ok(Some(outcome)) => outcome,
            Ok(None) => {
                let body = serde_json::json!({
                    "detail": "A filter reload is in progress; try again when it ends"
                })
                .to_string();
                let headers = [("content-type", "application/json"), ("retry-after", "1")];
                return res
                    .send(StatusCode::CONFLICT, &headers, body.as_bytes())
                    .await;
            }
            Err(e) => {
                let detail = format!("Cannot reload the filters: {e}");
                return res.error(StatusCode::SERVICE_UNAVAILABLE, &detail).await;
            }
        };
        match outcome.recv_async().await {
            Ok(Ok(names)) => {
                let names: Vec<&str> = names.iter().map(|n| &**n).collect();
                let body = serde_json::json!({ "status": "reloaded", "filters": names });
                res.json(StatusCode::OK, &body).await
            }
            Ok(Err(e)) => {
                let detail = format!("Filter reload failed; the running filters stay: {e}");
                res.error(StatusCode::UNPROCESSABLE_ENTITY, &detail).await
            }
            Err(_) => {
                let detail = "Filter reload failed: the reload thread stopped";
                res.error(StatusCode::INTERNAL_SERVER_ERROR, detail).await
            }
        }
    }

    async fn ready(&self, res: &mut Responder<'_>) -> io::Result<()> {
        let mut buf = Vec::new();
        match self.metrics.engine.check_health(&mut buf).await {
            Ok(()) => {
                res.json(StatusCode::OK, &serde_json::json!({ "status": "ready" }))
                    .await
            }
            Err(e) => {
                let detail = format!("Engine not ready: {}", errors::chain(&e));
                res.error(StatusCode::SERVICE_UNAVAILABLE, &detail).await
            }
        }
    }
}

impl Service for App {
    async fn call(&self, req: Request, res: &mut Responder<'_>) -> io::Result<()> {
        match (req.path.as_str(), &req.method) {
            ("/health", &Method::GET) => {
                let body = serde_json::json!({ "status": "healthy", "service": "runtime" });
                res.json(StatusCode::OK, &body).await
            }
            ("/ready", &Method::GET) => self.ready(res).await,
            ("/metrics", &Method::GET) => self.metrics.serve(&req, res).await,
            ("/v1/download_model", &Method::POST) => {
                if let Err(denied) = self.access.authorize(&req) {
                    return refuse(res, denied).await;
                }
                download::api::download_model(&self.jobs, &self.access, &req, res).await
            }
            ("/v1/downloads", &Method::GET) => download::api::list(&self.jobs, res).await,
            (path, &Method::GET) if path.starts_with("/v1/downloads/") => {
                download::api::status(&self.jobs, &path["/v1/downloads/".len()..], res).await
            }
            ("/health" | "/ready" | "/metrics" | "/v1/downloads", _) => {
                res.method_not_allowed("GET").await
            }
            ("/v1/load_lora_adapter", &Method::POST) => {
                if let Err(denied) = self.access.authorize(&req) {
                    return refuse(res, denied).await;
                }
                lora::handle_load(&self.lora, &self.access, &req, res).await
            }
            ("/v1/unload_lora_adapter", &Method::POST) => {
                if let Err(denied) = self.access.authorize(&req) {
                    return refuse(res, denied).await;
                }
                lora::handle_unload(&self.lora, &req, res).await
            }
            ("/v1/filters/reload", &Method::POST) => {
                if let Err(denied) = self.access.authorize(&req) {
                    return refuse(res, denied).await;
                }
                self.reload_filters(res).await
            }
            (
                "/v1/download_model"
                | "/v1/load_lora_adapter"
                | "/v1/unload_lora_adapter"
                | "/v1/filters/reload",
                _,
            ) => res.method_not_allowed("POST").await,
            (path, _) if path.starts_with("/v1/downloads/") => res.method_not_allowed("GET").await,
            _ => res.error(StatusCode::NOT_FOUND, "Not Found").await,
        }
    }
}

/// Answers a refused request: 401 asks for the token, per RFC 6750.
async fn refuse(res: &mut Responder<'_>, denied: Denied) -> io::Result<()> {
    let body = serde_json::json!({ "detail": denied.detail }).to_string();
    let mut headers = vec![("content-type", "application/json")];
    if denied.status == StatusCode::UNAUTHORIZED {
        headers.push(("www-authenticate", "Bearer"));
    }
    res.send(denied.status, &headers, body.as_bytes()).await
}
