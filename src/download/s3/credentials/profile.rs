//! The shared files: `~/.aws/credentials` (`AWS_SHARED_CREDENTIALS_FILE`)
//! and `~/.aws/config` (`AWS_CONFIG_FILE`), the profile `AWS_PROFILE`
//! (else `default`). A profile supplies keys, in the SDKs' order, by
//! `role_arn` (assumed with the keys of its `source_profile`, or with
//! its `web_identity_token_file`), by static keys, or by
//! `credential_process` (a command that prints the keys as JSON).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::sts::{self, Endpoint, WebIdentity};
use super::{CredentialError, JsonKeys, Keys};
use crate::download::request::Environment;
use crate::secret::Secret;

/// `source_profile` links followed before giving up (a loop).
const MAX_CHAIN: usize = 5;

/// Every profile of both files, keys from the credentials file winning.
#[derive(Debug, Default)]
pub struct Profiles {
    profiles: HashMap<String, HashMap<String, String>>,
    /// Where they came from, for messages.
    files: Vec<PathBuf>,
}

/// A profile that supplies keys.
#[derive(Debug)]
pub enum Resolved {
    Static {
        profile: String,
        keys: Keys,
    },
    AssumeRole {
        profile: String,
        source: Box<Resolved>,
        role_arn: String,
        session_name: Option<String>,
        external_id: Option<String>,
        endpoint: Endpoint,
    },
    WebIdentity {
        profile: String,
        inner: WebIdentity,
    },
    Process {
        profile: String,
        command: String,
    },
}

