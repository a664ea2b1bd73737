//! WASM filters through the real binary against the simulated engine: each
//! example's effect on real-shaped vLLM and SGLang payloads (still valid
//! for promtool), and each hostile filter contained while scrapes go on.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::util::*;

/// The built filters: `MATRIXINFER_FILTERS_DIR`, or built here once from
/// `wasm-filters/` (the test command adds the wasm32 target first).
pub fn filter(name: &str) -> String {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        if let Ok(dir) = std::env::var("MATRIXINFER_FILTERS_DIR") {
            return PathBuf::from(dir);
        }
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let target = root.join("target/wasm-filters");
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-unknown-unknown",
                "--manifest-path",
            ])
            .arg(root.join("wasm-filters/Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("cargo");
        assert!(
            status.success(),
            "building wasm-filters failed (is the wasm32-unknown-unknown target installed?)"
        );
        target.join("wasm32-unknown-unknown/release")
    });
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.is_file(), "{} is missing", path.display());
    path.display().to_string()
}

fn scrape_with(flavor: &str, filters: &[(&str, &str)], extra: &[&str]) -> (Proc, Proc) {
    let engine = Engine::flavor(flavor).size("120k").start();
    let kind = if flavor.starts_with("sglang") {
        "sglang"
    } else {
        "vllm"
    };
    let mut sidecar = Sidecar::new(kind, engine.addr);
    for (name, config) in filters {
        sidecar = sidecar
            .arg("--filter")
            .arg(&filter(name))
            .arg("--filter-config")
            .arg(config);
    }
    for arg in extra {
        sidecar = sidecar.arg(arg);
    }
    (engine, sidecar.start())
}

fn metrics_text(sidecar: &Proc) -> String {
    let response = get(sidecar.addr, "/metrics");
    assert_eq!(response.status, 200);
    assert!(response.complete);
    let text = response.text();
    promtool(text.as_bytes());
    assert_unique_series(&text);
    text
}

/// The samples of `family` (its `_bucket`, `_sum`, `_count`, `_total`
/// samples included, its separate `_created` family not).
fn series_of<'t>(text: &'t str, family: &str) -> Vec<&'t str> {
    text.lines()
        .filter(|l| {
            let name = &l[..l.find(['{', ' ']).unwrap_or(l.len())];
            !l.starts_with('#')
                && name
                    .strip_prefix(family)
                    .is_some_and(|s| ["", "_bucket", "_sum", "_count", "_total"].contains(&s))
        })
        .collect()
}

fn value(text: &str, series: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no {series}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn add_labels_on_vllm_and_sglang() {
    for flavor in ["vllm-v1", "sglang-0.5"] {
        let config = r#"{"labels": {"pod": "pod-7", "model": "llama"}, "select": ["vllm:*", "sglang:*", "matrixinfer:*"]}"#;
        let (_engine, sidecar) = scrape_with(flavor, &[("add-labels", config)], &[]);
        let text = metrics_text(&sidecar);
        let prefix = if flavor.starts_with("sglang") {
            "sglang:"
        } else {
            "vllm:"
        };
        let selected: Vec<&str> = text
            .lines()
            .filter(|l| {
                !l.starts_with('#') && (l.starts_with(prefix) || l.starts_with("matrixinfer:"))
            })
            .collect();
        assert!(selected.len() > 100, "{flavor}: {}", selected.len());
        for line in &selected {
            assert!(
                line.contains("pod=\"pod-7\"") && line.contains("model=\"llama\""),
                "{flavor}: {line}"
            );
        }
        for line in text
            .lines()
            .filter(|l| l.starts_with("matrixinfer_runtime_"))
        {
            assert!(
                !line.contains("pod-7"),
                "own metrics are not filtered: {line}"
            );
        }
        assert_eq!(
            value(
                &text,
                "matrixinfer_runtime_filter_errors_total{filter=\"add_labels\",reason=\"trap\"}"
            ),
            0.0
        );
    }
}

#[test]
fn drop_families_and_buckets() {
    let config = r#"{"families": ["vllm:request_params_*", "vllm:iteration_tokens_total"], "buckets": {"vllm:time_to_first_token_seconds": ["0.001", "0.005"]}}"#;
    let (_engine, sidecar) = scrape_with("vllm-v1", &[("drop", config)], &[]);
    let text = metrics_text(&sidecar);
    assert!(series_of(&text, "vllm:request_params_n").is_empty());
    assert!(series_of(&text, "vllm:request_params_max_tokens").is_empty());
    assert!(series_of(&text, "vllm:iteration_tokens_total").is_empty());
    let ttft = series_of(&text, "vllm:time_to_first_token_seconds_bucket");
    assert!(!ttft.is_empty());
    assert!(
        ttft.iter()
            .all(|l| !l.contains("le=\"0.001\"") && !l.contains("le=\"0.005\"")),
        "{ttft:?}"
    );
    assert!(ttft.iter().any(|l| l.contains("le=\"+Inf\"")));
    assert!(ttft.iter().any(|l| l.contains("le=\"0.01\"")));
    assert!(
        !series_of(&text, "vllm:num_requests_running").is_empty(),
        "others untouched"
    );
}

#[test]
fn rename_by_prefix_then_add_labels_in_order() {
    let (_engine, sidecar) = scrape_with(
        "vllm-0.10",
        &[
            ("rename-prefix", r#"{"from": "vllm:", "to": "engine:"}"#),
            (
                "add-labels",
                r#"{"labels": {"renamed": "yes"}, "select": ["engine:*"]}"#,
            ),
        ],
        &[],
    );
    let text = metrics_text(&sidecar);
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("vllm:") || l.starts_with("# TYPE vllm:")),
        "nothing left under vllm:"
    );
    let renamed: Vec<&str> = text.lines().filter(|l| l.starts_with("engine:")).collect();
    assert!(renamed.len() > 100);
    assert!(
        renamed.iter().all(|l| l.contains("renamed=\"yes\"")),
        "the second filter saw the first one's output"
    );
    assert!(text.contains("\n# TYPE engine:generation_tokens_total counter\n"));
    assert!(
        text.contains("\n# TYPE matrixinfer:generation_tokens_total counter\n"),
        "standard names still there"
    );
}

