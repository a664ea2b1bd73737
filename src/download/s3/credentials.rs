//! Where S3 credentials come from, and keeping temporary ones fresh.
//!
//! Static keys from the request's `config` or the environment win. Without
//! them the chain the AWS SDKs use is walked, in this order, and the first
//! provider that is configured supplies the keys:
//!
//! 1. web identity (IRSA): `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`,
//!    exchanged with STS `AssumeRoleWithWebIdentity` ([`sts`]);
//! 2. container credentials (EKS Pod Identity, ECS):
//!    `AWS_CONTAINER_CREDENTIALS_FULL_URI` / `_RELATIVE_URI` ([`container`]);
//! 3. the shared files: `AWS_PROFILE` in `AWS_SHARED_CREDENTIALS_FILE` and
//!    `AWS_CONFIG_FILE`, with `role_arn` + `source_profile` and
//!    `credential_process` ([`profile`]);
//! 4. the instance metadata service, IMDSv2 ([`imds`]), unless
//!    `AWS_EC2_METADATA_DISABLED=true`.
//!
//! When nothing supplies keys the requests go unsigned, and the log says
//! so once. `"anonymous": true` asks for that outright.
//!
//! Temporary keys are fetched again before they expire (half their
//! lifetime before, at most five minutes), by whichever transfer asks
//! first while the others wait; a refresh that fails while the old keys
//! still hold keeps them. The chain is walked once per process and shared
//! by every download, as the SDKs share theirs; a walk that found nothing
//! is tried again a minute later (instance metadata may come up late).

mod container;
mod imds;
mod profile;
mod sts;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::download::error::DownloadError;
use crate::download::request::{Environment, ProcessEnvironment, Secret, Settings};
use profile::Profiles;

/// Signing keys, possibly temporary.
#[derive(Clone)]
pub struct Keys {
    /// The access key id.
    pub access: String,
    /// The secret access key.
    pub secret: Secret,
    /// The session token of temporary keys.
    pub session: Option<Secret>,
    /// When temporary keys stop working.
    pub expires: Option<SystemTime>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// Keys could not be had from a provider that is configured.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialError {
    /// The provider answered no (a wrong role, a bad token): trying again
    /// will not help.
    #[error("{0}")]
    Refused(String),
    /// The provider could not be reached or failed; it may work later.
    #[error("{0}")]
    Unavailable(String),
}

impl From<CredentialError> for DownloadError {
    fn from(e: CredentialError) -> DownloadError {
        match e {
            CredentialError::Refused(m) => DownloadError::Denied(format!("S3 credentials: {m}")),
            CredentialError::Unavailable(m) => {
                DownloadError::Source(format!("S3 credentials: {m}"))
            }
        }
    }
}

