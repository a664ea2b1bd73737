//! What a caller asks for: the body of `POST /v1/download_model` (and of
//! the `download` command), checked field by field, with the credentials
//! of the request merged over the environment's.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::{Map, Value};

use super::select::Selection;
pub use super::source::{Source, SourceError, SourceKind};
pub use crate::secret::Secret;

/// Default parallel transfers per job.
pub const DEFAULT_MAX_WORKERS: usize = 8;
/// Most parallel transfers a caller may ask for.
pub const MAX_MAX_WORKERS: usize = 64;

/// Source settings: the request's `config` over the environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// HuggingFace token.
    pub hf_token: Option<Secret>,
    /// The request named a HuggingFace endpoint other than the process's:
    /// the process's token (variable or token file) is not sent there.
    pub foreign_hf_endpoint: bool,
    /// HuggingFace endpoint (default `https://huggingface.co`).
    pub hf_endpoint: Option<String>,
    /// HuggingFace revision (default `main`).
    pub hf_revision: Option<String>,
    /// ModelScope token.
    pub ms_token: Option<Secret>,
    /// The request named a ModelScope endpoint other than the process's:
    /// the process's token is not sent there.
    pub foreign_ms_endpoint: bool,
    /// ModelScope endpoint (default `https://www.modelscope.cn`).
    pub ms_endpoint: Option<String>,
    /// ModelScope revision (default `master`).
    pub ms_revision: Option<String>,
    /// S3/OBS access key id.
    pub access_key: Option<String>,
    /// S3/OBS secret key.
    pub secret_key: Option<Secret>,
    /// S3/OBS session token.
    pub session_token: Option<Secret>,
    /// S3/OBS endpoint URL.
    pub endpoint: Option<String>,
    /// S3 region.
    pub region: Option<String>,
    /// Where static S3 keys came from: `request` or `environment` (empty
    /// without keys).
    pub keys_from: String,
    /// Send S3 requests unsigned, whatever credentials are around.
    pub anonymous: bool,
    /// `path`, `virtual` or `auto` (virtual on AWS, path elsewhere).
    pub addressing_style: AddressingStyle,
    /// Send `x-amz-request-payer: requester` (requester-pays buckets).
    pub request_payer: bool,
}

/// How S3 requests name the bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AddressingStyle {
    /// Virtual-hosted on AWS (path-style for names with dots), path-style
    /// on any other endpoint.
    #[default]
    Auto,
    /// `{endpoint}/{bucket}/{key}`.
    Path,
    /// `{bucket}.{endpoint host}/{key}`.
    Virtual,
}

/// Where settings come from when the request does not say.
pub trait Environment {
    /// A variable's value, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Environment for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty()).cloned()
    }
}

