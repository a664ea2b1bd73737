//! The synthesizer's tests: sizes, fidelity to prometheus_client, determinism.

use super::*;
use std::collections::{HashMap, HashSet};

const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

fn payload(flavor: Flavor, target_bytes: usize, multiprocess: bool) -> Payload {
    Payload::new(PayloadSpec {
        flavor,
        target_bytes,
        multiprocess,
        model: MODEL.to_string(),
        seed: 42,
    })
}

fn render(p: &mut Payload) -> String {
    let mut out = Vec::new();
    p.render(&mut out);
    String::from_utf8(out).expect("payload is UTF-8")
}

/// A sample line, parsed.
struct Sample {
    name: String,
    /// Raw text between the braces (canonical: labels are sorted).
    raw_labels: String,
    /// Unescaped pairs.
    labels: Vec<(String, String)>,
    value: f64,
}

struct Parsed {
    /// TYPE name -> type, in order of appearance.
    types: Vec<(String, String)>,
    helps: Vec<String>,
    samples: Vec<Sample>,
}

fn parse_value(s: &str) -> f64 {
    match s {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s.parse().unwrap_or_else(|_| panic!("bad value {s:?}")),
    }
}

/// Parses `{a="x",b="y\"z"}`; returns the pairs and the rest of the line.
fn parse_labels(s: &str) -> (Vec<(String, String)>, String, &str) {
    let bytes = s.as_bytes();
    assert_eq!(bytes[0], b'{');
    let mut i = 1;
    let mut pairs = Vec::new();
    while bytes[i] != b'}' {
        let eq = i + s[i..].find('=').expect("label =");
        let key = s[i..eq].to_string();
        assert_eq!(bytes[eq + 1], b'"');
        let mut j = eq + 2;
        let mut value = String::new();
        loop {
            match bytes[j] {
                b'\\' => {
                    value.push(match bytes[j + 1] {
                        b'\\' => '\\',
                        b'"' => '"',
                        b'n' => '\n',
                        other => panic!("bad escape {other}"),
                    });
                    j += 2;
                }
                b'"' => break,
                _ => {
                    let ch = s[j..].chars().next().expect("char");
                    value.push(ch);
                    j += ch.len_utf8();
                }
            }
        }
        pairs.push((key, value));
        i = j + 1;
        if bytes[i] == b',' {
            i += 1;
        }
    }
    (pairs, s[1..i].to_string(), &s[i + 1..])
}

fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed {
        types: Vec::new(),
        helps: Vec::new(),
        samples: Vec::new(),
    };
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            parsed.types.push((name.to_string(), kind.to_string()));
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            parsed.helps.push(rest.to_string());
        } else {
            assert!(!line.starts_with('#'), "unexpected comment {line}");
            let name_end = line.find(['{', ' ']).expect("sample name");
            let name = line[..name_end].to_string();
            let (labels, raw_labels, rest) = if line.as_bytes()[name_end] == b'{' {
                parse_labels(&line[name_end..])
            } else {
                (Vec::new(), String::new(), &line[name_end..])
            };
            let value = parse_value(rest.strip_prefix(' ').expect("space before value"));
            parsed.samples.push(Sample {
                name,
                raw_labels,
                labels,
                value,
            });
        }
    }
    parsed
}

/// Bucket values in order, the `+Inf` bucket and `_count` of one histogram series.
type HistogramSeries = (Vec<f64>, Option<f64>, Option<f64>);

fn family_of<'a>(types: &'a HashMap<String, String>, sample: &str) -> Option<(&'a str, &'a str)> {
    if let Some((name, kind)) = types.get_key_value(sample) {
        return Some((name, kind));
    }
    for suffix in ["_bucket", "_count", "_sum"] {
        if let Some(base) = sample.strip_suffix(suffix)
            && let Some((name, kind)) = types.get_key_value(base)
        {
            return Some((name, kind));
        }
    }
    None
}

#[test]
fn flavor_names_round_trip() {
    for f in Flavor::ALL {
        assert_eq!(Flavor::parse(f.name()), Some(f));
        assert_eq!(Flavor::parse(&f.name().to_uppercase()), Some(f));
    }
    assert_eq!(Flavor::parse("vllm"), None);
    assert!(Flavor::Sglang04.is_sglang() && !Flavor::VllmV1.is_sglang());
}

