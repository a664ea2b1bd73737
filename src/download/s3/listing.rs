//! Listing a bucket: ListObjectsV2 with continuation tokens, the V1
//! `marker` fallback for stores that refuse V2, the `ListBucketResult`
//! document, and keeping only the keys that land below the prefix.

use serde::Deserialize;

use super::Bucket;
use super::errors::{Failure, S3Error};
use super::integrity::Claims;
use super::sign::uri_encode;
use crate::download::error::DownloadError;
use crate::download::fetch::RemoteFile;
use crate::download::transient_status;
use crate::download::verify::Expect;
use crate::net::Response;

impl Bucket {
    /// Lists with ListObjectsV2, following continuation tokens; falls back
    /// to V1 `marker` paging where V2 is refused or not understood.
    pub(super) fn list_objects(&self, prefix: &str) -> Result<Vec<Object>, DownloadError> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("prefix", prefix)];
            if let Some(token) = &token {
                query.push(("continuation-token", token));
            }
            let page = match self.list_page(&query) {
                Ok(page) => page,
                Err(ListError::Refused) if objects.is_empty() => {
                    return self.list_objects_v1(prefix);
                }
                Err(ListError::Refused) => {
                    return Err(DownloadError::Source(format!(
                        "{} refused ListObjectsV2 midway",
                        self.name
                    )));
                }
                Err(ListError::Failed(e)) => return Err(e),
            };
            let truncated = page.is_truncated;
            let next = page.next_continuation_token.clone();
            objects.extend(page.contents);
            match (truncated, next) {
                (false, _) => return Ok(objects),
                (true, Some(next)) => token = Some(next),
                // Truncated without a token: a server answering V1 to V2.
                (true, None) => {
                    let marker = objects.last().map(|o| o.key.clone()).unwrap_or_default();
                    objects.extend(self.list_objects_v1_from(prefix, marker)?);
                    return Ok(objects);
                }
            }
        }
    }

    fn list_objects_v1(&self, prefix: &str) -> Result<Vec<Object>, DownloadError> {
        tracing::info!(bucket = %self.name, "ListObjectsV2 refused; listing with V1 markers");
        self.list_objects_v1_from(prefix, String::new())
    }

    fn list_objects_v1_from(
        &self,
        prefix: &str,
        mut marker: String,
    ) -> Result<Vec<Object>, DownloadError> {
        let mut objects = Vec::new();
        loop {
            let mut query = vec![("prefix", prefix)];
            if !marker.is_empty() {
                query.push(("marker", marker.as_str()));
            }
            let page = self.list_page(&query).map_err(|e| match e {
                ListError::Refused => {
                    DownloadError::Source(format!("{} refused listing", self.name))
                }
                ListError::Failed(e) => e,
            })?;
            let last = page.contents.last().map(|o| o.key.clone());
            let next = page.next_marker.clone().or(last);
            let truncated = page.is_truncated;
            objects.extend(page.contents);
            match next {
                Some(next) if truncated && next != marker => marker = next,
                _ => return Ok(objects),
            }
        }
    }

    fn list_page(&self, query: &[(&str, &str)]) -> Result<ListBucketResult, ListError> {
        let query = build_query(query);
        let key_root = self.addressing.key_root();
        let path = if key_root.is_empty() {
            "/".to_owned()
        } else {
            key_root.to_owned()
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome =
                self.send("GET", &format!("{path}?{query}"), &[])
                    .and_then(|mut response| {
                        let status = response.status;
                        let body = response
                            .text(64 * 1024 * 1024)
                            .map_err(|e| Failure::Transient(e.to_string()))?;
                        Ok((status, body))
                    });
            let reason = match outcome {
                Ok((200, body)) => {
                    return parse_listing(&body).map_err(|e| {
                        ListError::Failed(DownloadError::Source(format!(
                            "unreadable listing from {}: {e}",
                            self.name
                        )))
                    });
                }
                Ok((status @ (400 | 405 | 501), body)) => {
                    let error = S3Error::parse(&body);
                    if matches!(
                        error.code.as_str(),
                        "NotImplemented" | "InvalidArgument" | "NotSupported"
                    ) {
                        return Err(ListError::Refused);
                    }
                    return Err(ListError::Failed(self.error(status, &error, "")));
                }
                Ok((status, body)) if transient_status(status) => {
                    format!("HTTP {status}: {}", S3Error::parse(&body))
                }
                Ok((status, body)) => {
                    return Err(ListError::Failed(self.error(
                        status,
                        &S3Error::parse(&body),
                        "",
                    )));
                }
                Err(Failure::Transient(reason)) => reason,
                Err(Failure::Fatal(e)) => return Err(ListError::Failed(e)),
            };
            if attempt >= self.retry.attempts {
                return Err(ListError::Failed(DownloadError::Exhausted {
                    what: format!("listing {}", self.name),
                    attempts: attempt,
                    last: reason,
                }));
            }
            std::thread::sleep(self.retry.backoff(attempt));
        }
    }
}

