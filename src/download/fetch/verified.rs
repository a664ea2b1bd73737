//! The log of verified files in an output directory
//! ([`VERIFIED_LOG`](super::VERIFIED_LOG)), which spares a later run
//! hashing what an earlier one already checked.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::{RemoteFile, VERIFIED_LOG};
use crate::download::error::DownloadError;
use crate::download::verify::hash_file;

/// The log of files verified in an output directory: lines of
/// `size mtime check@version path`. A file whose size and modification time still
/// match its line is not hashed again.
pub(super) struct VerifiedLog {
    path: PathBuf,
    entries: HashMap<PathBuf, (u64, u128, String)>,
}

impl VerifiedLog {
    pub(super) fn open(dir: &Path) -> Result<VerifiedLog, DownloadError> {
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
    pub(super) fn is_verified(
        &mut self,
        target: &Path,
        file: &RemoteFile,
    ) -> Result<bool, DownloadError> {
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
    pub(super) fn record(&mut self, target: &Path, file: &RemoteFile) {
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