#[test]
fn derived_mean_gauge() {
    let (_engine, sidecar) = scrape_with("sglang-0.5", &[("mean-gauge", "{}")], &[]);
    let text = metrics_text(&sidecar);
    assert!(text.contains("\n# TYPE matrixinfer:time_to_first_token_seconds_mean gauge\n"));
    let means = series_of(&text, "matrixinfer:time_to_first_token_seconds_mean");
    assert!(!means.is_empty());
    for mean in means {
        let labels = &mean[mean.find('{').unwrap()..mean.find('}').unwrap() + 1];
        let sum = value(
            &text,
            &format!("matrixinfer:time_to_first_token_seconds_sum{labels}"),
        );
        let count = value(
            &text,
            &format!("matrixinfer:time_to_first_token_seconds_count{labels}"),
        );
        let got: f64 = mean.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(
            (got - sum / count).abs() < 1e-9 * got.abs().max(1.0),
            "{mean}: {sum}/{count}"
        );
    }
}

#[test]
fn passthrough_keeps_every_line() {
    let engine = Engine::flavor("vllm-v1").size("120k").start();
    let snapshot = get(engine.addr, "/metrics").body;
    let file = temp_file("passthrough.prom", &snapshot);
    let upstream = Engine::file(&file).start();
    let plain = Sidecar::new("vllm", upstream.addr).start();
    let filtered = Sidecar::new("vllm", upstream.addr)
        .arg("--filter")
        .arg(&filter("passthrough"))
        .start();
    let strip = |text: String| {
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| {
                !l.starts_with("matrixinfer_runtime_")
                    && !l.starts_with("# HELP matrixinfer_runtime_")
                    && !l.starts_with("# TYPE matrixinfer_runtime_")
            })
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    let a = strip(metrics_text(&plain));
    let b = strip(metrics_text(&filtered));
    assert_eq!(a, b);
}

/// A hostile filter: every scrape is still a 200 with the families
/// unfiltered; failures are counted by reason; after five in a row the
/// filter is switched off and the log says so.
fn contained(name: &str, reason: &str) {
    // A short deadline only where it is the point: under a loaded test
    // machine, a memory bomb can take 100 ms to reach its cap and would
    // be counted as a deadline instead.
    let deadline = if reason == "deadline" { "100" } else { "2000" };
    let (_engine, sidecar) = scrape_with(
        "vllm-v1",
        &[(name, "")],
        &["--filter-deadline-ms", deadline],
    );
    let wasm_name = name.replace('-', "_");
    for _ in 0..6 {
        let text = metrics_text(&sidecar);
        assert!(
            text.contains("\n# TYPE vllm:num_requests_waiting gauge\n"),
            "{name}: the families are served unfiltered"
        );
        assert!(text.contains("\n# TYPE matrixinfer:num_requests_waiting gauge\n"));
    }
    let text = metrics_text(&sidecar);
    assert_eq!(
        value(
            &text,
            &format!(
                "matrixinfer_runtime_filter_errors_total{{filter=\"{wasm_name}\",reason=\"{reason}\"}}"
            )
        ),
        5.0,
        "{name}"
    );
    assert_eq!(
        value(
            &text,
            &format!("matrixinfer_runtime_filter_enabled{{filter=\"{wasm_name}\"}}")
        ),
        0.0
    );
    assert!(
        sidecar
            .log()
            .contains("filter switched off after consecutive failures"),
        "{}",
        sidecar.log()
    );
    assert_eq!(get(sidecar.addr, "/health").status, 200);
}

#[test]
fn hostile_infinite_loop_hits_the_deadline() {
    contained("hostile-loop", "deadline");
}

#[test]
fn hostile_memory_bomb_hits_the_cap() {
    contained("hostile-memory", "memory");
}

#[test]
fn hostile_trap_is_contained() {
    contained("hostile-trap", "trap");
}

#[test]
fn hostile_garbage_output_is_refused() {
    contained("hostile-garbage", "invalid_output");
}

