//! Derives the mean of a histogram (or summary), `_sum / _count` per
//! series, as a new gauge family.
//!
//! Config (all optional): `{"family": "matrixinfer:time_to_first_token_seconds",
//! "name": "matrixinfer:time_to_first_token_seconds_mean"}`; `name` defaults
//! to `<family>_mean`. The histogram is kept unchanged and the gauge
//! appended after it, one sample per series (its labels without `le`);
//! series whose count is 0 or missing are skipped.

#![deny(unsafe_code)]

use matrixinfer_filter::{
    Families, Family, Filter, expo, export_filter, is_metric_name, is_reserved,
};
use serde::Deserialize;

const DEFAULT_FAMILY: &str = "matrixinfer:time_to_first_token_seconds";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    family: Option<String>,
    name: Option<String>,
}

/// The filter: the histogram to read and the gauge to write.
pub struct MeanGauge {
    family: String,
    name: String,
}

/// One series of the histogram: its labels (without `le`) and what its
/// `_sum` and `_count` samples say.
struct Series {
    labels: Vec<(String, String)>,
    sum: Option<f64>,
    count: Option<f64>,
}

impl Filter for MeanGauge {
    fn new(config: &str) -> Result<Self, String> {
        let config: Config = if config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(config).map_err(|e| format!("mean-gauge config: {e}"))?
        };
        let family = config.family.unwrap_or_else(|| DEFAULT_FAMILY.to_owned());
        let name = config.name.unwrap_or_else(|| format!("{family}_mean"));
        for name in [&family, &name] {
            if !is_metric_name(name) {
                return Err(format!("mean-gauge config: {name:?} is not a metric name"));
            }
        }
        if name == family {
            return Err(format!(
                "mean-gauge config: name and family are both {name:?}"
            ));
        }
        if is_reserved(&name) {
            return Err(format!(
                "mean-gauge config: {name:?} is in the runtime's own namespace"
            ));
        }
        // The histogram would read a gauge named like its samples as its own.
        if expo::CLAIMED_SUFFIXES
            .iter()
            .any(|suffix| name.strip_prefix(family.as_str()) == Some(suffix))
        {
            return Err(format!(
                "mean-gauge config: {name:?} is named like a sample of {family:?}"
            ));
        }
        Ok(MeanGauge { family, name })
    }

    fn selectors(&self) -> Vec<String> {
        vec![self.family.clone()]
    }

    fn filter(&mut self, families: &mut Families) {
        let sum_name = format!("{}_sum", self.family);
        let count_name = format!("{}_count", self.family);
        let mut series: Vec<Series> = Vec::new();
        // A family split by process arrives as one; several are read anyway.
        for family in families.iter().filter(|f| f.name == self.family) {
            for sample in &family.samples {
                let is_sum = sample.name == sum_name;
                if !is_sum && sample.name != count_name {
                    continue;
                }
                let labels: Vec<(String, String)> = sample
                    .labels
                    .iter()
                    .filter(|(k, _)| k != "le")
                    .cloned()
                    .collect();
                let at = match series.iter().position(|s| same_labels(&s.labels, &labels)) {
                    Some(at) => at,
                    None => {
                        series.push(Series {
                            labels,
                            sum: None,
                            count: None,
                        });
                        series.len() - 1
                    }
                };
                let slot = if is_sum {
                    &mut series[at].sum
                } else {
                    &mut series[at].count
                };
                *slot = sample.value_f64();
            }
        }

        let help = format!("Mean of {} (sum / count).", self.family);
        let mut gauge = Family::new_gauge(self.name.clone(), help);
        for s in series {
            if let (Some(sum), Some(count)) = (s.sum, s.count)
                && count > 0.0
            {
                gauge.push_sample(s.labels, sum / count);
            }
        }
        if !gauge.samples.is_empty() {
            families.push(gauge);
        }
    }
}

/// The same label set, in whatever order.
fn same_labels(a: &[(String, String)], b: &[(String, String)]) -> bool {
    a.len() == b.len() && a.iter().all(|pair| b.contains(pair))
}

export_filter!(MeanGauge);

#[cfg(test)]
mod tests {
    use super::*;
    use matrixinfer_filter::{assert_testdata, run};

    #[test]
    fn testdata() {
        assert_testdata::<MeanGauge>(env!("CARGO_MANIFEST_DIR"));
    }

    #[test]
    fn defaults() {
        let filter = MeanGauge::new("").unwrap();
        assert_eq!(
            filter.selectors(),
            ["matrixinfer:time_to_first_token_seconds"]
        );
        assert_eq!(filter.name, "matrixinfer:time_to_first_token_seconds_mean");
        let filter = MeanGauge::new(r#"{"family": "sglang:e2e_request_latency_seconds"}"#).unwrap();
        assert_eq!(filter.name, "sglang:e2e_request_latency_seconds_mean");
    }

    #[test]
    fn summaries_and_label_order() {
        let config = r#"{"family": "s", "name": "s_avg"}"#;
        let input = "# TYPE s summary\ns{quantile=\"0.5\",a=\"1\"} 1\ns_sum{a=\"1\",b=\"2\"} 3\n\
                     s_count{b=\"2\",a=\"1\"} 2\n";
        let expected = format!(
            "{input}# HELP s_avg Mean of s (sum / count).\n# TYPE s_avg gauge\n\
                                s_avg{{a=\"1\",b=\"2\"}} 1.5\n"
        );
        assert_eq!(run::<MeanGauge>(config, input).unwrap(), expected);
    }

    #[test]
    fn nothing_to_average_adds_nothing() {
        let input = "# TYPE matrixinfer:time_to_first_token_seconds histogram\n\
                     matrixinfer:time_to_first_token_seconds_sum 0\n\
                     matrixinfer:time_to_first_token_seconds_count 0\n";
        assert_eq!(run::<MeanGauge>("", input).unwrap(), input);
    }

    #[test]
    fn refuses_bad_configs() {
        for (config, why) in [
            (r#"{"family": "a b"}"#, "not a metric name"),
            (r#"{"family": "a", "name": "a"}"#, "both"),
            (
                r#"{"name": "matrixinfer_runtime_ttft_mean"}"#,
                "runtime's own namespace",
            ),
            (
                r#"{"family": "a", "name": "a_count"}"#,
                "named like a sample",
            ),
            (r#"{"famliy": "a"}"#, "unknown field"),
        ] {
            let e = run::<MeanGauge>(config, "").unwrap_err();
            assert!(e.contains(why), "{config}: {e}");
        }
    }
}
