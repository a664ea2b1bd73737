//! One download at a time per output directory: a `.lock` file there.
//!
//! The lock is an advisory `flock` on `<output_dir>/.lock`, which the kernel
//! drops when its holder exits, however it exits (crash, `kill -9`, a node
//! going down with the Pod). So a stale lock cannot block anyone: the file
//! may stay behind, but nobody holds it. The holder writes its PID and start
//! time into the file, for whoever wonders who is downloading.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::DownloadError;

/// The name of the lock file in an output directory.
pub const LOCK_FILE: &str = ".lock";

/// A held lock on an output directory; released on drop.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    path: PathBuf,
}

impl DirLock {
    /// Creates `dir` if needed and takes its lock, waiting for another
    /// holder (in this process or another) to finish.
    pub fn acquire(dir: &Path) -> Result<DirLock, DownloadError> {
        std::fs::create_dir_all(dir).map_err(|e| DownloadError::local("cannot create", dir, e))?;
        if !dir.is_dir() {
            return Err(DownloadError::BadPath(format!(
                "output_dir {} is not a directory",
                dir.display()
            )));
        }
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| DownloadError::local("cannot open", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::info!(dir = %dir.display(), "another download into this directory is running; waiting for it");
                file.lock()
                    .map_err(|e| DownloadError::local("cannot lock", &path, e))?;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(DownloadError::local("cannot lock", &path, e));
            }
        }
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let _ = file.set_len(0);
        let _ = writeln!(file, "pid={} since={since}", std::process::id());
        Ok(DirLock { file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn serializes_holders() {
        let dir = std::env::temp_dir().join(format!("mi-lock-{}", std::process::id()));
        let first = DirLock::acquire(&dir).unwrap();
        assert!(first.path().ends_with(".lock"));
        let (tx, rx) = mpsc::channel();
        let waiter_dir = dir.clone();
        let waiter = std::thread::spawn(move || {
            let _second = DirLock::acquire(&waiter_dir).unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "second holder got in"
        );
        drop(first);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("second holder waits, then gets in");
        waiter.join().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