/// Config keys, the environment variables that back them (first wins),
/// and whether the value is secret.
const KEYS: &[(&str, &[&str], bool)] = &[
    ("hf_token", &["HF_AUTH_TOKEN", "HF_TOKEN"], true),
    ("hf_endpoint", &["HF_ENDPOINT"], false),
    ("hf_revision", &["HF_REVISION"], false),
    // MODELSCOPE_API_TOKEN, MODELSCOPE_ENDPOINT and MODELSCOPE_DOMAIN are
    // the ModelScope SDK's own names.
    ("ms_token", &["MS_TOKEN", "MODELSCOPE_API_TOKEN"], true),
    (
        "ms_endpoint",
        &["MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN"],
        false,
    ),
    ("ms_revision", &["MS_REVISION"], false),
    ("access_key", &["ACCESS_KEY", "AWS_ACCESS_KEY_ID"], false),
    ("secret_key", &["SECRET_KEY", "AWS_SECRET_ACCESS_KEY"], true),
    ("session_token", &["AWS_SESSION_TOKEN"], true),
    (
        "endpoint",
        &["ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
        false,
    ),
    ("region", &["AWS_REGION", "AWS_DEFAULT_REGION"], false),
    ("addressing_style", &[], false),
];

impl Settings {
    /// Merges a request's `config` object over the environment.
    fn merge(config: &Map<String, Value>, env: &dyn Environment) -> Result<Settings, RequestError> {
        let mut values: HashMap<&str, String> = HashMap::new();
        let mut from_request_keys: Vec<&str> = Vec::new();
        for (key, vars, _) in KEYS {
            let from_request = match config.get(*key) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    return Err(RequestError::invalid(format!(
                        "config.{key} must be a string"
                    )));
                }
            };
            if from_request.is_some() {
                from_request_keys.push(*key);
            }
            if let Some(value) = from_request.or_else(|| vars.iter().find_map(|v| env.var(v))) {
                values.insert(key, value);
            }
        }
        // The process's own hub token goes only to the endpoint the process
        // was configured with: a request naming another endpoint brings its
        // own token or none.
        let mut foreign = |token: &str, endpoint: &str| {
            let vars = KEYS.iter().find(|(key, ..)| *key == endpoint).map(|k| k.1);
            let own_endpoint = vars.and_then(|vars| vars.iter().find_map(|v| env.var(v)));
            let foreign = from_request_keys.contains(&endpoint)
                && values.get(endpoint).map(|e| endpoint_url(e))
                    != own_endpoint.map(|e| endpoint_url(&e));
            if foreign && !from_request_keys.contains(&token) {
                values.remove(token);
            }
            foreign
        };
        let foreign_hf_endpoint = foreign("hf_token", "hf_endpoint");
        let foreign_ms_endpoint = foreign("ms_token", "ms_endpoint");
        let keys_from = match (
            values.contains_key("access_key"),
            from_request_keys.contains(&"access_key"),
        ) {
            (false, _) => "",
            (true, true) => "request",
            (true, false) => "environment",
        };
        let addressing_style = match values.get("addressing_style").map(String::as_str) {
            None | Some("auto") => AddressingStyle::Auto,
            Some("path") => AddressingStyle::Path,
            Some("virtual") => AddressingStyle::Virtual,
            Some(other) => {
                return Err(RequestError::invalid(format!(
                    "config.addressing_style must be path, virtual or auto, not {other:?}"
                )));
            }
        };
        let anonymous = flag(config, "anonymous")?;
        let request_payer = flag(config, "request_payer")?;
        let mut take = |key: &str| values.remove(key);
        Ok(Settings {
            keys_from: keys_from.to_owned(),
            anonymous,
            addressing_style,
            request_payer,
            foreign_hf_endpoint,
            hf_token: take("hf_token").map(Secret::new),
            hf_endpoint: take("hf_endpoint").map(|e| endpoint_url(&e)),
            hf_revision: take("hf_revision"),
            foreign_ms_endpoint,
            ms_token: take("ms_token").map(Secret::new),
            ms_endpoint: take("ms_endpoint").map(|e| endpoint_url(&e)),
            ms_revision: take("ms_revision"),
            access_key: take("access_key"),
            secret_key: take("secret_key").map(Secret::new),
            session_token: take("session_token").map(Secret::new),
            endpoint: take("endpoint"),
            region: take("region"),
        })
    }
}

/// A boolean `config` key: `true`/`false`, or the same as a string
/// (string-only configs send it so); absent is `false`.
fn flag(config: &Map<String, Value>, key: &str) -> Result<bool, RequestError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") || s.is_empty() => Ok(false),
        Some(_) => Err(RequestError::invalid(format!(
            "config.{key} must be true or false"
        ))),
    }
}

/// An endpoint as a URL: a bare host (ModelScope's `MODELSCOPE_DOMAIN`
/// holds one) is `https://host`; a trailing `/` is dropped.
fn endpoint_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("https://{endpoint}")
    }
}

/// A checked download request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadRequest {
    /// Where from.
    pub source: Source,
    /// `source` as the caller wrote it, for answers and logs.
    pub source_text: String,
    /// Where to (absolute).
    pub output_dir: PathBuf,
    /// Source settings.
    pub settings: Settings,
    /// Parallel transfers.
    pub max_workers: usize,
    /// Whether to answer at once and work in the background.
    pub async_download: bool,
    /// Which files, and whether to fetch again what is verified.
    pub selection: Selection,
}

