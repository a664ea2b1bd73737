//! The properties the fuzz targets check, kept in the library so that the
//! targets stay a few lines and the properties compile (and run in unit
//! tests) with everything else.

use serde_json::{Map, Value};

use crate::download::request::{DownloadRequest, Environment};
use crate::http::request::{Limits, parse_head};
use crate::kv_events::decode::{Event, decode_batch};
use crate::lora::LoadRequest;
use crate::prom::Relabeler;
use crate::prom::line::{Line, classify};
use crate::prom::standard::{SGLANG, VLLM};

/// Relabels arbitrary bytes, split where the first input byte says and
/// through a window the second one sets, and checks that nothing panics
/// and every original byte comes out first, in order (a trailing `# EOF`
/// excepted, which moves to the very end).
pub fn relabel(data: &[u8]) {
    let [split, window, input @ ..] = data else {
        return;
    };
    let split = usize::from(*split).min(input.len());
    // At least 8: a `# EOF` line must fit to be recognised.
    let window = (usize::from(*window) + 2) * 4;
    // Where the last line starts, and whether it is `# EOF`.
    let body = input.strip_suffix(b"\n").unwrap_or(input);
    let last_start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let ends_with_eof = classify(&body[last_start..]) == Line::Eof;
    for table in [VLLM, SGLANG] {
        let mut relabeler = Relabeler::with_window(table, window);
        let mut out = Vec::new();
        relabeler.feed(&input[..split], &mut out);
        relabeler.feed(&input[split..], &mut out);
        relabeler.finish(&mut out, |out| out.extend_from_slice(b"own 1\n"));
        if ends_with_eof {
            let mut eof = input[last_start..].to_vec();
            if eof.last() != Some(&b'\n') {
                eof.push(b'\n');
            }
            assert!(
                out.starts_with(&input[..last_start]),
                "originals before # EOF changed"
            );
            assert!(out[..out.len() - eof.len()].ends_with(b"own 1\n"));
            assert!(out.ends_with(&eof), "# EOF is not last");
        } else {
            assert!(out.starts_with(input), "originals changed");
            assert!(out.ends_with(b"own 1\n"));
        }
    }
}

/// The engine's side of the filter-boundary property: a small scrape of
/// real shape (a gauge, a counter, histograms, a `_created` family), whose
/// `vllm:` families go to the one filter.
pub const FILTER_SCRAPE: &[u8] = b"# HELP vllm:num_requests_waiting Requests waiting.\n\
# TYPE vllm:num_requests_waiting gauge\n\
vllm:num_requests_waiting{model_name=\"m\"} 3.0\n\
# HELP vllm:generation_tokens_total Generated tokens.\n\
# TYPE vllm:generation_tokens_total counter\n\
vllm:generation_tokens_total{model_name=\"m\"} 7.0\n\
# HELP vllm:e2e_request_latency_seconds Latency.\n\
# TYPE vllm:e2e_request_latency_seconds histogram\n\
vllm:e2e_request_latency_seconds_bucket{le=\"1.0\",model_name=\"m\"} 1.0\n\
vllm:e2e_request_latency_seconds_bucket{le=\"+Inf\",model_name=\"m\"} 2.0\n\
vllm:e2e_request_latency_seconds_count{model_name=\"m\"} 2.0\n\
vllm:e2e_request_latency_seconds_sum{model_name=\"m\"} 1.5\n\
# HELP vllm:e2e_request_latency_seconds_created Latency.\n\
# TYPE vllm:e2e_request_latency_seconds_created gauge\n\
vllm:e2e_request_latency_seconds_created{model_name=\"m\"} 1.7e+09\n\
# HELP process_open_fds Open fds.\n\
# TYPE process_open_fds gauge\n\
process_open_fds 12.0\n\
# HELP lat Not the filter's.\n\
# TYPE lat histogram\n\
lat_bucket{le=\"+Inf\"} 1.0\n\
lat_count 1.0\n\
lat_sum 0.5\n";

