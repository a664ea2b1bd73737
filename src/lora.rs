//! LoRA adapters: download one and load it into the engine; unload it.
//!
//! A load is a model download (the same request fields, the same
//! downloader) followed by the engine's load call with `lora_path` =
//! `output_dir`: vLLM `POST /v1/load_lora_adapter`, SGLang
//! `POST /load_lora_adapter`. Answers map as the Python sidecar's clients
//! expect: an engine status ≥ 400 comes back as that status with
//! `{"detail": "HTTP <code>: <engine body>"}`; success passes the engine's
//! status and JSON body through (text wrapped as `{"message": text}`).
//!
//! Operations on one adapter name never interleave (a per-name lock held
//! through download and load, or through unload); different names run in
//! parallel. Everything here blocks and runs on threads of its own; the
//! HTTP workers await the answer on a channel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::download::jobs::{Job, Jobs, Kind, State};
use crate::download::request::{DownloadRequest, Environment, RequestError};
use crate::engine::Engine;
use crate::errors;
use crate::net::{HttpClient, RetryPolicy, Url, UrlError};
use crate::offload::Busy;
use crate::prom::expo;
use crate::stats::{Histogram, MetricsSection};

/// Longest adapter name.
pub const MAX_NAME: usize = 128;
/// How long connection failures to the engine are retried (it may still
/// be starting).
pub const ENGINE_RETRY_WINDOW: Duration = Duration::from_secs(30);
/// How an engine that refuses connections (still starting) is retried
/// within the window.
const ENGINE_RETRY: RetryPolicy = RetryPolicy {
    attempts: u32::MAX,
    base: Duration::from_millis(100),
    cap: Duration::from_secs(2),
};

/// An answer for the HTTP caller.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: Value,
}

impl Answer {
    fn detail(status: StatusCode, detail: String) -> Answer {
        Answer {
            status,
            body: json!({ "detail": detail }),
        }
    }
}

/// Checks an adapter name: letters, digits, `-`, `_`, `.`, at most 128
/// characters, and nothing that could name a path (`..`, `/`).
pub fn check_name(fields: &Map<String, Value>) -> Result<String, RequestError> {
    let name = match fields.get("lora_name") {
        None | Some(Value::Null) => return Err(RequestError::Missing("lora_name")),
        Some(Value::String(s)) if s.is_empty() => return Err(RequestError::Missing("lora_name")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(RequestError::Invalid("lora_name must be a string".into())),
    };
    let allowed = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !allowed || name.len() > MAX_NAME || name.contains("..") || name == "." {
        return Err(RequestError::Invalid(format!(
            "lora_name must be 1 to {MAX_NAME} letters, digits, '-', '_' or '.', without '..'"
        )));
    }
    Ok(name)
}

/// A checked load request.
#[derive(Clone, Debug)]
pub struct LoadRequest {
    /// The adapter's name.
    pub lora_name: String,
    /// Its download (`output_dir` is the `lora_path` given to the engine).
    pub download: DownloadRequest,
}

impl LoadRequest {
    /// Parses a `POST /v1/load_lora_adapter` body.
    pub fn from_json(body: &[u8], env: &dyn Environment) -> Result<LoadRequest, RequestError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| RequestError::Body(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(RequestError::Body("not an object".into()));
        };
        let lora_name = check_name(&fields)?;
        let download = DownloadRequest::from_fields(&fields, env)?;
        Ok(LoadRequest {
            lora_name,
            download,
        })
    }
}

/// Load and unload counters.
#[derive(Debug)]
struct LoraStats {
    /// `[operation][outcome]`.
    outcomes: [[AtomicU64; 5]; 2],
    /// By operation.
    latency: [Histogram; 2],
}

impl Default for LoraStats {
    fn default() -> Self {
        LoraStats {
            outcomes: Default::default(),
            latency: [0; 2].map(|_| Histogram::new(&LATENCY_BUCKETS)),
        }
    }
}

const OPERATIONS: [&str; 2] = ["load", "unload"];
const OUTCOMES: [&str; 5] = [
    "ok",
    "engine_error",
    "download_error",
    "unreachable",
    "bad_request",
];
const LATENCY_BUCKETS: [f64; 11] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

