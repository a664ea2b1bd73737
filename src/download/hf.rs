//! HuggingFace: a model repository at a revision.
//!
//! The token comes from the request, then `HF_TOKEN`, then the token
//! file where HuggingFace's own tools keep it (found by hf-hub's cache).
//! One call to the repository info API
//! (`{endpoint}/api/models/{repo}/revision/{revision}?blobs=true`) turns
//! the revision into a commit and lists every file with its size, git
//! blob id and LFS SHA-256; it goes through [`crate::net`] like every
//! other outbound call, so it trusts the same CAs and takes the same
//! route (hf-hub's own client, ureq, had its own trust store and proxy
//! rules). The bytes then come through the same ranged downloader as S3,
//! from `{endpoint}/{repo}/resolve/{commit}/{path}`, following the redirect
//! to the CDN; the token goes to the endpoint's host and nowhere else.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use super::error::DownloadError;
use super::fetch::{FetchError, Origin, RemoteFile};
use super::request::{Secret, Settings};
use super::s3::uri_encode;
use super::verify::Expect;
use super::{read_into_sink, transient_status};
use crate::net::{HttpClient, Url};

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;

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
    client: HttpClient,
    endpoint: Url,
    token: Option<Secret>,
    repo: String,
    /// The commit the revision resolved to.
    pub commit: String,
    /// Where each file's bytes were last found (after redirects).
    resolved: Mutex<HashMap<String, Url>>,
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
        let endpoint_text = settings
            .hf_endpoint
            .clone()
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let endpoint_text = endpoint_text.trim_end_matches('/').to_owned();
        let endpoint = Url::parse(&endpoint_text)
            .map_err(|e| DownloadError::BadPath(format!("hf_endpoint: {e}")))?;
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

        let what = format!("{repo}@{revision}");
        let client = HttpClient::new(timeout);
        let info_url = Url::from_parts(
            endpoint.origin.clone(),
            format!(
                "{}/api/{api_kind}/{repo}/revision/{}?blobs=true",
                endpoint.target.trim_end_matches('/'),
                uri_encode(&revision, false)
            ),
        );
        let info = repository_info(&client, &endpoint, info_url, token.as_ref(), &what)?;

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
            client,
            endpoint,
            token,
            repo: url_repo,
            commit: info.sha,
            resolved: Mutex::new(HashMap::new()),
        };
        Ok((repo, files))
    }

    fn resolve_url(&self, path: &str) -> Url {
        let encoded: Vec<String> = path.split('/').map(|p| uri_encode(p, false)).collect();
        let mut url = self.endpoint.clone();
        let base = url.target.trim_end_matches('/').to_owned();
        url.target = format!(
            "{base}/{}/resolve/{}/{}",
            self.repo,
            self.commit,
            encoded.join("/")
        );
        url
    }

    /// Headers for `url`: the token only for the endpoint's own host.
    fn headers(&self, url: &Url, range: &Range<u64>) -> Vec<(String, String)> {
        let mut headers = vec![(
            "range".to_owned(),
            format!("bytes={}-{}", range.start, range.end - 1),
        )];
        if let Some(token) = &self.token
            && url.origin == self.endpoint.origin
        {
            headers.push((
                "authorization".to_owned(),
                format!("Bearer {}", token.expose()),
            ));
        }
        headers
    }
}

