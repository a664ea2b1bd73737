//! Downloads running beside the server, and what the status API and the
//! metrics say about them.
//!
//! Each job runs on a thread of its own (its transfers on more threads, see
//! [`super::fetch`]); the HTTP worker that started it either answers at once
//! (async) or awaits the job's completion on a channel, so the worker never
//! blocks. Finished jobs stay listed for a while, the newest first.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::fetch::Progress;
use super::request::DownloadRequest;
use super::{DownloadError, SourceKind, execute};
use crate::offload::{Offload, Permit, Place};
use crate::prom::expo;

/// Finished jobs kept for the status API.
const KEEP_FINISHED: usize = 256;
/// How often a running job logs its progress.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Where a job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for a place under `--max-concurrent-jobs`; no thread yet.
    Queued,
    /// Still working.
    Running,
    /// Everything is present and verified.
    Completed,
    /// It stopped; the reason.
    Failed(String),
}

/// What a job does besides downloading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A model download.
    Model,
    /// A LoRA adapter download, then a load into the engine.
    LoraLoad {
        /// The adapter's name.
        lora_name: String,
    },
}

/// One download, running or finished.
#[derive(Debug)]
pub struct Job {
    /// Its id in the status API.
    pub id: String,
    /// What it is for.
    pub kind: Kind,
    /// The request.
    pub request: DownloadRequest,
    /// Live progress.
    pub progress: Progress,
    state: Mutex<State>,
    /// What the engine said when it loaded the adapter (LoRA jobs).
    result: Mutex<Option<Value>>,
    cancel: AtomicBool,
}

impl Job {
    /// The job's state.
    pub fn state(&self) -> State {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the job has ended (completed or failed).
    pub fn is_finished(&self) -> bool {
        !matches!(self.state(), State::Queued | State::Running)
    }

    /// Marks a queued job running (its place came free).
    fn begin(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if *state == State::Queued {
            *state = State::Running;
        }
    }

    /// Marks the job finished.
    pub fn finish(&self, state: State) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// Records what follows the download (the engine's answer to a load).
    pub fn set_result(&self, value: Value) {
        *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
    }

    /// The status document: `{"id","state","source","output_dir",
    /// "bytes_done","bytes_total","files_done","files_total",
    /// "verified_by","error"}` (`verified_by`: files verified so far, by
    /// the check each got), and `"credentials"` once an S3 source's are
    /// known.
    pub fn status(&self) -> Value {
        let (state, error) = match self.state() {
            State::Queued => ("queued", Value::Null),
            State::Running => ("running", Value::Null),
            State::Completed => ("completed", Value::Null),
            State::Failed(reason) => ("failed", Value::String(reason)),
        };
        let p = &self.progress;
        let mut status = json!({
            "id": self.id,
            "state": state,
            "source": self.request.source_text,
            "output_dir": self.request.output_dir.display().to_string(),
            "bytes_done": p.bytes_done.load(Relaxed),
            "bytes_total": p.bytes_total.load(Relaxed),
            "files_done": p.files_done.load(Relaxed),
            "files_total": p.files_total.load(Relaxed),
            "verified_by": p.checks(),
            "error": error,
        });
        if let Some(source) = p.credentials.get() {
            status["credentials"] = json!(source);
        }
        if let Kind::LoraLoad { lora_name } = &self.kind {
            status["kind"] = json!("lora_load");
            status["lora_name"] = json!(lora_name);
            if let Some(result) = self
                .result
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                status["result"] = result;
            }
        } else {
            status["kind"] = json!("download");
        }
        status
    }
}

/// Counters of downloads, by source kind.
#[derive(Debug, Default)]
pub struct DownloadStats {
    bytes: [AtomicU64; SourceKind::ALL.len()],
    files: [AtomicU64; SourceKind::ALL.len()],
    retries: [AtomicU64; SourceKind::ALL.len()],
    completed: [AtomicU64; SourceKind::ALL.len()],
    failed: [AtomicU64; SourceKind::ALL.len()],
    running: AtomicU64,
}

