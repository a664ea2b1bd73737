//! S3 and OBS: listing a prefix and fetching byte ranges, every request
//! signed with SigV4 (aws-sigv4) at the moment it is sent.
//!
//! Custom endpoints (OBS, MinIO, Ceph, a local server) are addressed
//! path-style (`{endpoint}/{bucket}/{key}`); AWS itself virtual-hosted
//! (`https://{bucket}.s3.{region}.amazonaws.com/{key}`) unless the bucket
//! name has dots. Payloads are `UNSIGNED-PAYLOAD` with
//! `x-amz-content-sha256`; a session token is sent and signed when given.
//! Requests go over plain HTTP or rustls, as the endpoint says.
//!
//! This file is the [`Bucket`] source: addressing from the settings, the
//! listing's entry point, object metadata by HEAD, and ranged GETs. The
//! rest lives in sub-modules: `sign` (SigV4, clock-skew correction, URI
//! encoding), `listing` (ListObjectsV2 and V1 paging, the XML, keys
//! below the prefix), `integrity` (which check each object gets: ETags
//! of encrypted objects, checksums, part layouts) and `errors` (S3 error bodies and their mapping to
//! [`DownloadError`]).

mod errors;
mod integrity;
mod listing;
mod sign;

use std::ops::Range;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use super::error::DownloadError;
use super::fetch::{FetchError, Origin, RemoteFile};
use super::request::{Secret, Settings};
use super::verify::Expect;
use super::{read_into_sink, transient_status};
use crate::net::RetryPolicy;
use crate::net::{HttpClient, Url};
use errors::{Failure, S3Error};
#[cfg(any(fuzzing, test))]
pub(crate) use listing::check_listing;
use listing::{Object, files_below};
pub use sign::uri_encode;

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
    /// What GET answers said of the objects' encryption.
    seen: integrity::Seen,
}

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
            seen: integrity::Seen::default(),
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

    fn object_path(&self, key: &str) -> String {
        format!("{}/{}", self.key_root, uri_encode(key, true))
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
            200 | 206 => {
                self.seen.note(&file.locator, &response);
                read_into_sink(&mut response, &range, sink)
            }
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

    fn settle(&self, file: &RemoteFile) -> Result<Expect, DownloadError> {
        self.settle_check(file)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