impl Origin for HfRepo {
    fn fetch(
        &self,
        file: &RemoteFile,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FetchError>,
    ) -> Result<(), FetchError> {
        let cached = self
            .resolved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&file.locator)
            .cloned();
        let from_cache = cached.is_some();
        let mut url = cached.unwrap_or_else(|| self.resolve_url(&file.locator));
        for _ in 0..=MAX_REDIRECTS {
            let headers = self.headers(&url, &range);
            let mut response = self
                .client
                .request("GET", &url, &headers)
                .map_err(|e| FetchError::Transient(e.to_string()))?;
            match response.status {
                200 | 206 => {
                    self.resolved
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(file.locator.clone(), url);
                    return read_into_sink(&mut response, &range, sink);
                }
                301 | 302 | 303 | 307 | 308 => {
                    let location = response.header("location").unwrap_or_default().to_owned();
                    url = url.join(&location).map_err(|e| {
                        FetchError::Fatal(DownloadError::Source(format!(
                            "bad redirect for {}: {e}",
                            file.rel
                        )))
                    })?;
                }
                // A signed CDN link that expired: resolve again next time.
                401 | 403 if from_cache => {
                    self.resolved
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&file.locator);
                    return Err(FetchError::Transient(format!(
                        "HTTP {} from {}",
                        response.status,
                        url.display_without_query()
                    )));
                }
                401 | 403 => {
                    let body = response.text(2048).unwrap_or_default();
                    return Err(FetchError::Fatal(DownloadError::Denied(format!(
                        "{}/{}: HTTP {} {}",
                        self.repo,
                        file.rel,
                        response.status,
                        body.trim()
                    ))));
                }
                404 => {
                    return Err(FetchError::Fatal(DownloadError::NotFound(format!(
                        "{}/{} at {}",
                        self.repo, file.rel, self.commit
                    ))));
                }
                status if transient_status(status) => {
                    return Err(FetchError::Transient(format!(
                        "HTTP {status} from {}",
                        url.display_without_query()
                    )));
                }
                status => {
                    return Err(FetchError::Fatal(DownloadError::Source(format!(
                        "{}: HTTP {status} from {}",
                        file.rel,
                        url.display_without_query()
                    ))));
                }
            }
        }
        Err(FetchError::Fatal(DownloadError::Source(format!(
            "{}: too many redirects",
            file.rel
        ))))
    }
}

/// GETs the repository info, following redirects (the token only to the
/// endpoint's host), retrying network faults and 5xx; 401/403 and 404
/// fail at once with what the Hub said.
fn repository_info(
    client: &HttpClient,
    endpoint: &Url,
    mut url: Url,
    token: Option<&Secret>,
    what: &str,
) -> Result<Info, DownloadError> {
    let policy = crate::net::RetryPolicy::default();
    let (mut attempt, mut redirects) = (0, 0);
    loop {
        let mut headers = vec![("accept".to_owned(), "application/json".to_owned())];
        if let Some(token) = token
            && url.origin == endpoint.origin
        {
            headers.push((
                "authorization".to_owned(),
                format!("Bearer {}", token.expose()),
            ));
        }
        let reason = match client.request("GET", &url, &headers) {
            Err(e) => e.to_string(),
            Ok(mut response) => match response.status {
                200 => {
                    return serde_json::from_reader(&mut response).map_err(|e| {
                        DownloadError::Source(format!("unreadable repository info for {what}: {e}"))
                    });
                }
                301 | 302 | 303 | 307 | 308 if redirects < MAX_REDIRECTS => {
                    redirects += 1;
                    let location = response.header("location").unwrap_or_default().to_owned();
                    url = url
                        .join(&location)
                        .map_err(|e| DownloadError::Source(format!("{what}: bad redirect: {e}")))?;
                    continue;
                }
                status => {
                    let message = hub_message(&response.text(64 * 1024).unwrap_or_default());
                    match status {
                        401 | 403 => {
                            return Err(DownloadError::Denied(format!(
                                "{what}: HTTP {status} {message} (private or gated repository: check hf_token)"
                            )));
                        }
                        404 => return Err(DownloadError::NotFound(format!("{what}: {message}"))),
                        s if transient_status(s) => format!("HTTP {status} {message}"),
                        _ => {
                            return Err(DownloadError::Source(format!(
                                "{what}: HTTP {status} {message}"
                            )));
                        }
                    }
                }
            },
        };
        attempt += 1;
        if attempt >= policy.attempts {
            return Err(DownloadError::Exhausted {
                what: what.to_owned(),
                attempts: attempt,
                last: reason,
            });
        }
        std::thread::sleep(policy.backoff(attempt));
    }
}

/// The Hub's `{"error": "..."}`, or the body itself.
fn hub_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.trim().chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(
            hub_message(r#"{"error":"Revision Not Found for url"}"#),
            "Revision Not Found for url"
        );
        assert_eq!(hub_message("plain"), "plain");
    }
}
