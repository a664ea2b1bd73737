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
    ("access_key", &["ACCESS_KEY", "AWS_ACCESS_KEY_ID"], false),
    ("secret_key", &["SECRET_KEY", "AWS_SECRET_ACCESS_KEY"], true),
    ("session_token", &["AWS_SESSION_TOKEN"], true),
    ("endpoint", &["ENDPOINT", "AWS_ENDPOINT_URL"], false),
    ("region", &["AWS_REGION"], false),
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
        // The process's own HuggingFace token goes only to the endpoint the
        // process was configured with: a request naming another endpoint
        // brings its own token or none.
        let foreign_endpoint = from_request_keys.contains(&"hf_endpoint")
            && values.get("hf_endpoint").map(String::as_str) != env.var("HF_ENDPOINT").as_deref();
        let own_token = !from_request_keys.contains(&"hf_token");
        if foreign_endpoint && own_token {
            values.remove("hf_token");
        }
        let mut take = |key: &str| values.remove(key);
        Ok(Settings {
            foreign_hf_endpoint: foreign_endpoint,
            hf_token: take("hf_token").map(Secret::new),
            hf_endpoint: take("hf_endpoint"),
            hf_revision: take("hf_revision"),
            access_key: take("access_key"),
            secret_key: take("secret_key").map(Secret::new),
            session_token: take("session_token").map(Secret::new),
            endpoint: take("endpoint"),
            region: take("region"),
        })
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