#[test]
fn float_formatting_matches_prometheus_client() {
    let cases: &[(f64, &str)] = &[
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (1.0, "1.0"),
        (123.0, "123.0"),
        (999_999.0, "999999.0"),
        (1_000_000.0, "1e+06"),
        (8_128_902.0, "8.128902e+06"),
        (1_745_300_000.0, "1.7453e+09"),
        (1_745_312_345.678_9, "1.7453123456789e+09"),
        (62_093_029_376.0, "6.2093029376e+010"),
        (0.001, "0.001"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (0.000_25, "0.00025"),
        (2.5, "2.5"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e16, "1e+16"),
        // An exact tie in the 17th digit: Python rounds half to even.
        (1_214_194_577_980_150.2, "1.2141945779801502e+015"),
        (-201_562_347_225_087.62, "-201562347225087.62"),
        (1.234_567_8e17, "1.2345678e+17"),
        (-1_234_567.5, "-1234567.5"),
        (f64::INFINITY, "+Inf"),
        (f64::NEG_INFINITY, "-Inf"),
        (f64::NAN, "NaN"),
    ];
    for &(v, want) in cases {
        assert_eq!(go_float_string(v), want, "value {v:e}");
    }
}

#[test]
fn buckets_resolve() {
    assert_eq!(build_1_2_5(32768.0).last(), Some(&20000.0));
    assert_eq!(build_1_2_5(32768.0).len(), 14);
    assert_eq!(resolve_buckets("request_latency_buckets", "x").len(), 21);
    assert_eq!(
        resolve_buckets("(0.01, 0.1, 1, 10)", "x"),
        vec![0.01, 0.1, 1.0, 10.0]
    );
    let exp = resolve_buckets("exponential_buckets(start=0.05, width=1.5, length=18)", "x");
    assert_eq!(exp.len(), 18);
    assert_eq!(exp[0], 0.05);
    assert!(resolve_buckets("_BYTES_BUCKETS", "vllm:nixl_bytes_transferred")[0] >= 1024.0);
}

#[test]
fn sizes_within_tolerance() {
    for flavor in Flavor::ALL {
        for mp in [false, true] {
            for target in [20_000, 50_000, 114_000, 1_000_000, 2_000_000] {
                let len = render(&mut payload(flavor, target, mp)).len();
                let ratio = len as f64 / target as f64;
                assert!(
                    (0.75..=1.25).contains(&ratio),
                    "{} mp={mp} target {target}: {len} bytes",
                    flavor.name()
                );
            }
        }
    }
}

#[test]
fn standard_families_present() {
    for flavor in Flavor::ALL {
        for mp in [false, true] {
            let text = render(&mut payload(flavor, 50_000, mp));
            let (prefix, tpot, absent) = match flavor {
                Flavor::VllmV0 => ("vllm", "time_per_output_token_seconds", None),
                Flavor::Vllm010 => ("vllm", "time_per_output_token_seconds", None),
                Flavor::VllmV1 => (
                    "vllm",
                    "inter_token_latency_seconds",
                    Some("vllm:time_per_output_token_seconds"),
                ),
                Flavor::Sglang04 => (
                    "sglang",
                    "time_per_output_token_seconds",
                    Some("sglang:inter_token_latency_seconds"),
                ),
                Flavor::Sglang05 => ("sglang", "inter_token_latency_seconds", None),
            };
            let waiting = if flavor.is_sglang() {
                "num_queue_reqs"
            } else {
                "num_requests_waiting"
            };
            for line in [
                format!("# TYPE {prefix}:generation_tokens_total counter\n"),
                format!("# TYPE {prefix}:{waiting} gauge\n"),
                format!("# TYPE {prefix}:time_to_first_token_seconds histogram\n"),
                format!("# TYPE {prefix}:e2e_request_latency_seconds histogram\n"),
                format!("# TYPE {prefix}:{tpot} histogram\n"),
            ] {
                assert!(
                    text.contains(&line),
                    "{} mp={mp}: missing {line}",
                    flavor.name()
                );
            }
            if let Some(absent) = absent {
                assert!(!text.contains(absent), "{}: has {absent}", flavor.name());
            }
            if flavor == Flavor::Vllm010 {
                assert!(text.contains("# TYPE vllm:inter_token_latency_seconds histogram\n"));
            }
            if flavor == Flavor::VllmV1 {
                assert!(text.contains("# TYPE vllm:iteration_tokens_total histogram\n"));
                assert!(text.contains("vllm:iteration_tokens_total_bucket{"));
                assert!(text.contains("block_size=\"16\""));
                assert!(text.contains("prefix_caching_hash_algo=\"sha256\""));
                assert!(text.contains("running_lora_adapters=\"sql-lora,math-lora\""));
            }
            if flavor == Flavor::VllmV0 {
                assert!(text.contains("# TYPE vllm:gpu_cache_usage_perc gauge\n"));
                assert!(!text.contains("engine=\""), "V0 has no engine label");
            }
            if flavor == Flavor::Sglang05 {
                assert!(text.contains("engine_type=\"unified\""));
                assert!(text.contains("is_streaming=\"True\""));
            }
            assert_eq!(text.contains("_created"), !mp, "{} mp={mp}", flavor.name());
            assert_eq!(text.contains("python_gc_objects_collected_total"), !mp);
        }
    }
}

#[test]
fn hostile_details_present() {
    for flavor in Flavor::ALL {
        for mp in [false, true] {
            let text = render(&mut payload(flavor, 50_000, mp));
            let parsed = parse(&text);
            let values: Vec<&str> = parsed
                .samples
                .iter()
                .flat_map(|s| s.labels.iter().map(|(_, v)| v.as_str()))
                .collect();
            assert!(
                values
                    .iter()
                    .any(|v| v.contains('"') && v.contains('\\') && v.contains('\n'))
            );
            assert!(values.contains(&""));
            assert!(text.contains("\\\"") && text.contains("\\\\") && text.contains("\\n"));
            assert!(
                parsed
                    .helps
                    .iter()
                    .any(|h| h.contains(':') && h.contains('"'))
            );
            assert!(parsed.samples.iter().any(|s| s.value.is_nan()));
            assert!(text.contains("le=\"+Inf\""));
            assert!(
                text.contains("e+06"),
                "{}: no exponent-style value",
                flavor.name()
            );
        }
    }
}

#[test]
fn labels_sorted_and_series_unique() {
    for flavor in Flavor::ALL {
        for mp in [false, true] {
            let parsed = parse(&render(&mut payload(flavor, 114_000, mp)));
            let mut seen = HashSet::new();
            for s in &parsed.samples {
                assert!(
                    s.labels.windows(2).all(|w| w[0].0 < w[1].0),
                    "unsorted labels in {}{{{}}}",
                    s.name,
                    s.raw_labels
                );
                assert!(
                    seen.insert((s.name.clone(), s.raw_labels.clone())),
                    "duplicate series {}{{{}}}",
                    s.name,
                    s.raw_labels
                );
            }
            let mut type_names = HashSet::new();
            for (name, _) in &parsed.types {
                assert!(type_names.insert(name.clone()), "duplicate family {name}");
            }
        }
    }
}

#[test]
fn counters_grow_and_histograms_stay_consistent() {
    for flavor in Flavor::ALL {
        for mp in [false, true] {
            let mut p = payload(flavor, 114_000, mp);
            let mut previous: HashMap<(String, String), f64> = HashMap::new();
            let mut changed = false;
            for _ in 0..4 {
                let parsed = parse(&render(&mut p));
                let types: HashMap<String, String> = parsed.types.iter().cloned().collect();
                let mut hist: HashMap<(String, String), HistogramSeries> = HashMap::new();
                let mut current = HashMap::new();
                for s in &parsed.samples {
                    let Some((family, kind)) = family_of(&types, &s.name) else {
                        panic!("sample {} outside any family", s.name)
                    };
                    let monotone =
                        kind == "counter" || (kind == "histogram" && !s.name.ends_with("_sum"));
                    if monotone {
                        let key = (s.name.clone(), s.raw_labels.clone());
                        if let Some(&before) = previous.get(&key) {
                            assert!(s.value >= before, "{} decreased", s.name);
                            changed |= s.value > before;
                        }
                        current.insert(key, s.value);
                    }
                    if kind == "histogram" {
                        let rest: Vec<String> = s
                            .labels
                            .iter()
                            .filter(|(k, _)| k != "le")
                            .map(|(k, v)| format!("{k}={v:?}"))
                            .collect();
                        let entry = hist
                            .entry((family.to_string(), rest.join(",")))
                            .or_default();
                        if s.name.ends_with("_bucket") {
                            entry.0.push(s.value);
                            if s.labels.iter().any(|(k, v)| k == "le" && v == "+Inf") {
                                entry.1 = Some(s.value);
                            }
                        } else if s.name.ends_with("_count") {
                            entry.2 = Some(s.value);
                        }
                    }
                }
                for ((family, labels), (buckets, inf, count)) in &hist {
                    assert!(
                        buckets.windows(2).all(|w| w[0] <= w[1]),
                        "{family}{{{labels}}}"
                    );
                    assert!(inf.is_some() && inf == count, "{family}{{{labels}}}");
                }
                previous = current;
            }
            assert!(changed, "{}: nothing moved", flavor.name());
        }
    }
}

#[test]
fn multiprocess_lists_sums_first() {
    for flavor in Flavor::ALL {
        let text = render(&mut payload(flavor, 114_000, true));
        let mut family: Option<(String, bool)> = None; // (histogram name, saw a bucket)
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE");
                family = (kind == "histogram").then(|| (name.to_string(), false));
                continue;
            }
            let Some((name, saw_bucket)) = family.as_mut() else {
                continue;
            };
            if line.starts_with(&format!("{name}_sum")) {
                assert!(
                    !*saw_bucket,
                    "{}: _sum after buckets in {name}",
                    flavor.name()
                );
            } else if line.starts_with(&format!("{name}_bucket")) {
                *saw_bucket = true;
            }
        }
    }
}

#[test]
fn deterministic_per_seed() {
    for flavor in Flavor::ALL {
        let mut a = payload(flavor, 50_000, false);
        let mut b = payload(flavor, 50_000, false);
        let first = render(&mut a);
        assert_eq!(first, render(&mut b));
        let second = render(&mut a);
        assert_eq!(second, render(&mut b));
        assert_ne!(first, second, "values change between renders");
    }
}

#[test]
fn extreme_specs_do_not_panic() {
    for flavor in Flavor::ALL {
        for target in [0, 1, 5_000_000] {
            let mut p = Payload::new(PayloadSpec {
                flavor,
                target_bytes: target,
                multiprocess: target == 1,
                model: String::new(),
                seed: u64::MAX,
            });
            assert!(!render(&mut p).is_empty());
        }
    }
}
