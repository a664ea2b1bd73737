//! Why a download failed, and which status that is for the caller.

use std::io;
use std::path::PathBuf;

use http::StatusCode;

use super::request::RequestError;

/// A download that failed. Messages name what failed and never carry a
/// credential.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The request itself is unusable.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The source refused our credentials (or we had none it accepts).
    #[error("access denied: {0}")]
    Denied(String),
    /// The bucket, prefix, repository, revision, file or path does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The pvc:// path or the output directory is not what it must be.
    #[error("{0}")]
    BadPath(String),
    /// A local path this process may not use: permissions, or a
    /// read-only filesystem. The caller chose it.
    #[error("{op} {}", path.display())]
    LocalForbidden {
        /// What was being done.
        op: &'static str,
        /// The path refused.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The disk filled up.
    #[error("no space left on the device while writing {}", path.display())]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// The bytes received do not match what the source says they are.
    #[error("{file}: {check} mismatch (expected {expected}, got {actual}); the file was not kept")]
    Integrity {
        /// The file, relative to the output directory.
        file: String,
        /// Which check failed.
        check: &'static str,
        /// What the source announced.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// The source kept failing in a way that may pass (network, 5xx).
    #[error("{what}: gave up after {attempts} attempts: {last}")]
    Exhausted {
        /// What was being fetched.
        what: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The source answered something we cannot use.
    #[error("unexpected answer from the source: {0}")]
    Source(String),
    /// A local file operation failed.
    #[error("{op} {}", path.display())]
    Local {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The job was stopped (shutdown).
    #[error("cancelled")]
    Cancelled,
}

impl DownloadError {
    /// The status an HTTP caller gets: 4xx for the caller's mistakes
    /// (request, credentials, names, paths), 5xx for faults outside them.
    pub fn status(&self) -> StatusCode {
        match self {
            DownloadError::Request(_) | DownloadError::BadPath(_) => StatusCode::BAD_REQUEST,
            DownloadError::Denied(_) | DownloadError::LocalForbidden { .. } => {
                StatusCode::FORBIDDEN
            }
            DownloadError::NotFound(_) => StatusCode::NOT_FOUND,
            DownloadError::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            DownloadError::Integrity { .. }
            | DownloadError::Exhausted { .. }
            | DownloadError::Source(_) => StatusCode::BAD_GATEWAY,
            DownloadError::Local { .. } | DownloadError::Cancelled => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// A local I/O error on `path`, recognising a full disk.
    pub fn local(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> DownloadError {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull || source.raw_os_error() == Some(28) {
            return DownloadError::DiskFull { path };
        }
        if matches!(
            source.kind(),
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
        ) {
            return DownloadError::LocalForbidden { op, path, source };
        }
        DownloadError::Local { op, path, source }
    }

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DownloadError::Request(_) | DownloadError::BadPath(_) => "bad_request",
            DownloadError::Denied(_) => "denied",
            DownloadError::NotFound(_) => "not_found",
            DownloadError::DiskFull { .. } => "disk_full",
            DownloadError::LocalForbidden { .. } => "forbidden_path",
            DownloadError::Integrity { .. } => "integrity",
            DownloadError::Exhausted { .. } | DownloadError::Source(_) => "source",
            DownloadError::Local { .. } => "local",
            DownloadError::Cancelled => "cancelled",
        }
    }
}