/// A `ListBucketResult` document (V1 or V2).
pub(crate) fn parse_listing(body: &str) -> Result<ListBucketResult, quick_xml::DeError> {
    quick_xml::de::from_str(body)
}

/// The files of a listing of `dir`, named relative to it. Folder markers
/// are skipped, and so are keys outside `dir`, which only a broken or
/// hostile store would list.
pub(super) fn files_below(objects: Vec<Object>, dir: &str) -> Vec<RemoteFile> {
    objects
        .into_iter()
        .filter(|o| !o.key.ends_with('/'))
        .filter_map(|o| {
            let Some(rel) = o.key.strip_prefix(dir) else {
                tracing::warn!(key = %o.key, prefix = dir, "the store listed a key outside the prefix; skipped");
                return None;
            };
            let rel = rel.trim_start_matches('/').to_owned();
            Some(o.into_file(rel))
        })
        .collect()
}

/// Checks what a download would make of an arbitrary listing body: no
/// panic; every file it keeps lands below the output directory, exactly
/// where its name says; a plain name is never refused (for the fuzz
/// targets).
#[cfg(any(fuzzing, test))]
pub(crate) fn check_listing(body: &str, prefix: &str) {
    let Ok(page) = parse_listing(body) else {
        return;
    };
    let out = std::path::Path::new("/models/out");
    for file in files_below(page.contents, prefix) {
        // Where the name would land if it were simply joined, worked out
        // by hand (not by the `Path` rules `safe_join` relies on).
        let lands = lexical_landing(out, &file.rel);
        // A name of plain parts must be kept: refusing it loses a file.
        let plain = !file.rel.contains('\0')
            && file
                .rel
                .split('/')
                .all(|part| !matches!(part, "" | "." | ".."));
        match crate::download::fetch::safe_join(out, &file.rel) {
            Ok(path) => assert_eq!(
                Some(&path),
                lands.as_ref(),
                "{:?} is kept as {path:?}: outside the directory, or not where it names",
                file.rel
            ),
            Err(e) => assert!(!plain, "{:?} is refused: {e}", file.rel),
        }
    }
}

/// The file `dir` joined with `rel` names, by splitting on `/` and
/// resolving `.` and `..` by hand; `None` if that is `dir` itself or
/// outside it (an absolute `rel`, a `..` too many, a NUL byte).
#[cfg(any(test, fuzzing))]
fn lexical_landing(dir: &std::path::Path, rel: &str) -> Option<std::path::PathBuf> {
    if rel.starts_with('/') || rel.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            name => parts.push(name),
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(
        parts
            .iter()
            .fold(dir.to_path_buf(), |path, part| path.join(part)),
    )
}

enum ListError {
    /// The store does not do this kind of listing.
    Refused,
    Failed(DownloadError),
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListBucketResult {
    #[serde(default)]
    is_truncated: bool,
    next_continuation_token: Option<String>,
    next_marker: Option<String>,
    #[serde(default)]
    contents: Vec<Object>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Object {
    key: String,
    size: u64,
    #[serde(rename = "ETag")]
    e_tag: Option<String>,
    #[serde(skip)]
    pub(super) expect: Expect,
}

impl Object {
    /// An object from its HEAD: the check that needs no part layout
    /// (a multipart object's layout is learned later, see `integrity`).
    pub(super) fn from_head(key: &str, response: &Response<'_>) -> Object {
        let claims = Claims::parse(response);
        Object {
            key: key.to_owned(),
            size: claims.size,
            expect: claims.whole(),
            e_tag: claims.etag,
        }
    }

    pub(super) fn version(&self) -> String {
        match &self.e_tag {
            Some(etag) => format!("etag:{etag}"),
            None => format!("size:{}", self.size),
        }
    }

    pub(super) fn into_file(self, rel: String) -> RemoteFile {
        let expect = match (&self.expect, &self.e_tag) {
            (Expect::SizeOnly, Some(etag)) => Expect::from_etag(etag),
            (expect, _) => expect.clone(),
        };
        let version = self.version();
        RemoteFile {
            rel,
            size: self.size,
            expect,
            version,
            locator: self.key,
        }
    }
}

fn build_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded() {
        assert_eq!(
            build_query(&[("list-type", "2"), ("prefix", "x y/")]),
            "list-type=2&prefix=x%20y%2F"
        );
    }

    #[test]
    fn listings_parse() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>m/</Prefix><KeyCount>2</KeyCount>
<IsTruncated>true</IsTruncated><NextContinuationToken>tok+en</NextContinuationToken>
<Contents><Key>m/a.json</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>"5d41402abc4b2a76b9719d911017c592"</ETag><Size>5</Size></Contents>
<Contents><Key>m/b.bin</Key><Size>10</Size></Contents></ListBucketResult>"#;
        let page: ListBucketResult = quick_xml::de::from_str(xml).unwrap();
        assert!(page.is_truncated);
        assert_eq!(page.next_continuation_token.as_deref(), Some("tok+en"));
        assert_eq!(page.contents.len(), 2);
        assert_eq!(page.contents[1].e_tag, None);
    }
}
