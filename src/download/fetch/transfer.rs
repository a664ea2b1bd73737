//! One file in flight: cutting it into parts, its preallocated temporary
//! file and journal (resuming the parts an earlier run finished), and the
//! transfer of one part into place with retries from the byte where a
//! failure stopped it, its bytes going into the file's digest on the way
//! (`prefix`).

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use super::durable::Unsynced;
use super::prefix::Prefix;
use super::{
    FetchError, Origin, PART_SIZE, PART_SUFFIX, Progress, RemoteFile, SPLIT_ABOVE, journal,
};
use crate::download::error::DownloadError;
use crate::net::RetryPolicy;

/// One file being downloaded.
pub(super) struct FileState {
    pub(super) file: RemoteFile,
    pub(super) target: PathBuf,
    pub(super) temp: PathBuf,
    pub(super) journal_path: PathBuf,
    pub(super) handle: File,
    pub(super) parts: Vec<Range<u64>>,
    /// Parts already on disk (from an earlier run).
    done: Vec<bool>,
    /// Parts not yet on disk; the transfer that takes it to zero finishes
    /// the file. Taken down under the `unsynced` lock.
    pub(super) remaining: AtomicUsize,
    /// Multi-part files: the resume journal.
    pub(super) journal: Mutex<Option<File>>,
    /// Finished parts no sync covers yet, hence not in the journal.
    pub(super) unsynced: Mutex<Unsynced>,
    /// The digest, computed as bytes arrive.
    pub(super) prefix: Prefix,
}

impl FileState {
    pub(super) fn prepare(
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

        let part_size = part_size();
        let parts: Vec<Range<u64>> = if file.size > SPLIT_ABOVE {
            (0..file.size.div_ceil(part_size))
                .map(|i| i * part_size..((i + 1) * part_size).min(file.size))
                .collect()
        } else if file.size > 0 {
            std::iter::once(0..file.size).collect()
        } else {
            Vec::new()
        };
        let header = journal::header(file.size, part_size, &file.version);
        let mut done = vec![false; parts.len()];
        let resumable = parts.len() > 1 && journal::read(&journal_path, &header, &mut done);
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
            Some(journal::open(&journal_path, &header, resumable)?)
        } else {
            None
        };
        let resumed: u64 = parts
            .iter()
            .zip(&done)
            .filter(|(_, d)| **d)
            .map(|(r, _)| r.end - r.start)
            .sum();
        let hasher = file.expect.hasher(file.size);
        if resumed > 0 && hasher.is_some() {
            // The digest's state is not saved: the parts on disk are read
            // back into it as the prefix reaches them.
            tracing::info!(file = %file.rel, resumed_bytes = resumed, "resuming: re-hashing {resumed} bytes already on disk");
        } else if resumed > 0 {
            tracing::info!(file = %file.rel, resumed_bytes = resumed, "resuming an interrupted download");
        }
        progress.bytes_done.fetch_add(resumed, Relaxed);
        let remaining = done.iter().filter(|d| !**d).count();
        let prefix = Prefix::new(&parts, &done, hasher);
        Ok(FileState {
            target,
            temp,
            journal_path,
            handle,
            remaining: AtomicUsize::new(remaining),
            parts,
            done,
            journal: Mutex::new(journal),
            unsynced: Mutex::default(),
            prefix,
            file,
        })
    }

    pub(super) fn pending_parts(&self) -> impl Iterator<Item = usize> + '_ {
        self.done
            .iter()
            .enumerate()
            .filter(|(_, d)| !**d)
            .map(|(i, _)| i)
    }

    /// Fetches one part, retrying transient faults from where they
    /// stopped. Returns whether it was the file's last part.
    pub(super) fn transfer(
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
                let let_go = self
                    .prefix
                    .wrote(
                        part,
                        at,
                        chunk,
                        &|buf, at| self.read_back(buf, at),
                        progress,
                        cancel,
                    )
                    .map_err(FetchError::Fatal)?;
                for range in let_go {
                    self.let_go(range);
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
        self.part_done(part, progress)
    }

    /// Reads bytes of the temporary file back, for the digest.
    pub(super) fn read_back(&self, buf: &mut [u8], at: u64) -> Result<(), DownloadError> {
        self.handle
            .read_exact_at(buf, at)
            .map_err(|e| DownloadError::local("cannot read back", &self.temp, e))
    }
}

/// The part size: [`PART_SIZE`]. `MATRIXINFER_BENCH_PART_MIB` sets it,
/// for the part size table of `benches/download_vs_boto3.sh` only; it is
/// no setting of the sidecar.
fn part_size() -> u64 {
    let bench = std::env::var("MATRIXINFER_BENCH_PART_MIB")
        .ok()
        .and_then(|mib| mib.parse::<u64>().ok())
        .filter(|mib| (1..=1024).contains(mib));
    match bench {
        Some(mib) => mib * 1024 * 1024,
        None => PART_SIZE,
    }
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