/// Serves `output` as a filter's answer over [`FILTER_SCRAPE`]: checked as
/// the filter chain checks it, the families served unfiltered when it is
/// refused, the runtime's own metrics after. Asserts that what is served
/// is valid exposition by the whole-scrape rules, and returns it (for
/// `promtool`, an independent parser, in the suite).
pub fn filter_output(output: &[u8]) -> Vec<u8> {
    use std::collections::HashMap;

    use crate::filter::validate::{Checker, Presence, Scope};
    use crate::prom::FamilySink;

    /// The routes of one filter selecting `vllm:*`.
    #[derive(Default)]
    struct ToFilter {
        served: Vec<u8>,
        input: Vec<u8>,
        current: bool,
        seen: HashMap<Vec<u8>, bool>,
    }
    impl FamilySink for ToFilter {
        fn family(&mut self, name: &[u8]) {
            self.current = name.starts_with(b"vllm:");
            self.seen.insert(name.to_vec(), self.current);
        }
        fn write(&mut self, bytes: &[u8]) -> bool {
            match self.current {
                true => self.input.extend_from_slice(bytes),
                false => self.served.extend_from_slice(bytes),
            }
            !self.current
        }
        fn output(&mut self) -> &mut Vec<u8> {
            &mut self.served
        }
    }
    struct Scrape<'r>(&'r ToFilter);
    impl Scope for Scrape<'_> {
        fn selects(&self, family: &[u8]) -> bool {
            family.starts_with(b"vllm:")
        }
        fn presence(&self, family: &[u8]) -> Presence {
            match self.0.seen.get(family) {
                None => Presence::New,
                Some(true) => Presence::Mine,
                Some(false) => Presence::Elsewhere,
            }
        }
    }
    struct Everything;
    impl Scope for Everything {
        fn selects(&self, _: &[u8]) -> bool {
            true
        }
        fn presence(&self, _: &[u8]) -> Presence {
            Presence::New
        }
        fn is_runtime(&self) -> bool {
            true
        }
    }

    let mut relabeler = Relabeler::new(VLLM);
    let mut routes = ToFilter::default();
    relabeler.feed(FILTER_SCRAPE, &mut routes);
    relabeler.finish_body(&mut routes);
    if routes.input.last().is_some_and(|&b| b != b'\n') {
        routes.input.push(b'\n');
    }
    let accepted = Checker::default()
        .check(output, &Scrape(&routes), |_, _| {})
        .is_ok();
    let (mut served, input) = (std::mem::take(&mut routes.served), routes.input);
    served.extend_from_slice(if accepted { output } else { &input });
    served.extend_from_slice(
        b"# HELP matrixinfer_runtime_up 1.\n# TYPE matrixinfer_runtime_up gauge\nmatrixinfer_runtime_up 1\n",
    );
    relabeler.close(&mut served);
    if let Err(violation) = Checker::default().check(&served, &Everything, |_, _| {}) {
        panic!(
            "served exposition is invalid ({violation}); the filter's output was {}:\n{}",
            if accepted { "accepted" } else { "refused" },
            String::from_utf8_lossy(&served)
        );
    }
    served
}

/// Parses arbitrary bytes as a request head: never panics, never claims
/// more bytes than it was given, and agrees with itself on any prefix.
pub fn request(data: &[u8]) {
    let limits = Limits {
        max_head: 4096,
        max_body: 1 << 20,
    };
    match parse_head(data, &limits) {
        Ok(Some((request, len))) => {
            assert!(len <= data.len());
            assert!(request.path.len() < data.len());
            // The same head with anything after it parses the same way.
            let (again, len_again) = parse_head(&data[..len], &limits).unwrap().unwrap();
            assert_eq!((again.path, len_again), (request.path, len));
        }
        Ok(None) => assert!(data.len() <= limits.max_head),
        Err(_) => {}
    }
}

/// No variables: the fuzzed body is all there is.
struct Empty;

impl Environment for Empty {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

const SECRET_FIELDS: [&str; 3] = ["secret_key", "session_token", "hf_token"];

/// A request body's fields, and its `config` whether that is an object
/// or a JSON string holding one.
struct Parsed {
    fields: Map<String, Value>,
    config: Map<String, Value>,
    config_as_string: bool,
}

fn config_of(body: &[u8]) -> Option<Parsed> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let (config, config_as_string) = match fields.get("config") {
        Some(Value::Object(map)) => (map.clone(), false),
        Some(Value::String(text)) => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => (map, true),
            _ => return None,
        },
        _ => return None,
    };
    Some(Parsed {
        fields,
        config,
        config_as_string,
    })
}

