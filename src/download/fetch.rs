//! The ranged downloader: files in, verified files out, whatever the
//! source.
//!
//! A source lists [`RemoteFile`]s and implements [`Origin::fetch`] for a
//! byte range; this module does the rest, the same way for S3, OBS,
//! HuggingFace and a PVC:
//!
//! - files already present and verified are skipped (a log of verified
//!   files in the output directory saves re-hashing them);
//! - large files are cut into 8–16 MiB parts; parts and small files share
//!   one queue served by `max_workers` threads, so that many transfers are
//!   in flight across the whole job and no more;
//! - bytes go straight from the socket to their offset in a preallocated
//!   temporary file (`.<name>.mi-part`) with positional writes; memory per
//!   transfer is one read buffer;
//! - each finished part is flushed and recorded in a journal beside the
//!   temporary file, so an interrupted download (crash, `kill -9`, lost
//!   connection) resumes from the parts it has; a transfer that fails
//!   midway is retried from the byte where it stopped;
//! - a complete file is verified (size, and the digest the source gave),
//!   then renamed to its final name: nothing unverified ever sits there.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, UNIX_EPOCH};

use super::error::DownloadError;
use super::verify::{Expect, Hasher, hash_file};
use crate::net::RetryPolicy;

/// Files above this size are fetched as parallel parts.
pub const SPLIT_ABOVE: u64 = 16 * 1024 * 1024;
/// Part size for files up to [`LARGE_FILE`].
pub const PART_SIZE: u64 = 8 * 1024 * 1024;
/// Files above this size use [`LARGE_PART_SIZE`] (fewer requests).
pub const LARGE_FILE: u64 = 1024 * 1024 * 1024;
/// Part size for large files.
pub const LARGE_PART_SIZE: u64 = 16 * 1024 * 1024;
/// The log of verified files in an output directory.
pub const VERIFIED_LOG: &str = ".matrixinfer-verified";
/// Suffix of temporary files.
pub const PART_SUFFIX: &str = ".mi-part";

/// A file a source offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    /// Path below the output directory, `/`-separated.
    pub rel: String,
    /// Size in bytes.
    pub size: u64,
    /// What its bytes must hash to.
    pub expect: Expect,
    /// What identifies this version of it (ETag, commit and blob id, …);
    /// a partial download of another version is not resumed.
    pub version: String,
    /// Where the source finds it (object key, repo path, file path).
    pub locator: String,
}

/// A transfer that did not complete.
#[derive(Debug)]
pub enum FetchError {
    /// May pass if tried again (network, 5xx, throttling, short body).
    Transient(String),
    /// Will not pass (credentials, not found, disk full, cancelled).
    Fatal(DownloadError),
}

/// Where bytes come from.
pub trait Origin: Sync {
    /// Sends bytes `range` of `file` to `sink`, in order, in pieces. A
    /// sink error is returned as is.
    fn fetch(
        &self,
        file: &RemoteFile,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FetchError>,
    ) -> Result<(), FetchError>;
}

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
}

