//! Filter ABI versions, with raw modules (text format, compiled with `wat`)
//! rather than the SDK's: a version 2 module's "unchanged" answer serves the
//! families as the host gave them, even when the module scribbled over its
//! own copy, and hands them on to the next filter; the same answer from a
//! version 1 module is the error it always was.

use crate::filter_containment::{Module, errors, sidecar_with, valid_scrape};
use crate::util::*;

/// Overwrites its copy of the input with `#`, then answers "unchanged".
fn scribbling_unchanged(selectors: &str, abi: i32) -> Module {
    Module::echo(selectors).with(
        abi,
        "(memory.fill (local.get $ptr) (i32.const 35) (local.get $len)) (i64.const -1)",
    )
}

/// An engine serving one fixed payload, so that two scrapes can be
/// compared line for line.
fn fixed_engine() -> Proc {
    let engine = Engine::flavor("vllm-v1").size("120k").start();
    let snapshot = get(engine.addr, "/metrics").body;
    Engine::file(&temp_file("fixed.prom", &snapshot)).start()
}

/// The scrape's lines but the runtime's own, sorted.
fn engine_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            let bare = l
                .strip_prefix("# HELP ")
                .or_else(|| l.strip_prefix("# TYPE "))
                .unwrap_or(l);
            !bare.starts_with("matrixinfer_runtime_")
        })
        .collect();
    lines.sort_unstable();
    lines
}

#[test]
fn an_unchanged_answer_serves_the_families_the_host_kept() {
    let engine = fixed_engine();
    let plain = valid_scrape(&Sidecar::new("vllm", engine.addr).start());
    let path = scribbling_unchanged("*", 2).file("unchanged-v2");
    let sidecar = sidecar_with(&engine, &[&path], &[]);
    for _ in 0..3 {
        let text = valid_scrape(&sidecar);
        assert_eq!(engine_lines(&text), engine_lines(&plain));
        assert!(!text.contains("###"), "the guest's scribbles were served");
    }
    for reason in ["abi", "output_too_large", "invalid_output", "trap"] {
        assert_eq!(errors(&sidecar, "unchanged-v2", reason), 0.0, "{reason}");
    }
    let runs = metric(
        &sidecar,
        "matrixinfer_runtime_filter_runs_total{filter=\"unchanged-v2\"}",
    );
    assert!(runs >= 3.0, "{runs}");
}

#[test]
fn under_version_1_the_same_answer_is_an_error() {
    let engine = fixed_engine();
    let waiting = "vllm:num_requests_waiting";
    let plain = valid_scrape(&Sidecar::new("vllm", engine.addr).start());
    let path = scribbling_unchanged(waiting, 1).file("unchanged-v1");
    let sidecar = sidecar_with(&engine, &[&path], &[]);
    for _ in 0..3 {
        // Served unfiltered (the default policy), from the host's copy.
        let text = valid_scrape(&sidecar);
        assert_eq!(family_lines(&text, waiting), family_lines(&plain, waiting));
    }
    // Three scrapes, and the one that reads the counter.
    assert_eq!(errors(&sidecar, "unchanged-v1", "output_too_large"), 4.0);
}

#[test]
fn unchanged_families_go_on_to_the_next_filter() {
    let engine = fixed_engine();
    let plain = valid_scrape(&Sidecar::new("vllm", engine.addr).start());
    let first = scribbling_unchanged("vllm:*", 2).file("unchanged-first");
    let sidecar = Sidecar::new("vllm", engine.addr)
        .arg("--filter")
        .arg(first.to_str().unwrap())
        .arg("--filter-config")
        .arg("")
        .arg("--filter")
        .arg(&crate::filters::filter("add-labels"))
        .arg("--filter-config")
        .arg(r#"{"labels": {"pod": "pod-7"}, "select": ["vllm:*"]}"#)
        .start();
    let samples = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("vllm:"))
            .map(|l| series_key(l).unwrap())
            .collect()
    };
    let before = samples(&plain);
    assert!(before.len() > 100, "{}", before.len());
    for _ in 0..2 {
        let after = samples(&valid_scrape(&sidecar));
        assert_eq!(after.len(), before.len());
        assert!(
            after.iter().all(|s| s.contains("pod=\"pod-7\"")),
            "{after:?}"
        );
    }
    assert_eq!(errors(&sidecar, "unchanged-first", "abi"), 0.0);
}
