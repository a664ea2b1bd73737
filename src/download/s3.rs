//! S3 and OBS: listing a prefix and fetching byte ranges, every request
//! signed with SigV4 (aws-sigv4) at the moment it is sent.
//!
//! Payloads are `UNSIGNED-PAYLOAD` with `x-amz-content-sha256`; a session
//! token is sent and signed when there is one. Requests go over plain
//! HTTP or rustls, as the endpoint says.
//!
//! This file is the [`Bucket`] source: its settings, the listing's entry
//! point, object metadata by HEAD, and ranged GETs. The rest lives in
//! sub-modules: `credentials` (static keys, the AWS credential chain,
//! refreshing temporary keys), `addressing` (endpoint, path- or
//! virtual-hosted, region), `sign` (SigV4, clock-skew and region
//! correction, URI encoding), `listing` (ListObjectsV2 and V1 paging, the
//! XML, keys below the prefix), `integrity` (which check each object gets:
//! ETags of encrypted objects, checksums, part layouts) and `errors` (S3
//! error bodies and their mapping to [`DownloadError`]).

mod addressing;
pub mod credentials;
mod errors;
mod integrity;
mod listing;
mod sign;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use super::error::DownloadError;
use super::fetch::{FetchError, Origin, RemoteFile};
use super::request::Settings;
use super::verify::Expect;
use super::{read_into_sink, transient_status};
use crate::net::HttpClient;
use crate::net::RetryPolicy;
use addressing::Addressing;
use credentials::Credentials;
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

/// A bucket reachable with given settings.
pub struct Bucket {
    client: HttpClient,
    addressing: Addressing,
    credentials: Arc<Credentials>,
    /// `x-amz-request-payer: requester` on every request.
    request_payer: bool,
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
            .field("addressing", &self.addressing)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl Bucket {
    /// What can be checked of the settings without reading a file or
    /// the network (on a server worker, before a job starts).
    pub fn check(flavor: Flavor, bucket: &str, settings: &Settings) -> Result<(), DownloadError> {
        credentials::check(settings)?;
        let endpoint = endpoint(flavor, settings)?;
        Addressing::new(
            bucket,
            endpoint.as_deref(),
            "us-east-1".into(),
            settings.addressing_style,
        )
        .map(drop)
    }

    /// Resolves the endpoint, addressing style, region and where the
    /// credentials come from (the chain, when it is walked, may read
    /// files and ask the instance metadata service: not on a worker).
    pub fn new(
        flavor: Flavor,
        bucket: &str,
        settings: &Settings,
        timeout: Duration,
    ) -> Result<Bucket, DownloadError> {
        let scheme = if flavor == Flavor::Obs { "obs" } else { "s3" };
        // The AWS chain is AWS's: OBS takes static keys or none.
        let credentials = Credentials::for_settings(settings, flavor == Flavor::S3)?;
        let endpoint = endpoint(flavor, settings)?;
        let region = settings
            .region
            .clone()
            .or_else(|| endpoint.as_deref().and_then(region_from_host))
            .or_else(|| {
                let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
                credentials::region(&super::request::ProcessEnvironment, home.as_deref())
            })
            .unwrap_or_else(|| "us-east-1".to_owned());
        let addressing = Addressing::new(
            bucket,
            endpoint.as_deref(),
            region,
            settings.addressing_style,
        )?;
        Ok(Bucket {
            client: HttpClient::new(timeout),
            addressing,
            credentials,
            request_payer: settings.request_payer,
            retry: RetryPolicy::default(),
            name: format!("{scheme}://{bucket}"),
            clock_skew: AtomicI64::new(0),
            seen: integrity::Seen::default(),
        })
    }

    /// What supplies the keys, for the status and the log; resolving it
    /// may ask the credential provider (it fails here, before any file).
    pub fn credential_source(&self) -> Result<String, DownloadError> {
        self.credentials.keys()?;
        Ok(self.credentials.source().to_owned())
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
        let checksums = [("x-amz-checksum-mode".to_owned(), "ENABLED".to_owned())];
        self.head_with(key, "", &checksums, |response| {
            Object::from_head(key, response)
        })
    }

    fn object_path(&self, key: &str) -> String {
        format!("{}/{}", self.addressing.key_root(), uri_encode(key, true))
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

/// The endpoint the settings name; OBS has no default.
fn endpoint(flavor: Flavor, settings: &Settings) -> Result<Option<String>, DownloadError> {
    match (&settings.endpoint, flavor) {
        (Some(endpoint), _) => Ok(Some(endpoint.clone())),
        (None, Flavor::Obs) => Err(DownloadError::BadPath(
            "obs:// needs an endpoint (config.endpoint or the ENDPOINT variable)".into(),
        )),
        (None, Flavor::S3) => Ok(None),
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
    fn settings() {
        let settings = Settings {
            endpoint: Some("http://127.0.0.1:9000".into()),
            access_key: Some("a".into()),
            secret_key: Some(crate::secret::Secret::new("s")),
            ..Settings::default()
        };
        let bucket = Bucket::new(Flavor::S3, "models", &settings, Duration::from_secs(1)).unwrap();
        assert_eq!(bucket.object_path("a b/c"), "/models/a%20b/c");
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
