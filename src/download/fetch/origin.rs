//! What a source gives the downloader: the files it offers
//! ([`RemoteFile`]), bytes of a range of one ([`Origin`]), and how a
//! transfer fails ([`FetchError`]).

use std::ops::Range;

use crate::download::error::DownloadError;
use crate::download::verify::Expect;

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

    /// The check `file` gets once all its bytes are on disk: what it was
    /// listed with, unless what the source answered since shows that this
    /// check does not apply (the ETag of an SSE-KMS object is no MD5), in
    /// which case a weaker one that does.
    fn settle(&self, file: &RemoteFile) -> Result<Expect, DownloadError> {
        Ok(file.expect.clone())
    }
}