#[derive(Clone, Copy)]
enum Operation {
    Load = 0,
    Unload = 1,
}

#[derive(Clone, Copy)]
enum Outcome {
    Ok = 0,
    EngineError = 1,
    DownloadError = 2,
    Unreachable = 3,
    BadRequest = 4,
}

impl LoraStats {
    fn record(&self, operation: Operation, outcome: Outcome, took: Duration) {
        let op = operation as usize;
        self.outcomes[op][outcome as usize].fetch_add(1, Relaxed);
        self.latency[op].observe(took);
    }
}

/// The LoRA side of the sidecar: engine address, per-name locks, where
/// each adapter was put.
#[derive(Debug)]
pub struct Lora {
    engine: Engine,
    base: Url,
    client: HttpClient,
    jobs: Arc<Jobs>,
    retry_window: Duration,
    names: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    dirs: Mutex<HashMap<String, PathBuf>>,
    stats: LoraStats,
}

impl Lora {
    /// LoRA operations against the engine at `base_url`, each engine call
    /// bounded by `timeout`.
    pub fn new(
        engine: Engine,
        base_url: &str,
        timeout: Duration,
        jobs: Arc<Jobs>,
    ) -> Result<Lora, UrlError> {
        Ok(Lora {
            engine,
            base: Url::parse(base_url)?,
            client: HttpClient::new(timeout),
            jobs,
            retry_window: ENGINE_RETRY_WINDOW,
            names: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            stats: LoraStats::default(),
        })
    }

    /// Sets how long connection failures are retried.
    pub fn with_retry_window(mut self, window: Duration) -> Lora {
        self.retry_window = window;
        self
    }

    /// The downloads this LoRA side runs its loads with.
    pub fn jobs(&self) -> &Arc<Jobs> {
        &self.jobs
    }

    /// Counts a request refused before any work.
    pub fn count_bad_request(&self, unload: bool) {
        let operation = if unload {
            Operation::Unload
        } else {
            Operation::Load
        };
        self.stats
            .record(operation, Outcome::BadRequest, Duration::ZERO);
    }

    /// Counts a load whose download was refused before it started.
    pub fn count_download_refused(&self) {
        self.stats
            .record(Operation::Load, Outcome::DownloadError, Duration::ZERO);
    }

    /// Downloads and loads, on the calling thread, reporting through
    /// `job`; returns the caller's answer.
    pub fn load(&self, job: &Job, lora_name: &str) -> Answer {
        let started = Instant::now();
        let lock = self.name_lock(lora_name);
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (outcome, answer) = match self.jobs.run(job, true) {
            Err(e) => {
                let detail = format!("LoRA adapter download failed: {}", errors::chain(&e));
                (Outcome::DownloadError, Answer::detail(e.status(), detail))
            }
            Ok(()) => {
                let output_dir = job.request.output_dir.display().to_string();
                let body = json!({ "lora_name": lora_name, "lora_path": output_dir });
                let (outcome, answer) = self.call(self.engine.lora_load_path(), &body, "load");
                if matches!(outcome, Outcome::Ok) {
                    self.dirs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(lora_name.to_owned(), job.request.output_dir.clone());
                }
                (outcome, answer)
            }
        };
        job.set_result(json!({ "status": answer.status.as_u16(), "body": answer.body }));
        if job.state() == State::Running {
            match outcome {
                Outcome::Ok => job.finish(State::Completed),
                _ => job.finish(State::Failed(describe(&answer))),
            }
        }
        self.stats
            .record(Operation::Load, outcome, started.elapsed());
        answer
    }

