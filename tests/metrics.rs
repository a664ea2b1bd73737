//! Every rule of DESIGN.md section 3, through the real binary, on
//! hand-written payloads (tests/data) and on payloads the simulated engine
//! synthesizes from the engines' metric inventories.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::util::*;

const VLLM: &[(&str, &[&str])] = &[
    (
        "matrixinfer:generation_tokens_total",
        &["vllm:generation_tokens_total"],
    ),
    (
        "matrixinfer:num_requests_waiting",
        &["vllm:num_requests_waiting"],
    ),
    (
        "matrixinfer:time_to_first_token_seconds",
        &["vllm:time_to_first_token_seconds"],
    ),
    (
        "matrixinfer:time_per_output_token_seconds",
        &[
            "vllm:time_per_output_token_seconds",
            "vllm:inter_token_latency_seconds",
        ],
    ),
    (
        "matrixinfer:e2e_request_latency_seconds",
        &["vllm:e2e_request_latency_seconds"],
    ),
];

const SGLANG: &[(&str, &[&str])] = &[
    (
        "matrixinfer:generation_tokens_total",
        &["sglang:generation_tokens_total"],
    ),
    (
        "matrixinfer:num_requests_waiting",
        &["sglang:num_queue_reqs"],
    ),
    (
        "matrixinfer:time_to_first_token_seconds",
        &["sglang:time_to_first_token_seconds"],
    ),
    (
        "matrixinfer:time_per_output_token_seconds",
        &[
            "sglang:inter_token_latency_seconds",
            "sglang:time_per_output_token_seconds",
        ],
    ),
    (
        "matrixinfer:e2e_request_latency_seconds",
        &["sglang:e2e_request_latency_seconds"],
    ),
];

type Table = &'static [(&'static str, &'static [&'static str])];

fn table(engine: &str) -> Table {
    if engine == "sglang" { SGLANG } else { VLLM }
}

// === An independent oracle ===

/// A family as the text declares it: a line-by-line reading, written
/// from the format's rules rather than from the runtime's code.
#[derive(Debug, Default)]
struct Family {
    name: String,
    kind: String,
    help: Option<String>,
    type_line: Option<String>,
    samples: Vec<String>,
}

fn suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["", "_total", "_created"],
        "histogram" => &["_bucket", "_sum", "_count", "_created"],
        "summary" => &["", "_sum", "_count", "_created"],
        _ => &[""],
    }
}

fn metadata(line: &str) -> Option<(&str, &str)> {
    let rest = line
        .strip_prefix("# HELP ")
        .or_else(|| line.strip_prefix("# TYPE "))?;
    Some((&line[2..6], rest.split_whitespace().next()?))
}

