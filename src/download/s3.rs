//! S3 and OBS: listing a prefix and fetching byte ranges, every request
//! signed with SigV4 (aws-sigv4) at the moment it is sent.
//!
//! Custom endpoints (OBS, MinIO, Ceph, a local server) are addressed
//! path-style (`{endpoint}/{bucket}/{key}`); AWS itself virtual-hosted
//! (`https://{bucket}.s3.{region}.amazonaws.com/{key}`) unless the bucket
//! name has dots. Payloads are `UNSIGNED-PAYLOAD` with
//! `x-amz-content-sha256`; a session token is sent and signed when given.
//! Requests go over plain HTTP or rustls, as the endpoint says.

use std::ops::Range;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use serde::Deserialize;

use super::error::DownloadError;
use super::fetch::{FetchError, Origin, RemoteFile};
use super::request::{Secret, Settings};
use super::verify::Expect;
use super::{read_into_sink, transient_status};
use crate::net::RetryPolicy;
use crate::net::{HttpClient, Response, Url};

/// Which flavour of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Amazon S3 or an S3-compatible store.
    S3,
    /// Huawei OBS (needs an endpoint).
    Obs,
}

struct Keys {
    access: String,
    secret: Secret,
    session: Option<Secret>,
}

/// A bucket reachable with given settings.
pub struct Bucket {
    client: HttpClient,
    /// Scheme and host of every request, and the path before the key.
    base: Url,
    /// Path prefix before object keys: `/bucket` (path-style) or empty.
    key_root: String,
    region: String,
    keys: Option<Keys>,
    retry: RetryPolicy,
    name: String,
    /// The store's clock minus ours, in seconds, once a refusal showed
    /// that they differ by more than the signature window allows.
    clock_skew: AtomicI64,
}

