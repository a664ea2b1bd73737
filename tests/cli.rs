//! The command line of DESIGN.md section 1: flags, exit codes, messages.

use std::process::Command;

use crate::util::*;

fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(BIN);
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().unwrap();
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

#[test]
fn help_lists_every_flag() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
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
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}
