//! The ranged downloader: files in, verified files out, whatever the
//! source.
//!
//! A source lists [`RemoteFile`]s and implements [`Origin::fetch`] for a
//! byte range; this module does the rest, the same way for S3, OBS,
//! HuggingFace and a PVC:
//!
//! - files already present and verified are skipped (a log of verified
//!   files in the output directory saves re-hashing them);
//! - large files are cut into 8 MiB parts; parts and small files share
//!   one queue served by `max_workers` threads, so that many transfers are
//!   in flight across the whole job and no more;
//! - bytes go straight from the socket to their offset in a preallocated
//!   temporary file (`.<name>.mi-part`) with positional writes; memory per
//!   transfer is one read buffer;
//! - the file's digest is computed as its bytes arrive, in order although
//!   parts finish out of order: the part at the front of the hashed prefix
//!   feeds its chunks to the hasher, and parts that finished ahead of it
//!   are read back (from the page cache, just written) when the prefix
//!   reaches them (`prefix`); a complete file is not read again;
//! - finished parts are recorded in a journal beside the temporary file
//!   once an `fdatasync` covers them, one sync per batch of parts
//!   ([`SYNC_EVERY`] bytes), so an interrupted download (crash, `kill -9`,
//!   lost connection) resumes from the parts it has, re-hashing them from
//!   disk; a transfer that fails midway is retried from the byte where it
//!   stopped. Bytes synced and hashed leave the page cache
//!   (`posix_fadvise`), which counts against the container's memory;
//! - a complete file is verified (size, and the digest the source gave,
//!   or a weaker check the source's answers showed to be the right one:
//!   [`Origin::settle`], only for which the file is read again), then
//!   renamed to its final name: nothing unverified ever sits there. Which
//!   check each file got is counted in [`Progress::verified_by`] and
//!   logged.
//!
//! The pieces: [`Origin`] and its types (`origin`), the worker pool over
//! one queue of parts (here), one file in flight (`transfer`), its
//! digest as the bytes arrive (`prefix`), its resume journal (`journal`)
//! and the batched syncs that feed it (`durable`), verification and
//! rename (`land`), and the log of verified files (`verified`).

mod durable;
mod journal;
mod land;
mod origin;
mod prefix;
mod transfer;
mod verified;

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use super::error::DownloadError;
#[cfg(doc)]
use super::verify::Expect;
use crate::net::RetryPolicy;
pub use durable::SYNC_EVERY;
pub use land::safe_join;
pub use origin::{FetchError, Origin, RemoteFile};
use transfer::FileState;
use verified::VerifiedLog;

/// Files above this size are fetched as parallel parts.
pub const SPLIT_ABOVE: u64 = 16 * 1024 * 1024;
/// Part size. The page cache a file in flight holds is about
/// `max_workers` parts (those being written, and those finished ahead of
/// the digest's front): 64 MiB with the default 8 workers, half the
/// memory limit the deploy example gives the sidecar. 16 MiB parts (the
/// size files above 1 GiB had) were 0–7% faster with no limit, but kept
/// a 4 GiB download in a 128 MiB cgroup at its limit 40–70% of the time
/// (docs/benchmarks.md, "Downloads").
pub const PART_SIZE: u64 = 8 * 1024 * 1024;
/// The log of verified files in an output directory.
pub const VERIFIED_LOG: &str = ".matrixinfer-verified";
/// Suffix of temporary files.
pub const PART_SUFFIX: &str = ".mi-part";

/// A job's progress, read by the status API while the job runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes in all files.
    pub bytes_total: AtomicU64,
    /// Bytes present and verified or written so far.
    pub bytes_done: AtomicU64,
    /// Files in all.
    pub files_total: AtomicU64,
    /// Files present and verified.
    pub files_done: AtomicU64,
    /// Transfers retried.
    pub retries: AtomicU64,
    /// Bytes downloaded in this run (not skipped or resumed).
    pub bytes_fetched: AtomicU64,
    /// Bytes read back from temporary files for their digests: parts that
    /// finished ahead of the hashed prefix, and parts an earlier run left
    /// on disk. Zero with one worker and nothing resumed.
    pub bytes_read_back: AtomicU64,
    /// Syncs of temporary files to disk: one per batch of finished parts
    /// ([`SYNC_EVERY`]) and one per file before it lands.
    pub syncs: AtomicU64,
    /// What supplied the source's credentials (S3), once known.
    pub credentials: std::sync::OnceLock<String>,
    /// Files verified, by the check they got ([`Expect::id`], or
    /// [`ALREADY_VERIFIED`] for files an earlier run verified).
    pub verified_by: Mutex<BTreeMap<&'static str, u64>>,
}

/// The check of files present and verified by an earlier run, in
/// [`Progress::verified_by`].
pub const ALREADY_VERIFIED: &str = "already_verified";

