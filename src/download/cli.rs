//! `matrixinfer-runtime download`: the same download without the server,
//! for init containers, with a progress bar. Exits 0 only when every file
//! is present and verified.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use clap::Args;
use serde_json::{Map, Value, json};

use super::jobs::{Jobs, Kind, State};
use super::request::{DownloadRequest, ProcessEnvironment};
use crate::errors;

/// Options of the `download` command.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// hf://namespace/name (or the bare id, huggingface://), ms://owner/name, s3://bucket/prefix, obs://bucket/prefix or pvc://path.
    #[arg(long)]
    pub source: String,
    /// Absolute directory to download into.
    #[arg(long)]
    pub output_dir: String,
    /// Source settings as a JSON object: hf_token, hf_endpoint, hf_revision, access_key, secret_key, endpoint, region, session_token.
    #[arg(long)]
    pub config: Option<String>,
    /// Parallel transfers (1 to 64).
    #[arg(long, default_value_t = 8)]
    pub max_workers: u32,
}

/// Runs the download; the error is the reason it failed.
pub fn run(args: DownloadArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut fields = Map::new();
    fields.insert("source".into(), json!(args.source));
    fields.insert("output_dir".into(), json!(args.output_dir));
    fields.insert("max_workers".into(), json!(args.max_workers));
    if let Some(config) = args.config {
        fields.insert("config".into(), Value::String(config));
    }
    let request = DownloadRequest::from_fields(&fields, &ProcessEnvironment)?;
    let jobs = Jobs::default();
    let job = jobs.register(request, Kind::Model, crate::offload::Place::Running);
    let done = AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        scope.spawn(|| show_progress(&job.progress, &done));
        let result = jobs.run(&job, false);
        done.store(true, Relaxed);
        result
    });
    match (result, job.state()) {
        (Ok(()), State::Completed) => {
            let p = &job.progress;
            eprintln!(
                "downloaded {} files ({} bytes, {} fetched now) into {}",
                p.files_total.load(Relaxed),
                p.bytes_total.load(Relaxed),
                p.bytes_fetched.load(Relaxed),
                args.output_dir
            );
            Ok(())
        }
        (Err(e), _) => Err(format!("download failed: {}", errors::chain(&e)).into()),
        (Ok(()), state) => Err(format!("download ended in state {state:?}").into()),
    }
}

/// A progress bar on a terminal; elsewhere the job's log lines say it.
fn show_progress(progress: &super::fetch::Progress, done: &AtomicBool) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    while !done.load(Relaxed) {
        bar.set_length(progress.bytes_total.load(Relaxed));
        bar.set_position(progress.bytes_done.load(Relaxed));
        bar.set_message(format!(
            "{}/{} files",
            progress.files_done.load(Relaxed),
            progress.files_total.load(Relaxed)
        ));
        std::thread::sleep(Duration::from_millis(200));
    }
    bar.finish_and_clear();
}
