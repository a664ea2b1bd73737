//! ModelScope: a model repository at a revision, through the hub API the
//! ModelScope SDK uses (`modelscope.hub.api`, now `modelscope_hub`).
//!
//! - `GET {endpoint}/api/v1/models/{owner}/{name}/repo/files?Revision={revision}&Recursive=True`
//!   lists the repository: `{"Code": 200, "Data": {"Files": [...]}}` with
//!   each entry's `Path`, `Type` (`blob`, or `tree` for a directory),
//!   `Size` and `Sha256`. The server cuts a listing at 3,000 entries
//!   without saying so; a listing of that length is walked again one
//!   directory at a time (`Root={dir}`), as the SDK does.
//! - `GET {endpoint}/api/v1/models/{owner}/{name}/repo?Revision={revision}&FilePath={path}`
//!   serves a file, ranges honoured, possibly through a redirect.
//!
//! The token comes from `ms_token`, then `MS_TOKEN`, then the SDK's
//! `MODELSCOPE_API_TOKEN`, and goes, as the SDK sends it (a bearer token
//! and the `m_session_id` cookie), to the endpoint's host only.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde_json::Value;

use super::error::DownloadError;
use super::fetch::{FetchError, Origin, RemoteFile};
use super::hub::{HubClient, Named};
use super::request::{Secret, Settings};
use super::s3::uri_encode;
use super::verify::Expect;
use crate::net::Url;

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://www.modelscope.cn";
/// Entries after which the server cuts a `repo/files` listing.
const LISTING_CAP: usize = 3000;
/// Listings one repository may take to walk a cut tree (the SDK's budget).
const MAX_LISTINGS: usize = 5000;

/// A repository at a revision.
pub struct MsRepo {
    hub: HubClient,
    /// `owner/name`.
    repo: String,
    revision: String,
}

impl std::fmt::Debug for MsRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsRepo")
            .field("repo", &self.repo)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

/// One entry of a listing.
#[derive(Debug)]
struct Entry {
    path: String,
    directory: bool,
    size: Option<u64>,
    sha256: Option<String>,
}

impl MsRepo {
    /// Lists the repository's files at the revision the source names,
    /// else `ms_revision`, else `master`.
    pub fn open(
        repo: &str,
        revision: Option<&str>,
        settings: &Settings,
        timeout: Duration,
    ) -> Result<(MsRepo, Vec<RemoteFile>), DownloadError> {
        let revision = revision
            .map(str::to_owned)
            .or_else(|| settings.ms_revision.clone())
            .unwrap_or_else(|| "master".to_owned());
        let credentials = match &settings.ms_token {
            Some(token) => vec![
                (
                    "authorization",
                    Secret::new(format!("Bearer {}", token.expose())),
                ),
                (
                    "cookie",
                    Secret::new(format!("m_session_id={}", token.expose())),
                ),
            ],
            None => Vec::new(),
        };
        let endpoint = settings.ms_endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT);
        let hub = HubClient::new(endpoint, "ms_endpoint", credentials, timeout)?;
        let repo = MsRepo {
            hub,
            repo: repo.to_owned(),
            revision,
        };
        let files = repo
            .list()?
            .into_values()
            .map(|entry| {
                let expect = entry
                    .sha256
                    .as_deref()
                    .and_then(Expect::sha256_hex)
                    .unwrap_or(Expect::SizeOnly);
                RemoteFile {
                    version: format!("{}:{}", repo.revision, expect.key()),
                    rel: entry.path.clone(),
                    size: entry.size.unwrap_or(0),
                    expect,
                    locator: entry.path,
                }
            })
            .collect::<Vec<_>>();
        if files.is_empty() {
            return Err(DownloadError::NotFound(format!(
                "{}: the repository has no files",
                repo.what()
            )));
        }
        Ok((repo, files))
    }

    fn what(&self) -> String {
        format!("{}@{}", self.repo, self.revision)
    }

    /// Every file, by path. A listing cut at the cap is listed again
    /// shallowly, and each subdirectory on its own, until every listing
    /// is whole; a directory with more direct entries than the cap cannot
    /// be listed whole and fails the download rather than losing files.
    fn list(&self) -> Result<BTreeMap<String, Entry>, DownloadError> {
        let mut files = BTreeMap::new();
        let mut pending = vec![None::<String>];
        let mut listings = 0;
        while let Some(root) = pending.pop() {
            listings += 1;
            let entries = self.listing(root.as_deref(), true)?;
            let entries = if entries.len() < LISTING_CAP {
                entries
            } else {
                listings += 1;
                let shallow = self.listing(root.as_deref(), false)?;
                if shallow.len() >= LISTING_CAP {
                    return Err(DownloadError::Source(format!(
                        "{}: directory {:?} holds {LISTING_CAP} entries or more, more than the hub lists at once",
                        self.what(),
                        root.as_deref().unwrap_or("/")
                    )));
                }
                for entry in shallow.iter().filter(|e| e.directory) {
                    pending.push(Some(entry.path.clone()));
                }
                shallow
            };
            for entry in entries.into_iter().filter(|e| !e.directory) {
                if entry.size.is_none() {
                    return Err(DownloadError::Source(format!(
                        "{}: the hub listed {} without a size",
                        self.what(),
                        entry.path
                    )));
                }
                files.insert(entry.path.clone(), entry);
            }
            if listings > MAX_LISTINGS {
                return Err(DownloadError::Source(format!(
                    "{}: listing the repository took more than {MAX_LISTINGS} requests",
                    self.what()
                )));
            }
        }
        Ok(files)
    }

    /// One `repo/files` request.
    fn listing(&self, root: Option<&str>, recursive: bool) -> Result<Vec<Entry>, DownloadError> {
        let mut query = format!(
            "Revision={}&Recursive={}",
            uri_encode(&self.revision, false),
            if recursive { "True" } else { "False" }
        );
        if let Some(root) = root {
            query.push_str(&format!("&Root={}", uri_encode(root, false)));
        }
        let url = self
            .hub
            .url(&format!("/api/v1/models/{}/repo/files?{query}", self.repo));
        let answer: Value =
            self.hub
                .get_json(url, &self.what(), "private repository: check ms_token")?;
        entries(&answer).map_err(|e| DownloadError::Source(format!("{}: {e}", self.what())))
    }

    fn file_url(&self, path: &str) -> Url {
        self.hub.url(&format!(
            "/api/v1/models/{}/repo?Revision={}&FilePath={}",
            self.repo,
            uri_encode(&self.revision, false),
            uri_encode(path, false)
        ))
    }
}

