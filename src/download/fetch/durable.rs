//! Making finished parts durable, in batches, and letting their page
//! cache go.
//!
//! The journal may only name parts whose bytes are on disk, but a sync per
//! part costs a flush of the device's cache per part. Finished parts of a
//! file gather instead until [`SYNC_EVERY`] bytes of them are waiting;
//! then one `fdatasync` covers them all and their journal lines follow.
//! The file's last batch is covered by the sync before it lands; a run
//! that fails syncs and records what it finished before it returns.
//!
//! After a sync, the bytes both synced and hashed are of no more use to
//! the download: `posix_fadvise(DONTNEED)` lets their page cache go, so a
//! model many times the container's memory limit does not sit in it
//! (page cache counts against the limit), part by part: a part goes once
//! it is both hashed and covered by a sync, at that sync or as soon as
//! the digest reaches it, whichever comes last (parts that finished ahead
//! of the digest's front were usually synced long before it reaches
//! them). Bytes not hashed yet stay, to be read back from memory rather
//! than from the disk.

use std::num::NonZeroU64;
use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;

use super::Progress;
use super::journal;
use super::transfer::FileState;
use crate::download::error::DownloadError;

/// Bytes of finished parts one sync covers, at most (plus the part that
/// crossed it). A sync waits for the writeback of what is dirty and a
/// flush of the device's cache, a fixed cost worth spreading over several
/// parts (2 parts of large files, 4 of others) but no more: a crash loses,
/// for resume, what no sync covers yet, and the clean pages waiting for a
/// sync cannot be let go until it comes, so this bounds the page cache a
/// download holds to a quarter of the 128 MiB the deploy example gives
/// the sidecar (plus the parts in flight).
pub const SYNC_EVERY: u64 = 32 * 1024 * 1024;

/// Finished parts of a file that no sync covers yet.
#[derive(Debug, Default)]
pub(super) struct Unsynced {
    parts: Vec<usize>,
    bytes: u64,
}

impl FileState {
    /// Counts `part` as complete, syncing and recording the finished
    /// parts when enough wait. Returns whether it was the file's last.
    pub(super) fn part_done(
        &self,
        part: usize,
        progress: &Progress,
    ) -> Result<bool, DownloadError> {
        if self.parts.len() == 1 {
            // No journal: the sync before landing is all it needs.
            return Ok(self.remaining.fetch_sub(1, Relaxed) == 1);
        }
        let batch = {
            let mut unsynced = self.unsynced.lock().unwrap_or_else(|e| e.into_inner());
            unsynced.parts.push(part);
            unsynced.bytes += self.parts[part].end - self.parts[part].start;
            if self.remaining.fetch_sub(1, Relaxed) == 1 {
                // Landing syncs the whole file.
                return Ok(true);
            }
            if unsynced.bytes < SYNC_EVERY {
                return Ok(false);
            }
            std::mem::take(&mut *unsynced)
        };
        self.sync_parts(&batch, progress)?;
        Ok(false)
    }

    /// One sync for the finished parts of `batch`, then their journal
    /// lines; then what is both synced and hashed leaves the page cache.
    fn sync_parts(&self, batch: &Unsynced, progress: &Progress) -> Result<(), DownloadError> {
        // What is written now, this sync covers.
        let written = self.prefix.written();
        self.handle
            .sync_data()
            .map_err(|e| DownloadError::local("cannot flush", &self.temp, e))?;
        progress.syncs.fetch_add(1, Relaxed);
        if let Some(journal) = self
            .journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            for &part in &batch.parts {
                journal::record(journal, part, &self.journal_path);
            }
        }
        match written {
            Some(written) => self
                .prefix
                .synced(&written)
                .into_iter()
                .for_each(|range| self.let_go(range)),
            // Nothing to hash: synced is enough.
            None => batch
                .parts
                .iter()
                .for_each(|&part| self.let_go(self.parts[part].clone())),
        }
        Ok(())
    }

    /// The parts waiting for a sync need none of their own any more: the
    /// file is about to land, after a sync that covers them (their journal
    /// lines would go with the journal), or it is discarded.
    pub(super) fn forget_unsynced(&self) {
        std::mem::take(&mut *self.unsynced.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// A run that stops before the file is complete makes what it
    /// finished durable and recorded, for the next run to resume from; and
    /// keeps none of it in the page cache (the digest is not kept).
    pub(super) fn stop(&self, progress: &Progress) {
        let batch = std::mem::take(&mut *self.unsynced.lock().unwrap_or_else(|e| e.into_inner()));
        if !batch.parts.is_empty()
            && let Err(e) = self.sync_parts(&batch, progress)
        {
            tracing::warn!(file = %self.file.rel, error = %crate::errors::chain(&e), "finished parts not recorded; the next run fetches them again");
        }
        self.let_go(0..self.file.size);
    }

    /// Tells the kernel the download needs `range` of the temporary file
    /// no more. Advice: failing is no fault.
    pub(super) fn let_go(&self, range: Range<u64>) {
        if let Some(len) = NonZeroU64::new(range.end.saturating_sub(range.start)) {
            let _ = rustix::fs::fadvise(
                &self.handle,
                range.start,
                Some(len),
                rustix::fs::Advice::DontNeed,
            );
        }
    }
}
