//! Model downloads: HuggingFace, ModelScope, S3, OBS or a PVC into a local
//! directory, fast, resumable and verified.
//!
//! The path of a download:
//!
//! - [`request`]: the caller's body checked field by field, credentials
//!   merged over the environment ([`request::DownloadRequest`]);
//! - [`lock`]: one download at a time per output directory;
//! - a source lists its files ([`s3::Bucket`], [`hf::HfRepo`],
//!   [`ms::MsRepo`], [`pvc::Volume`]; the hubs share [`hub`]);
//! - [`fetch`]: the ranged downloader fetches, verifies ([`verify`]) and
//!   renames them into place, resuming what an earlier run left;
//! - [`jobs`]: runs downloads beside the server and reports their progress
//!   to the status API and the metrics.
//!
//! Downloads run on their own threads at a lower scheduling priority, so a
//! multi-gigabyte download does not slow the scrapes served beside it.

pub mod api;
pub mod cli;
pub mod error;
pub mod fetch;
pub mod hf;
pub mod hub;
pub mod jobs;
pub mod lock;
pub mod ms;
pub mod pvc;
pub mod request;
pub mod s3;
pub mod select;
pub mod source;
pub mod verify;

use std::io::Read;
use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub use error::DownloadError;
use fetch::{FetchError, Progress};
pub use request::{DownloadRequest, Source, SourceKind};

/// How long a connect, read or write may stall before the transfer is
/// retried.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one download to completion on the calling thread: lists the
/// source (so that bad credentials or names fail before anything touches
/// the disk), locks the output directory, fetches what is missing.
pub fn execute(
    request: &DownloadRequest,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<(), DownloadError> {
    let dir = &request.output_dir;
    let plan = fetch::Plan {
        workers: request.max_workers,
        retry: crate::net::RetryPolicy::default(),
        force: request.selection.force,
    };
    let select = |files| request.selection.apply(files);
    match &request.source {
        Source::S3 { bucket, prefix } | Source::Obs { bucket, prefix } => {
            let flavor = if matches!(request.source, Source::Obs { .. }) {
                s3::Flavor::Obs
            } else {
                s3::Flavor::S3
            };
            let bucket = s3::Bucket::new(flavor, bucket, &request.settings, IO_TIMEOUT)?;
            let credentials = bucket.credential_source()?;
            tracing::info!(source = %request.source_text, %credentials, "S3 credentials");
            let _ = progress.credentials.set(credentials);
            let files = select(bucket.list(prefix)?)?;
            let _lock = lock::DirLock::acquire(dir)?;
            fetch::run(dir, files, &bucket, &plan, progress, cancel)
        }
        Source::HuggingFace {
            repo,
            revision,
            dataset,
        } => {
            let address = hf::Address {
                repo,
                revision: revision.as_deref(),
                dataset: *dataset,
            };
            let (repo, files) = hf::HfRepo::open(&address, &request.settings, IO_TIMEOUT)?;
            let files = select(files)?;
            let _lock = lock::DirLock::acquire(dir)?;
            fetch::run(dir, files, &repo, &plan, progress, cancel)
        }
        Source::ModelScope { repo, revision } => {
            let (repo, files) =
                ms::MsRepo::open(repo, revision.as_deref(), &request.settings, IO_TIMEOUT)?;
            let files = select(files)?;
            let _lock = lock::DirLock::acquire(dir)?;
            fetch::run(dir, files, &repo, &plan, progress, cancel)
        }
        Source::Pvc { path } => {
            let (volume, files) = pvc::Volume::open(path)?;
            let files = select(files)?;
            let same = path
                .canonicalize()
                .ok()
                .zip(dir.canonicalize().ok())
                .is_some_and(|(a, b)| b.starts_with(a));
            if same {
                return Err(DownloadError::BadPath(format!(
                    "output_dir {} is inside the pvc:// source",
                    dir.display()
                )));
            }
            let _lock = lock::DirLock::acquire(dir)?;
            fetch::run(dir, files, &volume, &plan, progress, cancel)
        }
    }
}

/// What can be checked of a request without the network (it runs on a
/// server worker): the S3 or OBS settings, and that a pvc:// path exists. An async request fails here
/// at once, with the status the same request made synchronously gets.
pub fn preflight(request: &DownloadRequest) -> Result<(), DownloadError> {
    match &request.source {
        Source::S3 { bucket, .. } => s3::Bucket::check(s3::Flavor::S3, bucket, &request.settings),
        Source::Obs { bucket, .. } => s3::Bucket::check(s3::Flavor::Obs, bucket, &request.settings),
        Source::HuggingFace { .. } | Source::ModelScope { .. } => Ok(()),
        Source::Pvc { path } => pvc::check_exists(path),
    }
}

/// Whether an HTTP status is worth retrying: timeouts, throttling
/// (`429`, S3's `503 SlowDown`) and server errors.
pub fn transient_status(status: u16) -> bool {
    matches!(status, 408 | 429) || (500..600).contains(&status)
}

/// Streams the body of a `200`/`206` answer to a range request into
/// `sink`: exactly the bytes of `range`. A server that ignored the
/// `Range` header (`200` with the whole object) is read past the bytes
/// before the range; a body that ends early leaves the rest to a retry.
pub fn read_into_sink(
    response: &mut crate::net::Response<'_>,
    range: &Range<u64>,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), FetchError>,
) -> Result<(), FetchError> {
    let mut skip = 0u64;
    if response.status == 206 {
        let start = response
            .header("content-range")
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if start != Some(range.start) {
            return Err(FetchError::Transient(format!(
                "asked for bytes from {}, got Content-Range {:?}",
                range.start,
                response.header("content-range")
            )));
        }
    } else {
        skip = range.start;
    }
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 256 * 1024]);
    }
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let mut left = range.end - range.start;
        while left > 0 {
            let n = match response.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) => return Err(FetchError::Transient(format!("reading the body: {e}"))),
            };
            let mut chunk = &buf[..n];
            if skip > 0 {
                let drop = (skip as usize).min(chunk.len());
                chunk = &chunk[drop..];
                skip -= drop as u64;
            }
            let take = (left as usize).min(chunk.len());
            if take > 0 {
                sink(&chunk[..take])?;
                left -= take as u64;
            }
        }
        Ok(())
    })
}
