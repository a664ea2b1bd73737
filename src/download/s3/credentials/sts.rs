//! AWS STS: `AssumeRoleWithWebIdentity` (IRSA: a Kubernetes service
//! account token exchanged for a role's keys, unsigned) and `AssumeRole`
//! (a profile's `role_arn`, signed with the `source_profile`'s keys).
//!
//! The endpoint is `AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL`, else
//! the regional one (`https://sts.{region}.amazonaws.com`), or the global
//! `https://sts.amazonaws.com` when `AWS_STS_REGIONAL_ENDPOINTS=legacy` or
//! no region is known. Parameters go in a form body, so the web identity
//! token never appears in a URL.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::{CredentialError, Keys, ask_service, parse_time};
use crate::download::request::Environment;
use crate::download::s3::sign::{Signing, uri_encode};
use crate::net::{HttpClient, Url};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Where STS answers, and the region its signatures name.
#[derive(Debug, Clone)]
pub struct Endpoint {
    url: String,
    region: String,
}

impl Endpoint {
    pub fn from_env(env: &dyn Environment, region: &Option<String>) -> Endpoint {
        let signing_region = region.clone().unwrap_or_else(|| "us-east-1".into());
        if let Some(url) = env
            .var("AWS_ENDPOINT_URL_STS")
            .or_else(|| env.var("AWS_ENDPOINT_URL"))
        {
            return Endpoint {
                url,
                region: signing_region,
            };
        }
        let legacy = env
            .var("AWS_STS_REGIONAL_ENDPOINTS")
            .is_some_and(|v| v.eq_ignore_ascii_case("legacy"));
        match region {
            Some(region) if !legacy => {
                let suffix = if region.starts_with("cn-") {
                    "amazonaws.com.cn"
                } else {
                    "amazonaws.com"
                };
                Endpoint {
                    url: format!("https://sts.{region}.{suffix}"),
                    region: region.clone(),
                }
            }
            _ => Endpoint {
                url: "https://sts.amazonaws.com".into(),
                region: "us-east-1".into(),
            },
        }
    }
}

/// IRSA: `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`.
#[derive(Debug)]
pub struct WebIdentity {
    role_arn: String,
    token_file: String,
    session_name: String,
    endpoint: Endpoint,
}

impl WebIdentity {
    pub fn from_env(env: &dyn Environment, region: &Option<String>) -> Option<WebIdentity> {
        let role_arn = env.var("AWS_ROLE_ARN")?;
        let token_file = env.var("AWS_WEB_IDENTITY_TOKEN_FILE")?;
        Some(WebIdentity::new(
            role_arn,
            token_file,
            env.var("AWS_ROLE_SESSION_NAME"),
            Endpoint::from_env(env, region),
        ))
    }

    pub fn new(
        role_arn: String,
        token_file: String,
        session_name: Option<String>,
        endpoint: Endpoint,
    ) -> WebIdentity {
        WebIdentity {
            role_arn,
            token_file,
            session_name: session_name.unwrap_or_else(session_name_now),
            endpoint,
        }
    }

    /// Reads the token file again each time: the kubelet rotates it.
    pub fn fetch(&self) -> Result<Keys, CredentialError> {
        let token = std::fs::read_to_string(&self.token_file).map_err(|e| {
            CredentialError::Unavailable(format!(
                "cannot read AWS_WEB_IDENTITY_TOKEN_FILE {}: {e}",
                self.token_file
            ))
        })?;
        let form = [
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", self.role_arn.as_str()),
            ("RoleSessionName", self.session_name.as_str()),
            ("WebIdentityToken", token.trim()),
        ];
        call(
            &self.endpoint,
            &form,
            None,
            &format!("AssumeRoleWithWebIdentity {}", self.role_arn),
        )
    }
}

/// `AssumeRole` of `role_arn` with `source` keys.
pub fn assume_role(
    endpoint: &Endpoint,
    source: &Keys,
    role_arn: &str,
    session_name: Option<&str>,
    external_id: Option<&str>,
) -> Result<Keys, CredentialError> {
    let session_name = session_name
        .map(str::to_owned)
        .unwrap_or_else(session_name_now);
    let mut form = vec![
        ("Action", "AssumeRole"),
        ("Version", "2011-06-15"),
        ("RoleArn", role_arn),
        ("RoleSessionName", session_name.as_str()),
    ];
    if let Some(id) = external_id {
        form.push(("ExternalId", id));
    }
    call(
        endpoint,
        &form,
        Some(source),
        &format!("AssumeRole {role_arn}"),
    )
}

