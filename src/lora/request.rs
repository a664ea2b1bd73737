//! Checking what a caller asks for: the adapter name, and a load
//! request's body (the name and a download request).

use serde_json::{Map, Value};

use crate::download::request::{DownloadRequest, Environment, RequestError};

/// Longest adapter name.
pub const MAX_NAME: usize = 128;

/// Checks an adapter name: letters, digits, `-`, `_`, `.`, at most 128
/// characters, and nothing that could name a path (`..`, `/`).
pub fn check_name(fields: &Map<String, Value>) -> Result<String, RequestError> {
    let name = match fields.get("lora_name") {
        None | Some(Value::Null) => return Err(RequestError::Missing("lora_name")),
        Some(Value::String(s)) if s.is_empty() => return Err(RequestError::Missing("lora_name")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(RequestError::Invalid("lora_name must be a string".into())),
    };
    let allowed = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !allowed || name.len() > MAX_NAME || name.contains("..") || name == "." {
        return Err(RequestError::Invalid(format!(
            "lora_name must be 1 to {MAX_NAME} letters, digits, '-', '_' or '.', without '..'"
        )));
    }
    Ok(name)
}

/// A checked load request.
#[derive(Clone, Debug)]
pub struct LoadRequest {
    /// The adapter's name.
    pub lora_name: String,
    /// Its download (`output_dir` is the `lora_path` given to the engine).
    pub download: DownloadRequest,
}

impl LoadRequest {
    /// Parses a `POST /v1/load_lora_adapter` body.
    pub fn from_json(body: &[u8], env: &dyn Environment) -> Result<LoadRequest, RequestError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| RequestError::Body(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(RequestError::Body("not an object".into()));
        };
        let lora_name = check_name(&fields)?;
        let download = DownloadRequest::from_fields(&fields, env)?;
        Ok(LoadRequest {
            lora_name,
            download,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn name(value: Value) -> Result<String, String> {
        let mut fields = Map::new();
        fields.insert("lora_name".into(), value);
        check_name(&fields).map_err(|e| e.to_string())
    }

    #[test]
    fn names() {
        assert_eq!(name(json!("sql-lora_v1.2")), Ok("sql-lora_v1.2".into()));
        assert_eq!(name(json!("a".repeat(128))).map(|n| n.len()), Ok(128));
        for bad in [
            "../etc",
            "a/b",
            "a..b",
            ".",
            "..",
            "with space",
            "naïve",
            "a\0b",
            &"a".repeat(129),
        ] {
            assert!(name(json!(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(
            name(json!(1)),
            Err("Invalid parameter: lora_name must be a string".into())
        );
        assert_eq!(
            name(json!("")),
            Err("Missing required parameter: lora_name".into())
        );
    }
}
