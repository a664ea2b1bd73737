//! Adds constant labels (the Pod, the model, ...) to every sample of the
//! selected families.
//!
//! Config: `{"labels": {"pod": "p-1", "model": "llama"}, "select": ["vllm:*"]}`;
//! `select` defaults to `["vllm:*", "sglang:*", "matrixinfer:*"]`. A label a
//! sample already has is replaced in place; the others are appended in name
//! order.

#![deny(unsafe_code)]

use std::collections::BTreeMap;

use matrixinfer_filter::{Families, Filter, export_filter, is_label_name, matches};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    labels: BTreeMap<String, String>,
    #[serde(default = "default_select")]
    select: Vec<String>,
}

fn default_select() -> Vec<String> {
    ["vllm:*", "sglang:*", "matrixinfer:*"]
        .map(String::from)
        .to_vec()
}

/// The filter: which labels to set, on which families.
pub struct AddLabels {
    labels: Vec<(String, String)>,
    select: Vec<String>,
}

impl Filter for AddLabels {
    fn new(config: &str) -> Result<Self, String> {
        let config: Config =
            serde_json::from_str(config).map_err(|e| format!("add-labels config: {e}"))?;
        if config.labels.is_empty() {
            return Err("add-labels config: \"labels\" is empty".to_owned());
        }
        for name in config.labels.keys() {
            if !is_label_name(name) || name.starts_with("__") || name == "le" || name == "quantile"
            {
                return Err(format!(
                    "add-labels config: cannot set label {name:?} (not a label name, \
                     or reserved: le, quantile, __*)"
                ));
            }
        }
        Ok(AddLabels {
            labels: config.labels.into_iter().collect(),
            select: config.select,
        })
    }

    fn selectors(&self) -> Vec<String> {
        self.select.clone()
    }

    fn filter(&mut self, families: &mut Families) {
        for family in families
            .iter_mut()
            .filter(|f| matches(&self.select, &f.name))
        {
            for sample in &mut family.samples {
                for (name, value) in &self.labels {
                    sample.set_label(name, value);
                }
            }
        }
    }
}

export_filter!(AddLabels);

#[cfg(test)]
mod tests {
    use super::*;
    use matrixinfer_filter::{assert_testdata, run, selected};

    #[test]
    fn testdata() {
        assert_testdata::<AddLabels>(env!("CARGO_MANIFEST_DIR"));
    }

    #[test]
    fn replaces_existing_labels_in_place() {
        let config = r#"{"labels": {"pod": "p-2", "zone": "a\"b"}}"#;
        let input = "vllm:x{pod=\"p-1\",engine=\"0\"} 1\n";
        let expected = "vllm:x{pod=\"p-2\",engine=\"0\",zone=\"a\\\"b\"} 1\n";
        assert_eq!(run::<AddLabels>(config, input).unwrap(), expected);
    }

    #[test]
    fn selects_engine_and_standard_families_by_default() {
        let scrape = "vllm:a 1\nsglang:b 1\nmatrixinfer:c 1\npython_gc_objects_collected_total 1\n";
        let config = r#"{"labels": {"pod": "p"}}"#;
        assert_eq!(
            selected::<AddLabels>(config, scrape).unwrap(),
            ["vllm:a", "sglang:b", "matrixinfer:c"]
        );
        let config = r#"{"labels": {"pod": "p"}, "select": ["sglang:*"]}"#;
        assert_eq!(selected::<AddLabels>(config, scrape).unwrap(), ["sglang:b"]);
    }

    #[test]
    fn refuses_bad_configs() {
        for (config, why) in [
            ("", "EOF"),
            ("{}", "missing field `labels`"),
            (r#"{"labels": {}}"#, "is empty"),
            (r#"{"labels": {"le": "1"}}"#, "reserved"),
            (r#"{"labels": {"a-b": "1"}}"#, "not a label name"),
            (r#"{"labels": {"a": 1}}"#, "invalid type"),
            (r#"{"labels": {"a": "1"}, "selekt": []}"#, "unknown field"),
            (
                r#"{"labels": {"a": "1"}, "select": ["a b"]}"#,
                "invalid selector",
            ),
        ] {
            let e = run::<AddLabels>(config, "").unwrap_err();
            assert!(e.contains(why), "{config}: {e}");
        }
    }
}
