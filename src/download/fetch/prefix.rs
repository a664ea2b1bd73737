//! The digest of a file whose parts arrive out of order, computed as its
//! bytes arrive.
//!
//! A digest consumes bytes in order; parts finish in any order. The
//! digest follows the file's contiguous prefix as it grows: the transfer
//! whose bytes are at the front of the prefix feeds its chunks to the
//! hasher as they arrive, from memory; bytes that were written before the
//! prefix reached them (a part that finished ahead of the one before it,
//! the first bytes of a part that started early, parts an earlier run left
//! on disk) are read back from the temporary file when it does, one
//! buffer at a time. Read back right after they were written, they come
//! from the page cache; with one worker and nothing resumed, nothing is
//! read back at all. No part is ever held in memory.
//!
//! Ownership of the hasher's advance, all under one lock per file:
//!
//! - `written_to` of a part moves only under the lock, after the bytes are
//!   on disk, and only its transfer moves it;
//! - a transfer with a chunk at `at` first hashes, by read-back, what it
//!   may of what is written before `at`, then hashes the chunk itself
//!   from memory if the prefix stands exactly at `at`, and only then
//!   publishes the chunk as written: no one can read back a chunk its
//!   writer is about to hash, and a chunk is hashed from memory only at
//!   the front, so no byte is hashed twice (a retry continues from where
//!   the failed attempt stopped, which is where `written_to` stands);
//! - read-back stops at the written frontier, and at a part another
//!   transfer is still writing: that transfer catches up on its own part
//!   with its next chunk. A finished part has no writer; anyone may read
//!   it back. The lock is released between read-back buffers, so the
//!   other parts of the file wait for one buffer's hashing at most.
//!
//! It also knows which written bytes a sync has covered (`durable`), so
//! that a part both hashed and on disk can leave the page cache as soon
//! as the digest has it, whatever the parts before it: parts that
//! finished ahead of the front were usually synced long before the digest
//! reaches them, while the front part, the last to finish, is synced
//! last.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use super::Progress;
use crate::download::error::DownloadError;
use crate::download::verify::Hasher;

/// Bytes read back at a time (the size of the network read buffer): the
/// longest the lock is held for hashing.
const READ_BACK: usize = 256 * 1024;

/// Reads bytes of the temporary file back: fills the buffer from the
/// offset.
pub(super) type ReadBack<'a> = &'a dyn Fn(&mut [u8], u64) -> Result<(), DownloadError>;

/// The in-order digest of one file.
pub(super) struct Prefix {
    /// `None` when the file has no digest to compute.
    state: Option<Mutex<State>>,
    /// The file's parts, in order.
    parts: Vec<Range<u64>>,
}

struct State {
    /// `None` once taken at landing.
    hasher: Option<Hasher>,
    /// Bytes `0..hashed_to` are in the digest (and written).
    hashed_to: u64,
    /// Per part, where its bytes on disk end: from the part's start (none
    /// yet) to its end (complete). Bytes of part `p` at or past
    /// `written_to[p]` are not hashed.
    written_to: Vec<u64>,
    /// Per part, where the bytes a sync has covered end (at most
    /// `written_to`).
    durable: Vec<u64>,
    /// Per part, whether its page cache has been let go.
    released: Vec<bool>,
    /// Parts before this one have all been let go.
    first_kept: usize,
}

impl Prefix {
    /// The digest of a file cut into `parts`, of which those marked in
    /// `on_disk` are there already (to be read back); `hasher` is `None`
    /// when there is nothing to compute.
    pub(super) fn new(parts: &[Range<u64>], on_disk: &[bool], hasher: Option<Hasher>) -> Prefix {
        let state = hasher.map(|hasher| {
            let written_to: Vec<u64> = parts
                .iter()
                .zip(on_disk)
                .map(|(r, &done)| if done { r.end } else { r.start })
                .collect();
            // Parts on disk were synced before they were recorded.
            Mutex::new(State {
                hasher: Some(hasher),
                hashed_to: 0,
                durable: written_to.clone(),
                written_to,
                released: vec![false; parts.len()],
                first_kept: 0,
            })
        });
        Prefix {
            state,
            parts: parts.to_vec(),
        }
    }

    /// Where each part's written bytes end now, for a sync about to
    /// start; `None` when there is no digest.
    pub(super) fn written(&self) -> Option<Vec<u64>> {
        self.state.as_ref().map(|s| {
            s.lock()
                .unwrap_or_else(|e| e.into_inner())
                .written_to
                .clone()
        })
    }

    /// A sync that started after [`Prefix::written`] returned `written`
    /// has completed: those bytes are on disk. Returns the parts now both
    /// hashed and on disk, not let go before: their page cache is of no
    /// more use.
    pub(super) fn synced(&self, written: &[u64]) -> Vec<Range<u64>> {
        let Some(state) = &self.state else {
            return Vec::new();
        };
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        for (durable, &w) in s.durable.iter_mut().zip(written) {
            *durable = (*durable).max(w);
        }
        s.release(&self.parts)
    }