    /// Unloads `lora_name`, forwarding `body`; with `cleanup`, then
    /// removes the directory this process loaded it from.
    pub fn unload(&self, lora_name: &str, body: Map<String, Value>, cleanup: bool) -> Answer {
        let started = Instant::now();
        let lock = self.name_lock(lora_name);
        // A load of this name may be downloading for minutes: say so now
        // rather than hold the caller until it ends.
        let _held = match lock.try_lock() {
            Ok(held) => held,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                self.stats
                    .record(Operation::Unload, Outcome::BadRequest, started.elapsed());
                return Answer::detail(
                    StatusCode::CONFLICT,
                    format!(
                        "LoRA adapter '{lora_name}' is being loaded or unloaded; try again when that ends (GET /v1/downloads shows loads in progress)"
                    ),
                );
            }
        };
        let (outcome, mut answer) = self.call(
            self.engine.lora_unload_path(),
            &Value::Object(body),
            "unload",
        );
        if matches!(outcome, Outcome::Ok) {
            let dir = self
                .dirs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(lora_name);
            if cleanup {
                let note = match dir {
                    Some(dir) => remove_adapter_dir(&dir),
                    None => format!(
                        "nothing removed: no directory is known for '{lora_name}' in this process"
                    ),
                };
                if let Some(object) = answer.body.as_object_mut() {
                    object.insert("cleanup".into(), Value::String(note));
                }
            }
        }
        self.stats
            .record(Operation::Unload, outcome, started.elapsed());
        answer
    }

    fn name_lock(&self, name: &str) -> Arc<Mutex<()>> {
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// POSTs `body` to the engine, retrying connection failures for the
    /// retry window (never an answer, whatever its status).
    fn call(&self, path: &str, body: &Value, what: &str) -> (Outcome, Answer) {
        let mut url = self.base.clone();
        url.target = format!("{}{path}", self.base.target.trim_end_matches('/'));
        let shown = url.display_without_query();
        let payload = body.to_string();
        let headers = [("content-type".to_owned(), "application/json".to_owned())];
        let deadline = Instant::now() + self.retry_window;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let error = match self.client.send("POST", &url, &headers, payload.as_bytes()) {
                Ok(mut response) => {
                    let status = response.status;
                    return match response.text(1024 * 1024) {
                        Ok(text) => map_engine_answer(status, &text),
                        Err(e) => (
                            Outcome::Unreachable,
                            Answer::detail(
                                StatusCode::BAD_GATEWAY,
                                format!(
                                    "Failed to {what} LoRA adapter: reading the engine's answer from {shown}: {e}"
                                ),
                            ),
                        ),
                    };
                }
                Err(e) => e,
            };
            let timed_out = matches!(
                error.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            );
            let connect_failed = matches!(
                error.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::NotFound
            );
            if connect_failed && Instant::now() < deadline {
                let pause = ENGINE_RETRY.backoff(attempt);
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                continue;
            }
            let (status, reason) = if timed_out {
                (
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("the engine at {shown} did not answer in time"),
                )
            } else {
                (
                    StatusCode::BAD_GATEWAY,
                    format!("cannot reach the engine at {shown}: {error}"),
                )
            };
            return (
                Outcome::Unreachable,
                Answer::detail(status, format!("Failed to {what} LoRA adapter: {reason}")),
            );
        }
    }
}

/// The engine's answer as the caller gets it.
fn map_engine_answer(status: u16, text: &str) -> (Outcome, Answer) {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    if status >= 400 {
        return (
            Outcome::EngineError,
            Answer::detail(code, format!("HTTP {status}: {text}")),
        );
    }
    let body = serde_json::from_str::<Value>(text).unwrap_or_else(|_| json!({ "message": text }));
    (Outcome::Ok, Answer { status: code, body })
}

fn describe(answer: &Answer) -> String {
    match answer.body.get("detail").and_then(Value::as_str) {
        Some(detail) => detail.to_owned(),
        None => answer.body.to_string(),
    }
}

/// Removes an adapter's directory: that directory and what is in it,
/// nothing above it, and never a directory too close to the root to be an
/// adapter's own.
fn remove_adapter_dir(dir: &Path) -> String {
    let depth = dir
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .count();
    if !dir.is_absolute() || depth < 2 {
        return format!(
            "not removed: {} is too close to the root to be an adapter directory",
            dir.display()
        );
    }
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return format!("not removed: {} is a symbolic link", dir.display());
        }
        Err(_) => return format!("nothing removed: {} does not exist", dir.display()),
        Ok(_) => {}
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => format!("removed {}", dir.display()),
        Err(e) => format!("could not remove {}: {e}", dir.display()),
    }
}

