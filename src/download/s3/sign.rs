//! SigV4 for S3 and OBS: signing each request with aws-sigv4 at the moment
//! it is sent, correcting for a store whose clock differs from ours, and
//! the URI encoding the signature covers.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use super::Bucket;
use super::credentials::CredentialError;
use super::credentials::Keys;
use super::errors::{Failure, S3Error};
use crate::download::error::DownloadError;
use crate::net::{Response, Url};

/// A 403 whose `Date` is this far from our clock is taken for a
/// signature refused for its time (S3 allows 15 minutes, some stores 5).
const SKEW_SUSPECT: Duration = Duration::from_secs(4 * 60);

impl Bucket {
    /// Signs (now: every retry gets a fresh signature, with keys that are
    /// fresh too) and sends. Three refusals are put right and the request
    /// sent once more, as the AWS SDKs do:
    ///
    /// - a 403 with a `Date` far from our clock is a signature refused for
    ///   its time (`RequestTimeTooSkewed`, "Request has expired"): signed
    ///   again with the store's time;
    /// - an answer naming another region in `x-amz-bucket-region` (301
    ///   `PermanentRedirect`, 400 `AuthorizationHeaderMalformed`): sent
    ///   there, and every later request too;
    /// - temporary keys the store calls expired (`ExpiredToken`) before our
    ///   clock does: fetched again.
    pub(super) fn send(
        &self,
        method: &str,
        path_and_query: &str,
        extra: &[(String, String)],
    ) -> Result<Response<'_>, Failure> {
        let (mut corrected, mut moved, mut refreshed) = (false, false, false);
        loop {
            let target = self.addressing.target();
            let url = Url::from_parts(target.base.origin.clone(), path_and_query.to_owned());
            let mut headers: Vec<(String, String)> = extra.to_vec();
            if self.request_payer {
                headers.push(("x-amz-request-payer".into(), "requester".into()));
            }
            let keys = self.credentials.keys().map_err(|e| match e {
                CredentialError::Refused(_) => Failure::Fatal(e.into()),
                CredentialError::Unavailable(_) => Failure::Transient(e.to_string()),
            })?;
            if let Some(keys) = &keys {
                let signed = self
                    .sign(keys, &target.region, method, &url, &headers)
                    .map_err(Failure::Fatal)?;
                headers.extend(signed);
            }
            let mut response =
                self.client.request(method, &url, &headers).map_err(
                    |e| match crate::net::is_denied(&e) {
                        true => Failure::Fatal(DownloadError::Denied(e.to_string())),
                        false => Failure::Transient(e.to_string()),
                    },
                )?;
            let status = response.status;
            if !moved
                && matches!(status, 301 | 307 | 400 | 403)
                && let Some(region) = response.header("x-amz-bucket-region").map(str::to_owned)
                && self.addressing.move_to(&region).map_err(Failure::Fatal)?
            {
                moved = true;
                tracing::warn!(
                    store = %self.name,
                    from = %target.region,
                    to = %region,
                    "the bucket is in another region than assumed; going on there (set region to skip this)"
                );
                continue;
            }
            // AWS names the region of a 400 `AuthorizationHeaderMalformed`
            // in the body only (AWS lists V2, so no caller needs that body).
            if !moved && status == 400 && method != "HEAD" && self.addressing.is_aws() {
                let error = S3Error::parse(&response.text(4096).unwrap_or_default());
                if let Some(region) = &error.region
                    && self.addressing.move_to(region).map_err(Failure::Fatal)?
                {
                    moved = true;
                    tracing::warn!(store = %self.name, from = %target.region, to = %region, "the bucket is in another region than assumed; going on there (set region to skip this)");
                    continue;
                }
                // AWS answers expired temporary keys with a 400 too.
                let temporary = keys.as_ref().is_some_and(|k| k.expires.is_some());
                if temporary && !refreshed && expired(&error) {
                    refreshed = true;
                    self.credentials.expire();
                    continue;
                }
                return Err(Failure::Fatal(self.error(status, &error, "")));
            }
            let Some(keys) = keys else {
                return Ok(response);
            };
            if status == 403
                && !corrected
                && let Some(skew) = response
                    .header("date")
                    .and_then(|date| skew_from(date, SystemTime::now()))
            {
                corrected = true;
                if self.clock_skew.swap(skew, Relaxed) != skew {
                    tracing::warn!(
                        store = %self.name,
                        skew_seconds = skew,
                        "this machine's clock differs from the store's; signing with the store's time (check NTP)"
                    );
                }
                continue;
            }
            if !matches!(status, 400 | 403) || refreshed || keys.expires.is_none() {
                return Ok(response);
            }
            // Temporary keys refused: expired early, or a real refusal.
            if method != "HEAD" {
                let error = S3Error::parse(&response.text(4096).unwrap_or_default());
                if !expired(&error) {
                    return Err(Failure::Fatal(self.error(status, &error, "")));
                }
            }
            refreshed = true;
            self.credentials.expire();
            tracing::info!(store = %self.name, source = %self.credentials.source(), "the store refused the temporary credentials; fetching new ones");
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

    pub(super) fn sign(
        &self,
        keys: &Keys,
        region: &str,
        method: &str,
        url: &Url,
        extra: &[(String, String)],
    ) -> Result<Vec<(String, String)>, DownloadError> {
        let signing = Signing {
            keys,
            region,
            service: "s3",
            time: self.signing_time(),
        };
        signing.sign(method, url, extra, None)
    }
}

/// What a SigV4 signature is made with.
pub struct Signing<'a> {
    /// The keys.
    pub keys: &'a Keys,
    /// The region signed for.
    pub region: &'a str,
    /// The service signed for (`s3`, `sts`).
    pub service: &'a str,
    /// The moment signed for.
    pub time: SystemTime,
}

