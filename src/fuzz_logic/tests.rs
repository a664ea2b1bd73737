//! The properties run as proptests and on the fuzz targets' corpus and
//! regressions.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{Map, Value, json};

/// Strings a hostile or careless client sends.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "s3://models/llama",
            "obs://b/p",
            "pvc://vol/models",
            "hf://org/model",
            "org/model",
            "s3://",
            "/models/out",
            "/models/../etc",
            "../etc/passwd",
            "relative/dir",
            "/tmp/a\0b",
            "",
            "   ",
            "{\"secret_key\":\"sk-0123456789abcdef\"}",
            "{\"hf_token\":",
            "ünïcødé/€",
        ])
        .prop_map(str::to_owned),
        ".{0,24}",
        "[/a-z.]{0,300}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        nasty_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "source",
        "output_dir",
        "config",
        "max_workers",
        "async_download",
        "lora_name",
        "secret_key",
        "access_key",
        "session_token",
        "hf_token",
        "endpoint",
        "region",
        "cleanup",
        "x",
    ])
    .prop_map(str::to_owned)
}

/// A request object: the real fields, each present or not, of any
/// type; `config` sometimes a JSON string, as clients send it.
fn request_body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((field_name(), json_value()), 0..8),
        any::<bool>(),
    )
        .prop_map(|(fields, config_as_string)| {
            let mut map: Map<String, Value> = fields.into_iter().collect();
            if config_as_string && let Some(config) = map.get_mut("config") {
                *config = Value::String(config.to_string());
            }
            serde_json::to_vec(&Value::Object(map)).unwrap()
        })
}

fn listing() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        nasty_string(),
        Just("p/../../etc/cron.d/x".to_owned()),
        Just("p//x".to_owned()),
        Just("p/./x".to_owned()),
    ];
    (
        0u8..16,
        prop::collection::vec((key, any::<u32>()), 0..6),
        any::<bool>(),
    )
        .prop_map(|(prefix, objects, truncated)| {
            let mut xml = format!(
                "<ListBucketResult><IsTruncated>{truncated}</IsTruncated>"
            );
            for (key, size) in objects {
                let key = key.replace('&', "&amp;").replace('<', "&lt;");
                xml.push_str(&format!(
                    "<Contents><Key>{key}</Key><Size>{size}</Size><ETag>\"d41d8cd98f00b204e9800998ecf8427e\"</ETag></Contents>"
                ));
            }
            xml.push_str("</ListBucketResult>");
            let mut data = vec![prefix];
            data.extend_from_slice(&b"p/models/llama/"[..usize::from(prefix).min(15)]);
            data.extend_from_slice(xml.as_bytes());
            data
        })
}

fn msgpack() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(rmpv::Value::Nil),
        any::<i64>().prop_map(rmpv::Value::from),
        any::<u64>().prop_map(rmpv::Value::from),
        any::<f64>().prop_map(rmpv::Value::from),
        prop::sample::select(vec![
            "BlockStored",
            "BlockRemoved",
            "AllBlocksCleared",
            "ts",
            "events",
            "x"
        ])
        .prop_map(rmpv::Value::from),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(rmpv::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(rmpv::Value::Array),
            prop::collection::vec((inner.clone(), inner), 0..4).prop_map(rmpv::Value::Map),
        ]
    })
    .prop_map(|value| {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &value).unwrap();
        out
    })
}

