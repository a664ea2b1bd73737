//! The `json_body` target's property: download and LoRA request bodies
//! are accepted well-formed or refused with a reason that never repeats a
//! secret.

use serde_json::{Map, Value};

use crate::download::request::{DownloadRequest, Environment};
use crate::lora::LoadRequest;

/// No variables: the fuzzed body is all there is.
struct Empty;

impl Environment for Empty {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

const SECRET_FIELDS: [&str; 3] = ["secret_key", "session_token", "hf_token"];

/// A request body's fields, and its `config` whether that is an object
/// or a JSON string holding one.
struct Parsed {
    fields: Map<String, Value>,
    config: Map<String, Value>,
    config_as_string: bool,
}

fn config_of(body: &[u8]) -> Option<Parsed> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let (config, config_as_string) = match fields.get("config") {
        Some(Value::Object(map)) => (map.clone(), false),
        Some(Value::String(text)) => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => (map, true),
            _ => return None,
        },
        _ => return None,
    };
    Some(Parsed {
        fields,
        config,
        config_as_string,
    })
}

/// The string values of secret fields in a body.
fn secrets_in(body: &[u8]) -> Vec<String> {
    let Some(Parsed { config, .. }) = config_of(body) else {
        return Vec::new();
    };
    SECRET_FIELDS
        .iter()
        .filter_map(|k| config.get(*k)?.as_str())
        // Shorter values could match words of any message.
        .filter(|v| v.len() >= 12)
        .map(str::to_owned)
        .collect()
}

/// The same body with every secret value replaced by as many `#`s.
fn masked(body: &[u8]) -> Vec<u8> {
    let Some(Parsed {
        mut fields,
        mut config,
        config_as_string,
    }) = config_of(body)
    else {
        return body.to_vec();
    };
    for key in SECRET_FIELDS {
        if let Some(Value::String(secret)) = config.get_mut(key) {
            *secret = "#".repeat(secret.chars().count());
        }
    }
    let config = Value::Object(config);
    fields.insert(
        "config".into(),
        if config_as_string {
            Value::String(config.to_string())
        } else {
            config
        },
    );
    serde_json::to_vec(&Value::Object(fields)).unwrap_or_default()
}

/// Why the download and LoRA endpoints refuse `body`, if they do.
fn refusals(body: &[u8]) -> [Option<String>; 2] {
    [
        DownloadRequest::from_json(body, &Empty)
            .err()
            .map(|e| e.to_string()),
        LoadRequest::from_json(body, &Empty)
            .err()
            .map(|e| e.to_string()),
    ]
}

/// A JSON body for the download and LoRA endpoints: never panics; an
/// accepted request has an absolute `output_dir` without `..`; a refusal
/// says why and never repeats a secret it was given. (A message that
/// holds the secret's text whatever the secret, because the caller copied
/// it into a field that is echoed or it is a word of the message, is not
/// a leak: the same body with the secrets masked tells them apart.)
pub fn json_body(data: &[u8]) {
    let secrets = secrets_in(data);
    let accepted = |request: &DownloadRequest| {
        assert!(request.output_dir.is_absolute());
        assert!(
            !request
                .output_dir
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        );
        assert!(request.max_workers >= 1);
    };
    if let Ok(request) = DownloadRequest::from_json(data, &Empty) {
        accepted(&request);
    }
    if let Ok(request) = LoadRequest::from_json(data, &Empty) {
        accepted(&request.download);
        assert!(!request.lora_name.is_empty());
    }
    let refused = refusals(data);
    let refused_masked = if secrets.is_empty() {
        [None, None]
    } else {
        refusals(&masked(data))
    };
    for (message, masked) in refused.iter().zip(&refused_masked) {
        let Some(message) = message else { continue };
        assert!(!message.is_empty());
        for secret in &secrets {
            let coincidence = masked
                .as_deref()
                .is_some_and(|m| m.contains(secret.as_str()));
            assert!(
                !message.contains(secret.as_str()) || coincidence,
                "a secret in {message:?}"
            );
        }
    }
}