impl Signing<'_> {
    /// The headers that sign a request: `authorization`, `x-amz-date`,
    /// `x-amz-content-sha256` (`UNSIGNED-PAYLOAD` without `body`) and the
    /// session token.
    pub fn sign(
        &self,
        method: &str,
        url: &Url,
        extra: &[(String, String)],
        body: Option<&[u8]>,
    ) -> Result<Vec<(String, String)>, DownloadError> {
        let keys = self.keys;
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
            .region(self.region)
            .name(self.service)
            .time(self.time)
            .settings(settings)
            .build()
            .map_err(|e| DownloadError::Source(format!("cannot sign: {e}")))?
            .into();
        let host = url.host_header();
        let uri = url.to_string();
        let mut headers: Vec<(&str, &str)> = vec![("host", host.as_str())];
        headers.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let body = match body {
            Some(bytes) => SignableBody::Bytes(bytes),
            None => SignableBody::UnsignedPayload,
        };
        let request = SignableRequest::new(method, uri, headers.into_iter(), body)
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
}

/// Whether the store refused keys for having expired.
fn expired(error: &S3Error) -> bool {
    matches!(
        error.code.as_str(),
        "ExpiredToken" | "TokenRefreshRequired" | "InvalidToken"
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::request::{Secret, Settings};
    use crate::download::s3::Flavor;

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
        let keys = bucket.credentials.keys().unwrap().unwrap();
        let keys = keys.as_ref();
        let headers = bucket
            .sign(
                keys,
                "eu-west-1",
                "GET",
                &url,
                &[("range".into(), "bytes=0-9".into())],
            )
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
        // Signed for a second later: a new date, a new signature.
        let later = Signing {
            keys,
            region: "eu-west-1",
            service: "s3",
            time: bucket.signing_time() + Duration::from_secs(1),
        };
        let again = later
            .sign("GET", &url, &[("range".into(), "bytes=0-9".into())], None)
            .unwrap();
        assert_ne!(again, headers);
        assert!(!format!("{bucket:?}").contains("wJalr"));
    }
}