impl Profiles {
    pub fn load(env: &dyn Environment, home: Option<&Path>) -> Profiles {
        let aws_dir = home.map(|h| h.join(".aws"));
        let config = env
            .var("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .or_else(|| aws_dir.as_ref().map(|d| d.join("config")));
        let credentials = env
            .var("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| aws_dir.as_ref().map(|d| d.join("credentials")));
        let mut profiles = Profiles::default();
        for (path, is_config) in [(config, true), (credentials, false)] {
            let Some(path) = path else { continue };
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for (name, values) in parse(&text, is_config) {
                profiles.profiles.entry(name).or_default().extend(values);
            }
            profiles.files.push(path);
        }
        profiles
    }

    fn selected(env: &dyn Environment) -> String {
        env.var("AWS_PROFILE")
            .or_else(|| env.var("AWS_DEFAULT_PROFILE"))
            .unwrap_or_else(|| "default".into())
    }

    /// The selected profile's `region`.
    pub fn region(&self, env: &dyn Environment) -> Option<String> {
        self.profiles
            .get(&Profiles::selected(env))?
            .get("region")
            .cloned()
    }

    /// What the selected profile supplies; `None` when it does not
    /// exist or holds no credentials, an error when it is broken.
    pub fn resolve(
        &self,
        env: &dyn Environment,
        region: &Option<String>,
    ) -> Result<Option<Resolved>, CredentialError> {
        let name = Profiles::selected(env);
        if !self.profiles.contains_key(&name) {
            if env.var("AWS_PROFILE").is_some() {
                return Err(CredentialError::Refused(format!(
                    "AWS_PROFILE {name} is in none of {:?}",
                    self.files
                )));
            }
            return Ok(None);
        }
        self.resolve_named(&name, env, region, 0)
    }

    fn resolve_named(
        &self,
        name: &str,
        env: &dyn Environment,
        region: &Option<String>,
        depth: usize,
    ) -> Result<Option<Resolved>, CredentialError> {
        if depth > MAX_CHAIN {
            return Err(CredentialError::Refused(format!(
                "profile {name}: source_profile links loop or run deeper than {MAX_CHAIN}"
            )));
        }
        let profile = self.profiles.get(name).ok_or_else(|| {
            CredentialError::Refused(format!("source_profile {name} does not exist"))
        })?;
        let get = |key: &str| profile.get(key).filter(|v| !v.is_empty()).cloned();
        let region = get("region").or_else(|| region.clone());
        if let Some(role_arn) = get("role_arn") {
            if let Some(token_file) = get("web_identity_token_file") {
                let endpoint = Endpoint::from_env(env, &region);
                return Ok(Some(Resolved::WebIdentity {
                    profile: name.to_owned(),
                    inner: WebIdentity::new(
                        role_arn,
                        token_file,
                        get("role_session_name"),
                        endpoint,
                    ),
                }));
            }
            let Some(source) = get("source_profile") else {
                return Err(CredentialError::Refused(format!(
                    "profile {name}: role_arn needs source_profile or web_identity_token_file (credential_source is not supported)"
                )));
            };
            // A profile that is its own source uses its static keys.
            let source = if source == name {
                static_keys(name, profile)
            } else {
                self.resolve_named(&source, env, &region, depth + 1)?
            }
            .ok_or_else(|| {
                CredentialError::Refused(format!("source_profile {source} holds no credentials"))
            })?;
            return Ok(Some(Resolved::AssumeRole {
                profile: name.to_owned(),
                source: Box::new(source),
                role_arn,
                session_name: get("role_session_name"),
                external_id: get("external_id"),
                endpoint: Endpoint::from_env(env, &region),
            }));
        }
        if let Some(keys) = static_keys(name, profile) {
            return Ok(Some(keys));
        }
        if let Some(command) = get("credential_process") {
            return Ok(Some(Resolved::Process {
                profile: name.to_owned(),
                command,
            }));
        }
        Ok(None)
    }
}

fn static_keys(name: &str, profile: &HashMap<String, String>) -> Option<Resolved> {
    let access = profile.get("aws_access_key_id")?;
    let secret = profile.get("aws_secret_access_key")?;
    Some(Resolved::Static {
        profile: name.to_owned(),
        keys: Keys {
            access: access.clone(),
            secret: Secret::new(secret.clone()),
            session: profile.get("aws_session_token").cloned().map(Secret::new),
            expires: None,
        },
    })
}

impl Resolved {
    pub fn describe(&self) -> String {
        match self {
            Resolved::Static { profile, .. } => format!("profile {profile} (static keys)"),
            Resolved::AssumeRole {
                profile, role_arn, ..
            } => format!("profile {profile} (assumed role {role_arn})"),
            Resolved::WebIdentity { profile, .. } => format!("profile {profile} (web identity)"),
            Resolved::Process { profile, .. } => format!("profile {profile} (credential_process)"),
        }
    }

    pub fn fetch(&self) -> Result<Keys, CredentialError> {
        match self {
            Resolved::Static { keys, .. } => Ok(keys.clone()),
            Resolved::AssumeRole {
                source,
                role_arn,
                session_name,
                external_id,
                endpoint,
                ..
            } => {
                let source = source.fetch()?;
                sts::assume_role(
                    endpoint,
                    &source,
                    role_arn,
                    session_name.as_deref(),
                    external_id.as_deref(),
                )
            }
            Resolved::WebIdentity { inner, .. } => inner.fetch(),
            Resolved::Process { profile, command } => run_process(profile, command),
        }
    }
}

/// Runs `credential_process` through the shell; its output is
/// `{"Version": 1, "AccessKeyId", "SecretAccessKey", "SessionToken",
/// "Expiration"}`. Its stderr is not repeated: it may hold secrets.
fn run_process(profile: &str, command: &str) -> Result<Keys, CredentialError> {
    let output = std::process::Command::new("/bin/sh")
        .args(["-c", command])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            CredentialError::Unavailable(format!(
                "profile {profile}: credential_process cannot run: {e}"
            ))
        })?;
    if !output.status.success() {
        return Err(CredentialError::Refused(format!(
            "profile {profile}: credential_process exited with {}",
            output.status
        )));
    }
    #[derive(serde::Deserialize)]
    struct Versioned {
        #[serde(rename = "Version")]
        version: u32,
    }
    let versioned: Versioned = serde_json::from_slice(&output.stdout).map_err(|e| {
        CredentialError::Refused(format!(
            "profile {profile}: credential_process printed no credentials: {e}"
        ))
    })?;
    if versioned.version != 1 {
        return Err(CredentialError::Refused(format!(
            "profile {profile}: credential_process printed Version {}, not 1",
            versioned.version
        )));
    }
    let keys: JsonKeys = serde_json::from_slice(&output.stdout).map_err(|e| {
        CredentialError::Refused(format!(
            "profile {profile}: credential_process printed no credentials: {e}"
        ))
    })?;
    keys.into_keys()
}