/// The string values of secret fields in a body.
fn secrets_in(body: &[u8]) -> Vec<String> {
    let Some(Parsed { config, .. }) = config_of(body) else {
        return Vec::new();
    };
    SECRET_FIELDS
        .iter()
        .filter_map(|k| config.get(*k)?.as_str())
        // Shorter values could match words of any message.
        .filter(|v| v.len() >= 12)
        .map(str::to_owned)
        .collect()
}

/// The same body with every secret value replaced by as many `#`s.
fn masked(body: &[u8]) -> Vec<u8> {
    let Some(Parsed {
        mut fields,
        mut config,
        config_as_string,
    }) = config_of(body)
    else {
        return body.to_vec();
    };
    for key in SECRET_FIELDS {
        if let Some(Value::String(secret)) = config.get_mut(key) {
            *secret = "#".repeat(secret.chars().count());
        }
    }
    let config = Value::Object(config);
    fields.insert(
        "config".into(),
        if config_as_string {
            Value::String(config.to_string())
        } else {
            config
        },
    );
    serde_json::to_vec(&Value::Object(fields)).unwrap_or_default()
}

/// Why the download and LoRA endpoints refuse `body`, if they do.
fn refusals(body: &[u8]) -> [Option<String>; 2] {
    [
        DownloadRequest::from_json(body, &Empty)
            .err()
            .map(|e| e.to_string()),
        LoadRequest::from_json(body, &Empty)
            .err()
            .map(|e| e.to_string()),
    ]
}

/// A JSON body for the download and LoRA endpoints: never panics; an
/// accepted request has an absolute `output_dir` without `..`; a refusal
/// says why and never repeats a secret it was given. (A message that
/// holds the secret's text whatever the secret, because the caller copied
/// it into a field that is echoed or it is a word of the message, is not
/// a leak: the same body with the secrets masked tells them apart.)
pub fn json_body(data: &[u8]) {
    let secrets = secrets_in(data);
    let accepted = |request: &DownloadRequest| {
        assert!(request.output_dir.is_absolute());
        assert!(
            !request
                .output_dir
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        );
        assert!(request.max_workers >= 1);
    };
    if let Ok(request) = DownloadRequest::from_json(data, &Empty) {
        accepted(&request);
    }
    if let Ok(request) = LoadRequest::from_json(data, &Empty) {
        accepted(&request.download);
        assert!(!request.lora_name.is_empty());
    }
    let refused = refusals(data);
    let refused_masked = if secrets.is_empty() {
        [None, None]
    } else {
        refusals(&masked(data))
    };
    for (message, masked) in refused.iter().zip(&refused_masked) {
        let Some(message) = message else { continue };
        assert!(!message.is_empty());
        for secret in &secrets {
            let coincidence = masked
                .as_deref()
                .is_some_and(|m| m.contains(secret.as_str()));
            assert!(
                !message.contains(secret.as_str()) || coincidence,
                "a secret in {message:?}"
            );
        }
    }
}

/// An S3 listing body, under a prefix the first input bytes choose: no
/// panic, and no file it names lands outside the output directory.
pub fn s3_listing(data: &[u8]) {
    let [prefix_len, rest @ ..] = data else {
        return;
    };
    let split = usize::from(*prefix_len % 16).min(rest.len());
    let (Ok(prefix), Ok(body)) = (
        std::str::from_utf8(&rest[..split]),
        std::str::from_utf8(&rest[split..]),
    ) else {
        return;
    };
    crate::download::s3::check_listing(body, prefix);
}

/// A ZMQ payload of KV events: never panics, and every stored event with
/// blocks has the same whole, non-zero number of tokens per block.
pub fn kv_events(data: &[u8]) {
    let Ok(batch) = decode_batch(data) else {
        return;
    };
    for event in &batch.events {
        if let Event::Stored { hashes, token_ids } = event
            && !hashes.is_empty()
        {
            assert!(!token_ids.is_empty());
            assert_eq!(token_ids.len() % hashes.len(), 0);
        }
    }
}

#[cfg(test)]
mod tests {
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
            "../fuzz/regressions/s3_listing-two-text-events"
        ));
        // A secret's value copied into `source`, which answers echo: the
        // property must not count the echo of the caller's own field.
        super::json_body(include_bytes!(
            "../fuzz/regressions/json_body-secret-copied-into-source"
        ));
        // A secret that is a run of words of the message itself.
        super::json_body(include_bytes!(
            "../fuzz/regressions/json_body-secret-is-a-word-of-the-message"
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
}
