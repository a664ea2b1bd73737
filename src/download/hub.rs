//! What the model hubs (HuggingFace, ModelScope) share: a JSON API on the
//! hub's endpoint, and file URLs that may redirect to a CDN.
//!
//! Credentials go to the endpoint's own host and nowhere else (not to the
//! CDN a redirect points at). Where a file's bytes were found is
//! remembered, so the parts of a large file skip the redirect; a
//! remembered link that is refused (a signed CDN link that expired) is
//! forgotten and the next attempt resolves it again.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::error::DownloadError;
use super::fetch::{FetchError, RemoteFile};
use super::request::Secret;
use super::{read_into_sink, transient_status};
use crate::net::{HttpClient, RetryPolicy, Url};

/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;

/// A hub's endpoint, with the credentials it alone receives.
pub struct HubClient {
    client: HttpClient,
    endpoint: Url,
    /// Headers sent only to the endpoint's origin (`authorization`, …).
    credentials: Vec<(&'static str, Secret)>,
    /// Where each file's bytes were last found (after redirects).
    resolved: Mutex<HashMap<String, Url>>,
}

/// Which file of which repository, for errors.
pub struct Named<'a> {
    /// The repository as the hub names it.
    pub repo: &'a str,
    /// The revision or commit fetched.
    pub revision: &'a str,
}

impl HubClient {
    /// A client for `endpoint` (an absolute URL, possibly with a path).
    pub fn new(
        endpoint: &str,
        setting: &str,
        credentials: Vec<(&'static str, Secret)>,
        timeout: Duration,
    ) -> Result<HubClient, DownloadError> {
        let endpoint = Url::parse(endpoint.trim_end_matches('/'))
            .map_err(|e| DownloadError::BadPath(format!("{setting}: {e}")))?;
        Ok(HubClient {
            client: HttpClient::new(timeout),
            endpoint,
            credentials,
            resolved: Mutex::new(HashMap::new()),
        })
    }

    /// The endpoint's URL with `path_and_query` appended (it starts
    /// with `/`).
    pub fn url(&self, path_and_query: &str) -> Url {
        let base = self.endpoint.target.trim_end_matches('/');
        Url::from_parts(
            self.endpoint.origin.clone(),
            format!("{base}{path_and_query}"),
        )
    }

    fn headers(&self, url: &Url, mut headers: Vec<(String, String)>) -> Vec<(String, String)> {
        if url.origin == self.endpoint.origin {
            for (name, value) in &self.credentials {
                headers.push(((*name).to_owned(), value.expose().to_owned()));
            }
        }
        headers
    }

    /// GETs a JSON document from the API, following redirects and retrying
    /// network faults and 5xx; 401/403 and 404 fail at once with what the
    /// hub said (`denied_hint` is added to a 401/403).
    pub fn get_json<T: DeserializeOwned>(
        &self,
        mut url: Url,
        what: &str,
        denied_hint: &str,
    ) -> Result<T, DownloadError> {
        let policy = RetryPolicy::default();
        let (mut attempt, mut redirects) = (0, 0);
        loop {
            let headers = self.headers(
                &url,
                vec![("accept".to_owned(), "application/json".to_owned())],
            );
            let reason = match self.client.request("GET", &url, &headers) {
                Err(e) if crate::net::is_denied(&e) => {
                    return Err(DownloadError::Denied(e.to_string()));
                }
                Err(e) => e.to_string(),
                Ok(mut response) => match response.status {
                    200 => {
                        return serde_json::from_reader(&mut response).map_err(|e| {
                            DownloadError::Source(format!("unreadable answer for {what}: {e}"))
                        });
                    }
                    301 | 302 | 303 | 307 | 308 if redirects < MAX_REDIRECTS => {
                        redirects += 1;
                        let location = response.header("location").unwrap_or_default().to_owned();
                        url = url.join(&location).map_err(|e| {
                            DownloadError::Source(format!("{what}: bad redirect: {e}"))
                        })?;
                        continue;
                    }
                    status => {
                        let message = api_message(&response.text(64 * 1024).unwrap_or_default());
                        match status {
                            401 | 403 => {
                                return Err(DownloadError::Denied(format!(
                                    "{what}: HTTP {status} {message} ({denied_hint})"
                                )));
                            }
                            404 => {
                                return Err(DownloadError::NotFound(format!("{what}: {message}")));
                            }
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

    /// Fetches `range` of `file` into `sink`, starting from where its
    /// bytes were last found or else from `start`.
    pub fn fetch(
        &self,
        file: &RemoteFile,
        start: impl FnOnce() -> Url,
        named: &Named<'_>,
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
        let mut url = cached.unwrap_or_else(start);
        for _ in 0..=MAX_REDIRECTS {
            let range_header = format!("bytes={}-{}", range.start, range.end - 1);
            let headers = self.headers(&url, vec![("range".to_owned(), range_header)]);
            let mut response =
                self.client.request("GET", &url, &headers).map_err(
                    |e| match crate::net::is_denied(&e) {
                        true => FetchError::Fatal(DownloadError::Denied(e.to_string())),
                        false => FetchError::Transient(e.to_string()),
                    },
                )?;
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
                    let body = api_message(&response.text(2048).unwrap_or_default());
                    return Err(FetchError::Fatal(DownloadError::Denied(format!(
                        "{}/{}: HTTP {} {body}",
                        named.repo, file.rel, response.status,
                    ))));
                }
                404 => {
                    return Err(FetchError::Fatal(DownloadError::NotFound(format!(
                        "{}/{} at {}",
                        named.repo, file.rel, named.revision
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

/// What a hub said went wrong: HuggingFace's `{"error": …}`,
/// ModelScope's `{"Message": …}`, or the body itself.
pub fn api_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            ["error", "Message", "message"]
                .iter()
                .find_map(|key| v.get(key).and_then(|e| e.as_str()).map(str::to_owned))
        })
        .unwrap_or_else(|| body.trim().chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(
            api_message(r#"{"error":"Revision Not Found for url"}"#),
            "Revision Not Found for url"
        );
        assert_eq!(
            api_message(r#"{"Code":10010205001,"Message":"model not found","Success":false}"#),
            "model not found"
        );
        assert_eq!(api_message("plain"), "plain");
    }
}