#[test]
fn hostile_foreign_family_is_refused() {
    contained("hostile-outsider", "foreign_family");
}

#[test]
fn wrong_abi_version_and_missing_files_stop_the_start() {
    let engine = Engine::flavor("vllm-v1").size("50k").start();
    let url = format!("http://{}", engine.addr);
    for (path, message) in [
        (
            filter("hostile-abi"),
            "built for filter ABI version 3; this runtime speaks versions 1 to 2",
        ),
        ("/no/such/filter.wasm".to_owned(), "cannot read"),
    ] {
        let output = Command::new(BIN)
            .args(vllm_sidecar_args(&[
                "-P", "0", "-B", &url, "--filter", &path,
            ]))
            .output_tied();
        assert_eq!(output.status.code(), Some(1), "{path}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{path}: {stderr}");
    }
    let output = Command::new(BIN)
        .args(vllm_sidecar_args(&[
            "-P",
            "0",
            "-B",
            &url,
            "--filter",
            &filter("add-labels"),
            "--filter-config",
            "{not json",
        ]))
        .output_tied();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("refused its config"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn filters_from_the_environment() {
    let engine = Engine::flavor("vllm-v1").size("50k").start();
    let spec = serde_json::json!([{ "path": filter("add-labels"), "config": { "labels": { "from_env": "1" }, "select": ["vllm:num_requests_waiting"] } }]);
    let sidecar = Sidecar::new("vllm", engine.addr)
        .env("MATRIXINFER_FILTERS", &spec.to_string())
        .start();
    let text = metrics_text(&sidecar);
    assert!(
        series_of(&text, "vllm:num_requests_waiting")
            .iter()
            .all(|l| l.contains("from_env=\"1\""))
    );
}

/// `filter compile` makes a module that loads without the compiler and
/// serves exactly what its `.wasm` does; a precompiled module made by
/// another wasmtime version stops the start, naming the file; files that
/// are not modules are refused by the command.
#[test]
fn precompiled_filters_serve_the_same_and_foreign_ones_are_refused() {
    let dir = temp_dir("precompiled");
    let cwasm = dir.join("add_labels.cwasm");
    let compiled = Command::new(BIN)
        .args(["filter", "compile", &filter("add-labels"), "-o"])
        .arg(&cwasm)
        .output_tied();
    assert!(
        compiled.status.success(),
        "{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let config = r#"{"labels":{"pool":"a"},"select":["vllm:num_requests_waiting"]}"#;
    let engine = Engine::flavor("vllm-v1").size("50k").start();
    let serve = |path: &str| {
        Sidecar::new("vllm", engine.addr)
            .arg("--filter")
            .arg(path)
            .arg("--filter-config")
            .arg(config)
            .start()
    };
    let from_wasm = serve(&filter("add-labels"));
    let from_cwasm = serve(cwasm.to_str().unwrap());
    assert!(
        from_cwasm.log().contains("code=\"precompiled\""),
        "{}",
        from_cwasm.log()
    );
    assert!(from_wasm.log().contains("code=\"compiled\""));
    let series = |sidecar: &Proc| {
        let text = metrics_text(sidecar);
        let mut keys: Vec<String> = text.lines().filter_map(series_key).collect();
        keys.sort();
        keys
    };
    let (a, b) = (series(&from_wasm), series(&from_cwasm));
    assert_eq!(a, b);
    assert!(
        a.iter()
            .any(|k| k.starts_with("vllm:num_requests_waiting{") && k.contains("pool=\"a\"")),
        "the filter ran"
    );

    // The same module, as another wasmtime version would have written it.
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"wasmtime\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    // Its engine section opens with the major version, length-prefixed.
    let major = version.split('.').next().unwrap();
    let mut needle = vec![major.len() as u8];
    needle.extend_from_slice(major.as_bytes());
    let mut bytes = std::fs::read(&cwasm).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("wasmtime {major} is named in its precompiled module"));
    let last = at + needle.len() - 1;
    bytes[last] = if bytes[last] == b'0' {
        b'9'
    } else {
        bytes[last] - 1
    };
    let foreign = dir.join("foreign.cwasm");
    std::fs::write(&foreign, bytes).unwrap();
    let url = format!("http://{}", engine.addr);
    let refused = Command::new(BIN)
        .args(vllm_sidecar_args(&["-P", "0", "-B", &url, "--filter"]))
        .arg(&foreign)
        .args(["--filter-config", config])
        .output_tied();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("filter {}", foreign.display()))
            && stderr.contains("another wasmtime version"),
        "{stderr}"
    );

    for (input, message) in [
        (dir.join("missing.wasm"), "cannot read"),
        (foreign.clone(), "is not a WebAssembly module"),
    ] {
        let output = Command::new(BIN)
            .args(["filter", "compile"])
            .arg(&input)
            .arg("-o")
            .arg(dir.join("out.cwasm"))
            .output_tied();
        assert_eq!(output.status.code(), Some(1), "{}", input.display());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{stderr}");
    }
    assert!(!dir.join("out.cwasm").exists());
}
