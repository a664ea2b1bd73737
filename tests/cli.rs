//! The command line of DESIGN.md section 1: flags, exit codes, messages.

use std::process::Command;

use crate::util::*;

fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(BIN);
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output_tied();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn missing_required_flag_is_a_usage_error() {
    let (code, stderr) = run(&["-E", "vllm", "-I", "pod"], &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--model"), "{stderr}");
    assert!(stderr.contains("Usage:"), "{stderr}");
    let (code, _) = run(&[], &[]);
    assert_eq!(code, Some(2));
}

#[test]
fn unsupported_engine_exits_one_with_the_known_message() {
    let (code, stderr) = run(&["-E", "tgi", "-I", "pod", "-N", "m"], &[]);
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr.trim(),
        "Unsupported engine: tgi. Supported engine: vllm, sglang"
    );
}

#[test]
fn engine_names_are_case_insensitive() {
    for engine in ["VLLM", "vllmDisaggregated", "SGLang"] {
        let sidecar = Proc::start(
            &[
                "-E",
                engine,
                "-I",
                "p",
                "-N",
                "m",
                "-H",
                "127.0.0.1",
                "-P",
                "0",
            ],
            &[],
        );
        assert_eq!(get(sidecar.addr, "/health").status, 200);
    }
}

#[test]
fn bad_values_are_usage_errors() {
    let (code, stderr) = run(&vllm_sidecar_args(&[]), &[("REQUEST_TIMEOUT", "soon")]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("REQUEST_TIMEOUT") || stderr.contains("request-timeout"),
        "{stderr}"
    );
    let (code, stderr) = run(&vllm_sidecar_args(&["-B", "https://localhost:8000"]), &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("https"), "{stderr}");
    let (code, _) = run(&vllm_sidecar_args(&["--workers", "0"]), &[]);
    assert_eq!(code, Some(2));
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, stderr) = run(&vllm_sidecar_args(&["-H", "127.0.0.1", "-P", &port]), &[]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("cannot listen on 127.0.0.1:"), "{stderr}");
}

/// The listen host is looked up at start, not while parsing, and a name
/// that does not resolve is still a usage error.
#[test]
fn unresolvable_listen_host_is_a_usage_error() {
    let (code, stderr) = run(
        &vllm_sidecar_args(&["-H", "no-such-host.invalid", "-P", "0"]),
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot resolve"), "{stderr}");
}

/// A standard prefix that cannot start a metric name is refused at start.
#[test]
fn bad_metric_prefix_is_a_usage_error() {
    for bad in ["9x", "kthena-x", "matrixinfer_runtime", "vllm"] {
        let (code, stderr) = run(&vllm_sidecar_args(&["--metric-prefix", bad]), &[]);
        assert_eq!(code, Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--metric-prefix"), "{bad}: {stderr}");
    }
}

#[test]
fn help_lists_every_flag() {
    let output = Command::new(BIN).arg("--help").output_tied();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "-E, --engine",
        "-H, --host",
        "-P, --port",
        "-B, --engine-base-url",
        "-M, --engine-metrics-path",
        "-I, --pod",
        "-N, --model",
        "--request-timeout",
        "REQUEST_TIMEOUT",
        "--workers",
        "--io-driver",
        "--metric-prefix",
        "MATRIXINFER_METRIC_PREFIX",
        "--max-concurrent-jobs",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

/// No Docker here, so the Dockerfile's steps that depend on the tree are
/// run as they are written: the dependency stage's stub crate must parse
/// (every target the manifest names taken out or stubbed), and the
/// filters it ships must be ones `wasm-filters/` builds.
#[test]
fn dockerfile_steps_match_the_tree() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    // Backslash-continued lines joined into one.
    let joined = dockerfile.replace("\\\n", " ");
    let stub = joined
        .lines()
        .find(|line| line.starts_with("RUN mkdir -p src"))
        .expect("the dependency stage");
    let stub = stub
        .trim_start_matches("RUN ")
        .split("&& cargo build")
        .next()
        .unwrap();
    let dir = temp_dir("dockerfile-stub");
    // What the stage copies in before the stub: the manifest, the lock and
    // the workspace's own crates.
    assert!(
        joined.contains("COPY Cargo.toml Cargo.lock ./\nCOPY crates crates\nRUN mkdir -p src"),
        "the dependency stage copies the manifest, the lock and crates/"
    );
    for file in ["Cargo.toml", "Cargo.lock"] {
        std::fs::copy(root.join(file), dir.join(file)).unwrap();
    }
    let copied = Command::new("cp")
        .arg("-r")
        .arg(root.join("crates"))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(copied.success());
    let run = Command::new("sh")
        .args(["-ec", stub])
        .current_dir(&dir)
        .output_tied();
    assert!(run.status.success(), "{stub}: {run:?}");
    let metadata = Command::new("cargo")
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(&dir)
        .output_tied();
    assert!(
        metadata.status.success(),
        "the stub crate does not parse: {}",
        String::from_utf8_lossy(&metadata.stderr)
    );

    let shipped: Vec<&str> = joined
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("wasm-filters/target/wasm32-unknown-unknown/release/"))
        .collect();
    assert!(!shipped.is_empty());
    let built = std::env::var("MATRIXINFER_FILTERS_DIR")
        .expect("MATRIXINFER_FILTERS_DIR (scripts/test sets it)");
    for filter in shipped {
        assert!(
            std::path::Path::new(&built).join(filter).exists(),
            "the Dockerfile ships {filter}, which wasm-filters/ does not build"
        );
    }
}