/// The entries of a listing answer: `Data` is the list, or holds it as
/// `Files`; `"Success": false` is an error even under `200`.
fn entries(answer: &Value) -> Result<Vec<Entry>, String> {
    if answer.get("Success") == Some(&Value::Bool(false)) {
        let message = answer
            .get("Message")
            .and_then(Value::as_str)
            .unwrap_or("the hub refused the listing");
        return Err(message.to_owned());
    }
    let data = answer.get("Data").unwrap_or(answer);
    let list = match data {
        Value::Array(list) => list,
        Value::Object(map) => match map.get("Files").or_else(|| map.get("files")) {
            Some(Value::Array(list)) => list,
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(_) => return Err("Data.Files is not a list".to_owned()),
        },
        _ => return Err("the listing has no Data".to_owned()),
    };
    list.iter()
        .map(|entry| {
            let path = entry
                .get("Path")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .ok_or_else(|| format!("an entry without a Path: {entry}"))?;
            Ok(Entry {
                path: path.to_owned(),
                directory: entry.get("Type").and_then(Value::as_str) == Some("tree"),
                size: entry.get("Size").and_then(Value::as_u64),
                sha256: entry
                    .get("Sha256")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            })
        })
        .collect()
}

impl Origin for MsRepo {
    fn fetch(
        &self,
        file: &RemoteFile,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FetchError>,
    ) -> Result<(), FetchError> {
        let named = Named {
            repo: &self.repo,
            revision: &self.revision,
        };
        self.hub
            .fetch(file, || self.file_url(&file.locator), &named, range, sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_shapes() {
        let wrapped = serde_json::json!({"Code": 200, "Success": true, "Data": {"Files": [
            {"Path": "a/b.bin", "Type": "blob", "Size": 3, "Sha256": "ab"},
            {"Path": "a", "Type": "tree", "Size": 0, "Sha256": ""},
        ]}});
        let listed = entries(&wrapped).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].path, "a/b.bin");
        assert_eq!(listed[0].size, Some(3));
        assert_eq!(listed[0].sha256.as_deref(), Some("ab"));
        assert!(!listed[0].directory && listed[1].directory);
        assert_eq!(listed[1].sha256, None);
        let bare = serde_json::json!({"Data": [{"Path": "x", "Type": "blob", "Size": 1}]});
        assert_eq!(entries(&bare).unwrap()[0].path, "x");
        assert!(
            entries(&serde_json::json!({"Data": {}}))
                .unwrap()
                .is_empty()
        );
        let refused = serde_json::json!({"Code": 10010205001u64, "Message": "no such model", "Success": false});
        assert_eq!(entries(&refused).unwrap_err(), "no such model");
        assert!(entries(&serde_json::json!({"Data": [{"Type": "blob"}]})).is_err());
    }
}