/// A request the runtime refuses: always the caller's mistake (400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The body is not a JSON object.
    #[error("Request body must be a JSON object: {0}")]
    Body(String),
    /// A required field is missing.
    #[error("Missing required parameter: {0}")]
    Missing(&'static str),
    /// A field is present but unusable.
    #[error("Invalid parameter: {0}")]
    Invalid(String),
}

impl RequestError {
    fn invalid(message: impl Into<String>) -> RequestError {
        RequestError::Invalid(message.into())
    }
}

impl DownloadRequest {
    /// Parses a JSON request body.
    pub fn from_json(body: &[u8], env: &dyn Environment) -> Result<DownloadRequest, RequestError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| RequestError::Body(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(RequestError::Body("not an object".into()));
        };
        DownloadRequest::from_fields(&fields, env)
    }

    /// Checks the fields of a request object.
    pub fn from_fields(
        fields: &Map<String, Value>,
        env: &dyn Environment,
    ) -> Result<DownloadRequest, RequestError> {
        let source_text = required_string(fields, "source")?;
        let source = Source::parse(&source_text)
            .map_err(|e| RequestError::invalid(format!("source: {e}")))?;
        let output_dir = PathBuf::from(required_string(fields, "output_dir")?);
        if !output_dir.is_absolute() {
            return Err(RequestError::invalid("output_dir must be an absolute path"));
        }
        if output_dir
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(RequestError::invalid("output_dir must not contain '..'"));
        }
        let config = match fields.get("config") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map.clone(),
            // Documented as a JSON string, which is how clients send it.
            Some(Value::String(text)) if text.trim().is_empty() => Map::new(),
            Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err(RequestError::invalid("config must be a JSON object")),
                Err(e) => {
                    return Err(RequestError::invalid(format!(
                        "config is not valid JSON: {e}"
                    )));
                }
            },
            Some(_) => {
                return Err(RequestError::invalid(
                    "config must be a JSON object or a string holding one",
                ));
            }
        };
        let settings = Settings::merge(&config, env)?;
        let selection =
            Selection::from_config(&config).map_err(|e| RequestError::invalid(e.to_string()))?;
        let max_workers = match fields.get("max_workers") {
            None | Some(Value::Null) => DEFAULT_MAX_WORKERS,
            Some(value) => value
                .as_u64()
                .filter(|n| (1..=MAX_MAX_WORKERS as u64).contains(n))
                .map(|n| n as usize)
                .ok_or_else(|| {
                    RequestError::invalid(format!(
                        "max_workers must be an integer from 1 to {MAX_MAX_WORKERS}"
                    ))
                })?,
        };
        let async_download = match fields.get("async_download") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(RequestError::invalid(
                    "async_download must be true or false",
                ));
            }
        };
        Ok(DownloadRequest {
            source,
            source_text,
            output_dir,
            settings,
            max_workers,
            async_download,
            selection,
        })
    }
}

