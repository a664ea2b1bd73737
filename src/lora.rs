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
//!
//! This file is the service: [`Lora`], its load and unload, and the
//! threads they run on. The rest is in sub-modules: `request` (names and
//! load bodies), `locks` (the per-name locks), `engine` (the engine call
//! and the mapping of its answer), `cleanup` (removing an adapter's
//! directory), `stats` (counters and metrics) and `api` (the HTTP
//! handlers).

mod api;
mod cleanup;
mod engine;
mod locks;
mod request;
mod stats;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::{Map, Value, json};

pub use api::{handle_load, handle_unload};
use cleanup::remove_adapter_dir;
use locks::NameLocks;
pub use request::{LoadRequest, MAX_NAME, check_name};
use stats::{LoraStats, Operation, Outcome};

use crate::download::jobs::MAX_CONCURRENT_JOBS;
use crate::download::jobs::{Job, Jobs, Kind, State};
use crate::engine::Engine;
use crate::errors;
use crate::net::{HttpClient, Url, UrlError};
use crate::offload::{Busy, Offload};

/// How long connection failures to the engine are retried (it may still
/// be starting).
pub const ENGINE_RETRY_WINDOW: Duration = Duration::from_secs(30);

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

/// The LoRA side of the sidecar: engine address, per-name locks, where
/// each adapter was put.
#[derive(Debug)]
pub struct Lora {
    engine: Engine,
    base: Url,
    client: HttpClient,
    jobs: Arc<Jobs>,
    retry_window: Duration,
    names: NameLocks,
    dirs: Mutex<HashMap<String, PathBuf>>,
    stats: LoraStats,
    /// Unloads' threads: short engine calls, capped apart from the jobs
    /// so that running downloads never hold an unload back.
    unloads: Offload,
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
            // The engine is in the same Pod: its calls never go through
            // HTTPS_PROXY/http_proxy (the adapters' sources do, in jobs).
            client: HttpClient::direct(timeout),
            jobs,
            retry_window: ENGINE_RETRY_WINDOW,
            names: NameLocks::default(),
            dirs: Mutex::new(HashMap::new()),
            stats: LoraStats::default(),
            unloads: Offload::new("LoRA unload", MAX_CONCURRENT_JOBS),
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
        let claim = self.names.claim(lora_name);
        let _held = claim.lock().lock().unwrap_or_else(|e| e.into_inner());
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
        let claim = self.names.claim(lora_name);
        // A load of this name may be downloading for minutes: say so now
        // rather than hold the caller until it ends.
        let _held = match claim.lock().try_lock() {
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
}

fn describe(answer: &Answer) -> String {
    match answer.body.get("detail").and_then(Value::as_str) {
        Some(detail) => detail.to_owned(),
        None => answer.body.to_string(),
    }
}

/// Starts a load on a thread of its own (or queues it): registers the
/// job, returns it and the channel its answer arrives on; refused when the
/// cap on concurrent jobs is reached and the queue is full.
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
        permit.place(),
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
    let permit = lora.unloads.reserve()?;
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