fn session_name_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!("matrixinfer-runtime-{secs}")
}

/// POSTs the form (signed with `signer` if given), retrying network
/// faults and 5xx; a 4xx is STS saying no.
fn call(
    endpoint: &Endpoint,
    form: &[(&str, &str)],
    signer: Option<&Keys>,
    what: &str,
) -> Result<Keys, CredentialError> {
    let url = Url::parse(&format!("{}/", endpoint.url.trim_end_matches('/')))
        .map_err(|e| CredentialError::Refused(format!("STS endpoint {}: {e}", endpoint.url)))?;
    let body: Vec<String> = form
        .iter()
        .map(|(k, v)| format!("{k}={}", uri_encode(v, false)))
        .collect();
    let body = body.join("&").into_bytes();
    let client = HttpClient::new(TIMEOUT);
    let ask = || {
        let mut headers = vec![(
            "content-type".to_owned(),
            "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
        )];
        // Signed again for every attempt: a signature holds minutes.
        if let Some(keys) = signer {
            let signing = Signing {
                keys,
                region: &endpoint.region,
                service: "sts",
                time: SystemTime::now(),
            };
            let signed = signing
                .sign("POST", &url, &headers, Some(&body))
                .map_err(|e| CredentialError::Refused(e.to_string()))?;
            headers.extend(signed);
        }
        Ok(client
            .send("POST", &url, &headers, &body)
            .and_then(|mut response| Ok((response.status, response.text(64 * 1024)?))))
    };
    let read = |text: &str| {
        parse_keys(text)
            .ok_or_else(|| CredentialError::Unavailable(format!("{what}: unreadable STS answer")))
    };
    let what = format!("{what} (STS at {})", endpoint.url);
    ask_service(&what, ask, read, sts_error)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct XmlKeys {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    expiration: Option<String>,
}

/// The `<Credentials>` of an `AssumeRole*Response`.
fn parse_keys(xml: &str) -> Option<Keys> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Result_ {
        credentials: XmlKeys,
    }
    #[derive(Deserialize)]
    struct Response {
        #[serde(rename = "AssumeRoleWithWebIdentityResult", alias = "AssumeRoleResult")]
        result: Result_,
    }
    let response: Response = quick_xml::de::from_str(xml).ok()?;
    let c = response.result.credentials;
    Some(Keys {
        access: c.access_key_id,
        secret: crate::secret::Secret::new(c.secret_access_key),
        session: c.session_token.map(crate::secret::Secret::new),
        expires: c.expiration.as_deref().and_then(parse_time),
    })
}

/// `Code: Message` of an STS `<ErrorResponse>`.
fn sts_error(xml: &str) -> String {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "PascalCase", default)]
    struct Error {
        code: String,
        message: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct ErrorResponse {
        error: Error,
    }
    match quick_xml::de::from_str::<ErrorResponse>(xml) {
        Ok(r) => format!("{}: {}", r.error.code, r.error.message),
        Err(_) => xml.trim().chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn endpoints() {
        let env = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let region = Some("eu-west-1".to_owned());
        assert_eq!(
            Endpoint::from_env(&env(&[]), &region).url,
            "https://sts.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            Endpoint::from_env(&env(&[("AWS_STS_REGIONAL_ENDPOINTS", "legacy")]), &region).url,
            "https://sts.amazonaws.com"
        );
        assert_eq!(
            Endpoint::from_env(&env(&[]), &Some("cn-north-1".into())).url,
            "https://sts.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(Endpoint::from_env(&env(&[]), &None).region, "us-east-1");
        let local = env(&[
            ("AWS_ENDPOINT_URL", "http://all:1"),
            ("AWS_ENDPOINT_URL_STS", "http://sts:2"),
        ]);
        assert_eq!(Endpoint::from_env(&local, &region).url, "http://sts:2");
    }

    #[test]
    fn answers() {
        let xml = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:ns:sa</SubjectFromWebIdentityToken>
    <Credentials>
      <SessionToken>FQoGZXIvYXdzEE0a</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <Expiration>2026-12-02T15:00:00Z</Expiration>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"#;
        let keys = parse_keys(xml).unwrap();
        assert_eq!(keys.access, "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(keys.session.unwrap().expose(), "FQoGZXIvYXdzEE0a");
        assert!(keys.expires.is_some());
        let role = xml.replace("AssumeRoleWithWebIdentity", "AssumeRole");
        assert_eq!(parse_keys(&role).unwrap().access, "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(
            sts_error(
                "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>bad token</Message></Error></ErrorResponse>"
            ),
            "InvalidIdentityToken: bad token"
        );
    }
}