    /// Takes `chunk`, just written at `at` in `part`, into the digest: from
    /// memory at the front, otherwise later, by read-back; with it, what
    /// of the file before and after it can be hashed now. Returns the
    /// parts now both hashed and on disk, as [`Prefix::synced`] does.
    pub(super) fn wrote(
        &self,
        part: usize,
        at: u64,
        chunk: &[u8],
        read: ReadBack<'_>,
        progress: &Progress,
        cancel: &AtomicBool,
    ) -> Result<Vec<Range<u64>>, DownloadError> {
        let Some(state) = &self.state else {
            return Ok(Vec::new());
        };
        let guard = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut guard = self.advance(state, guard, Some(part), read, progress, cancel)?;
        let s = &mut *guard;
        debug_assert_eq!(s.written_to[part], at, "a chunk not where its part stopped");
        debug_assert!(s.hashed_to <= at, "bytes hashed before they were written");
        if s.hashed_to == at
            && let Some(hasher) = s.hasher.as_mut()
        {
            hasher.update(chunk);
            s.hashed_to = at + chunk.len() as u64;
        }
        // Never back: bytes sent again (no transfer does, today) are not
        // taken for unwritten ones, nor hashed again above.
        s.written_to[part] = s.written_to[part].max(at + chunk.len() as u64);
        // The chunk completed its part at the front: the parts after it
        // that finished first.
        self.advance(state, guard, Some(part), read, progress, cancel)
            .map(|mut s| s.release(&self.parts))
    }

    /// The digest of the whole file, once every part is on disk: what is
    /// not hashed yet is read back. `None` when there is no digest, or
    /// when it does not cover the file (a fault of this module; the
    /// caller hashes the file instead).
    pub(super) fn take(
        &self,
        read: ReadBack<'_>,
        progress: &Progress,
    ) -> Result<Option<Hasher>, DownloadError> {
        let Some(state) = &self.state else {
            return Ok(None);
        };
        let guard = state.lock().unwrap_or_else(|e| e.into_inner());
        let never = AtomicBool::new(false);
        let mut guard = self.advance(state, guard, None, read, progress, &never)?;
        let size = self.parts.last().map_or(0, |r| r.end);
        if guard.hashed_to != size {
            tracing::warn!(
                hashed = guard.hashed_to,
                size,
                "the streamed digest does not cover the file; hashing the file"
            );
            return Ok(None);
        }
        Ok(guard.hasher.take())
    }

    /// Hashes, by reading back, the written bytes at the front of the
    /// prefix that have no writer (finished parts) or whose writer is
    /// `owner`; one buffer per turn of the lock.
    fn advance<'a>(
        &self,
        state: &'a Mutex<State>,
        mut guard: MutexGuard<'a, State>,
        owner: Option<usize>,
        read: ReadBack<'_>,
        progress: &Progress,
        cancel: &AtomicBool,
    ) -> Result<MutexGuard<'a, State>, DownloadError> {
        let mut buf = Vec::new();
        loop {
            let at = guard.hashed_to;
            let front = self.parts.partition_point(|r| r.end <= at);
            let Some(range) = self.parts.get(front) else {
                return Ok(guard);
            };
            let written = guard.written_to[front];
            // A part still being written is its writer's to catch up on.
            let readable = written == range.end || owner == Some(front);
            if written <= at || !readable || guard.hasher.is_none() {
                return Ok(guard);
            }
            if cancel.load(Relaxed) {
                return Err(DownloadError::Cancelled);
            }
            let n = (written - at).min(READ_BACK as u64) as usize;
            if buf.is_empty() {
                buf = vec![0; READ_BACK];
            }
            read(&mut buf[..n], at)?;
            if let Some(hasher) = guard.hasher.as_mut() {
                hasher.update(&buf[..n]);
            }
            guard.hashed_to = at + n as u64;
            progress.bytes_read_back.fetch_add(n as u64, Relaxed);
            // The file's other transfers publish their chunks meanwhile.
            drop(guard);
            guard = state.lock().unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl State {
    /// Marks the parts both hashed and on disk as let go and returns them
    /// (adjacent ones joined). Looks at the parts from the first kept to
    /// the digest's front: a few, those that finished since it passed.
    fn release(&mut self, parts: &[Range<u64>]) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for (p, range) in parts.iter().enumerate().skip(self.first_kept) {
            if range.end > self.hashed_to {
                break;
            }
            if self.released[p] || self.durable[p] < range.end {
                continue;
            }
            self.released[p] = true;
            match out.last_mut() {
                Some(last) if last.end == range.start => last.end = range.end,
                _ => out.push(range.clone()),
            }
        }
        while self.released.get(self.first_kept) == Some(&true) {
            self.first_kept += 1;
        }
        out
    }
}