impl MetricsSection for Lora {
    fn render(&self, out: &mut Vec<u8>) {
        let name = "matrixinfer_runtime_lora_operations_total";
        expo::header(out, name, "counter", "LoRA loads and unloads by outcome.");
        for (op, operation) in OPERATIONS.iter().enumerate() {
            for (i, outcome) in OUTCOMES.iter().enumerate() {
                let value = self.stats.outcomes[op][i].load(Relaxed);
                expo::sample(
                    out,
                    name,
                    &[("operation", operation), ("outcome", outcome)],
                    value,
                );
            }
        }
        let name = "matrixinfer_runtime_lora_operation_duration_seconds";
        expo::header(
            out,
            name,
            "histogram",
            "Time to download and load, or to unload, a LoRA adapter.",
        );
        for (op, operation) in OPERATIONS.iter().enumerate() {
            self.stats.latency[op].render(out, name, &[("operation", operation)]);
        }
    }
}

/// Starts a load on a thread of its own: registers the job, returns it
/// and the channel its answer arrives on; refused when the cap on
/// concurrent jobs is reached.
pub fn spawn_load(
    lora: &Arc<Lora>,
    request: LoadRequest,
) -> Result<(Arc<Job>, flume::Receiver<Answer>), Busy> {
    let permit = lora.jobs.offload.reserve()?;
    let job = lora.jobs.register(
        request.download,
        Kind::LoraLoad {
            lora_name: request.lora_name.clone(),
        },
    );
    let (worker_lora, worker_job) = (lora.clone(), job.clone());
    let spawned = permit.spawn(format!("lora-{}", &job.id[..8]), move || {
        worker_lora.load(&worker_job, &request.lora_name)
    });
    let rx = match spawned {
        Ok(rx) => rx,
        Err(e) => {
            let answer = Answer::detail(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot start the load: {e}"),
            );
            job.finish(State::Failed(describe(&answer)));
            let (tx, rx) = flume::bounded(1);
            let _ = tx.send(answer);
            rx
        }
    };
    Ok((job, rx))
}

/// Starts an unload on a thread of its own.
pub fn spawn_unload(
    lora: &Arc<Lora>,
    lora_name: String,
    body: Map<String, Value>,
    cleanup: bool,
) -> Result<flume::Receiver<Answer>, Busy> {
    let permit = lora.jobs.offload.reserve()?;
    let lora = lora.clone();
    let spawned = permit.spawn("lora-unload".into(), move || {
        lora.unload(&lora_name, body, cleanup)
    });
    Ok(spawned.unwrap_or_else(|e| {
        let (tx, rx) = flume::bounded(1);
        let _ = tx.send(Answer::detail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot start the unload: {e}"),
        ));
        rx
    }))
}

// === HTTP handlers ===

/// `POST /v1/load_lora_adapter`.
pub async fn handle_load(
    lora: &Arc<Lora>,
    access: &crate::access::Access,
    req: &crate::http::Request,
    res: &mut crate::http::Responder<'_>,
) -> std::io::Result<()> {
    let request =
        match LoadRequest::from_json(&req.body, &crate::download::request::ProcessEnvironment) {
            Ok(request) => request,
            Err(e) => {
                lora.count_bad_request(false);
                return res.error(StatusCode::BAD_REQUEST, &e.to_string()).await;
            }
        };
    if let Err(denied) = access.confine(&request.download.output_dir) {
        lora.count_bad_request(false);
        return res.error(denied.status, &denied.detail).await;
    }
    if let Err(e) = crate::download::preflight(&request.download) {
        lora.count_download_refused();
        let detail = format!("LoRA adapter download failed: {}", errors::chain(&e));
        return res.error(e.status(), &detail).await;
    }
    let started = json!({
        "status": "started",
        "message": "LoRA adapter download and load started in background",
        "lora_name": request.lora_name,
        "source": request.download.source_text,
        "output_dir": request.download.output_dir.display().to_string(),
    });
    let async_download = request.download.async_download;
    let (job, answer) = match spawn_load(lora, request) {
        Ok(started) => started,
        Err(busy) => return crate::download::api::too_many(res, &busy).await,
    };
    if async_download {
        let mut body = started;
        body["id"] = json!(job.id);
        return res.json(StatusCode::ACCEPTED, &body).await;
    }
    match answer.recv_async().await {
        Ok(answer) => res.json(answer.status, &answer.body).await,
        Err(_) => {
            res.error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the load ended without an answer",
            )
            .await
        }
    }
}

