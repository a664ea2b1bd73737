//! Renames families by swapping a name prefix, samples included.
//!
//! Config: `{"from": "vllm:", "to": "engine:"}`. Selects `<from>*`; each
//! family `<from>rest` becomes `<to>rest`, and its samples keep their
//! suffixes (`_bucket`, `_total`, ...).

#![deny(unsafe_code)]

use matrixinfer_filter::{
    Families, Filter, Level, export_filter, is_metric_name, is_reserved, log,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    from: String,
    to: String,
}

/// The filter: the prefix to replace, and its replacement.
pub struct RenamePrefix {
    from: String,
    to: String,
}

impl Filter for RenamePrefix {
    fn new(config: &str) -> Result<Self, String> {
        let Config { from, to } =
            serde_json::from_str(config).map_err(|e| format!("rename-prefix config: {e}"))?;
        // Both must start a valid name: check them with a letter after.
        for (key, prefix) in [("from", &from), ("to", &to)] {
            if !is_metric_name(&format!("{prefix}x")) {
                return Err(format!(
                    "rename-prefix config: {key} {prefix:?} cannot start a metric name"
                ));
            }
        }
        if is_reserved(&format!("{to}x")) {
            return Err(format!(
                "rename-prefix config: to {to:?} is in the runtime's own namespace"
            ));
        }
        Ok(RenamePrefix { from, to })
    }

    fn selectors(&self) -> Vec<String> {
        vec![format!("{}*", self.from)]
    }

    fn filter(&mut self, families: &mut Families) {
        for family in families.iter_mut() {
            let Some(rest) = family.name.strip_prefix(self.from.as_str()) else {
                continue;
            };
            let new = format!("{}{rest}", self.to);
            // The SDK's writer would leave such a family out; keep it.
            if is_metric_name(&new) && !is_reserved(&new) {
                family.rename(&new);
            } else {
                log(
                    Level::Warn,
                    &format!(
                        "rename-prefix: {new:?} is not a metric name, or is reserved; kept {}",
                        family.name
                    ),
                );
            }
        }
    }
}

export_filter!(RenamePrefix);

#[cfg(test)]
mod tests {
    use super::*;
    use matrixinfer_filter::{assert_testdata, run};

    #[test]
    fn testdata() {
        assert_testdata::<RenamePrefix>(env!("CARGO_MANIFEST_DIR"));
    }

    #[test]
    fn renames_counters_declared_without_total() {
        let config = r#"{"from": "vllm:", "to": "engine_"}"#;
        let input = "# TYPE vllm:tokens counter\nvllm:tokens_total 1\nvllm:tokens_created 2\n";
        let expected =
            "# TYPE engine_tokens counter\nengine_tokens_total 1\nengine_tokens_created 2\n";
        assert_eq!(run::<RenamePrefix>(config, input).unwrap(), expected);
    }

    #[test]
    fn keeps_a_family_the_new_name_would_break() {
        let config = r#"{"from": "vllm:", "to": ""}"#;
        assert_eq!(
            run::<RenamePrefix>(config, "vllm:1x 1\n").unwrap(),
            "vllm:1x 1\n"
        );
        assert_eq!(run::<RenamePrefix>(config, "vllm:x 1\n").unwrap(), "x 1\n");
        let config = r#"{"from": "vllm:", "to": "matrixinfer_runtime"}"#;
        assert_eq!(
            run::<RenamePrefix>(config, "vllm:_x 1\nvllm:y 2\n").unwrap(),
            "vllm:_x 1\nmatrixinfer_runtimey 2\n"
        );
    }

    #[test]
    fn refuses_bad_configs() {
        for (config, why) in [
            (r#"{"from": "vllm:"}"#, "missing field `to`"),
            (r#"{"from": "vllm:", "to": "9"}"#, "to \"9\" cannot start"),
            (r#"{"from": "a b", "to": "x"}"#, "from \"a b\" cannot start"),
            (
                r#"{"from": "vllm:", "to": "matrixinfer_runtime_"}"#,
                "runtime's own namespace",
            ),
        ] {
            let e = run::<RenamePrefix>(config, "").unwrap_err();
            assert!(e.contains(why), "{config}: {e}");
        }
    }
}
