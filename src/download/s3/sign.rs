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

use super::errors::Failure;
use super::{Bucket, Keys};
use crate::download::error::DownloadError;
use crate::net::{Response, Url};

/// A 403 whose `Date` is this far from our clock is taken for a
/// signature refused for its time (S3 allows 15 minutes, some stores 5).
const SKEW_SUSPECT: Duration = Duration::from_secs(4 * 60);

impl Bucket {
    /// Signs (now: every retry gets a fresh signature) and sends. A 403
    /// that comes with a `Date` far from our clock is a signature refused
    /// for its time (`RequestTimeTooSkewed`, "Request has expired"): as
    /// the AWS SDKs do, the request is signed again with the store's time
    /// and sent once more.
    pub(super) fn send(
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

    pub(super) fn sign(
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
}