/// `POST /v1/unload_lora_adapter`: the body goes to the engine (without
/// `cleanup`, which is ours).
pub async fn handle_unload(
    lora: &Arc<Lora>,
    req: &crate::http::Request,
    res: &mut crate::http::Responder<'_>,
) -> std::io::Result<()> {
    let fields = match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => {
            lora.count_bad_request(true);
            return res
                .error(
                    StatusCode::BAD_REQUEST,
                    "Request body must be a JSON object: not an object",
                )
                .await;
        }
        Err(e) => {
            lora.count_bad_request(true);
            return res
                .error(
                    StatusCode::BAD_REQUEST,
                    &format!("Request body must be a JSON object: {e}"),
                )
                .await;
        }
    };
    let lora_name = match check_name(&fields) {
        Ok(name) => name,
        Err(e) => {
            lora.count_bad_request(true);
            return res.error(StatusCode::BAD_REQUEST, &e.to_string()).await;
        }
    };
    let mut fields = fields;
    let cleanup = match fields.remove("cleanup") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            lora.count_bad_request(true);
            return res
                .error(
                    StatusCode::BAD_REQUEST,
                    "Invalid parameter: cleanup must be true or false",
                )
                .await;
        }
    };
    let answer = match spawn_unload(lora, lora_name, fields, cleanup) {
        Ok(answer) => answer,
        Err(busy) => return crate::download::api::too_many(res, &busy).await,
    };
    match answer.recv_async().await {
        Ok(answer) => res.json(answer.status, &answer.body).await,
        Err(_) => {
            res.error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the unload ended without an answer",
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(value: Value) -> Result<String, String> {
        let mut fields = Map::new();
        fields.insert("lora_name".into(), value);
        check_name(&fields).map_err(|e| e.to_string())
    }

    #[test]
    fn names() {
        assert_eq!(name(json!("sql-lora_v1.2")), Ok("sql-lora_v1.2".into()));
        assert_eq!(name(json!("a".repeat(128))).map(|n| n.len()), Ok(128));
        for bad in [
            "../etc",
            "a/b",
            "a..b",
            ".",
            "..",
            "with space",
            "naïve",
            "a\0b",
            &"a".repeat(129),
        ] {
            assert!(name(json!(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(
            name(json!(1)),
            Err("Invalid parameter: lora_name must be a string".into())
        );
        assert_eq!(
            name(json!("")),
            Err("Missing required parameter: lora_name".into())
        );
    }

    #[test]
    fn engine_answers_map_as_clients_expect() {
        let (_, answer) = map_engine_answer(200, "Success: LoRA adapter 'x' added successfully.");
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            answer.body,
            json!({ "message": "Success: LoRA adapter 'x' added successfully." })
        );
        let (_, answer) = map_engine_answer(200, r#"{"success":true,"error_message":""}"#);
        assert_eq!(answer.body, json!({ "success": true, "error_message": "" }));
        let (_, answer) =
            map_engine_answer(400, r#"{"object":"error","message":"already loaded"}"#);
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            answer.body,
            json!({ "detail": r#"HTTP 400: {"object":"error","message":"already loaded"}"# })
        );
    }

    #[test]
    fn cleanup_is_confined() {
        assert!(remove_adapter_dir(Path::new("/")).starts_with("not removed"));
        assert!(remove_adapter_dir(Path::new("/models")).starts_with("not removed"));
        let dir = std::env::temp_dir()
            .join(format!("mi-lora-{}", std::process::id()))
            .join("adapter");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/adapter_model.safetensors"), b"x").unwrap();
        assert!(remove_adapter_dir(&dir).starts_with("removed"));
        assert!(!dir.exists());
        assert!(dir.parent().unwrap().exists(), "the parent stays");
    }
}
