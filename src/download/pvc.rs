//! A mounted volume: `pvc://models/llama` copies `/models/llama`.
//!
//! Files are copied with the same downloader as remote sources (parallel,
//! parts for large files, temporary name, rename), so a copy interrupted
//! midway resumes too. There is no digest to check against, so a file's
//! version is its size and modification time: a copy whose source has not
//! changed since it was verified is skipped.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::error::DownloadError;
use super::fetch::{FetchError, Origin, RemoteFile};
use super::verify::Expect;

/// Read size per call.
const CHUNK: usize = 1024 * 1024;

/// A directory on a mounted volume.
#[derive(Debug)]
pub struct Volume {
    root: PathBuf,
}

/// That `root` is a directory this process can see.
pub fn check_exists(root: &Path) -> Result<(), DownloadError> {
    let meta = std::fs::metadata(root).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DownloadError::NotFound(format!(
            "pvc://{} does not exist",
            root.display().to_string().trim_start_matches('/')
        )),
        _ => DownloadError::local("cannot read", root, e),
    })?;
    if !meta.is_dir() {
        return Err(DownloadError::BadPath(format!(
            "pvc://{} is a file; pvc:// must name a directory",
            root.display().to_string().trim_start_matches('/')
        )));
    }
    Ok(())
}

impl Volume {
    /// Lists every regular file below `root`, following symlinks to files
    /// but not to directories (no loops).
    pub fn open(root: &Path) -> Result<(Volume, Vec<RemoteFile>), DownloadError> {
        check_exists(root)?;
        let mut files = Vec::new();
        walk(root, root, &mut files)?;
        files.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok((
            Volume {
                root: root.to_path_buf(),
            },
            files,
        ))
    }
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<RemoteFile>) -> Result<(), DownloadError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| DownloadError::local("cannot list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DownloadError::local("cannot list", dir, e))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| DownloadError::local("cannot stat", &path, e))?;
        if kind.is_dir() {
            walk(root, &path, files)?;
            continue;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        files.push(RemoteFile {
            rel: rel.clone(),
            size: meta.len(),
            expect: Expect::SizeOnly,
            version: format!("mtime:{mtime}"),
            locator: rel,
        });
    }
    Ok(())
}

impl Origin for Volume {
    fn fetch(
        &self,
        file: &RemoteFile,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FetchError>,
    ) -> Result<(), FetchError> {
        let path = self.root.join(&file.locator);
        let fatal = |e| FetchError::Fatal(DownloadError::local("cannot read", &path, e));
        let source = File::open(&path).map_err(fatal)?;
        let mut buf = vec![0u8; CHUNK.min((range.end - range.start) as usize)];
        let mut offset = range.start;
        while offset < range.end {
            let want = ((range.end - offset) as usize).min(buf.len());
            let n = source.read_at(&mut buf[..want], offset).map_err(fatal)?;
            if n == 0 {
                // The source shrank under us: the copy cannot be right.
                return Err(FetchError::Fatal(DownloadError::Source(format!(
                    "{} changed size during the copy",
                    path.display()
                ))));
            }
            sink(&buf[..n])?;
            offset += n as u64;
        }
        Ok(())
    }
}
