//! HuggingFace: a model repository at a revision.
//!
//! The token comes from the request, then `HF_TOKEN`, then the token
//! file where HuggingFace's own tools keep it (found by hf-hub's cache).
//! One call to the repository info API
//! (`{endpoint}/api/models/{repo}/revision/{revision}?blobs=true`) turns
//! the revision into a commit and lists every file with its size, git
//! blob id and LFS SHA-256. The bytes then come through the same ranged
//! downloader as S3, from `{endpoint}/{repo}/resolve/{commit}/{path}`,
//! following the redirect to the CDN ([`super::hub`]); the token goes to
//! the endpoint's host and nowhere else.

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;

use super::error::DownloadError;
use super::fetch::{FetchError, Origin, RemoteFile};
use super::hub::{HubClient, Named};
use super::request::{Secret, Settings};
use super::s3::uri_encode;
use super::verify::Expect;
use crate::net::Url;

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Which repository, as the source names it.
#[derive(Clone, Copy, Debug)]
pub struct Address<'a> {
    /// `namespace/name`.
    pub repo: &'a str,
    /// The revision the source names (`hf://…@revision`); beats
    /// `hf_revision`.
    pub revision: Option<&'a str>,
    /// A dataset repository (`hf://datasets/…`).
    pub dataset: bool,
}

/// A repository pinned to a commit.
pub struct HfRepo {
    hub: HubClient,
    /// `namespace/name`, or `datasets/namespace/name`, as in file URLs.
    repo: String,
    /// The commit the revision resolved to.
    pub commit: String,
}

impl std::fmt::Debug for HfRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfRepo")
            .field("repo", &self.repo)
            .field("commit", &self.commit)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Info {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    sha256: String,
    size: u64,
}

impl HfRepo {
    /// Resolves the revision and lists the repository's files.
    pub fn open(
        address: &Address<'_>,
        settings: &Settings,
        timeout: Duration,
    ) -> Result<(HfRepo, Vec<RemoteFile>), DownloadError> {
        let repo = address.repo;
        let revision = address
            .revision
            .map(str::to_owned)
            .or_else(|| settings.hf_revision.clone())
            .unwrap_or_else(|| "main".to_owned());
        // Datasets live under `datasets/` in the API and in file URLs.
        let (api_kind, url_repo) = match address.dataset {
            true => ("datasets", format!("datasets/{repo}")),
            false => ("models", repo.to_owned()),
        };
        // The token file is the process's, like `HF_TOKEN`: not for an
        // endpoint the request chose.
        let token = settings.hf_token.clone().or_else(|| {
            (!settings.foreign_hf_endpoint)
                .then(|| hf_hub::Cache::from_env().token())
                .flatten()
                .map(Secret::new)
        });
        let credentials = token
            .map(|t| {
                (
                    "authorization",
                    Secret::new(format!("Bearer {}", t.expose())),
                )
            })
            .into_iter()
            .collect();
        let endpoint = settings.hf_endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT);
        let hub = HubClient::new(endpoint, "hf_endpoint", credentials, timeout)?;

        let what = format!("{repo}@{revision}");
        let info_url = hub.url(&format!(
            "/api/{api_kind}/{repo}/revision/{}?blobs=true",
            uri_encode(&revision, false)
        ));
        let info: Info = hub.get_json(
            info_url,
            &what,
            "private or gated repository: check hf_token",
        )?;

        let mut files = Vec::new();
        for sibling in info.siblings {
            let (size, expect) = match (&sibling.lfs, &sibling.blob_id) {
                (Some(lfs), _) => (
                    lfs.size,
                    Expect::sha256_hex(&lfs.sha256).unwrap_or(Expect::SizeOnly),
                ),
                (None, Some(blob)) => (
                    sibling.size.unwrap_or(0),
                    Expect::git_blob_hex(blob).unwrap_or(Expect::SizeOnly),
                ),
                (None, None) => (sibling.size.unwrap_or(0), Expect::SizeOnly),
            };
            if sibling.size.is_none() && sibling.lfs.is_none() {
                return Err(DownloadError::Source(format!(
                    "{what}: the Hub listed {} without a size",
                    sibling.rfilename
                )));
            }
            files.push(RemoteFile {
                version: format!("{}:{}", info.sha, expect.key()),
                rel: sibling.rfilename.clone(),
                size,
                expect,
                locator: sibling.rfilename,
            });
        }
        if files.is_empty() {
            return Err(DownloadError::NotFound(format!(
                "{what}: the repository has no files"
            )));
        }
        let repo = HfRepo {
            hub,
            repo: url_repo,
            commit: info.sha,
        };
        Ok((repo, files))
    }

    fn resolve_url(&self, path: &str) -> Url {
        let encoded: Vec<String> = path.split('/').map(|p| uri_encode(p, false)).collect();
        self.hub.url(&format!(
            "/{}/resolve/{}/{}",
            self.repo,
            self.commit,
            encoded.join("/")
        ))
    }
}

impl Origin for HfRepo {
    fn fetch(
        &self,
        file: &RemoteFile,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FetchError>,
    ) -> Result<(), FetchError> {
        let named = Named {
            repo: &self.repo,
            revision: &self.commit,
        };
        self.hub.fetch(
            file,
            || self.resolve_url(&file.locator),
            &named,
            range,
            sink,
        )
    }
}
