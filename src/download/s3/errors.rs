//! What goes wrong with a request to the store: the S3 error body, the
//! transient/fatal split of a send, and the mapping of a final status to
//! a [`DownloadError`].

use serde::Deserialize;

use super::Bucket;
use crate::download::error::DownloadError;

/// Why a send did not produce an answer.
pub(super) enum Failure {
    /// May pass if tried again (network).
    Transient(String),
    /// Will not pass (the request could not be signed).
    Fatal(DownloadError),
}

/// An S3 error body.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct S3Error {
    pub(super) code: String,
    pub(super) message: String,
    /// The region the bucket is in, as `AuthorizationHeaderMalformed`
    /// names it.
    pub(super) region: Option<String>,
}

impl S3Error {
    pub(super) fn parse(body: &str) -> S3Error {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Body {
            code: Option<String>,
            message: Option<String>,
            region: Option<String>,
        }
        match quick_xml::de::from_str::<Body>(body) {
            Ok(b) => S3Error {
                code: b.code.unwrap_or_default(),
                message: b.message.unwrap_or_default(),
                region: b.region.filter(|r| !r.is_empty()),
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

impl Bucket {
    /// A final answer other than success, as a clear error.
    pub(super) fn error(&self, status: u16, error: &S3Error, key: &str) -> DownloadError {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_parse() {
        let error = S3Error::parse(
            "<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message></Error>",
        );
        assert_eq!(
            error.to_string(),
            "SignatureDoesNotMatch: The request signature we calculated does not match"
        );
        assert_eq!(S3Error::parse("not xml").to_string(), "");
        let wrong_region = S3Error::parse(
            "<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message><Region>eu-west-1</Region><RequestId>X</RequestId></Error>",
        );
        assert_eq!(wrong_region.region.as_deref(), Some("eu-west-1"));
    }
}