/// A 403 whose `Date` is this far from our clock is taken for a
/// signature refused for its time (S3 allows 15 minutes, some stores 5).
const SKEW_SUSPECT: Duration = Duration::from_secs(4 * 60);

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("name", &self.name)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl Bucket {
    /// Resolves the endpoint, addressing style, region and credentials.
    pub fn new(
        flavor: Flavor,
        bucket: &str,
        settings: &Settings,
        timeout: Duration,
    ) -> Result<Bucket, DownloadError> {
        let scheme = if flavor == Flavor::Obs { "obs" } else { "s3" };
        let keys = match (&settings.access_key, &settings.secret_key) {
            (Some(access), Some(secret)) => Some(Keys {
                access: access.clone(),
                secret: secret.clone(),
                session: settings.session_token.clone(),
            }),
            (None, None) => None,
            _ => {
                return Err(DownloadError::BadPath(
                    "access_key and secret_key must be given together (config or ACCESS_KEY/SECRET_KEY)".into(),
                ));
            }
        };
        let endpoint = match (&settings.endpoint, flavor) {
            (Some(endpoint), _) => Some(endpoint.clone()),
            (None, Flavor::Obs) => {
                return Err(DownloadError::BadPath(
                    "obs:// needs an endpoint (config.endpoint or the ENDPOINT variable)".into(),
                ));
            }
            (None, Flavor::S3) => None,
        };
        let region = settings
            .region
            .clone()
            .or_else(|| endpoint.as_deref().and_then(region_from_host))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let (base, key_root) = match endpoint {
            Some(endpoint) => {
                let endpoint = if endpoint.contains("://") {
                    endpoint
                } else {
                    format!("https://{endpoint}")
                };
                let base = Url::parse(endpoint.trim_end_matches('/'))
                    .map_err(|e| DownloadError::BadPath(format!("endpoint: {e}")))?;
                let prefix = base.target.trim_end_matches('/').to_owned();
                (base, format!("{prefix}/{}", uri_encode(bucket, false)))
            }
            None if bucket.contains('.') => {
                let base = Url::parse(&format!("https://s3.{region}.amazonaws.com"))
                    .map_err(|e| DownloadError::BadPath(format!("region: {e}")))?;
                (base, format!("/{}", uri_encode(bucket, false)))
            }
            None => {
                let host = format!("https://{bucket}.s3.{region}.amazonaws.com");
                let base = Url::parse(&host)
                    .map_err(|e| DownloadError::BadPath(format!("bucket name: {e}")))?;
                (base, String::new())
            }
        };
        Ok(Bucket {
            client: HttpClient::new(timeout),
            base,
            key_root,
            region,
            keys,
            retry: RetryPolicy::default(),
            name: format!("{scheme}://{bucket}"),
            clock_skew: AtomicI64::new(0),
        })
    }

    /// Lists the objects under `prefix`, keeping the folder structure
    /// below it. A prefix naming a single object gives that object.
    pub fn list(&self, prefix: &str) -> Result<Vec<RemoteFile>, DownloadError> {
        let dir = match prefix {
            "" => String::new(),
            p if p.ends_with('/') => p.to_owned(),
            p => format!("{p}/"),
        };
        let objects = self.list_objects(&dir)?;
        let mut files = files_below(objects, &dir);
        if files.is_empty() && !prefix.is_empty() && !prefix.ends_with('/') {
            // `s3://bucket/path/to/model.safetensors`: a single object.
            if let Some(object) = self.head(prefix)? {
                let name = prefix.rsplit('/').next().unwrap_or(prefix).to_owned();
                files.push(object.into_file(name));
            }
        }
        if files.is_empty() {
            return Err(DownloadError::NotFound(format!(
                "no objects under {}/{prefix}",
                self.name
            )));
        }
        self.complete_metadata(&mut files)?;
        Ok(files)
    }

    /// Lists with ListObjectsV2, following continuation tokens; falls back
    /// to V1 `marker` paging where V2 is refused or not understood.
    fn list_objects(&self, prefix: &str) -> Result<Vec<Object>, DownloadError> {
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
        let path = if self.key_root.is_empty() {
            "/".to_owned()
        } else {
            self.key_root.clone()
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

    /// HEAD of one object; `None` when it does not exist.
    fn head(&self, key: &str) -> Result<Option<Object>, DownloadError> {
        let path = self.object_path(key);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let reason = match self.send(
                "HEAD",
                &path,
                &[("x-amz-checksum-mode".into(), "ENABLED".into())],
            ) {
                Ok(response) if response.status == 200 => {
                    return Ok(Some(Object::from_head(key, &response)));
                }
                Ok(response) if response.status == 404 => return Ok(None),
                Ok(response) if transient_status(response.status) => {
                    format!("HTTP {}", response.status)
                }
                Ok(response) => {
                    let error = S3Error {
                        code: format!("HTTP {}", response.status),
                        message: String::new(),
                    };
                    return Err(self.error(response.status, &error, key));
                }
                Err(Failure::Transient(reason)) => reason,
                Err(Failure::Fatal(e)) => return Err(e),
            };
            if attempt >= self.retry.attempts {
                return Err(DownloadError::Exhausted {
                    what: format!("HEAD {key}"),
                    attempts: attempt,
                    last: reason,
                });
            }
            std::thread::sleep(self.retry.backoff(attempt));
        }
    }

    /// Listings of some stores carry no ETag, and multipart ETags check
    /// nothing: a HEAD (with checksums asked for) fills those in.
    fn complete_metadata(&self, files: &mut [RemoteFile]) -> Result<(), DownloadError> {
        let needy: Vec<usize> = files
            .iter()
            .enumerate()
            .filter(|(_, f)| f.expect == Expect::SizeOnly)
            .map(|(i, _)| i)
            .collect();
        if needy.is_empty() {
            return Ok(());
        }
        let heads: Vec<Result<Option<Object>, DownloadError>> = std::thread::scope(|scope| {
            let chunks: Vec<&[usize]> = needy.chunks(needy.len().div_ceil(8)).collect();
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    let files = &*files;
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|&i| self.head(&files[i].locator))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        for (&i, head) in needy.iter().zip(heads) {
            if let Some(object) = head? {
                let file = &mut files[i];
                file.version = object.version();
                file.expect = object.expect;
            }
        }
        Ok(())
    }

    fn object_path(&self, key: &str) -> String {
        format!("{}/{}", self.key_root, uri_encode(key, true))
    }

    /// Signs (now: every retry gets a fresh signature) and sends. A 403
    /// that comes with a `Date` far from our clock is a signature refused
    /// for its time (`RequestTimeTooSkewed`, "Request has expired"): as
    /// the AWS SDKs do, the request is signed again with the store's time
    /// and sent once more.
    fn send(
        &self,
        method: &str,
        path_and_query: &str,
        extra: &[(String, String)],
    ) -> Result<Response<'_>, Failure> {
        let url = Url::from_parts(self.base.origin.clone(), path_and_query.to_owned());
        let mut corrected = false;
        loop {
            let mut headers: Vec<(String, String)> = extra.to_vec();
            if let Some(keys) = &self.keys {
                let signed = self
                    .sign(keys, method, &url, extra)
                    .map_err(Failure::Fatal)?;
                headers.extend(signed);
            }
            let response = self
                .client
                .request(method, &url, &headers)
                .map_err(|e| Failure::Transient(e.to_string()))?;
            if response.status != 403 || self.keys.is_none() || corrected {
                return Ok(response);
            }
            let Some(skew) = response
                .header("date")
                .and_then(|date| skew_from(date, SystemTime::now()))
            else {
                return Ok(response);
            };
            corrected = true;
            if self.clock_skew.swap(skew, Relaxed) != skew {
                tracing::warn!(
                    store = %self.name,
                    skew_seconds = skew,
                    "this machine's clock differs from the store's; signing with the store's time (check NTP)"
                );
            }
        }
    }

    /// The moment to sign for: now, by the store's clock once it told us.
    fn signing_time(&self) -> SystemTime {
        let skew = self.clock_skew.load(Relaxed);
        let by = Duration::from_secs(skew.unsigned_abs());
        if skew >= 0 {
            SystemTime::now() + by
        } else {
            SystemTime::now() - by
        }
    }

    fn sign(
        &self,
        keys: &Keys,
        method: &str,
        url: &Url,
        extra: &[(String, String)],
    ) -> Result<Vec<(String, String)>, DownloadError> {
        let identity: Identity = Credentials::new(
            &keys.access,
            keys.secret.expose(),
            keys.session.as_ref().map(|s| s.expose().to_owned()),
            None,
            "matrixinfer-request",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(self.signing_time())
            .settings(settings)
            .build()
            .map_err(|e| DownloadError::Source(format!("cannot sign: {e}")))?
            .into();
        let host = url.host_header();
        let uri = url.to_string();
        let mut headers: Vec<(&str, &str)> = vec![("host", host.as_str())];
        headers.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let request = SignableRequest::new(
            method,
            uri,
            headers.into_iter(),
            SignableBody::UnsignedPayload,
        )
        .map_err(|e| DownloadError::Source(format!("cannot sign: {e}")))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| DownloadError::Source(format!("cannot sign: {e}")))?
            .into_parts();
        let (signed, _) = instructions.into_parts();
        Ok(signed
            .into_iter()
            .map(|h| (h.name().to_owned(), h.value().to_owned()))
            .collect())
    }

    /// A final answer other than success, as a clear error.
    fn error(&self, status: u16, error: &S3Error, key: &str) -> DownloadError {
        let what = if key.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{key}", self.name)
        };
        match status {
            401 | 403 => DownloadError::Denied(format!("{what}: HTTP {status} {error}")),
            404 => DownloadError::NotFound(format!("{what}: {error}")),
            301 | 307 => DownloadError::Source(format!(
                "{what}: HTTP {status} {error} (the bucket is in another region or endpoint; set region or endpoint)"
            )),
            _ => DownloadError::Source(format!("{what}: HTTP {status} {error}")),
        }
    }
}