fn required_string(
    fields: &Map<String, Value>,
    name: &'static str,
) -> Result<String, RequestError> {
    match fields.get(name) {
        None | Some(Value::Null) => Err(RequestError::Missing(name)),
        Some(Value::String(s)) if s.is_empty() => Err(RequestError::Missing(name)),
        Some(Value::String(s)) if s.contains('\0') => Err(RequestError::invalid(format!(
            "{name} must not contain NUL"
        ))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(RequestError::invalid(format!("{name} must be a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(body: &str, env: &HashMap<String, String>) -> Result<DownloadRequest, RequestError> {
        DownloadRequest::from_json(body.as_bytes(), env)
    }

    #[test]
    fn full_request() {
        let body = r#"{"source":"s3://b/p","output_dir":"/models/x","config":"{\"access_key\":\"AK\",\"secret_key\":\"SK\",\"endpoint\":\"http://127.0.0.1:9000\"}","max_workers":16,"async_download":true}"#;
        let request = parse(body, &env(&[])).unwrap();
        assert_eq!(request.output_dir, PathBuf::from("/models/x"));
        assert_eq!(request.max_workers, 16);
        assert!(request.async_download);
        assert_eq!(request.settings.access_key.as_deref(), Some("AK"));
        assert_eq!(
            request.settings.secret_key.as_ref().map(Secret::expose),
            Some("SK")
        );
        assert_eq!(
            request.settings.endpoint.as_deref(),
            Some("http://127.0.0.1:9000")
        );
    }

    #[test]
    fn config_as_object_and_defaults() {
        let request = parse(
            r#"{"source":"org/m","output_dir":"/o","config":{"hf_token":"hf_x"}}"#,
            &env(&[]),
        )
        .unwrap();
        assert_eq!(request.max_workers, DEFAULT_MAX_WORKERS);
        assert!(!request.async_download);
        assert_eq!(request.settings.hf_token, Some(Secret::new("hf_x")));
        let request = parse(
            r#"{"source":"org/m","output_dir":"/o","config":""}"#,
            &env(&[]),
        )
        .unwrap();
        assert_eq!(request.settings, Settings::default());
    }

    #[test]
    fn request_beats_environment_which_fills_gaps() {
        let env = env(&[
            ("HF_TOKEN", "from-env"),
            ("HF_AUTH_TOKEN", "preferred-env"),
            ("AWS_ACCESS_KEY_ID", "env-ak"),
            ("SECRET_KEY", "env-sk"),
            ("AWS_SECRET_ACCESS_KEY", "other-sk"),
            ("AWS_ENDPOINT_URL", "http://env"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_SESSION_TOKEN", "st"),
            ("HF_REVISION", "v1"),
        ]);
        let request = parse(
            r#"{"source":"org/m","output_dir":"/o","config":{"access_key":"req-ak"}}"#,
            &env,
        )
        .unwrap();
        let s = request.settings;
        assert_eq!(s.hf_token, Some(Secret::new("preferred-env")));
        assert_eq!(s.access_key.as_deref(), Some("req-ak"));
        assert_eq!(s.secret_key, Some(Secret::new("env-sk")));
        assert_eq!(s.endpoint.as_deref(), Some("http://env"));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.session_token, Some(Secret::new("st")));
        assert_eq!(s.hf_revision.as_deref(), Some("v1"));
    }

    /// The process's token never goes to an endpoint the caller chose.
    #[test]
    fn the_environment_token_stays_with_the_environment_endpoint() {
        let env = env(&[
            ("HF_TOKEN", "process-token"),
            ("HF_ENDPOINT", "http://hub.internal"),
        ]);
        let settings = |config: &str| {
            let body = format!(r#"{{"source":"org/m","output_dir":"/o","config":{config}}}"#);
            parse(&body, &env).unwrap().settings
        };
        let own = settings("{}");
        assert_eq!(own.hf_token, Some(Secret::new("process-token")));
        assert!(!own.foreign_hf_endpoint);
        let same = settings(r#"{"hf_endpoint":"http://hub.internal"}"#);
        assert_eq!(same.hf_token, Some(Secret::new("process-token")));
        let foreign = settings(r#"{"hf_endpoint":"http://attacker.example"}"#);
        assert_eq!(foreign.hf_token, None);
        assert!(foreign.foreign_hf_endpoint);
        let brought = settings(r#"{"hf_endpoint":"http://other.example","hf_token":"its-own"}"#);
        assert_eq!(brought.hf_token, Some(Secret::new("its-own")));
    }

    /// ModelScope's settings: its own names, then the SDK's; a bare
    /// `MODELSCOPE_DOMAIN` is an https endpoint; the process's token stays
    /// with the process's endpoint.
    #[test]
    fn modelscope_settings_and_the_sdk_variables() {
        let settings = |env: &HashMap<String, String>, config: &str| {
            let body = format!(r#"{{"source":"ms://o/m","output_dir":"/o","config":{config}}}"#);
            parse(&body, env).unwrap().settings
        };
        let sdk = env(&[
            ("MODELSCOPE_API_TOKEN", "sdk-token"),
            ("MODELSCOPE_DOMAIN", "www.modelscope.internal/"),
        ]);
        let s = settings(&sdk, "{}");
        assert_eq!(s.ms_token, Some(Secret::new("sdk-token")));
        assert_eq!(
            s.ms_endpoint.as_deref(),
            Some("https://www.modelscope.internal")
        );
        assert_eq!(s.ms_revision, None);
        assert!(!s.foreign_ms_endpoint);
        let same = settings(&sdk, r#"{"ms_endpoint":"https://www.modelscope.internal"}"#);
        assert_eq!(same.ms_token, Some(Secret::new("sdk-token")));
        let foreign = settings(&sdk, r#"{"ms_endpoint":"http://attacker.example"}"#);
        assert_eq!(foreign.ms_token, None);
        assert!(foreign.foreign_ms_endpoint);

        let ours = env(&[
            ("MS_TOKEN", "ms-token"),
            ("MODELSCOPE_API_TOKEN", "sdk-token"),
            ("MS_REVISION", "v2"),
            ("MODELSCOPE_ENDPOINT", "http://ms.local:8080"),
            ("MODELSCOPE_DOMAIN", "ignored.example"),
        ]);
        let s = settings(&ours, "{}");
        assert_eq!(s.ms_token, Some(Secret::new("ms-token")));
        assert_eq!(s.ms_revision.as_deref(), Some("v2"));
        assert_eq!(s.ms_endpoint.as_deref(), Some("http://ms.local:8080"));
        let s = settings(&ours, r#"{"ms_token":"req","ms_revision":"v3"}"#);
        assert_eq!(s.ms_token, Some(Secret::new("req")));
        assert_eq!(s.ms_revision.as_deref(), Some("v3"));
        // The HuggingFace token is never the ModelScope one.
        let hf_only = env(&[("HF_TOKEN", "hf")]);
        assert_eq!(settings(&hf_only, "{}").ms_token, None);
    }

    #[test]
    fn errors_name_the_field() {
        let e = |body: &str| parse(body, &env(&[])).unwrap_err().to_string();
        assert_eq!(
            e(r#"{"output_dir":"/o"}"#),
            "Missing required parameter: source"
        );
        assert_eq!(
            e(r#"{"source":"","output_dir":"/o"}"#),
            "Missing required parameter: source"
        );
        assert_eq!(
            e(r#"{"source":"a/b"}"#),
            "Missing required parameter: output_dir"
        );
        assert_eq!(
            e(r#"{"source":5,"output_dir":"/o"}"#),
            "Invalid parameter: source must be a string"
        );
        assert_eq!(
            e(r#"{"source":"a/b","output_dir":"rel/dir"}"#),
            "Invalid parameter: output_dir must be an absolute path"
        );
        assert!(
            e(r#"{"source":"gs://x","output_dir":"/o"}"#)
                .starts_with("Invalid parameter: source: unsupported scheme gs://")
        );
        assert!(
            e(r#"{"source":"a/b","output_dir":"/o","config":"{nope"}"#)
                .starts_with("Invalid parameter: config is not valid JSON")
        );
        assert_eq!(
            e(r#"{"source":"a/b","output_dir":"/o","config":"[1]"}"#),
            "Invalid parameter: config must be a JSON object"
        );
        assert_eq!(
            e(r#"{"source":"a/b","output_dir":"/o","config":{"hf_token":1}}"#),
            "Invalid parameter: config.hf_token must be a string"
        );
        for n in ["0", "65", "-1", "2.5", "\"8\""] {
            assert_eq!(
                e(&format!(
                    r#"{{"source":"a/b","output_dir":"/o","max_workers":{n}}}"#
                )),
                "Invalid parameter: max_workers must be an integer from 1 to 64",
                "{n}"
            );
        }
        assert_eq!(
            e(r#"{"source":"a/b","output_dir":"/o","async_download":"yes"}"#),
            "Invalid parameter: async_download must be true or false"
        );
        assert!(e("[]").starts_with("Request body must be a JSON object"));
        assert!(e("{").starts_with("Request body must be a JSON object"));
    }

    #[test]
    fn secrets_never_print() {
        let request = parse(r#"{"source":"a/b","output_dir":"/o","config":{"hf_token":"hf_SECRET","secret_key":"SK_SECRET"}}"#, &env(&[])).unwrap();
        let shown = format!("{request:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }
}
