//! The EC2 instance metadata service, IMDSv2 only: a session token from
//! `PUT /latest/api/token`, then the instance role's keys from
//! `/latest/meta-data/iam/security-credentials/{role}`, each request
//! carrying the token. `AWS_EC2_METADATA_SERVICE_ENDPOINT` moves it (default
//! `http://169.254.169.254`); `AWS_EC2_METADATA_DISABLED=true` turns it off.
//!
//! Off EC2 nothing answers at that address, so the first request has a
//! short timeout and is not retried: a download must not wait long for a
//! service that is not there.

use std::time::Duration;

use super::{CredentialError, JsonKeys, Keys};
use crate::download::request::Environment;
use crate::net::{HttpClient, Url};

const DEFAULT_ENDPOINT: &str = "http://169.254.169.254";
const TIMEOUT: Duration = Duration::from_secs(1);
/// Seconds a session token lives; each fetch takes a new one.
const TOKEN_TTL: &str = "21600";

#[derive(Debug)]
pub struct Imds {
    endpoint: String,
}

impl Imds {
    pub fn from_env(env: &dyn Environment) -> Option<Imds> {
        if env
            .var("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return None;
        }
        let endpoint = env
            .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        Some(Imds {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
        })
    }

    fn url(&self, path: &str) -> Result<Url, CredentialError> {
        Url::parse(&format!("{}{path}", self.endpoint)).map_err(|e| {
            CredentialError::Refused(format!("AWS_EC2_METADATA_SERVICE_ENDPOINT: {e}"))
        })
    }

    /// Whether the service answers: a session token comes back.
    pub fn probe(&self) -> Result<(), CredentialError> {
        self.token(&HttpClient::new(TIMEOUT)).map(drop)
    }

    fn token(&self, client: &HttpClient) -> Result<String, CredentialError> {
        let url = self.url("/latest/api/token")?;
        let headers = [
            (
                "x-aws-ec2-metadata-token-ttl-seconds".to_owned(),
                TOKEN_TTL.to_owned(),
            ),
            ("content-length".to_owned(), "0".to_owned()),
        ];
        let mut response = client
            .request("PUT", &url, &headers)
            .map_err(|e| CredentialError::Unavailable(format!("IMDS at {}: {e}", self.endpoint)))?;
        let status = response.status;
        let token = response.text(4096).unwrap_or_default();
        if status != 200 || token.trim().is_empty() {
            return Err(CredentialError::Unavailable(format!(
                "IMDS at {}: HTTP {status} for a session token",
                self.endpoint
            )));
        }
        Ok(token.trim().to_owned())
    }

    fn get(&self, client: &HttpClient, token: &str, path: &str) -> Result<String, CredentialError> {
        let url = self.url(path)?;
        let headers = [("x-aws-ec2-metadata-token".to_owned(), token.to_owned())];
        let mut response = client
            .request("GET", &url, &headers)
            .map_err(|e| CredentialError::Unavailable(format!("IMDS at {}: {e}", self.endpoint)))?;
        let status = response.status;
        let text = response.text(64 * 1024).unwrap_or_default();
        match status {
            200 => Ok(text),
            404 => Err(CredentialError::Refused(format!(
                "IMDS at {}: {path}: no instance role (HTTP 404)",
                self.endpoint
            ))),
            _ => Err(CredentialError::Unavailable(format!(
                "IMDS at {}: {path}: HTTP {status}",
                self.endpoint
            ))),
        }
    }

    pub fn fetch(&self) -> Result<Keys, CredentialError> {
        let client = HttpClient::new(TIMEOUT * 2);
        let token = self.token(&client)?;
        let base = "/latest/meta-data/iam/security-credentials/";
        let roles = self.get(&client, &token, base)?;
        let role = roles
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .ok_or_else(|| {
                CredentialError::Refused(format!(
                    "IMDS at {}: the instance has no role",
                    self.endpoint
                ))
            })?
            .to_owned();
        let text = self.get(&client, &token, &format!("{base}{role}"))?;
        #[derive(serde::Deserialize)]
        struct Status {
            #[serde(rename = "Code")]
            code: Option<String>,
        }
        if let Ok(Status { code: Some(code) }) = serde_json::from_str::<Status>(&text)
            && code != "Success"
        {
            return Err(CredentialError::Unavailable(format!(
                "IMDS at {}: role {role}: {code}",
                self.endpoint
            )));
        }
        let keys: JsonKeys = serde_json::from_str(&text).map_err(|e| {
            CredentialError::Unavailable(format!("IMDS: unreadable keys of role {role}: {e}"))
        })?;
        keys.into_keys()
    }
}
