//! WASM filters: operators' metric transforms, run on every scrape.
//!
//! Stage [4] of the metrics path. Filters are WebAssembly modules given on
//! the command line, compiled at start and on a reload ([`host`]); each
//! worker has its own instances ([`chain`]), so no lock is taken on the
//! scrape path. A filter selects families by name or prefix ([`select`]);
//! only those are diverted into it ([`routes`]: the sink the relabeler
//! writes through), once per scrape, everything else flows past with no
//! copy. Every entry into a guest runs under a deadline
//! (epoch interruption), with a memory cap and an output cap; what comes
//! back must be exposition Prometheus accepts ([`validate`]) before it is
//! served. A failing filter is counted, handled by the failure policy and
//! switched off for a cool-down when it keeps failing ([`health`]). The
//! contract with the guest is [`abi`] (docs/wasm-abi.md).

pub mod abi;
pub mod chain;
pub mod cli;
mod compiler_memory;
pub mod epoch;
pub mod health;
pub mod host;
pub mod module;
pub mod routes;
pub mod select;
pub mod validate;

pub use chain::{FilterChain, FilterFailed};
pub use health::{OnError, Reason, Recovery};
pub use host::{FilterHost, FilterLimits, FilterSpec, LoadError};
pub use routes::{Routed, Routes};
pub use select::FilterSet;

/// Why `MATRIXINFER_FILTERS` cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SpecsError {
    /// Not JSON.
    #[error("not JSON")]
    Json(#[source] serde_json::Error),
    /// Not an array.
    #[error("not a JSON array")]
    NotArray,
    /// An object entry without a path.
    #[error("an entry has no \"path\"")]
    NoPath,
    /// Neither a path nor an object.
    #[error("entries must be paths or {{\"path\", \"config\"}} objects")]
    Entry,
}

/// Reads filter specs from `MATRIXINFER_FILTERS`: a JSON array of
/// `{"path": "...", "config": "..."}` objects (or of bare paths).
pub fn specs_from_json(text: &str) -> Result<Vec<FilterSpec>, SpecsError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(SpecsError::Json)?;
    let items = value.as_array().ok_or(SpecsError::NotArray)?;
    items
        .iter()
        .map(|item| match item {
            serde_json::Value::String(path) => Ok(FilterSpec {
                path: path.into(),
                config: String::new(),
            }),
            serde_json::Value::Object(fields) => {
                let path = fields
                    .get("path")
                    .and_then(|p| p.as_str())
                    .ok_or(SpecsError::NoPath)?;
                let config = match fields.get("config") {
                    None | Some(serde_json::Value::Null) => String::new(),
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                Ok(FilterSpec {
                    path: path.into(),
                    config,
                })
            }
            _ => Err(SpecsError::Entry),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_specs() {
        let specs = specs_from_json(r#"["/f/a.wasm", {"path": "/f/b.wasm", "config": {"x": 1}}, {"path": "/f/c.wasm", "config": "raw"}]"#).unwrap();
        assert_eq!(
            specs[0],
            FilterSpec {
                path: "/f/a.wasm".into(),
                config: String::new()
            }
        );
        assert_eq!(specs[1].config, r#"{"x":1}"#);
        assert_eq!(specs[2].config, "raw");
        assert!(specs_from_json("{}").is_err());
        assert!(specs_from_json(r#"[{"config": "x"}]"#).is_err());
    }
}
