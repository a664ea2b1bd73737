//! Landing a file: the complete temporary file verified (size, then the
//! digest the source gave, as computed while its bytes arrived) and
//! renamed to its final name, so nothing unverified ever sits there; and
//! the paths a source may name at all.

use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;

use super::transfer::FileState;
use super::verified::VerifiedLog;
use super::{Origin, Progress};
use crate::download::error::DownloadError;
use crate::download::verify::hash_file;

impl FileState {
    /// Verifies the complete temporary file and renames it into place.
    pub(super) fn finish(
        &self,
        origin: &dyn Origin,
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
        let expect = origin.settle(&self.file)?;
        // A digest streamed for a check that no longer applies is dropped.
        let streamed = if expect == self.file.expect {
            self.prefix
                .take(&|buf, at| self.read_back(buf, at), progress)?
        } else {
            None
        };
        let digest = match (streamed, expect.hasher(self.file.size)) {
            (Some(hasher), _) => Some(hasher.finish()),
            (None, Some(hasher)) => Some(hash_file(&self.temp, hasher).map_err(fail)?),
            (None, None) => None,
        };
        if let Some(digest) = digest
            && let Err((expected, actual)) = expect.check(&digest)
        {
            self.discard();
            return Err(DownloadError::Integrity {
                file: self.file.rel.clone(),
                check: expect.name(),
                expected,
                actual,
            });
        }
        // This sync covers the parts no sync covered yet.
        self.forget_unsynced();
        self.handle.sync_all().map_err(fail)?;
        progress.syncs.fetch_add(1, Relaxed);
        // Synced and verified: the download needs none of it in memory.
        self.let_go(0..self.file.size);
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
        progress.note_check(expect.id());
        tracing::info!(file = %self.file.rel, bytes = self.file.size, check = expect.id(), "file verified");
        Ok(())
    }

    pub(super) fn discard(&self) {
        self.forget_unsynced();
        let _ = std::fs::remove_file(&self.temp);
        let _ = std::fs::remove_file(&self.journal_path);
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