fn families(text: &str) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    for line in text.lines() {
        if let Some((keyword, name)) = metadata(line) {
            let current = families.last_mut();
            let continues = current.as_ref().is_some_and(|f| {
                f.name == name
                    && if keyword == "HELP" {
                        f.help.is_none()
                    } else {
                        f.type_line.is_none()
                    }
            });
            if !continues {
                families.push(Family {
                    name: name.to_owned(),
                    ..Family::default()
                });
            }
            let family = families.last_mut().unwrap();
            if keyword == "HELP" {
                family.help = Some(line.to_owned());
            } else {
                family.kind = line
                    .split_whitespace()
                    .nth(3)
                    .unwrap_or("untyped")
                    .to_owned();
                family.type_line = Some(line.to_owned());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some(name_end) = line.find(['{', ' ']) else {
            continue;
        };
        let name = &line[..name_end];
        let belongs = families.last().is_some_and(|f| {
            name.strip_prefix(f.name.as_str())
                .is_some_and(|s| suffixes(&f.kind).contains(&s))
        });
        if !belongs {
            families.push(Family {
                name: name.to_owned(),
                ..Family::default()
            });
        }
        families.last_mut().unwrap().samples.push(line.to_owned());
    }
    families
}

/// What the standardized families appended to `input` must be.
fn expected_standard(input: &str, table: Table) -> String {
    let families = families(input);
    let mut out = String::new();
    for (standard, sources) in table {
        let chosen = sources.iter().find_map(|source| {
            families.iter().find_map(|f| {
                if f.name == *source {
                    Some((f.name.clone(), standard.to_string()))
                } else if source.strip_suffix("_total") == Some(f.name.as_str()) {
                    Some((
                        f.name.clone(),
                        standard.trim_end_matches("_total").to_owned(),
                    ))
                } else {
                    None
                }
            })
        });
        let Some((source, renamed)) = chosen else {
            continue;
        };
        let rename = |line: &str| line.replacen(source.as_str(), &renamed, 1);
        let group: Vec<&Family> = families.iter().filter(|f| f.name == source).collect();
        if let Some(help) = group.iter().find_map(|f| f.help.as_deref()) {
            out += &rename(help);
            out.push('\n');
        }
        if let Some(type_line) = group.iter().find_map(|f| f.type_line.as_deref()) {
            out += &rename(type_line);
            out.push('\n');
        }
        let mut seen = HashSet::new();
        for sample in group.iter().flat_map(|f| &f.samples) {
            if seen.insert(series_key(sample)) {
                out += &rename(sample);
                out.push('\n');
            }
        }
    }
    out
}

/// Checks one scrape: originals untouched, the standard families exactly
/// as the oracle says, the sidecar's own families after them, valid for
/// promtool, no duplicate series. Returns the standard families.
fn check_scrape(input: &str, output: &str, engine: &str, input_is_valid: bool) -> String {
    let (original, eof) = match input.strip_suffix("# EOF\n") {
        Some(rest) => (rest.to_owned(), true),
        None => (input.to_owned(), false),
    };
    let mut original = original;
    if !original.is_empty() && !original.ends_with('\n') {
        original.push('\n');
    }
    assert!(
        output.starts_with(&original),
        "the engine's lines were changed"
    );
    let appended = &output[original.len()..];
    let own_start = appended
        .find("# HELP matrixinfer_runtime_")
        .expect("the sidecar's own metrics");
    let (standard, own) = appended.split_at(own_start);
    assert_eq!(standard, expected_standard(input, table(engine)));
    assert!(own.contains("matrixinfer_runtime_scrape_duration_seconds_bucket{le=\"+Inf\"}"));
    assert!(own.contains("matrixinfer_runtime_upstream_bytes_total "));
    assert!(own.contains("matrixinfer_runtime_upstream_errors_total{reason=\"connect\"}"));
    assert!(own.contains("matrixinfer_runtime_io_driver{driver=\"io_uring\"}"));
    assert!(own.contains("\nmatrixinfer_runtime_handler_panics_total 0\n"));
    assert_eq!(own.ends_with("# EOF\n"), eof);
    if input_is_valid {
        promtool(output.as_bytes());
        assert_unique_series(output);
    } else {
        promtool(appended.as_bytes());
        assert_unique_series(appended);
    }
    standard.to_owned()
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Serves `file` from a simulated engine, scrapes it through a sidecar,
/// checks the scrape, and returns the standard families.
fn scrape_file(file: &PathBuf, engine: &str, valid: bool) -> String {
    let input = std::fs::read_to_string(file).unwrap();
    let upstream = Engine::file(file).start();
    let sidecar = Sidecar::new(engine, upstream.addr).start();
    let response = get(sidecar.addr, "/metrics");
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert!(response.complete);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    check_scrape(&input, &response.text(), engine, valid)
}

fn standard_names(standard: &str) -> Vec<String> {
    let mut names: Vec<String> = standard
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

const ALL_FIVE: [&str; 5] = [
    "matrixinfer:e2e_request_latency_seconds",
    "matrixinfer:generation_tokens_total",
    "matrixinfer:num_requests_waiting",
    "matrixinfer:time_per_output_token_seconds",
    "matrixinfer:time_to_first_token_seconds",
];

#[test]
fn vllm_v1_current() {
    let standard = scrape_file(&data("vllm-v1.prom"), "vllm", true);
    assert_eq!(standard_names(&standard), ALL_FIVE);
    // TPOT comes from inter_token_latency: current vLLM has no other.
    assert!(standard.contains(
        "# HELP matrixinfer:time_per_output_token_seconds Histogram of inter-token latency"
    ));
    // `_created` families and the `_total`-named histogram are not copied.
    assert!(!standard.contains("_created"));
    assert!(!standard.contains("iteration_tokens"));
    assert!(standard.contains(
        "matrixinfer:generation_tokens_total{engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 8.128902e+06\n"
    ));
}

#[test]
fn vllm_v0() {
    let standard = scrape_file(&data("vllm-v0.prom"), "vllm", true);
    assert_eq!(standard_names(&standard), ALL_FIVE);
    assert!(standard.contains(
        "# HELP matrixinfer:time_per_output_token_seconds Histogram of time per output token"
    ));
    // Multiprocess order (`_sum` first) is kept in the copy.
    let e2e = family_lines(&standard, "matrixinfer:e2e_request_latency_seconds");
    assert!(
        e2e[2].starts_with("matrixinfer:e2e_request_latency_seconds_sum{"),
        "{e2e:?}"
    );
}

#[test]
fn vllm_0_10_prefers_time_per_output_token_even_when_it_comes_later() {
    let standard = scrape_file(&data("vllm-0.10-both-tpot.prom"), "vllm", true);
    assert_eq!(standard_names(&standard), ALL_FIVE);
    let tpot = family_lines(&standard, "matrixinfer:time_per_output_token_seconds");
    assert!(tpot[0].contains("DEPRECATED: Use vllm:inter_token_latency_seconds instead."));
    assert!(tpot.iter().any(|l| l.ends_with("} 90999.0")), "{tpot:?}");
    assert!(!tpot.iter().any(|l| l.ends_with("} 91000.0")), "{tpot:?}");
}

#[test]
fn multiprocess_split_family_becomes_one_family() {
    // The input itself declares a family twice (invalid for promtool);
    // what the sidecar adds must still be valid.
    let standard = scrape_file(&data("vllm-multiprocess-split.prom"), "vllm", false);
    let e2e = family_lines(&standard, "matrixinfer:e2e_request_latency_seconds");
    assert_eq!(
        e2e.iter().filter(|l| l.starts_with('#')).count(),
        2,
        "{e2e:?}"
    );
    assert_eq!(e2e.len(), 2 + 8, "{e2e:?}");
}

#[test]
fn sglang_0_4_falls_back_to_time_per_output_token() {
    let standard = scrape_file(&data("sglang-0.4.prom"), "sglang", true);
    assert_eq!(standard_names(&standard), ALL_FIVE);
    assert!(standard.contains(
        "matrixinfer:num_requests_waiting{model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 3.0\n"
    ));
    assert!(standard.contains(
        "# HELP matrixinfer:time_per_output_token_seconds Histogram of time per output token"
    ));
}

#[test]
fn sglang_0_5() {
    let standard = scrape_file(&data("sglang-0.5.prom"), "sglang", true);
    assert_eq!(standard_names(&standard), ALL_FIVE);
    assert!(standard.contains(
        "# HELP matrixinfer:time_per_output_token_seconds Histogram of inter-token latency"
    ));
    assert!(standard.contains(
        "matrixinfer:generation_tokens_total{engine_type=\"unified\",is_streaming=\"True\","
    ));
}

#[test]
fn escapes_counters_without_total_and_openmetrics_eof() {
    let standard = scrape_file(&data("tricky-openmetrics.prom"), "vllm", true);
    assert!(standard.contains("# TYPE matrixinfer:generation_tokens counter\n"));
    assert!(standard.contains("matrixinfer:generation_tokens_total{model_name=\"plain\"} +Inf\n"));
    assert!(standard.contains("matrixinfer:num_requests_waiting{model_name=\"we\\\"ird\\\\name\\nhere\",lora=\"\"} 8.128902e+06\n"));
    assert!(standard.contains("# HELP matrixinfer:num_requests_waiting Waiting: \"queued\" requests \\\\ with a backslash.   \n"));
}

/// Every flavor the simulated engine knows, single-process and
/// multiprocess, small and large: snapshot a payload, serve exactly it,
/// check the scrape line by line.
#[test]
fn generated_payloads_of_every_engine_version() {
    let cases = [
        ("vllm-v0", "vllm"),
        ("vllm-0.10", "vllm"),
        ("vllm-v1", "vllm"),
        ("sglang-0.4", "sglang"),
        ("sglang-0.5", "sglang"),
    ];
    for (flavor, engine) in cases {
        for (multiprocess, size) in [(false, "50k"), (true, "50k"), (false, "1m")] {
            let mut generator = Engine::flavor(flavor).size(size);
            if multiprocess {
                generator = generator.arg("--multiprocess");
            }
            let generator = generator.start();
            let snapshot = get(generator.addr, "/metrics").body;
            let file = temp_file(&format!("{flavor}-{multiprocess}-{size}.prom"), &snapshot);
            let standard = scrape_file(&file, engine, true);
            assert_eq!(
                standard_names(&standard),
                ALL_FIVE,
                "{flavor} multiprocess={multiprocess} {size}"
            );
        }
    }
}

/// Against a live simulated engine: values move between scrapes, gzip is
/// served when asked, chunked and gzipping engines are read.
#[test]
fn live_engine_scrapes() {
    for (flavor, engine, args) in [
        ("vllm-v1", "vllm", vec![]),
        ("sglang-0.5", "sglang", vec!["--chunked"]),
        ("vllm-0.10", "vllm", vec!["--chunked", "--multiprocess"]),
    ] {
        let mut generator = Engine::flavor(flavor).size("200k");
        for arg in &args {
            generator = generator.arg(arg);
        }
        let upstream = generator.start();
        let sidecar = Sidecar::new(engine, upstream.addr).start();
        let first = get(sidecar.addr, "/metrics");
        let second = get_gzip(sidecar.addr, "/metrics");
        assert_eq!((first.status, second.status), (200, 200));
        assert!(first.complete && second.complete);
        assert!(second.gzipped && !first.gzipped);
        let (first, second) = (first.text(), second.text());
        assert_ne!(first, second, "values should move between scrapes");
        for text in [&first, &second] {
            promtool(text.as_bytes());
            assert_unique_series(text);
            for name in ALL_FIVE {
                assert!(
                    text.contains(&format!("\n# TYPE {name} ")),
                    "{flavor}: no {name}"
                );
            }
        }
    }
}

#[test]
fn many_scrapes_on_one_keep_alive_connection() {
    let upstream = Engine::flavor("vllm-v1").size("50k").start();
    let sidecar = Sidecar::new("vllm", upstream.addr).workers(1).start();
    let mut client = Client::connect(sidecar.addr);
    for _ in 0..20 {
        let response = client.get("/metrics");
        assert_eq!(response.status, 200);
        assert!(response.complete);
    }
    let text = client.get("/metrics").text();
    let scrapes = text
        .lines()
        .find(|l| l.starts_with("matrixinfer_runtime_scrapes_total{outcome=\"ok\"}"))
        .unwrap();
    assert_eq!(
        scrapes,
        "matrixinfer_runtime_scrapes_total{outcome=\"ok\"} 20"
    );
}

/// `--metric-prefix` (upstream's current name is `kthena`): the same five
/// families under the other prefix, exactly as the oracle derives them;
/// the engine's lines and the runtime's own `matrixinfer_runtime_*`
/// families untouched. The environment variable works as the flag.
#[test]
fn the_standard_prefix_is_a_setting() {
    for (file, engine, how) in [
        ("vllm-v1.prom", "vllm", "flag"),
        ("sglang-0.5.prom", "sglang", "env"),
    ] {
        let file = data(file);
        let input = std::fs::read_to_string(&file).unwrap();
        let upstream = Engine::file(&file).start();
        let sidecar = match how {
            "flag" => Sidecar::new(engine, upstream.addr)
                .arg("--metric-prefix")
                .arg("kthena"),
            _ => Sidecar::new(engine, upstream.addr).env("MATRIXINFER_METRIC_PREFIX", "kthena:"),
        }
        .start();
        let output = get(sidecar.addr, "/metrics").text();
        assert!(
            output.starts_with(&input),
            "the engine's lines were changed"
        );
        let appended = &output[input.len()..];
        let own = appended
            .find("# HELP matrixinfer_runtime_")
            .expect("the sidecar's own metrics");
        let expected = expected_standard(&input, table(engine)).replace("matrixinfer:", "kthena:");
        assert!(!expected.is_empty());
        assert_eq!(&appended[..own], expected, "{engine}");
        assert!(!output.contains("matrixinfer:"), "{engine}");
        assert!(appended[own..].contains("matrixinfer_runtime_scrape_duration_seconds_count"));
        promtool(output.as_bytes());
        assert_unique_series(&output);
    }
}