/// Fetches `files` into `dir`. `dir` must be locked by the caller.
pub fn run(
    dir: &Path,
    files: Vec<RemoteFile>,
    origin: &dyn Origin,
    workers: usize,
    progress: &Progress,
    cancel: &AtomicBool,
    retry: RetryPolicy,
) -> Result<(), DownloadError> {
    let mut verified = VerifiedLog::open(dir)?;
    progress.files_total.store(files.len() as u64, Relaxed);
    progress
        .bytes_total
        .store(files.iter().map(|f| f.size).sum(), Relaxed);

    let mut states = Vec::new();
    for file in files {
        let target = safe_join(dir, &file.rel)?;
        if verified.is_verified(&target, &file)? {
            progress.files_done.fetch_add(1, Relaxed);
            progress.bytes_done.fetch_add(file.size, Relaxed);
            continue;
        }
        match FileState::prepare(file, target, progress) {
            Ok(state) => states.push(state),
            Err(e) => return Err(release_space_if_full(e, &states)),
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
        state.finish(progress, &verified)?;
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
                                state.finish(progress, &verified)
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
        Some(e) => Err(release_space_if_full(e, &states)),
        None if cancel.load(Relaxed) => Err(DownloadError::Cancelled),
        None => Ok(()),
    }
}

/// A full disk is shared with the engine and everything else in the Pod:
/// the unfinished files of this run give their space back rather than
/// keep it for a resume that cannot happen until space is freed.
fn release_space_if_full(error: DownloadError, states: &[FileState]) -> DownloadError {
    if matches!(error, DownloadError::DiskFull { .. }) {
        // Finished files were renamed away from their temporary names.
        for state in states {
            state.discard();
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

/// One file being downloaded.
struct FileState {
    file: RemoteFile,
    target: PathBuf,
    temp: PathBuf,
    journal_path: PathBuf,
    handle: File,
    parts: Vec<Range<u64>>,
    /// Parts already on disk (from an earlier run).
    done: Vec<bool>,
    remaining: AtomicUsize,
    journal: Mutex<Option<File>>,
    /// For single-transfer files: the digest, computed as bytes arrive.
    hasher: Mutex<Option<Hasher>>,
}

impl FileState {
    fn prepare(
        file: RemoteFile,
        target: PathBuf,
        progress: &Progress,
    ) -> Result<FileState, DownloadError> {
        let parent = target.parent().unwrap_or(Path::new("/")).to_path_buf();
        std::fs::create_dir_all(&parent)
            .map_err(|e| DownloadError::local("cannot create", &parent, e))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = parent.join(format!(".{name}{PART_SUFFIX}"));
        let journal_path = parent.join(format!(".{name}{PART_SUFFIX}.journal"));

        let part_size = if file.size > LARGE_FILE {
            LARGE_PART_SIZE
        } else {
            PART_SIZE
        };
        let parts: Vec<Range<u64>> = if file.size > SPLIT_ABOVE {
            (0..file.size.div_ceil(part_size))
                .map(|i| i * part_size..((i + 1) * part_size).min(file.size))
                .collect()
        } else if file.size > 0 {
            std::iter::once(0..file.size).collect()
        } else {
            Vec::new()
        };
        let header = format!(
            "mi-part v1 size={} part={part_size} version={}",
            file.size, file.version
        );
        let mut done = vec![false; parts.len()];
        let resumable = parts.len() > 1 && read_journal(&journal_path, &header, &mut done);
        if !resumable {
            done.iter_mut().for_each(|d| *d = false);
            let _ = std::fs::remove_file(&journal_path);
        }
        let handle = OpenOptions::new()
            .create(true)
            .truncate(!resumable)
            .read(true)
            .write(true)
            .open(&temp)
            .map_err(|e| DownloadError::local("cannot create", &temp, e))?;
        if let Err(e) = preallocate(&handle, file.size) {
            let _ = std::fs::remove_file(&temp);
            return Err(DownloadError::local("cannot allocate", &temp, e));
        }
        let journal = if parts.len() > 1 {
            let mut journal = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&journal_path)
                .map_err(|e| DownloadError::local("cannot create", &journal_path, e))?;
            if !resumable {
                writeln!(journal, "{header}")
                    .map_err(|e| DownloadError::local("cannot write", &journal_path, e))?;
            }
            Some(journal)
        } else {
            None
        };
        let resumed: u64 = parts
            .iter()
            .zip(&done)
            .filter(|(_, d)| **d)
            .map(|(r, _)| r.end - r.start)
            .sum();
        if resumed > 0 {
            tracing::info!(file = %file.rel, resumed_bytes = resumed, "resuming an interrupted download");
        }
        progress.bytes_done.fetch_add(resumed, Relaxed);
        let remaining = done.iter().filter(|d| !**d).count();
        let hasher = if parts.len() == 1 {
            file.expect.hasher(file.size)
        } else {
            None
        };
        Ok(FileState {
            target,
            temp,
            journal_path,
            handle,
            remaining: AtomicUsize::new(remaining),
            parts,
            done,
            journal: Mutex::new(journal),
            hasher: Mutex::new(hasher),
            file,
        })
    }

    fn pending_parts(&self) -> impl Iterator<Item = usize> + '_ {
        self.done
            .iter()
            .enumerate()
            .filter(|(_, d)| !**d)
            .map(|(i, _)| i)
    }

    /// Fetches one part, retrying transient faults from where they
    /// stopped. Returns whether it was the file's last part.
    fn transfer(
        &self,
        part: usize,
        origin: &dyn Origin,
        progress: &Progress,
        cancel: &AtomicBool,
        retry: &RetryPolicy,
    ) -> Result<bool, DownloadError> {
        let range = self.parts[part].clone();
        let offset = Cell::new(range.start);
        let mut attempt = 0;
        // Only single-transfer files hash as they go; parts of one file
        // must not wait for each other on this lock.
        let mut hasher =
            (self.parts.len() == 1).then(|| self.hasher.lock().unwrap_or_else(|e| e.into_inner()));
        loop {
            let mut sink = |chunk: &[u8]| -> Result<(), FetchError> {
                if cancel.load(Relaxed) {
                    return Err(FetchError::Fatal(DownloadError::Cancelled));
                }
                let at = offset.get();
                if chunk.len() as u64 > range.end - at {
                    return Err(FetchError::Transient(
                        "the source sent more bytes than asked for".into(),
                    ));
                }
                self.handle.write_all_at(chunk, at).map_err(|e| {
                    FetchError::Fatal(DownloadError::local("cannot write", &self.temp, e))
                })?;
                if let Some(h) = hasher.as_mut().and_then(|guard| guard.as_mut()) {
                    h.update(chunk);
                }
                offset.set(at + chunk.len() as u64);
                progress.bytes_done.fetch_add(chunk.len() as u64, Relaxed);
                progress
                    .bytes_fetched
                    .fetch_add(chunk.len() as u64, Relaxed);
                Ok(())
            };
            let outcome = match origin.fetch(&self.file, offset.get()..range.end, &mut sink) {
                Ok(()) if offset.get() == range.end => break,
                Ok(()) => FetchError::Transient(format!(
                    "body ended {} bytes short",
                    range.end - offset.get()
                )),
                Err(e) => e,
            };
            match outcome {
                FetchError::Fatal(e) => return Err(e),
                FetchError::Transient(reason) => {
                    attempt += 1;
                    if attempt >= retry.attempts {
                        return Err(DownloadError::Exhausted {
                            what: format!(
                                "{} bytes {}-{}",
                                self.file.rel,
                                range.start,
                                range.end - 1
                            ),
                            attempts: attempt,
                            last: reason,
                        });
                    }
                    progress.retries.fetch_add(1, Relaxed);
                    tracing::debug!(file = %self.file.rel, attempt, %reason, "retrying");
                    sleep_unless_cancelled(retry.backoff(attempt), cancel);
                    if cancel.load(Relaxed) {
                        return Err(DownloadError::Cancelled);
                    }
                }
            }
        }
        drop(hasher);
        if self.parts.len() > 1 {
            // The part's bytes are on disk before the journal says so.
            self.handle
                .sync_data()
                .map_err(|e| DownloadError::local("cannot flush", &self.temp, e))?;
            if let Some(journal) = self
                .journal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
            {
                // Only a resume needs the line: without it, that part
                // is fetched again.
                if let Err(e) = writeln!(journal, "{part}") {
                    tracing::warn!(journal = %self.journal_path.display(), error = %e, "cannot record a finished part");
                }
            }
        }
        Ok(self.remaining.fetch_sub(1, Relaxed) == 1)
    }

    /// Verifies the complete temporary file and renames it into place.
    fn finish(
        &self,
        progress: &Progress,
        verified: &Mutex<VerifiedLog>,
    ) -> Result<(), DownloadError> {
        let fail = |e| DownloadError::local("cannot verify", &self.temp, e);
        let size = self.handle.metadata().map_err(fail)?.len();
        if size != self.file.size {
            self.discard();
            return Err(DownloadError::Integrity {
                file: self.file.rel.clone(),
                check: "size",
                expected: self.file.size.to_string(),
                actual: size.to_string(),
            });
        }
        let streamed = self.hasher.lock().unwrap_or_else(|e| e.into_inner()).take();
        let digest = match (streamed, self.file.expect.hasher(self.file.size)) {
            (Some(hasher), _) => Some(hasher.finish()),
            (None, Some(hasher)) => Some(hash_file(&self.temp, hasher).map_err(fail)?),
            (None, None) => None,
        };
        if let Some(digest) = digest
            && let Err((expected, actual)) = self.file.expect.check(&digest)
        {
            self.discard();
            return Err(DownloadError::Integrity {
                file: self.file.rel.clone(),
                check: self.file.expect.name(),
                expected,
                actual,
            });
        }
        self.handle.sync_all().map_err(fail)?;
        std::fs::rename(&self.temp, &self.target)
            .map_err(|e| DownloadError::local("cannot rename into place", &self.target, e))?;
        let _ = std::fs::remove_file(&self.journal_path);
        if let Some(parent) = self.target.parent()
            && let Ok(dir) = File::open(parent)
        {
            let _ = dir.sync_all();
        }
        verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(&self.target, &self.file);
        progress.files_done.fetch_add(1, Relaxed);
        Ok(())
    }

    fn discard(&self) {
        let _ = std::fs::remove_file(&self.temp);
        let _ = std::fs::remove_file(&self.journal_path);
    }
}

fn read_journal(path: &Path, header: &str, done: &mut [bool]) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let mut lines = BufReader::new(file).lines();
    if lines.next().and_then(Result::ok).as_deref() != Some(header) {
        return false;
    }
    for line in lines.map_while(Result::ok) {
        if let Some(slot) = line
            .trim()
            .parse::<usize>()
            .ok()
            .and_then(|i| done.get_mut(i))
        {
            *slot = true;
        }
    }
    true
}

/// Reserves the file's blocks up front, so a full disk fails now rather
/// than halfway through; file systems without `fallocate` get a sparse
/// file of the right length.
fn preallocate(file: &File, size: u64) -> std::io::Result<()> {
    if size == 0 {
        return file.set_len(0);
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => file.set_len(size),
        Err(e) => Err(e.into()),
    }
}

fn sleep_unless_cancelled(total: Duration, cancel: &AtomicBool) {
    let step = Duration::from_millis(50);
    let mut left = total;
    while !left.is_zero() && !cancel.load(Relaxed) {
        let nap = left.min(step);
        std::thread::sleep(nap);
        left -= nap;
    }
}

/// Joins a source-provided relative path onto `dir`, refusing anything
/// that would land outside it.
pub fn safe_join(dir: &Path, rel: &str) -> Result<PathBuf, DownloadError> {
    let unsafe_path = || {
        DownloadError::Source(format!(
            "refusing file name {rel:?}: it would land outside the output directory"
        ))
    };
    if rel.contains('\0') || rel.starts_with('/') {
        return Err(unsafe_path());
    }
    let mut path = dir.to_path_buf();
    let mut parts = 0;
    for component in Path::new(rel).components() {
        match component {
            Component::Normal(part) => {
                path.push(part);
                parts += 1;
            }
            Component::CurDir => {}
            _ => return Err(unsafe_path()),
        }
    }
    if parts == 0 {
        return Err(unsafe_path());
    }
    Ok(path)
}

/// The log of files verified in an output directory: lines of
/// `size mtime check@version path`. A file whose size and modification time still
/// match its line is not hashed again.
struct VerifiedLog {
    path: PathBuf,
    entries: HashMap<PathBuf, (u64, u128, String)>,
}

impl VerifiedLog {
    fn open(dir: &Path) -> Result<VerifiedLog, DownloadError> {
        let path = dir.join(VERIFIED_LOG);
        let mut entries = HashMap::new();
        if let Ok(file) = File::open(&path) {
            for line in BufReader::new(file).lines().map_while(Result::ok) {
                let mut fields = line.splitn(4, ' ');
                let (Some(size), Some(mtime), Some(check), Some(rel)) =
                    (fields.next(), fields.next(), fields.next(), fields.next())
                else {
                    continue;
                };
                if let (Ok(size), Ok(mtime)) = (size.parse(), mtime.parse()) {
                    entries.insert(dir.join(rel), (size, mtime, check.to_owned()));
                }
            }
        }
        Ok(VerifiedLog { path, entries })
    }

    /// Whether `target` already holds `file`, verified.
    fn is_verified(&mut self, target: &Path, file: &RemoteFile) -> Result<bool, DownloadError> {
        let Ok(meta) = std::fs::metadata(target) else {
            return Ok(false);
        };
        if !meta.is_file() || meta.len() != file.size {
            return Ok(false);
        }
        if self.entries.get(target) == Some(&(file.size, mtime_nanos(&meta), check_key(file))) {
            return Ok(true);
        }
        // Present but not recorded by us (an earlier tool, a copy): check
        // its bytes. Without a digest to check, it cannot be trusted.
        let Some(hasher) = file.expect.hasher(file.size) else {
            return Ok(false);
        };
        let digest = hash_file(target, hasher)
            .map_err(|e| DownloadError::local("cannot read", target, e))?;
        let ok = file.expect.check(&digest).is_ok();
        if ok {
            self.record(target, file);
        }
        Ok(ok)
    }

    /// Records a verified file. Failing to is no reason to fail the
    /// download (a disk someone else filled, say): the file is verified
    /// and in place, and the next run checks its bytes again.
    fn record(&mut self, target: &Path, file: &RemoteFile) {
        let written = std::fs::metadata(target).and_then(|meta| {
            let entry = (file.size, mtime_nanos(&meta), check_key(file));
            let line = format!("{} {} {} {}\n", entry.0, entry.1, entry.2, file.rel);
            self.entries.insert(target.to_path_buf(), entry);
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?
                .write_all(line.as_bytes())
        });
        if let Err(e) = written {
            tracing::warn!(file = %file.rel, log = %self.path.display(), error = %e, "verified and in place, but not recorded; the next run checks its bytes again");
        }
    }
}

/// What a log line vouches for: the digest checked and the version of the
/// source it came from (for size-only checks, the version is all there is).
fn check_key(file: &RemoteFile) -> String {
    format!("{}@{}", file.expect.key(), file.version.replace(' ', "%20"))
}

fn mtime_nanos(meta: &std::fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests;