impl Origin for Bucket {
    fn fetch(
        &self,
        file: &RemoteFile,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FetchError>,
    ) -> Result<(), FetchError> {
        let mut headers = vec![(
            "range".to_owned(),
            format!("bytes={}-{}", range.start, range.end - 1),
        )];
        // A changed object mid-download must not mix versions.
        if let Some(etag) = file.version.strip_prefix("etag:") {
            headers.push(("if-match".to_owned(), etag.to_owned()));
        }
        let path = self.object_path(&file.locator);
        let mut response = self.send("GET", &path, &headers).map_err(|f| match f {
            Failure::Transient(reason) => FetchError::Transient(reason),
            Failure::Fatal(e) => FetchError::Fatal(e),
        })?;
        match response.status {
            200 | 206 => read_into_sink(&mut response, &range, sink),
            412 => Err(FetchError::Fatal(DownloadError::Source(format!(
                "{}/{}: the object changed during the download (ETag no longer matches); start again",
                self.name, file.locator
            )))),
            status if transient_status(status) => {
                let body = response.text(4096).unwrap_or_default();
                Err(FetchError::Transient(format!(
                    "HTTP {status} {}",
                    S3Error::parse(&body)
                )))
            }
            status => {
                let body = response.text(4096).unwrap_or_default();
                Err(FetchError::Fatal(self.error(
                    status,
                    &S3Error::parse(&body),
                    &file.locator,
                )))
            }
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
fn files_below(objects: Vec<Object>, dir: &str) -> Vec<RemoteFile> {
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
/// panic, and every file it names lands below the output directory or is
/// refused (for the fuzz targets).
#[cfg(any(fuzzing, test))]
pub(crate) fn check_listing(body: &str, prefix: &str) {
    let Ok(page) = parse_listing(body) else {
        return;
    };
    let out = std::path::Path::new("/models/out");
    for file in files_below(page.contents, prefix) {
        if let Ok(path) = super::fetch::safe_join(out, &file.rel) {
            assert!(path.starts_with(out), "{} escapes", file.rel);
        }
    }
}

/// The store's clock minus ours, in whole seconds, when its `Date`
/// header shows they differ by at least [`SKEW_SUSPECT`].
fn skew_from(date: &str, now: SystemTime) -> Option<i64> {
    let theirs = httpdate::parse_http_date(date).ok()?;
    let skew = match theirs.duration_since(now) {
        Ok(ahead) => i64::try_from(ahead.as_secs()).ok()?,
        Err(behind) => -i64::try_from(behind.duration().as_secs()).ok()?,
    };
    (skew.unsigned_abs() >= SKEW_SUSPECT.as_secs()).then_some(skew)
}

enum Failure {
    Transient(String),
    Fatal(DownloadError),
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
struct Object {
    key: String,
    size: u64,
    #[serde(rename = "ETag")]
    e_tag: Option<String>,
    #[serde(skip)]
    expect: Expect,
}

impl Object {
    fn from_head(key: &str, response: &Response<'_>) -> Object {
        let size = response
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let e_tag = response.header("etag").map(str::to_owned);
        let checksum = ["sha256", "sha1", "crc32c", "crc32"]
            .iter()
            .find_map(|algorithm| {
                let value = response.header(&format!("x-amz-checksum-{algorithm}"))?;
                Expect::from_amz_checksum(algorithm, value)
            });
        let expect = checksum
            .unwrap_or_else(|| e_tag.as_deref().map_or(Expect::SizeOnly, Expect::from_etag));
        Object {
            key: key.to_owned(),
            size,
            e_tag,
            expect,
        }
    }

    fn version(&self) -> String {
        match &self.e_tag {
            Some(etag) => format!("etag:{etag}"),
            None => format!("size:{}", self.size),
        }
    }

    fn into_file(self, rel: String) -> RemoteFile {
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

/// An S3 error body.
#[derive(Debug, Default, PartialEq, Eq)]
struct S3Error {
    code: String,
    message: String,
}

impl S3Error {
    fn parse(body: &str) -> S3Error {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Body {
            code: Option<String>,
            message: Option<String>,
        }
        match quick_xml::de::from_str::<Body>(body) {
            Ok(b) => S3Error {
                code: b.code.unwrap_or_default(),
                message: b.message.unwrap_or_default(),
            },
            Err(_) => S3Error::default(),
        }
    }
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code.is_empty(), self.message.is_empty()) {
            (true, _) => Ok(()),
            (false, true) => write!(f, "{}", self.code),
            (false, false) => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

/// `obs.cn-north-4.myhuaweicloud.com` → `cn-north-4`;
/// `s3.eu-west-1.amazonaws.com` → `eu-west-1`.
fn region_from_host(endpoint: &str) -> Option<String> {
    let host = endpoint.split("://").last()?.split(['/', ':']).next()?;
    let mut labels = host.split('.');
    let first = labels.next()?;
    let second = labels.next()?;
    let known = matches!(first, "obs" | "s3") && host.contains('.') && second.contains('-');
    known.then(|| second.to_owned())
}

/// SigV4's URI encoding: unreserved characters stay, everything else
/// (UTF-8 bytes) becomes `%XX`; `/` stays in object paths.
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
    fn clock_skew_is_read_from_a_far_date_only() {
        let now = httpdate::parse_http_date("Sat, 28 Nov 2026 12:00:00 GMT").unwrap();
        assert_eq!(skew_from("Sat, 28 Nov 2026 13:00:00 GMT", now), Some(3600));
        assert_eq!(skew_from("Sat, 28 Nov 2026 11:40:00 GMT", now), Some(-1200));
        // A legitimate refusal from a store with a sane clock.
        assert_eq!(skew_from("Sat, 28 Nov 2026 12:00:02 GMT", now), None);
        assert_eq!(skew_from("yesterday", now), None);
    }

    #[test]
    fn encoding() {
        assert_eq!(
            uri_encode("dir one/naïve €.txt", true),
            "dir%20one/na%C3%AFve%20%E2%82%AC.txt"
        );
        assert_eq!(uri_encode("a+b=c&d/e", false), "a%2Bb%3Dc%26d%2Fe");
        assert_eq!(
            build_query(&[("list-type", "2"), ("prefix", "x y/")]),
            "list-type=2&prefix=x%20y%2F"
        );
    }

    #[test]
    fn regions() {
        assert_eq!(
            region_from_host("https://obs.cn-north-4.myhuaweicloud.com").as_deref(),
            Some("cn-north-4")
        );
        assert_eq!(
            region_from_host("s3.eu-west-1.amazonaws.com").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_from_host("http://127.0.0.1:9000"), None);
        assert_eq!(region_from_host("minio.local"), None);
    }

    #[test]
    fn addressing() {
        let settings = Settings {
            endpoint: Some("http://127.0.0.1:9000".into()),
            access_key: Some("a".into()),
            secret_key: Some(Secret::new("s")),
            ..Settings::default()
        };
        let bucket = Bucket::new(Flavor::S3, "models", &settings, Duration::from_secs(1)).unwrap();
        assert_eq!(bucket.object_path("a b/c"), "/models/a%20b/c");
        assert_eq!(bucket.base.host_header(), "127.0.0.1:9000");
        let aws = Bucket::new(
            Flavor::S3,
            "models",
            &Settings::default(),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(aws.base.host_header(), "models.s3.us-east-1.amazonaws.com");
        assert_eq!(aws.object_path("k"), "/k");
        let dotted = Bucket::new(
            Flavor::S3,
            "my.models",
            &Settings::default(),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(dotted.object_path("k"), "/my.models/k");
        let obs = Bucket::new(
            Flavor::Obs,
            "b",
            &Settings::default(),
            Duration::from_secs(1),
        );
        assert!(
            obs.unwrap_err()
                .to_string()
                .contains("obs:// needs an endpoint")
        );
        let half = Settings {
            access_key: Some("a".into()),
            ..Settings::default()
        };
        assert!(Bucket::new(Flavor::S3, "b", &half, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn signatures_carry_the_payload_mode_and_session_token() {
        let settings = Settings {
            endpoint: Some("http://127.0.0.1:9000".into()),
            access_key: Some("AKIDEXAMPLE".into()),
            secret_key: Some(Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")),
            session_token: Some(Secret::new("session-token-value")),
            region: Some("eu-west-1".into()),
            ..Settings::default()
        };
        let bucket = Bucket::new(Flavor::S3, "models", &settings, Duration::from_secs(1)).unwrap();
        let url = Url::parse("http://127.0.0.1:9000/models/a%20b?x-id=GetObject").unwrap();
        let keys = bucket.keys.as_ref().unwrap();
        let headers = bucket
            .sign(keys, "GET", &url, &[("range".into(), "bytes=0-9".into())])
            .unwrap();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-amz-content-sha256"), Some("UNSIGNED-PAYLOAD"));
        assert_eq!(get("x-amz-security-token"), Some("session-token-value"));
        let authorization = get("authorization").unwrap();
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{authorization}"
        );
        assert!(
            authorization.contains("/eu-west-1/s3/aws4_request"),
            "{authorization}"
        );
        assert!(
            authorization.contains(
                "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date;x-amz-security-token"
            ),
            "{authorization}"
        );
        // Signed again, later: a new date, a new signature.
        std::thread::sleep(Duration::from_millis(1100));
        let again = bucket
            .sign(keys, "GET", &url, &[("range".into(), "bytes=0-9".into())])
            .unwrap();
        assert_ne!(again, headers);
        assert!(!format!("{bucket:?}").contains("wJalr"));
    }

    #[test]
    fn listings_and_errors_parse() {
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
        let error = S3Error::parse(
            "<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message></Error>",
        );
        assert_eq!(
            error.to_string(),
            "SignatureDoesNotMatch: The request signature we calculated does not match"
        );
        assert_eq!(S3Error::parse("not xml").to_string(), "");
    }
}
