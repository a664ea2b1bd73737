use super::*;
use crate::prom::FamilySink;
use crate::prom::standard::{SGLANG, VLLM};
use crate::prom::testutil::{relabel_chunks, relabel_every_split};

mod sinks;

/// Relabels under every chunking and returns what was appended after the
/// original bytes, which must come through untouched.
fn appended(table: &'static [StandardName], input: &str) -> String {
    let out = relabel_every_split(table, input.as_bytes());
    let out = String::from_utf8(out).unwrap();
    let mut original = input.to_owned();
    if !original.is_empty() && !original.ends_with('\n') {
        original.push('\n');
    }
    assert!(out.starts_with(&original), "originals changed:\n{out}");
    out[original.len()..].to_owned()
}

#[test]
fn gauge_is_copied_with_its_metadata() {
    let input = "\
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 3.0
vllm:num_requests_waiting{engine=\"1\",model_name=\"m\"} 0.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 1.0
";
    assert_eq!(
        appended(VLLM, input),
        "\
# HELP matrixinfer:num_requests_waiting Number of requests waiting to be processed.
# TYPE matrixinfer:num_requests_waiting gauge
matrixinfer:num_requests_waiting{engine=\"0\",model_name=\"m\"} 3.0
matrixinfer:num_requests_waiting{engine=\"1\",model_name=\"m\"} 0.0
"
    );
}

#[test]
fn counter_declared_with_total() {
    // prometheus_client's classic text format; `_created` is its own family.
    let input = "\
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine=\"0\",model_name=\"m\"} 8.128902e+06
# HELP vllm:generation_tokens_created Number of generation tokens processed.
# TYPE vllm:generation_tokens_created gauge
vllm:generation_tokens_created{engine=\"0\",model_name=\"m\"} 1.7453e+09
";
    assert_eq!(
        appended(VLLM, input),
        "\
# HELP matrixinfer:generation_tokens_total Number of generation tokens processed.
# TYPE matrixinfer:generation_tokens_total counter
matrixinfer:generation_tokens_total{engine=\"0\",model_name=\"m\"} 8.128902e+06
"
    );
}

#[test]
fn counter_declared_without_total() {
    // OpenMetrics-style TYPE line: the Python sidecar missed these.
    let input = "\
# HELP sglang:generation_tokens Number of generation tokens processed.
# TYPE sglang:generation_tokens counter
sglang:generation_tokens_total{model_name=\"m\"} 42.0
sglang:generation_tokens_created{model_name=\"m\"} 1.7e+09
";
    assert_eq!(
        appended(SGLANG, input),
        "\
# HELP matrixinfer:generation_tokens Number of generation tokens processed.
# TYPE matrixinfer:generation_tokens counter
matrixinfer:generation_tokens_total{model_name=\"m\"} 42.0
matrixinfer:generation_tokens_created{model_name=\"m\"} 1.7e+09
"
    );
}

const TTFT: &str = "\
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.001\",model_name=\"m\"} 0.0
vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"m\"} 5.0
vllm:time_to_first_token_seconds_count{engine=\"0\",model_name=\"m\"} 5.0
vllm:time_to_first_token_seconds_sum{engine=\"0\",model_name=\"m\"} 0.75
# HELP vllm:time_to_first_token_seconds_created Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds_created gauge
vllm:time_to_first_token_seconds_created{engine=\"0\",model_name=\"m\"} 1.7453e+09
";

#[test]
fn histogram_keeps_every_sample() {
    assert_eq!(
        appended(VLLM, TTFT),
        "\
# HELP matrixinfer:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE matrixinfer:time_to_first_token_seconds histogram
matrixinfer:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.001\",model_name=\"m\"} 0.0
matrixinfer:time_to_first_token_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"m\"} 5.0
matrixinfer:time_to_first_token_seconds_count{engine=\"0\",model_name=\"m\"} 5.0
matrixinfer:time_to_first_token_seconds_sum{engine=\"0\",model_name=\"m\"} 0.75
"
    );
}

fn histogram(name: &str, value: &str) -> String {
    format!(
        "# HELP {name} {name} help.\n# TYPE {name} histogram\n\
         {name}_bucket{{le=\"+Inf\",model_name=\"m\"}} {value}\n\
         {name}_count{{model_name=\"m\"}} {value}\n\
         {name}_sum{{model_name=\"m\"}} 1.5\n"
    )
}

fn tpot_copy(source_value: &str) -> String {
    let name = "matrixinfer:time_per_output_token_seconds";
    format!(
        "# TYPE {name} histogram\n\
         {name}_bucket{{le=\"+Inf\",model_name=\"m\"}} {source_value}\n\
         {name}_count{{model_name=\"m\"}} {source_value}\n\
         {name}_sum{{model_name=\"m\"}} 1.5\n"
    )
}

/// The copy's HELP is the source's; only its family name changes.
fn with_help(copy: &str, source: &str) -> String {
    let name = "matrixinfer:time_per_output_token_seconds";
    format!("# HELP {name} {source} help.\n{copy}")
}

#[test]
fn tpot_falls_back_to_inter_token_latency() {
    let input = histogram("vllm:inter_token_latency_seconds", "7.0");
    assert_eq!(
        appended(VLLM, &input),
        with_help(&tpot_copy("7.0"), "vllm:inter_token_latency_seconds")
    );
}

#[test]
fn preferred_source_wins_when_it_comes_first() {
    let input = histogram("vllm:time_per_output_token_seconds", "1.0")
        + &histogram("vllm:inter_token_latency_seconds", "2.0");
    assert_eq!(
        appended(VLLM, &input),
        with_help(&tpot_copy("1.0"), "vllm:time_per_output_token_seconds")
    );
}

#[test]
fn preferred_source_wins_when_it_comes_later() {
    // vLLM 0.10 emits both; the fallback's copy must be discarded.
    let input = histogram("vllm:inter_token_latency_seconds", "2.0")
        + &histogram("vllm:time_per_output_token_seconds", "1.0");
    assert_eq!(
        appended(VLLM, &input),
        with_help(&tpot_copy("1.0"), "vllm:time_per_output_token_seconds")
    );
}

#[test]
fn sglang_prefers_inter_token_latency() {
    let input = histogram("sglang:time_per_output_token_seconds", "1.0")
        + &histogram("sglang:inter_token_latency_seconds", "2.0");
    assert_eq!(
        appended(SGLANG, &input),
        with_help(&tpot_copy("2.0"), "sglang:inter_token_latency_seconds")
    );
    let old = histogram("sglang:time_per_output_token_seconds", "1.0");
    assert_eq!(
        appended(SGLANG, &old),
        with_help(&tpot_copy("1.0"), "sglang:time_per_output_token_seconds")
    );
}

#[test]
fn split_family_is_declared_once() {
    // Multiprocess exposition: `_sum` lines first, and a family that shows
    // up again further down.
    let input = "\
# HELP vllm:e2e_request_latency_seconds E2E.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_sum{engine=\"0\",model_name=\"m\"} 3.0
vllm:e2e_request_latency_seconds_sum{engine=\"1\",model_name=\"m\"} 4.0
vllm:e2e_request_latency_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"m\"} 1.0
vllm:e2e_request_latency_seconds_count{engine=\"0\",model_name=\"m\"} 1.0
# HELP other Other.
# TYPE other gauge
other 1.0
# HELP vllm:e2e_request_latency_seconds E2E.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine=\"1\",le=\"+Inf\",model_name=\"m\"} 2.0
vllm:e2e_request_latency_seconds_count{engine=\"1\",model_name=\"m\"} 2.0
vllm:e2e_request_latency_seconds_sum{engine=\"0\",model_name=\"m\"} 3.0
";
    assert_eq!(
        appended(VLLM, input),
        "\
# HELP matrixinfer:e2e_request_latency_seconds E2E.
# TYPE matrixinfer:e2e_request_latency_seconds histogram
matrixinfer:e2e_request_latency_seconds_sum{engine=\"0\",model_name=\"m\"} 3.0
matrixinfer:e2e_request_latency_seconds_sum{engine=\"1\",model_name=\"m\"} 4.0
matrixinfer:e2e_request_latency_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"m\"} 1.0
matrixinfer:e2e_request_latency_seconds_count{engine=\"0\",model_name=\"m\"} 1.0
matrixinfer:e2e_request_latency_seconds_bucket{engine=\"1\",le=\"+Inf\",model_name=\"m\"} 2.0
matrixinfer:e2e_request_latency_seconds_count{engine=\"1\",model_name=\"m\"} 2.0
"
    );
}

#[test]
fn samples_without_metadata() {
    let input = "vllm:num_requests_waiting{model_name=\"m\"} 2\nvllm:num_requests_running 1\n";
    assert_eq!(
        appended(VLLM, input),
        "matrixinfer:num_requests_waiting{model_name=\"m\"} 2\n"
    );
}

#[test]
fn tricky_label_values_and_help_text_are_copied_exactly() {
    let input = "\
# HELP vllm:num_requests_waiting Waiting: \"queued\" requests.   
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name=\"a\\\"b\\\\c\\nd}e\",x=\"\"} NaN
vllm:num_requests_waiting{model_name=\"z\"} +Inf 1712345678000
";
    assert_eq!(
        appended(VLLM, input),
        "\
# HELP matrixinfer:num_requests_waiting Waiting: \"queued\" requests.   
# TYPE matrixinfer:num_requests_waiting gauge
matrixinfer:num_requests_waiting{model_name=\"a\\\"b\\\\c\\nd}e\",x=\"\"} NaN
matrixinfer:num_requests_waiting{model_name=\"z\"} +Inf 1712345678000
"
    );
}

#[test]
fn malformed_lines_pass_and_do_not_end_the_family() {
    let input = "\
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name=\"a\"} 1
\u{1}garbage \u{7f}
{\"json\": true}
# a comment

vllm:num_requests_waiting{model_name=\"b\"} 2
";
    assert_eq!(
        appended(VLLM, input),
        "\
# TYPE matrixinfer:num_requests_waiting gauge
matrixinfer:num_requests_waiting{model_name=\"a\"} 1
matrixinfer:num_requests_waiting{model_name=\"b\"} 2
"
    );
}

#[test]
fn duplicate_series_are_copied_once() {
    let input = "\
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name=\"a\"} 1
vllm:num_requests_waiting{model_name=\"a\"} 2
";
    assert_eq!(
        appended(VLLM, input),
        "# TYPE matrixinfer:num_requests_waiting gauge\nmatrixinfer:num_requests_waiting{model_name=\"a\"} 1\n"
    );
}

#[test]
fn last_line_without_newline() {
    let input = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 1";
    assert_eq!(
        appended(VLLM, input),
        "# TYPE matrixinfer:num_requests_waiting gauge\nmatrixinfer:num_requests_waiting 1\n"
    );
}

#[test]
fn eof_stays_last() {
    let input = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 1\n# EOF\n";
    let out = String::from_utf8(relabel_every_split(VLLM, input.as_bytes())).unwrap();
    assert_eq!(
        out,
        "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 1\n\
         # TYPE matrixinfer:num_requests_waiting gauge\nmatrixinfer:num_requests_waiting 1\n# EOF\n"
    );
    let mut relabeler = Relabeler::new(VLLM);
    let mut out = Vec::new();
    relabeler.feed(input.as_bytes(), &mut out);
    relabeler.finish(&mut out, |out| out.extend_from_slice(b"own 1\n"));
    assert!(out.ends_with(b"own 1\n# EOF\n"));
}

#[test]
fn lines_after_eof_keep_their_order() {
    let input = "a 1\n# EOF\nb 2\n";
    assert_eq!(appended(VLLM, input), "");
}

#[test]
fn unrelated_look_alikes_are_not_copied() {
    let input = "\
# TYPE vllm:iteration_tokens_total histogram
vllm:iteration_tokens_total_bucket{le=\"1.0\"} 1.0
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{reason=\"capacity\"} 1.0
# TYPE vllm:generation_tokens_created gauge
vllm:generation_tokens_created 1.0
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs 1.0
";
    assert_eq!(appended(VLLM, input), "");
}

#[test]
fn long_lines_in_copied_families_are_copied_whole() {
    let value = "x".repeat(200);
    let input = format!(
        "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{model_name=\"{value}\"}} 1\nz 1\n"
    );
    let want = format!(
        "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{model_name=\"{value}\"}} 1\nz 1\n\
         # TYPE matrixinfer:num_requests_waiting gauge\nmatrixinfer:num_requests_waiting{{model_name=\"{value}\"}} 1\n"
    );
    // Windows shorter than the sample line, longer than any name.
    for window in [48, 64, 1024] {
        for chunk in [1, 7, 50, 1000] {
            let out = relabel_chunks(VLLM, window, input.as_bytes().chunks(chunk));
            assert_eq!(
                String::from_utf8(out).unwrap(),
                want,
                "window {window} chunk {chunk}"
            );
        }
    }
}

#[test]
fn oversized_copies_are_dropped_not_truncated() {
    let mut input = String::from("# TYPE vllm:num_requests_waiting gauge\n");
    for i in 0..100 {
        input += &format!("vllm:num_requests_waiting{{i=\"{i}\"}} 1\n");
    }
    let mut relabeler = Relabeler::new(VLLM);
    relabeler.max_copy_bytes(1000);
    let mut out = Vec::new();
    relabeler.feed(input.as_bytes(), &mut out);
    relabeler.finish(&mut out, |_| {});
    assert_eq!(out, input.as_bytes());
    assert_eq!(relabeler.dropped_copies(), 1);
}

#[test]
fn reset_forgets_the_previous_scrape() {
    let mut relabeler = Relabeler::new(VLLM);
    let mut out = Vec::new();
    relabeler.feed(
        b"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 1\npartial",
        &mut out,
    );
    relabeler.reset();
    out.clear();
    relabeler.feed(b"a 1\n", &mut out);
    relabeler.finish(&mut out, |_| {});
    assert_eq!(out, b"a 1\n");
}

#[test]
fn every_input_survives_byte_for_byte() {
    use proptest::prelude::*;
    let line = prop_oneof![
        Just("# TYPE vllm:num_requests_waiting gauge\n".to_owned()),
        Just("# HELP vllm:inter_token_latency_seconds x\n".to_owned()),
        Just("# TYPE vllm:time_per_output_token_seconds histogram\n".to_owned()),
        Just("vllm:time_per_output_token_seconds_sum 1\n".to_owned()),
        Just("vllm:inter_token_latency_seconds_bucket{le=\"+Inf\"} 1\n".to_owned()),
        Just("vllm:num_requests_waiting{a=\"}\"} 1\n".to_owned()),
        Just("# EOF\n".to_owned()),
        "[ -~]{0,40}\n",
        "\\PC{0,20}",
    ];
    let config = ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    };
    proptest!(config, |(lines in proptest::collection::vec(line, 0..30), raw in proptest::collection::vec(any::<u8>(), 0..200), cut in 0usize..400, window in 1usize..64)| {
        let mut input = lines.concat().into_bytes();
        input.extend_from_slice(&raw);
        let cut = cut.min(input.len());
        let out = relabel_chunks(VLLM, window, [&input[..cut], &input[cut..]]);
        let has_eof = input.split(|&b| b == b'\n').any(|l| l == b"# EOF" || l == b"# EOF\r");
        if !has_eof {
            prop_assert!(out.starts_with(&input));
        }
        // Whatever the input, every original line is in the output, in order.
        let mut rest: &[u8] = &out;
        for line in input.split_inclusive(|&b| b == b'\n') {
            let at = memchr::memmem::find(rest, line.strip_suffix(b"\n").unwrap_or(line));
            prop_assert!(at.is_some(), "line {:?} lost", String::from_utf8_lossy(line));
            rest = &rest[at.unwrap() + line.len().min(rest.len() - at.unwrap())..];
        }
    });
}

/// Series and family names differ in a few trailing digits; FxHash, tried
/// first, collided on exactly these.
#[test]
fn name_hashes_do_not_collide_on_near_identical_names() {
    let mut seen = std::collections::HashMap::new();
    let bounds = ["0.1", "1.0", "100.0", "400.0", "1200.0", "2400.0", "+Inf"];
    for alias in 0..400 {
        let model = format!("meta-llama/Llama-3.1-8B-Instruct-alias-{alias}");
        let mut keys: Vec<String> = bounds
            .iter()
            .map(|le| format!("_bucket{{le=\"{le}\",model_name=\"{model}\"}}"))
            .collect();
        keys.push(format!("vllm:family_{alias}"));
        for key in keys {
            let hash = super::name_hash(key.as_bytes());
            if let Some(other) = seen.insert(hash, key.clone()) {
                panic!("{key} and {other} collide");
            }
        }
    }
}