/// The profiles of one file: `[name]` in the credentials file, `[profile
/// name]` (and `[default]`) in the config file; `key = value` lines;
/// indented lines (nested settings such as `s3 =`) and comments skipped.
fn parse(text: &str, is_config: bool) -> Vec<(String, HashMap<String, String>)> {
    let mut out: Vec<(String, HashMap<String, String>)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim();
            let name = match (is_config, section.strip_prefix("profile ")) {
                (true, Some(name)) => Some(name.trim()),
                (true, None) if section == "default" => Some("default"),
                (true, None) => None,
                (false, _) => Some(section),
            };
            current = name.map(|name| {
                out.push((name.to_owned(), HashMap::new()));
                out.len() - 1
            });
            continue;
        }
        if let (Some(i), Some((key, value))) = (current, line.split_once('=')) {
            out[i]
                .1
                .insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn files(config: &str, credentials: &str) -> (tempdir::Dir, HashMap<String, String>) {
        let dir = tempdir::Dir::new();
        std::fs::write(dir.0.join("config"), config).unwrap();
        std::fs::write(dir.0.join("credentials"), credentials).unwrap();
        let env = env(&[
            ("AWS_CONFIG_FILE", dir.0.join("config").to_str().unwrap()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.0.join("credentials").to_str().unwrap(),
            ),
        ]);
        (dir, env)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path =
                    std::env::temp_dir().join(format!("mi-profiles-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn parsing() {
        let text = "# c\n[default]\nregion = eu-west-1\ns3 =\n  addressing_style = path\n[profile dev]\nrole_arn=arn:aws:iam::1:role/r\n[sso-session x]\nsso_region = a\n";
        let parsed = parse(text, true);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].0, "default");
        assert_eq!(parsed[0].1["region"], "eu-west-1");
        assert!(!parsed[0].1.contains_key("addressing_style"));
        assert_eq!(parsed[1].0, "dev");
        assert_eq!(parse("[dev]\naws_access_key_id = A\n", false)[0].0, "dev");
    }

    #[test]
    fn resolution_order_and_errors() {
        let (_dir, mut env) = files(
            "[default]\nregion = eu-central-1\n[profile ops]\nrole_arn = arn:aws:iam::1:role/ops\nsource_profile = base\n[profile tool]\ncredential_process = echo x\n[profile loop]\nrole_arn = arn:r\nsource_profile = loop2\n[profile loop2]\nrole_arn = arn:r\nsource_profile = loop\n",
            "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s\n[base]\naws_access_key_id = AKIDBASE\naws_secret_access_key = s\n",
        );
        let profiles = Profiles::load(&env, None);
        assert_eq!(profiles.region(&env).as_deref(), Some("eu-central-1"));
        let resolved = profiles.resolve(&env, &None).unwrap().unwrap();
        assert_eq!(resolved.describe(), "profile default (static keys)");
        assert_eq!(resolved.fetch().unwrap().access, "AKIDDEFAULT");
        env.insert("AWS_PROFILE".into(), "ops".into());
        let resolved = profiles.resolve(&env, &None).unwrap().unwrap();
        assert_eq!(
            resolved.describe(),
            "profile ops (assumed role arn:aws:iam::1:role/ops)"
        );
        env.insert("AWS_PROFILE".into(), "tool".into());
        assert_eq!(
            profiles.resolve(&env, &None).unwrap().unwrap().describe(),
            "profile tool (credential_process)"
        );
        env.insert("AWS_PROFILE".into(), "loop".into());
        assert!(profiles.resolve(&env, &None).is_err());
        env.insert("AWS_PROFILE".into(), "absent".into());
        assert!(profiles.resolve(&env, &None).is_err());
    }

    #[test]
    fn credential_process_output() {
        let ok = r#"printf '{"Version":1,"AccessKeyId":"AKIDPROC","SecretAccessKey":"s","SessionToken":"t","Expiration":"2099-01-01T00:00:00Z"}'"#;
        let keys = run_process("p", ok).unwrap();
        assert_eq!(keys.access, "AKIDPROC");
        assert!(keys.expires.is_some());
        assert!(run_process("p", "exit 3").is_err());
        assert!(run_process("p", r#"printf '{"Version":2}'"#).is_err());
    }
}