impl DownloadStats {
    /// Appends the download families.
    pub fn render(&self, out: &mut Vec<u8>) {
        let families: [(&str, &str, &[AtomicU64; SourceKind::ALL.len()]); 3] = [
            (
                "matrixinfer_runtime_download_bytes_total",
                "Bytes downloaded (skipped and resumed bytes excluded).",
                &self.bytes,
            ),
            (
                "matrixinfer_runtime_download_files_total",
                "Files downloaded and verified.",
                &self.files,
            ),
            (
                "matrixinfer_runtime_download_retries_total",
                "Transfers retried after a transient fault.",
                &self.retries,
            ),
        ];
        for (name, help, values) in families {
            expo::header(out, name, "counter", help);
            for (i, kind) in SourceKind::ALL.iter().map(|k| k.as_str()).enumerate() {
                expo::sample(out, name, &[("source", kind)], values[i].load(Relaxed));
            }
        }
        let name = "matrixinfer_runtime_downloads_total";
        expo::header(
            out,
            name,
            "counter",
            "Download jobs finished, by source and outcome.",
        );
        for (i, kind) in SourceKind::ALL.iter().map(|k| k.as_str()).enumerate() {
            expo::sample(
                out,
                name,
                &[("source", kind), ("outcome", "completed")],
                self.completed[i].load(Relaxed),
            );
            expo::sample(
                out,
                name,
                &[("source", kind), ("outcome", "failed")],
                self.failed[i].load(Relaxed),
            );
        }
        let name = "matrixinfer_runtime_downloads_running";
        expo::header(out, name, "gauge", "Download jobs running now.");
        expo::sample(out, name, &[], self.running.load(Relaxed));
    }
}

/// Downloads and LoRA loads that run at once, at most, by default
/// (`--max-concurrent-jobs`); beyond it a request waits in the queue.
pub const MAX_CONCURRENT_JOBS: usize = 16;

/// Downloads and LoRA loads that wait for a place, at most, by default
/// (`--max-queued-jobs`); beyond it a request is answered `429` with
/// `Retry-After` (docs/openapi.yaml). A queued job owns no thread.
pub const MAX_QUEUED_JOBS: usize = 64;

/// Every job of this process.
#[derive(Debug)]
pub struct Jobs {
    list: Mutex<Vec<Arc<Job>>>,
    /// Download counters.
    pub stats: DownloadStats,
    /// The threads jobs run on (downloads, LoRA loads and unloads).
    pub offload: Offload,
}

impl Default for Jobs {
    fn default() -> Jobs {
        Jobs::new(MAX_CONCURRENT_JOBS, MAX_QUEUED_JOBS)
    }
}

impl Jobs {
    /// No jobs yet; at most `cap` will run at once and `queue` wait.
    pub fn new(cap: usize, queue: usize) -> Jobs {
        Jobs {
            list: Mutex::default(),
            stats: DownloadStats::default(),
            offload: Offload::new("download and LoRA load", cap).with_queue(queue),
        }
    }

    /// Registers a job for the place reserved for it (queued or
    /// running); [`Jobs::run`] executes it.
    pub fn register(&self, request: DownloadRequest, kind: Kind, place: Place) -> Arc<Job> {
        let state = match place {
            Place::Queued => State::Queued,
            Place::Running => State::Running,
        };
        let job = Arc::new(Job {
            id: format!("{:032x}", fastrand::u128(..)),
            kind,
            request,
            progress: Progress::default(),
            state: Mutex::new(state),
            result: Mutex::new(None),
            cancel: AtomicBool::new(false),
        });
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.push(job.clone());
        let finished = list.iter().filter(|j| j.is_finished()).count();
        if finished > KEEP_FINISHED {
            let mut drop = finished - KEEP_FINISHED;
            list.retain(|j| {
                let keep = drop == 0 || !j.is_finished();
                if !keep {
                    drop -= 1;
                }
                keep
            });
        }
        job
    }

