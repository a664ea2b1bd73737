//! The resume journal beside a temporary file
//! (`.<name>.mi-part.journal`): a header naming the file's size, part size
//! and source version, then one line per part whose bytes a sync has
//! already put on disk (`durable`). A journal whose header does not match
//! is not resumed.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use crate::download::error::DownloadError;

/// The first line: what the recorded parts are parts of.
pub(super) fn header(size: u64, part_size: u64, version: &str) -> String {
    format!("mi-part v1 size={size} part={part_size} version={version}")
}

/// Marks the parts the journal at `path` records in `done`; `false` when
/// there is no journal or it is headed by another `header`.
pub(super) fn read(path: &Path, header: &str, done: &mut [bool]) -> bool {
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

/// Opens the journal for appending; a fresh one (not `resumable`) gets
/// its header first.
pub(super) fn open(path: &Path, header: &str, resumable: bool) -> Result<File, DownloadError> {
    let mut journal = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| DownloadError::local("cannot create", path, e))?;
    if !resumable {
        writeln!(journal, "{header}").map_err(|e| DownloadError::local("cannot write", path, e))?;
    }
    Ok(journal)
}

/// Records a finished part, whose bytes the caller has synced.
pub(super) fn record(journal: &mut File, part: usize, path: &Path) {
    // Only a resume needs the line: without it, that part is fetched
    // again.
    if let Err(e) = writeln!(journal, "{part}") {
        tracing::warn!(journal = %path.display(), error = %e, "cannot record a finished part");
    }
}