/// Lines near the boundary of what Prometheus accepts: pieces of good
/// and bad exposition, glued in any order, with or without newlines.
pub fn filter_output_text() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop::sample::select(vec![
        "vllm:num_requests_waiting{model_name=\"m\"} 4\n",
        "# TYPE vllm:num_requests_waiting gauge\n",
        "# HELP vllm:num_requests_waiting Waiting.\n",
        "vllm:num_requests_waiting 1\n",
        "vllm:generation_tokens_total{model_name=\"m\"} 9\n",
        "# TYPE vllm:e2e_request_latency_seconds histogram\n",
        "vllm:e2e_request_latency_seconds_bucket{le=\"+Inf\",model_name=\"m\"} 2\n",
        "vllm:e2e_request_latency_seconds_bucket{le=\"x\"} 2\n",
        "vllm:e2e_request_latency_seconds_count 2\n",
        "vllm:e2e_request_latency_seconds 2\n",
        "lat_count 3\n",
        "# TYPE lat gauge\n",
        "process_open_fds 1\n",
        "matrixinfer_runtime_filter_enabled{filter=\"f\"} 1\n",
        "# TYPE matrixinfer_runtime_up gauge\n",
        "new_family{a=\"b\"} 1 1712345678000\n",
        "# TYPE new_family counter\n",
        "# TYPE derived summary\n",
        "derived_sum 1\n",
        "derived{quantile=\"0.5\"} 1\n",
        "x 1",
        "x 1# HELP y z\n",
        "x{a=\"unterminated} 1\n",
        "x{a=\"\\q\"} 1\n",
        "x{a=\"\u{e9}\"} NaN\n",
        "x{__name__=\"y\"} 1\n",
        "x{a=\"1\",a=\"2\"} 1\n",
        "x 1 -1\n",
        "x 0x1p3\n",
        "#HELP x y\n",
        "# TYPE x info\n",
        "# EOF\n",
        "\n",
        "   \n",
        "# just a comment\n",
        "\u{0}\n",
    ]);
    (
        prop::collection::vec(piece, 0..12),
        prop::collection::vec(any::<u8>(), 0..3),
    )
        .prop_map(|(pieces, noise)| {
            let mut text = pieces.concat().into_bytes();
            // Now and then a raw byte where it hurts most.
            if let [at, byte, ..] = noise[..] {
                let at = usize::from(at) % (text.len() + 1);
                text.insert(at, byte);
            }
            text
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn filter_outputs(text in filter_output_text()) {
        super::filter_output(&text);
    }

    #[test]
    fn filter_outputs_as_raw_bytes(data in prop::collection::vec(any::<u8>(), 0..96)) {
        super::filter_output(&data);
    }

    #[test]
    fn json_bodies(body in request_body()) {
        super::json_body(&body);
    }

    #[test]
    fn json_bodies_as_raw_bytes(body in prop::collection::vec(any::<u8>(), 0..64)) {
        super::json_body(&body);
    }

    #[test]
    fn s3_listings(data in listing()) {
        super::s3_listing(&data);
    }

    #[test]
    fn s3_listings_as_raw_bytes(data in prop::collection::vec(any::<u8>(), 0..128)) {
        super::s3_listing(&data);
    }

    #[test]
    fn kv_event_payloads(data in msgpack()) {
        super::kv_events(&data);
    }

    #[test]
    fn kv_event_payloads_as_raw_bytes(data in prop::collection::vec(any::<u8>(), 0..128)) {
        super::kv_events(&data);
    }
}

/// What is served for `output`, checked by promtool (Prometheus' own
/// `expfmt` parser, independent of ours): a parse error fails.
fn promtool_accepts(output: &[u8]) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let served = super::filter_output(output);
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    child.stdin.take().unwrap().write_all(&served).unwrap();
    let result = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&result.stderr);
    // Exit 3 is lint advice (names with ':', counters without _total).
    assert!(
        matches!(result.status.code(), Some(0 | 3)) && !report.contains("error while linting"),
        "promtool rejected what was served for {:?}:\n{report}\n{}",
        String::from_utf8_lossy(output),
        String::from_utf8_lossy(&served)
    );
}

/// Every input of the `filter_output` fuzz target's corpus (the issue's
/// cases, and what fuzzing kept), and a fixed sample of the proptest
/// strategy's texts: promtool accepts what is served for each.
#[test]
fn promtool_accepts_what_is_served_at_the_filter_boundary() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/filter_output");
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .expect("the corpus is in the repository")
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    assert!(inputs.len() >= 12, "{} corpus files", inputs.len());
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = filter_output_text();
    for _ in 0..100 {
        inputs.push(strategy.new_tree(&mut runner).unwrap().current());
    }
    // promtool's start-up is most of the time: a few at once.
    let chunk = inputs.len().div_ceil(4);
    std::thread::scope(|scope| {
        for part in inputs.chunks(chunk) {
            scope.spawn(move || part.iter().for_each(|input| promtool_accepts(input)));
        }
    });
}

#[test]
fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    super::json_body(deep.as_bytes());
    let deep = format!(
        "{{\"source\":\"s3://b/p\",\"output_dir\":\"/o\",\"config\":{}{}}}",
        "{\"a\":".repeat(50_000),
        "}".repeat(50_000)
    );
    super::json_body(deep.as_bytes());
}

/// Inputs the fuzz targets once failed on (`fuzz/regressions/`).
#[test]
fn regressions() {
    // quick-xml 0.37 reached an `unreachable!()` on this listing.
    super::s3_listing(include_bytes!(
        "../../fuzz/regressions/s3_listing-two-text-events"
    ));
    // A secret's value copied into `source`, which answers echo: the
    // property must not count the echo of the caller's own field.
    super::json_body(include_bytes!(
        "../../fuzz/regressions/json_body-secret-copied-into-source"
    ));
    // A secret that is a run of words of the message itself.
    super::json_body(include_bytes!(
        "../../fuzz/regressions/json_body-secret-is-a-word-of-the-message"
    ));
}

#[test]
fn a_listed_key_outside_the_prefix_or_the_directory_is_dropped() {
    let xml = "<ListBucketResult><Contents><Key>p/../../x</Key><Size>1</Size></Contents><Contents><Key>q</Key><Size>1</Size></Contents></ListBucketResult>";
    let mut data = vec![2u8];
    data.extend_from_slice(b"p/");
    data.extend_from_slice(xml.as_bytes());
    super::s3_listing(&data);
}

#[test]
fn properties_hold_on_samples() {
    let samples: [&[u8]; 7] = [
        b"\x05\x10# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 1\n",
        b"\x00\x01# EOF\n",
        b"\x03\x02a 1\n# EOF",
        b"\xff\xff\xfe\xfd",
        b"",
        b"\x02\x00vllm:num_requests_waiting{a=\"\n",
        // Found by fuzzing: two terminators; the last one goes last.
        b"\x20\x40a 1\n# EOF\n# EOF\n",
    ];
    for sample in samples {
        super::relabel(sample);
    }
    for raw in [
        &b"GET / HTTP/1.1\r\n\r\nrest"[..],
        b"GET",
        b"\r\n\r\n",
        b"POST /x HTTP/1.0\r\nContent-Length: 3\r\n\r\n",
    ] {
        super::request(raw);
    }
}