    /// Runs the download of `job` on the calling thread, logging progress,
    /// counting, and leaving the job `Completed` or `Failed` (or, with
    /// `keep_running`, still running after a success, for work that
    /// follows).
    pub fn run(&self, job: &Job, keep_running: bool) -> Result<(), DownloadError> {
        job.begin();
        let index = job.request.source.kind() as usize;
        self.stats.running.fetch_add(1, Relaxed);
        tracing::info!(id = %job.id, source = %job.request.source_text, output_dir = %job.request.output_dir.display(), "download started");
        let started = Instant::now();
        let done = AtomicBool::new(false);
        let result = std::thread::scope(|scope| {
            scope.spawn(|| log_progress(job, &done, started));
            let result = execute(&job.request, &job.progress, &job.cancel);
            done.store(true, Relaxed);
            result
        });
        self.stats.running.fetch_sub(1, Relaxed);
        let p = &job.progress;
        self.stats.bytes[index].fetch_add(p.bytes_fetched.load(Relaxed), Relaxed);
        self.stats.retries[index].fetch_add(p.retries.load(Relaxed), Relaxed);
        self.stats.files[index].fetch_add(p.files_done.load(Relaxed), Relaxed);
        match &result {
            Ok(()) => {
                self.stats.completed[index].fetch_add(1, Relaxed);
                tracing::info!(
                    id = %job.id,
                    files = p.files_total.load(Relaxed),
                    bytes = p.bytes_total.load(Relaxed),
                    fetched = p.bytes_fetched.load(Relaxed),
                    read_back = p.bytes_read_back.load(Relaxed),
                    syncs = p.syncs.load(Relaxed),
                    seconds = started.elapsed().as_secs_f64(),
                    "download completed"
                );
                if !keep_running {
                    job.finish(State::Completed);
                }
            }
            Err(e) => {
                self.stats.failed[index].fetch_add(1, Relaxed);
                let reason = crate::errors::chain(e);
                tracing::warn!(id = %job.id, error = %reason, "download failed");
                job.finish(State::Failed(reason));
            }
        }
        result
    }

    /// Starts `job` on a thread of its own, in the place `permit`
    /// reserved; the receiver gets the outcome.
    pub fn spawn(
        self: &Arc<Self>,
        job: Arc<Job>,
        permit: Permit,
    ) -> flume::Receiver<Result<(), DownloadError>> {
        let jobs = self.clone();
        let name = format!("job-{}", &job.id[..8]);
        let failed = job.clone();
        match permit.spawn(name, move || jobs.run(&job, false)) {
            Ok(done) => done,
            Err(e) => {
                let error = DownloadError::local("cannot start a thread for", "/", e);
                failed.finish(State::Failed(crate::errors::chain(&error)));
                let (tx, rx) = flume::bounded(1);
                let _ = tx.send(Err(error));
                rx
            }
        }
    }

    /// A job by id.
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|j| j.id == id)
            .cloned()
    }

    /// Every job, newest first.
    pub fn all(&self) -> Vec<Arc<Job>> {
        let mut all = self.list.lock().unwrap_or_else(|e| e.into_inner()).clone();
        all.reverse();
        all
    }

    /// Asks every running job to stop (shutdown); partial files stay for
    /// the next run to resume.
    pub fn cancel_all(&self) {
        for job in self.list.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            job.cancel.store(true, Relaxed);
        }
    }
}

impl crate::stats::MetricsSection for Jobs {
    fn render(&self, out: &mut Vec<u8>) {
        self.stats.render(out);
    }
}

fn log_progress(job: &Job, done: &AtomicBool, started: Instant) {
    let mut last_log = Instant::now();
    while !done.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last_log.elapsed() < LOG_EVERY {
            continue;
        }
        last_log = Instant::now();
        let p = &job.progress;
        let fetched = p.bytes_fetched.load(Relaxed);
        let rate = fetched as f64 / started.elapsed().as_secs_f64().max(0.001) / 1e6;
        tracing::info!(
            id = %job.id,
            bytes_done = p.bytes_done.load(Relaxed),
            bytes_total = p.bytes_total.load(Relaxed),
            files_done = p.files_done.load(Relaxed),
            files_total = p.files_total.load(Relaxed),
            mb_per_s = format!("{rate:.1}"),
            "download progress"
        );
    }
}