/// Whether the settings' keys can be used: both halves or neither.
pub fn check(settings: &Settings) -> Result<(), DownloadError> {
    match (&settings.access_key, &settings.secret_key) {
        (Some(_), None) | (None, Some(_)) if !settings.anonymous => Err(DownloadError::BadPath(
            "access_key and secret_key must be given together (config or ACCESS_KEY/SECRET_KEY)"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// A configured way to get keys.
#[derive(Debug)]
enum Provider {
    WebIdentity(sts::WebIdentity),
    Container(container::Container),
    Profile(profile::Resolved),
    Imds(imds::Imds),
}

impl Provider {
    fn fetch(&self) -> Result<Keys, CredentialError> {
        match self {
            Provider::WebIdentity(p) => p.fetch(),
            Provider::Container(p) => p.fetch(),
            Provider::Profile(p) => p.fetch(),
            Provider::Imds(p) => p.fetch(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Provider::WebIdentity(_) => "web identity (AWS_WEB_IDENTITY_TOKEN_FILE)".into(),
            Provider::Container(p) => p.describe(),
            Provider::Profile(p) => p.describe(),
            Provider::Imds(_) => "instance metadata (IMDSv2)".into(),
        }
    }
}

/// The keys a bucket signs with, and where they came from.
pub struct Credentials {
    /// What supplied them, for the status and the log.
    source: String,
    provider: Option<Provider>,
    held: Mutex<Option<Held>>,
}

struct Held {
    keys: Arc<Keys>,
    /// From when to fetch again (temporary keys).
    refresh_at: Option<SystemTime>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// For a request's settings: anonymous when it asks (whatever keys
    /// are around), else its static keys, else the process's chain (if
    /// `chain`; else anonymous).
    pub fn for_settings(
        settings: &Settings,
        chain: bool,
    ) -> Result<Arc<Credentials>, DownloadError> {
        if settings.anonymous {
            return Ok(Arc::new(Credentials::anonymous(
                "anonymous (asked for)".into(),
            )));
        }
        check(settings)?;
        match (&settings.access_key, &settings.secret_key) {
            (Some(access), Some(secret)) => Ok(Arc::new(Credentials::fixed(
                settings.keys_from.clone(),
                Keys {
                    access: access.clone(),
                    secret: secret.clone(),
                    session: settings.session_token.clone(),
                    expires: None,
                },
            ))),
            _ if chain => Ok(process_chain()),
            _ => Ok(Arc::new(Credentials::anonymous(
                "anonymous (no keys)".into(),
            ))),
        }
    }

    fn fixed(source: String, keys: Keys) -> Credentials {
        Credentials {
            source,
            provider: None,
            held: Mutex::new(Some(Held {
                keys: Arc::new(keys),
                refresh_at: None,
            })),
        }
    }

    fn anonymous(source: String) -> Credentials {
        Credentials {
            source,
            provider: None,
            held: Mutex::new(None),
        }
    }

    /// Walks the chain over `env`.
    fn chain(env: &dyn Environment, home: Option<&std::path::Path>) -> Credentials {
        match provider(env, home) {
            Some(provider) => Credentials {
                source: provider.describe(),
                provider: Some(provider),
                held: Mutex::new(None),
            },
            None => Credentials::anonymous("anonymous (no credentials found)".into()),
        }
    }

    /// What supplies the keys: `environment`, `request`, a provider of
    /// the chain, or `anonymous (…)`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The keys to sign with now (`None`: send unsigned), fetched again
    /// when they are about to expire.
    pub fn keys(&self) -> Result<Option<Arc<Keys>>, CredentialError> {
        let Some(provider) = &self.provider else {
            let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            return Ok(held.as_ref().map(|h| h.keys.clone()));
        };
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let now = SystemTime::now();
        if let Some(h) = held.as_ref()
            && h.refresh_at.is_none_or(|at| now < at)
        {
            return Ok(Some(h.keys.clone()));
        }
        match provider.fetch() {
            Ok(keys) => {
                let refresh_at = keys.expires.map(|expires| refresh_time(now, expires));
                if let Some(expires) = keys.expires {
                    tracing::debug!(source = %self.source, expires_in_s = expires.duration_since(now).unwrap_or_default().as_secs(), "temporary S3 credentials fetched");
                }
                let keys = Arc::new(keys);
                *held = Some(Held {
                    keys: keys.clone(),
                    refresh_at,
                });
                Ok(Some(keys))
            }
            // Keys that still hold beat a refresh that failed.
            Err(e) => match held.as_ref() {
                Some(h) if h.keys.expires.is_some_and(|t| now < t) => {
                    tracing::warn!(source = %self.source, error = %e, "refreshing S3 credentials failed; the current ones still hold");
                    Ok(Some(h.keys.clone()))
                }
                _ => Err(e),
            },
        }
    }

    /// The store said the keys expired (`ExpiredToken`): fetch new ones
    /// at the next request. Returns whether there is anything to refresh.
    pub fn expire(&self) -> bool {
        if self.provider.is_none() {
            return false;
        }
        if let Some(h) = self.held.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            h.refresh_at = Some(SystemTime::UNIX_EPOCH);
        }
        true
    }
}

/// When to fetch keys that expire at `expires` again: half their
/// remaining life before, at most five minutes before.
fn refresh_time(now: SystemTime, expires: SystemTime) -> SystemTime {
    let life = expires.duration_since(now).unwrap_or_default();
    let early = (life / 2).min(Duration::from_secs(300));
    expires - early
}

/// How long a walk that found nothing stands before the next download
/// walks again (instance metadata that did not answer may answer later).
const WALK_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// The process's chain: walked once when it finds a provider (the
/// environment does not change); when it finds none, walked again by a
/// download that starts a minute later or more. Saying so is done once.
fn process_chain() -> Arc<Credentials> {
    static CHAIN: Mutex<Option<(Arc<Credentials>, std::time::Instant)>> = Mutex::new(None);
    static SAID: std::sync::Once = std::sync::Once::new();
    let mut chain = CHAIN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((found, at)) = chain.as_ref()
        && (found.provider.is_some() || at.elapsed() < WALK_AGAIN_AFTER)
    {
        return found.clone();
    }
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let walked = Arc::new(Credentials::chain(&ProcessEnvironment, home.as_deref()));
    match walked.provider {
        None => SAID.call_once(|| {
            tracing::warn!(
                "no S3 credentials found (no keys, web identity, container credentials, profile or instance metadata): S3 requests go unsigned"
            );
        }),
        Some(_) if chain.is_some() => {
            tracing::info!(source = %walked.source(), "S3 credentials found on a later walk of the chain");
        }
        Some(_) => {}
    }
    *chain = Some((walked.clone(), std::time::Instant::now()));
    walked
}

/// The first configured provider, in the SDKs' order; IMDS is tried
/// (one quick request) since only an answer shows it is there.
fn provider(env: &dyn Environment, home: Option<&std::path::Path>) -> Option<Provider> {
    let region = region(env, home);
    if let Some(p) = sts::WebIdentity::from_env(env, &region) {
        return Some(Provider::WebIdentity(p));
    }
    if let Some(p) = container::Container::from_env(env) {
        return Some(Provider::Container(p));
    }
    let profiles = Profiles::load(env, home);
    match profiles.resolve(env, &region) {
        Ok(Some(p)) => return Some(Provider::Profile(p)),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "the AWS profile cannot supply credentials; trying instance metadata");
        }
    }
    let imds = imds::Imds::from_env(env)?;
    match imds.probe() {
        Ok(()) => Some(Provider::Imds(imds)),
        Err(e) => {
            tracing::debug!(error = %e, "no instance metadata service");
            None
        }
    }
}

/// The region for STS: `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's.
pub fn region(env: &dyn Environment, home: Option<&std::path::Path>) -> Option<String> {
    env.var("AWS_REGION")
        .or_else(|| env.var("AWS_DEFAULT_REGION"))
        .or_else(|| Profiles::load(env, home).region(env))
}

/// Asks a credential service until it answers: `ask` sends one request
/// and gives back the status and body; a `200` body goes to `read`;
/// another final status is a refusal, its body told by `told`; network
/// faults, throttling and 5xx are tried again with the one backoff
/// policy; a proxy's refusal is final.
fn ask_service(
    what: &str,
    mut ask: impl FnMut() -> Result<std::io::Result<(u16, String)>, CredentialError>,
    read: impl Fn(&str) -> Result<Keys, CredentialError>,
    told: impl Fn(&str) -> String,
) -> Result<Keys, CredentialError> {
    let policy = crate::net::RetryPolicy::default();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let reason = match ask()? {
            Err(e) if crate::net::is_denied(&e) => {
                return Err(CredentialError::Refused(format!("{what}: {e}")));
            }
            Err(e) => e.to_string(),
            Ok((200, body)) => return read(&body),
            Ok((status, body)) if !crate::download::transient_status(status) => {
                return Err(CredentialError::Refused(format!(
                    "{what}: HTTP {status} {}",
                    told(&body)
                )));
            }
            Ok((status, body)) => format!("HTTP {status} {}", told(&body)),
        };
        if attempt >= policy.attempts {
            return Err(CredentialError::Unavailable(format!(
                "{what}: failed {attempt} times, last: {reason}"
            )));
        }
        std::thread::sleep(policy.backoff(attempt));
    }
}

/// An RFC 3339 time (`2026-12-02T14:00:00Z`), as STS and the credential
/// endpoints write `Expiration`.
fn parse_time(text: &str) -> Option<SystemTime> {
    use aws_smithy_types::DateTime;
    use aws_smithy_types::date_time::Format;
    let text = text.trim();
    // Some `credential_process` tools write UTC as `+00:00`.
    let utc = text.strip_suffix("+00:00").map(|t| format!("{t}Z"));
    let time = DateTime::from_str(utc.as_deref().unwrap_or(text), Format::DateTime).ok()?;
    SystemTime::try_from(time).ok()
}

/// The JSON the container endpoint, IMDS and `credential_process` answer
/// with (their field names differ in the session token only).
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonKeys {
    access_key_id: String,
    secret_access_key: String,
    #[serde(alias = "SessionToken")]
    token: Option<String>,
    expiration: Option<String>,
}

impl JsonKeys {
    fn into_keys(self) -> Result<Keys, CredentialError> {
        let expires = match self.expiration {
            Some(text) => Some(parse_time(&text).ok_or_else(|| {
                CredentialError::Unavailable(format!("unreadable Expiration {text:?}"))
            })?),
            None => None,
        };
        Ok(Keys {
            access: self.access_key_id,
            secret: Secret::new(self.secret_access_key),
            session: self.token.filter(|t| !t.is_empty()).map(Secret::new),
            expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn refresh_before_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            refresh_time(now, now + Duration::from_secs(3600)),
            now + Duration::from_secs(3300)
        );
        assert_eq!(
            refresh_time(now, now + Duration::from_secs(4)),
            now + Duration::from_secs(2)
        );
        assert_eq!(refresh_time(now, now), now);
    }

    #[test]
    fn times() {
        let t = parse_time("2026-12-02T14:00:00Z").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_796_220_000
        );
        assert!(parse_time("2026-12-02T14:00:00.123+00:00").is_some());
        assert!(parse_time("tomorrow").is_none());
    }

    #[test]
    fn nothing_configured_is_anonymous() {
        let env: HashMap<String, String> =
            [("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned())].into();
        let chain = Credentials::chain(&env, Some(std::path::Path::new("/nonexistent")));
        assert_eq!(chain.source(), "anonymous (no credentials found)");
        assert!(chain.keys().unwrap().is_none());
    }

    #[test]
    fn static_keys_and_anonymous_on_request() {
        let settings = Settings {
            access_key: Some("AKID".into()),
            secret_key: Some(Secret::new("s")),
            keys_from: "request".into(),
            ..Settings::default()
        };
        let c = Credentials::for_settings(&settings, true).unwrap();
        assert_eq!(c.source(), "request");
        assert_eq!(c.keys().unwrap().unwrap().access, "AKID");
        assert!(!c.expire());
        let anonymous = Settings {
            anonymous: true,
            ..Settings::default()
        };
        let c = Credentials::for_settings(&anonymous, true).unwrap();
        assert!(c.keys().unwrap().is_none());
        let keys = Credentials::for_settings(&settings, true)
            .unwrap()
            .keys()
            .unwrap();
        assert!(!format!("{keys:?}").contains("AKID"), "{keys:?}");
    }
}
