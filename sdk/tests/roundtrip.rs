//! Parsing then writing the runtime's captured engine payloads
//! (`../tests/data/*.prom`) gives them back byte for byte, with nothing
//! left out.
//!
//! `tricky-openmetrics.prom` holds a free comment, a blank line and `# EOF`,
//! which the writer does not keep; for it the check is against the file
//! minus those lines. `vllm-multiprocess-split.prom` holds a histogram split
//! in two, which the writer joins (the runtime refuses a split family).

use std::fs;
use std::path::Path;

use matrixinfer_filter::{parse, write};

fn roundtrip(text: &str) -> String {
    let families = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let mut out = String::new();
    let refusals = write(&families, &mut out);
    assert_eq!(refusals, [], "left out of {text}");
    for line in out.lines() {
        assert!(expo::check_line(line.as_bytes()).is_ok(), "{line}");
    }
    out
}

const SPLIT: &str = "vllm-multiprocess-split.prom";

/// `vllm-multiprocess-split.prom` as written back: the histogram's second
/// part (lines 13-15) joins its first (lines 1-7), without its own HELP
/// and TYPE, before the gauge that was between them (lines 8-10).
fn joined(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 15, "{SPLIT} changed");
    [&lines[..7], &lines[12..], &lines[7..10]]
        .concat()
        .into_iter()
        .flat_map(|l| [l, "\n"])
        .collect()
}

/// `text` without the lines the writer drops: blank lines and comments
/// other than HELP and TYPE.
fn kept_lines(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with('#') || l.starts_with("# HELP ") || l.starts_with("# TYPE "))
        .flat_map(|l| [l, "\n"])
        .collect()
}

#[test]
fn captured_payloads_roundtrip_byte_for_byte() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "prom") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        let mut expected = kept_lines(&text);
        let has_other_lines = expected != text;
        assert_eq!(
            has_other_lines,
            path.ends_with("tricky-openmetrics.prom"),
            "{}: only tricky-openmetrics.prom is expected to hold comments or blank lines",
            path.display()
        );
        if path.ends_with(SPLIT) {
            expected = joined(&text);
        }
        let out = roundtrip(&text);
        assert!(out == expected, "{} changed:\n{out}", path.display());
        assert_eq!(roundtrip(&out), out, "{}: not stable", path.display());
        checked += 1;
    }
    assert!(
        checked >= 7,
        "found only {checked} payloads in {}",
        dir.display()
    );
}

#[test]
fn multiprocess_split_stays_split() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/vllm-multiprocess-split.prom"
    );
    let families = parse(&fs::read_to_string(path).unwrap()).unwrap();
    let names: Vec<_> = families
        .iter()
        .map(|f| (f.name.as_str(), f.samples.len()))
        .collect();
    assert_eq!(
        names,
        [
            ("vllm:e2e_request_latency_seconds", 5),
            ("vllm:num_requests_waiting", 1),
            ("vllm:e2e_request_latency_seconds", 3),
        ]
    );
}

#[test]
fn multiprocess_split_is_written_as_one() {
    let text = fs::read_to_string(format!(
        "{}/../tests/data/{SPLIT}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let out = roundtrip(&text);
    assert!(
        out.starts_with(
            &text
                .lines()
                .take(7)
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        )
    );
    let families = parse(&out).unwrap();
    let names: Vec<_> = families
        .iter()
        .map(|f| (f.name.as_str(), f.samples.len()))
        .collect();
    assert_eq!(
        names,
        [
            ("vllm:e2e_request_latency_seconds", 8),
            ("vllm:num_requests_waiting", 1),
        ]
    );
}

#[test]
fn tricky_payload_parses_as_written() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/tricky-openmetrics.prom"
    );
    let families = parse(&fs::read_to_string(path).unwrap()).unwrap();
    let waiting = &families[0];
    assert_eq!(
        waiting.help.as_deref(),
        Some("Waiting: \"queued\" requests \\ with a backslash.   ")
    );
    assert_eq!(
        waiting.samples[0].label("model_name"),
        Some("we\"ird\\name\nhere")
    );
    assert_eq!(waiting.samples[0].label("lora"), Some(""));
    assert_eq!(
        waiting.samples[1].timestamp.as_deref(),
        Some("1712345678000")
    );
    let tokens = &families[1];
    assert_eq!(
        (tokens.name.as_str(), tokens.samples.len()),
        ("vllm:generation_tokens", 2)
    );
    assert_eq!(tokens.samples[0].value_f64(), Some(f64::INFINITY));
    assert_eq!(families.len(), 3);
}