impl Progress {
    /// Counts a file verified by `check`.
    pub fn note_check(&self, check: &'static str) {
        *self
            .verified_by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(check)
            .or_default() += 1;
    }

    /// Files verified so far, by check.
    pub fn checks(&self) -> BTreeMap<&'static str, u64> {
        self.verified_by
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// How a download runs.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Parallel transfers.
    pub workers: usize,
    /// How transient faults are retried.
    pub retry: RetryPolicy,
    /// Fetch again what is present and verified (`force_download`); the
    /// old file stays under its name until the new one is verified.
    pub force: bool,
}

/// Fetches `files` into `dir`. `dir` must be locked by the caller.
pub fn run(
    dir: &Path,
    files: Vec<RemoteFile>,
    origin: &dyn Origin,
    plan: &Plan,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<(), DownloadError> {
    let Plan {
        workers,
        retry,
        force,
    } = *plan;
    let mut verified = VerifiedLog::open(dir)?;
    progress.files_total.store(files.len() as u64, Relaxed);
    progress
        .bytes_total
        .store(files.iter().map(|f| f.size).sum(), Relaxed);

    let mut states = Vec::new();
    for file in files {
        let target = safe_join(dir, &file.rel)?;
        if !force && verified.is_verified(&target, &file)? {
            progress.files_done.fetch_add(1, Relaxed);
            progress.bytes_done.fetch_add(file.size, Relaxed);
            progress.note_check(ALREADY_VERIFIED);
            continue;
        }
        match FileState::prepare(file, target, progress) {
            Ok(state) => states.push(state),
            Err(e) => return Err(wind_down(e, &states, progress)),
        }
    }

    let mut queue = VecDeque::new();
    // Parts of large files first: they are the long pole.
    let mut order: Vec<usize> = (0..states.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(states[i].file.size));
    for i in order {
        for part in states[i].pending_parts() {
            queue.push_back(Task { file: i, part });
        }
    }
    let verified = Mutex::new(verified);
    // Empty files and files whose parts were all present already.
    for state in states.iter().filter(|s| s.remaining.load(Relaxed) == 0) {
        if let Err(e) = state.finish(origin, progress, &verified) {
            return Err(wind_down(e, &states, progress));
        }
    }
    if queue.is_empty() {
        return Ok(());
    }

    let queue = Mutex::new(queue);
    let failure: Mutex<Option<DownloadError>> = Mutex::new(None);
    let threads = workers.clamp(1, queue.lock().map_or(1, |q| q.len()));
    std::thread::scope(|scope| {
        for n in 0..threads {
            let work = || {
                lower_priority();
                while !cancel.load(Relaxed) {
                    let Some(task) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
                    else {
                        break;
                    };
                    let state = &states[task.file];
                    let result = state
                        .transfer(task.part, origin, progress, cancel, &retry)
                        .and_then(|finished| {
                            if finished {
                                state.finish(origin, progress, &verified)
                            } else {
                                Ok(())
                            }
                        });
                    if let Err(e) = result {
                        let mut first = failure.lock().unwrap_or_else(|e| e.into_inner());
                        if first.is_none()
                            || matches!(first.as_ref(), Some(DownloadError::Cancelled))
                        {
                            *first = Some(e);
                        }
                        cancel.store(true, Relaxed);
                        break;
                    }
                }
            };
            let spawned = std::thread::Builder::new()
                .name(format!("download-{n}"))
                .spawn_scoped(scope, work);
            if let Err(e) = spawned {
                *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(DownloadError::local(
                    "cannot start a download thread for",
                    dir,
                    e,
                ));
                cancel.store(true, Relaxed);
            }
        }
    });
    match failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(wind_down(e, &states, progress)),
        None if cancel.load(Relaxed) => Err(wind_down(DownloadError::Cancelled, &states, progress)),
        None => Ok(()),
    }
}

/// A run that fails leaves its unfinished files ready to resume: the
/// parts it finished synced and in their journals. Except on a full disk,
/// which is shared with the engine and everything else in the Pod: there
/// the unfinished files of this run give their space back rather than
/// keep it for a resume that cannot happen until space is freed.
fn wind_down(error: DownloadError, states: &[FileState], progress: &Progress) -> DownloadError {
    let full = matches!(error, DownloadError::DiskFull { .. });
    for state in states {
        if full {
            // Finished files were renamed away from their temporary names.
            state.discard();
        } else {
            state.stop(progress);
        }
    }
    error
}

/// Downloads run beside scrapes: let the scheduler favour the workers.
fn lower_priority() {
    let _ = rustix::process::setpriority_process(None, 10);
}

struct Task {
    file: usize,
    /// Index into the file's parts.
    part: usize,
}

#[cfg(test)]
mod tests;
