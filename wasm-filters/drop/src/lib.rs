//! Drops whole families, and chosen buckets of histograms.
//!
//! Config: `{"families": ["vllm:request_params_*", "vllm:iteration_tokens_total"],
//! "buckets": {"vllm:time_to_first_token_seconds": ["0.001", "0.005"]}}`.
//! A family whose name matches a `families` selector is dropped whole. For
//! each family under `buckets`, its `_bucket` samples whose `le` equals (as
//! a number) one of the listed bounds are dropped; the `+Inf` bucket always
//! stays (listing it is refused).

#![deny(unsafe_code)]

use std::collections::BTreeMap;

use matrixinfer_filter::{Families, Filter, export_filter, matches};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    families: Vec<String>,
    #[serde(default)]
    buckets: BTreeMap<String, Vec<String>>,
}

/// The filter: which families to drop, and which buckets of which
/// histograms.
pub struct DropFilter {
    families: Vec<String>,
    /// Histogram family name, its `_bucket` sample name, the bounds to drop.
    buckets: Vec<(String, String, Vec<f64>)>,
}

impl Filter for DropFilter {
    fn new(config: &str) -> Result<Self, String> {
        let config: Config =
            serde_json::from_str(config).map_err(|e| format!("drop config: {e}"))?;
        if config.families.is_empty() && config.buckets.is_empty() {
            return Err(
                "drop config: nothing to drop (\"families\" and \"buckets\" are empty)".to_owned(),
            );
        }
        let mut buckets = Vec::new();
        for (family, bounds) in config.buckets {
            let bounds = bounds
                .iter()
                .map(|b| match b.parse::<f64>() {
                    Ok(le) if le == f64::INFINITY => Err(format!(
                        "drop config: {family}: the +Inf bucket cannot be dropped"
                    )),
                    Ok(le) => Ok(le),
                    Err(_) => Err(format!(
                        "drop config: {family}: bound {b:?} is not a number"
                    )),
                })
                .collect::<Result<Vec<f64>, String>>()?;
            buckets.push((family.clone(), format!("{family}_bucket"), bounds));
        }
        Ok(DropFilter {
            families: config.families,
            buckets,
        })
    }

    fn selectors(&self) -> Vec<String> {
        let mut selectors = self.families.clone();
        for (family, _, _) in &self.buckets {
            if !selectors.contains(family) {
                selectors.push(family.clone());
            }
        }
        selectors
    }

    fn filter(&mut self, families: &mut Families) {
        families.retain(|f| !matches(&self.families, &f.name));
        for family in families.iter_mut() {
            let Some((_, bucket, bounds)) = self.buckets.iter().find(|b| b.0 == family.name) else {
                continue;
            };
            family.samples.retain(|s| {
                let le = s.label("le").and_then(|le| le.parse::<f64>().ok());
                !(s.name == *bucket && le.is_some_and(|le| bounds.contains(&le)))
            });
        }
    }
}

export_filter!(DropFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use matrixinfer_filter::{assert_testdata, run};

    #[test]
    fn testdata() {
        assert_testdata::<DropFilter>(env!("CARGO_MANIFEST_DIR"));
    }

    #[test]
    fn selects_patterns_and_bucket_families_once() {
        let config = r#"{"families": ["a:*", "b"], "buckets": {"b": ["1"], "c": ["2"]}}"#;
        let filter = DropFilter::new(config).unwrap();
        assert_eq!(filter.selectors(), ["a:*", "b", "c"]);
    }

    #[test]
    fn matches_bounds_as_numbers() {
        let config = r#"{"buckets": {"h": ["1e-3", "5"]}}"#;
        let input = "# TYPE h histogram\nh_bucket{le=\"0.001\"} 1\nh_bucket{le=\"5.0\"} 2\n\
                     h_bucket{le=\"10\"} 3\nh_bucket{le=\"+Inf\"} 4\nh_sum 9\nh_count 4\n";
        let expected = "# TYPE h histogram\nh_bucket{le=\"10\"} 3\nh_bucket{le=\"+Inf\"} 4\n\
                        h_sum 9\nh_count 4\n";
        assert_eq!(run::<DropFilter>(config, input).unwrap(), expected);
    }

    #[test]
    fn refuses_bad_configs() {
        for (config, why) in [
            ("{}", "nothing to drop"),
            (r#"{"buckets": {"h": ["+Inf"]}}"#, "+Inf bucket cannot"),
            (r#"{"buckets": {"h": ["fast"]}}"#, "not a number"),
            (r#"{"buckets": {"h": [0.5]}}"#, "invalid type"),
            (r#"{"families": ["a*b"]}"#, "invalid selector"),
        ] {
            let e = run::<DropFilter>(config, "").unwrap_err();
            assert!(e.contains(why), "{config}: {e}");
        }
    }
}
