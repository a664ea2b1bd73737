//! Container credentials: EKS Pod Identity and ECS task roles. A local
//! agent serves the keys as JSON at `AWS_CONTAINER_CREDENTIALS_FULL_URI`
//! (or `http://169.254.170.2` + `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`),
//! with the `Authorization` header from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`
//! (read on every fetch: the agent rotates it) or
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
//!
//! As the SDKs do, a full URI over plain HTTP must point at this machine
//! (loopback) or at the agents' link-local addresses: the token must not
//! travel elsewhere in clear.

use std::net::IpAddr;
use std::time::Duration;

use super::{CredentialError, JsonKeys, Keys, ask_service};
use crate::download::request::Environment;
use crate::net::{HttpClient, Url};
use crate::secret::Secret;

const ECS_HOST: &str = "http://169.254.170.2";
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Container {
    url: String,
    token_file: Option<String>,
    token: Option<Secret>,
}

impl Container {
    pub fn from_env(env: &dyn Environment) -> Option<Container> {
        let url = match (
            env.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
            env.var("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        ) {
            (Some(relative), _) => format!("{ECS_HOST}{relative}"),
            (None, Some(full)) => full,
            (None, None) => return None,
        };
        Some(Container {
            url,
            token_file: env.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            token: env
                .var("AWS_CONTAINER_AUTHORIZATION_TOKEN")
                .map(Secret::new),
        })
    }

    pub fn describe(&self) -> String {
        let which = if self.url.contains("169.254.170.23") || self.url.contains("[fd00:ec2::23]") {
            "EKS Pod Identity"
        } else {
            "container credentials"
        };
        match Url::parse(&self.url) {
            Ok(url) => format!("{which} ({})", url.display_without_query()),
            Err(_) => which.to_owned(),
        }
    }

    pub fn fetch(&self) -> Result<Keys, CredentialError> {
        let url = Url::parse(&self.url).map_err(|e| {
            CredentialError::Refused(format!("AWS_CONTAINER_CREDENTIALS_FULL_URI: {e}"))
        })?;
        if !url.origin.https && !allowed_plain_host(&url.origin.host) {
            return Err(CredentialError::Refused(format!(
                "container credentials over plain HTTP only from loopback or the agents' link-local addresses, not {}",
                url.origin.host
            )));
        }
        let token = match &self.token_file {
            Some(path) => Some(Secret::new(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        CredentialError::Unavailable(format!(
                            "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {path}: {e}"
                        ))
                    })?
                    .trim()
                    .to_owned(),
            )),
            None => self.token.clone(),
        };
        let client = HttpClient::new(TIMEOUT);
        let where_ = url.display_without_query();
        let ask = || {
            let mut headers = vec![("accept".to_owned(), "application/json".to_owned())];
            if let Some(token) = &token {
                headers.push(("authorization".to_owned(), token.expose().to_owned()));
            }
            Ok(client
                .request("GET", &url, &headers)
                .and_then(|mut response| Ok((response.status, response.text(64 * 1024)?))))
        };
        let read = |text: &str| {
            let keys: JsonKeys = serde_json::from_str(text).map_err(|e| {
                CredentialError::Unavailable(format!(
                    "unreadable container credentials from {where_}: {e}"
                ))
            })?;
            keys.into_keys()
        };
        // The agent's error bodies are not shown: they may echo the token.
        let what = format!("container credentials from {where_}");
        ask_service(&what, ask, read, |_| String::new())
    }
}

/// Loopback, ECS's `169.254.170.2`, EKS Pod Identity's `169.254.170.23`
/// and `fd00:ec2::23`.
fn allowed_plain_host(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    match host.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) => {
            ip.is_loopback()
                || ip == IpAddr::from([169, 254, 170, 2])
                || ip == IpAddr::from([169, 254, 170, 23])
                || ip == IpAddr::from([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23])
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn where_it_asks() {
        let env: HashMap<String, String> = [(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI".to_owned(),
            "/v2/credentials/abc".to_owned(),
        )]
        .into();
        let c = Container::from_env(&env).unwrap();
        assert_eq!(c.url, "http://169.254.170.2/v2/credentials/abc");
        assert_eq!(
            c.describe(),
            "container credentials (http://169.254.170.2/v2/credentials/abc)"
        );
        let pod_identity: HashMap<String, String> = [(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI".to_owned(),
            "http://169.254.170.23/v1/credentials".to_owned(),
        )]
        .into();
        assert!(
            Container::from_env(&pod_identity)
                .unwrap()
                .describe()
                .starts_with("EKS Pod Identity")
        );
        assert!(Container::from_env(&HashMap::new()).is_none());
    }

    #[test]
    fn plain_http_only_nearby() {
        for ok in [
            "127.0.0.1",
            "localhost",
            "169.254.170.2",
            "169.254.170.23",
            "[::1]",
            "[fd00:ec2::23]",
        ] {
            assert!(allowed_plain_host(ok), "{ok}");
        }
        for bad in ["10.0.0.1", "example.com", "169.254.169.254"] {
            assert!(!allowed_plain_host(bad), "{bad}");
        }
    }
}
