//! Model downloads through the real binary: from a real S3 server that
//! checks SigV4 (s3s-fs), through a proxy that cuts connections, from a
//! local HuggingFace Hub, from a PVC path; by the HTTP API (sync, async,
//! status) and by the `download` command, killed and resumed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::hub::{Hub, HubFile, HubRepo};
use crate::proxy::{Faults, Proxy};
use crate::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use crate::util::*;

pub const MIB: usize = 1024 * 1024;

/// A sidecar to send download requests to (its engine does not matter).
pub fn sidecar() -> Proc {
    Sidecar::new("vllm", closed_port()).workers(1).start()
}

pub fn s3_config(endpoint: &str) -> String {
    serde_json::json!({ "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "endpoint": endpoint })
        .to_string()
}

pub fn download_body(source: &str, output_dir: &Path, config: &str, extra: &str) -> String {
    let mut body = serde_json::json!({
        "source": source,
        "output_dir": output_dir,
        // As clients send it today: a JSON string.
        "config": config,
    });
    if !extra.is_empty() {
        let extra: serde_json::Value = serde_json::from_str(extra).unwrap();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
    }
    body.to_string()
}

/// Downloads the fixture's `s3://models/llama` from `endpoint` into `out`
/// (`extra`: more request fields, as JSON).
pub fn download_llama(sidecar: &Proc, endpoint: &str, out: &Path, extra: &str) -> Response {
    post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body("s3://models/llama", out, &s3_config(endpoint), extra),
    )
}

/// Posts an async request (`body` must ask for one) and returns its job id.
pub fn start_job(sidecar: &Proc, path: &str, body: &str) -> String {
    let response = post_json(sidecar.addr, path, body);
    assert_eq!(response.status, 202, "{}", response.text());
    response.json()["id"].as_str().unwrap().to_owned()
}

pub struct Fixture {
    pub server: S3Server,
    pub large: Vec<u8>,
}

/// A bucket with nested prefixes, many small files (more than one listing
/// page), a file over 64 MB, an empty file, and names with spaces and
/// unicode.
pub fn bucket(name: &str, small_files: usize) -> Fixture {
    let server = S3Server::start(&temp_dir(name)).unwrap();
    let large = noise(70 * MIB + 12345, 1);
    server.put(
        "models",
        "llama/config.json",
        br#"{"architectures":["LlamaForCausalLM"]}"#,
    );
    server.put(
        "models",
        "llama/weights/model-00001-of-00001.safetensors",
        &large,
    );
    server.put("models", "llama/empty.txt", b"");
    server.put("models", "llama/dir with space/naïve €.json", b"{\"x\":1}");
    for i in 0..small_files {
        server.put(
            "models",
            &format!("llama/shards/part-{i:04}.bin"),
            &noise(200 + i, i as u64),
        );
    }
    // Beside the prefix: must not be downloaded.
    server.put("models", "llama-other/not-this.bin", b"nope");
    server.put("models", "other/not-this.bin", b"nope");
    Fixture { server, large }
}

pub fn assert_same_tree(bucket_dir: &Path, out: &Path) {
    let want = files_below(bucket_dir);
    let got: Vec<String> = files_below(out)
        .into_iter()
        .filter(|f| !f.starts_with('.') && !f.contains("/."))
        .collect();
    assert_eq!(got, want);
    for file in &want {
        assert_eq!(
            std::fs::read(out.join(file)).unwrap(),
            std::fs::read(bucket_dir.join(file)).unwrap(),
            "{file}"
        );
    }
    assert!(
        files_below(out).iter().all(|f| !f.contains(".mi-part")),
        "temporary files left: {:?}",
        files_below(out)
    );
}

#[test]
fn s3_sync_download_of_a_whole_prefix() {
    let fixture = bucket("s3-sync", 1100);
    let sidecar = sidecar();
    let out = temp_dir("s3-sync-out").join("llama");
    let body = download_body(
        "s3://models/llama",
        &out,
        &s3_config(&fixture.server.endpoint()),
        r#"{"max_workers": 16}"#,
    );
    let response = post_json(sidecar.addr, "/v1/download_model", &body);
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(
        response.json(),
        serde_json::json!({
            "status": "completed",
            "message": "Model download completed successfully",
            "source": "s3://models/llama",
            "output_dir": out,
            // s3s-fs lists no ETags: each object's HEAD gives its MD5 ETag.
            "verified_by": { "etag_md5": 1104 },
        })
    );
    assert_same_tree(&fixture.server.root.join("models/llama"), &out);
    assert_eq!(
        std::fs::read(out.join("weights/model-00001-of-00001.safetensors")).unwrap(),
        fixture.large
    );

    // Again: everything is present and verified; nothing is fetched.
    let response = post_json(sidecar.addr, "/v1/download_model", &body);
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json()["verified_by"],
        serde_json::json!({ "already_verified": 1104 })
    );
    // The log line may follow the answer by a moment.
    let completions = || {
        sidecar
            .log()
            .lines()
            .filter(|l| l.contains("download completed"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    eventually("both downloads logged", || completions().len() == 2);
    let second = &completions()[1];
    assert!(second.contains("fetched=0"), "{second}");
}

#[test]
fn s3_single_object_and_config_as_object() {
    let fixture = bucket("s3-single", 0);
    let sidecar = sidecar();
    let out = temp_dir("s3-single-out");
    let body = serde_json::json!({
        "source": "s3://models/llama/config.json",
        "output_dir": out,
        "config": { "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "endpoint": fixture.server.endpoint() },
    });
    let response = post_json(sidecar.addr, "/v1/download_model", &body.to_string());
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        files_below(&out)
            .into_iter()
            .filter(|f| !f.starts_with('.'))
            .collect::<Vec<_>>(),
        ["config.json"]
    );
}

#[test]
fn s3_wrong_secret_is_a_clear_403_and_writes_nothing() {
    let fixture = bucket("s3-denied", 0);
    let sidecar = sidecar();
    let out = temp_dir("s3-denied-out").join("never");
    let config = serde_json::json!({ "access_key": ACCESS_KEY, "secret_key": "wrong-secret", "endpoint": fixture.server.endpoint() });
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body("s3://models/llama", &out, &config.to_string(), ""),
    );
    assert_eq!(response.status, 403, "{}", response.text());
    let detail = response.detail();
    assert!(detail.contains("SignatureDoesNotMatch"), "{detail}");
    assert!(
        !detail.contains("wrong-secret"),
        "secrets never appear: {detail}"
    );
    assert!(!out.exists(), "nothing written");
    assert!(!sidecar.log().contains("wrong-secret"));
}

#[test]
fn s3_missing_prefix_is_404() {
    let fixture = bucket("s3-missing", 0);
    let sidecar = sidecar();
    let out = temp_dir("s3-missing-out");
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body(
            "s3://models/nothing-here",
            &out,
            &s3_config(&fixture.server.endpoint()),
            "",
        ),
    );
    assert_eq!(response.status, 404, "{}", response.text());
    assert!(
        response
            .detail()
            .contains("no objects under s3://models/nothing-here"),
        "{}",
        response.detail()
    );
}

#[test]
fn s3_connections_cut_midway_are_retried_and_verified() {
    let fixture = bucket("s3-cut", 20);
    // Every third connection dies after 3 MiB.
    let proxy = Proxy::start(
        fixture.server.addr,
        Faults {
            cut_every: 3,
            cut_after: 3 * MIB as u64,
            ..Faults::default()
        },
    );
    // With an engine beside it, so that its own metrics can be read.
    let engine = Engine::flavor("vllm-v1").size("50k").start();
    let sidecar = Sidecar::new("vllm", engine.addr).workers(1).start();
    let out = temp_dir("s3-cut-out");
    let body = download_body("s3://models/llama", &out, &s3_config(&proxy.endpoint()), "");
    let response = post_json(sidecar.addr, "/v1/download_model", &body);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_same_tree(&fixture.server.root.join("models/llama"), &out);
    assert!(
        proxy.cuts.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the proxy cut nothing"
    );
    assert!(
        metric(
            &sidecar,
            "matrixinfer_runtime_download_retries_total{source=\"s3\"}"
        ) > 0.0
    );
    assert_eq!(
        metric(
            &sidecar,
            "matrixinfer_runtime_downloads_total{source=\"s3\",outcome=\"completed\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &sidecar,
            "matrixinfer_runtime_download_files_total{source=\"s3\"}"
        ),
        24.0
    );
    assert!(
        metric(
            &sidecar,
            "matrixinfer_runtime_download_bytes_total{source=\"s3\"}"
        ) >= fixture.large.len() as f64
    );
}

#[test]
fn async_download_and_status_api() {
    let fixture = bucket("s3-async", 10);
    let sidecar = sidecar();
    let out = temp_dir("s3-async-out");
    let body = download_body(
        "s3://models/llama",
        &out,
        &s3_config(&fixture.server.endpoint()),
        r#"{"async_download": true}"#,
    );
    let response = post_json(sidecar.addr, "/v1/download_model", &body);
    assert_eq!(response.status, 202, "{}", response.text());
    let started = response.json();
    assert_eq!(started["status"], "started");
    assert_eq!(started["message"], "Model download started in background");
    let id = started["id"].as_str().unwrap().to_owned();
    let mut status = serde_json::Value::Null;
    eventually("the download completes", || {
        status = get(sidecar.addr, &format!("/v1/downloads/{id}")).json();
        status["state"] != "running"
    });
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(status["error"], serde_json::Value::Null);
    assert_eq!(status["bytes_done"], status["bytes_total"]);
    assert_eq!(status["files_done"], status["files_total"]);
    assert_eq!(status["files_total"], 14);
    assert_eq!(status["source"], "s3://models/llama");
    assert_same_tree(&fixture.server.root.join("models/llama"), &out);
    let all = get(sidecar.addr, "/v1/downloads").json();
    assert_eq!(all["downloads"][0]["id"], id.as_str());
    let missing = get(sidecar.addr, "/v1/downloads/nope");
    assert_eq!(missing.status, 404);
    // A failing async download says why.
    let bad = download_body(
        "s3://models/absent",
        &out,
        &s3_config(&fixture.server.endpoint()),
        r#"{"async_download": true}"#,
    );
    let id = post_json(sidecar.addr, "/v1/download_model", &bad).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("the download fails", || {
        get(sidecar.addr, &format!("/v1/downloads/{id}")).json()["state"] == "failed"
    });
    let status = get(sidecar.addr, &format!("/v1/downloads/{id}")).json();
    assert!(
        status["error"]
            .as_str()
            .unwrap()
            .contains("no objects under"),
        "{status}"
    );
}

#[test]
fn bad_requests_name_the_field() {
    let sidecar = sidecar();
    for (body, detail) in [
        (
            r#"{"output_dir":"/tmp/x"}"#,
            "Missing required parameter: source",
        ),
        (
            r#"{"source":"org/model"}"#,
            "Missing required parameter: output_dir",
        ),
        (
            r#"{"source":"org/model","output_dir":"relative"}"#,
            "Invalid parameter: output_dir must be an absolute path",
        ),
        (
            r#"{"source":"ftp://x/y","output_dir":"/tmp/x"}"#,
            "Invalid parameter: source: unsupported scheme ftp://",
        ),
        (
            r#"{"source":"org/model","output_dir":"/tmp/x","config":"{not json"}"#,
            "Invalid parameter: config is not valid JSON",
        ),
        (
            r#"{"source":"org/model","output_dir":"/tmp/x","max_workers":0}"#,
            "Invalid parameter: max_workers must be an integer from 1 to 64",
        ),
        (
            r#"{"source":["a"],"output_dir":"/tmp/x"}"#,
            "Invalid parameter: source must be a string",
        ),
        ("not json", "Request body must be a JSON object"),
    ] {
        let response = post_json(sidecar.addr, "/v1/download_model", body);
        assert_eq!(response.status, 400, "{body}");
        assert!(
            response.detail().starts_with(detail),
            "{body}: {}",
            response.detail()
        );
    }
    let mut client = Client::connect(sidecar.addr);
    client.send(b"GET /v1/download_model HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(client.response().unwrap().status, 405);
    // What can be checked without the network is checked before an async
    // request is accepted: the answer a sync request gets, not a 202.
    for (body, status, detail) in [
        (
            r#"{"source":"s3://b/p","output_dir":"/tmp/x","config":{"endpoint":"not a url"},"async_download":true}"#,
            400,
            "Model download failed: endpoint:",
        ),
        (
            r#"{"source":"s3://b/p","output_dir":"/tmp/x","config":{"access_key":"AK"},"async_download":true}"#,
            400,
            "Model download failed: access_key and secret_key must be given together",
        ),
        (
            r#"{"source":"pvc://no/such/dir","output_dir":"/tmp/x","async_download":true}"#,
            404,
            "Model download failed: not found: pvc://no/such/dir does not exist",
        ),
    ] {
        let response = post_json(sidecar.addr, "/v1/download_model", body);
        assert_eq!(response.status, status, "{body}: {}", response.text());
        assert!(
            response.detail().starts_with(detail),
            "{body}: {}",
            response.detail()
        );
    }
    // A place this process may not write is the caller's to fix: 403.
    let source = temp_dir("unwritable-source");
    std::fs::write(source.join("config.json"), b"{}").unwrap();
    let body = serde_json::json!({
        "source": format!("pvc://{}", source.display().to_string().trim_start_matches('/')),
        "output_dir": "/sys/matrixinfer-not-here",
    });
    let response = post_json(sidecar.addr, "/v1/download_model", &body.to_string());
    assert_eq!(response.status, 403, "{}", response.text());
    assert!(
        response
            .detail()
            .contains("cannot create /sys/matrixinfer-not-here"),
        "{}",
        response.detail()
    );
}

#[test]
fn command_line_download_resumes_after_kill_9() {
    let server = S3Server::start(&temp_dir("s3-kill")).unwrap();
    let large = noise(96 * MIB, 9);
    server.put("models", "big/model.safetensors", &large);
    // Slow enough to kill midway.
    let slow = Proxy::start(
        server.addr,
        Faults {
            bytes_per_second: 24 * MIB as u64,
            ..Faults::default()
        },
    );
    let out = temp_dir("s3-kill-out");
    let download = |endpoint: &str| {
        let mut command = Command::new(BIN);
        command
            .args(["download", "--source", "s3://models/big", "--output-dir"])
            .arg(&out)
            .args(["--max-workers", "2", "--config", &s3_config(endpoint)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    };
    let mut first = download(&slow.endpoint()).spawn_tied();
    let journal = out.join(".model.safetensors.mi-part.journal");
    eventually("some parts are on disk", || {
        std::fs::read_to_string(&journal).map_or(0, |j| j.lines().count()) >= 4
    });
    first.kill().unwrap();
    let _ = first.wait();
    assert!(
        !out.join("model.safetensors").exists(),
        "nothing unverified at the final path"
    );
    let parts_done = std::fs::read_to_string(&journal).unwrap().lines().count() - 1;
    assert!(parts_done >= 3);

    let counting = Proxy::start(server.addr, Faults::default());
    let second = download(&counting.endpoint()).output_tied();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), large);
    let refetched = counting.bytes.load(std::sync::atomic::Ordering::SeqCst) as usize;
    assert!(
        refetched <= large.len() - parts_done * 8 * MIB + 64 * 1024,
        "resumed from zero? fetched {refetched} bytes again, {parts_done} parts were done"
    );
    assert!(!journal.exists());
}

#[test]
fn command_line_download_reports_failures() {
    let out = temp_dir("cli-fail");
    let output = Command::new(BIN)
        .args([
            "download",
            "--source",
            "pvc://definitely/not/here",
            "--output-dir",
        ])
        .arg(&out)
        .output_tied();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("pvc://definitely/not/here does not exist"),
        "{stderr}"
    );
    let output = Command::new(BIN)
        .args(["download", "--output-dir", "/tmp/x"])
        .output_tied();
    assert_eq!(output.status.code(), Some(2));
}

pub fn hub_repo(token: Option<&str>, corrupt: bool) -> HubRepo {
    HubRepo {
        id: if token.is_some() {
            "acme/private-model".into()
        } else {
            "acme/tiny-llama".into()
        },
        commit: "4d6f3c2b1a0e9f8d7c6b5a49382716f5e4d3c2b1".into(),
        token: token.map(str::to_owned),
        files: vec![
            HubFile {
                path: "config.json".into(),
                data: br#"{"model_type":"llama"}"#.to_vec(),
                lfs: false,
                corrupt: false,
            },
            HubFile {
                path: "tokenizer/vocab.json".into(),
                data: noise(40_000, 3),
                lfs: false,
                corrupt: false,
            },
            HubFile {
                path: "model.safetensors".into(),
                data: noise(40 * MIB + 7, 4),
                lfs: true,
                corrupt,
            },
            HubFile {
                path: "weights with space.bin".into(),
                data: noise(5000, 5),
                lfs: true,
                corrupt: false,
            },
        ],
    }
}

pub fn hub_files(repo: &HubRepo, out: &Path) {
    for file in &repo.files {
        assert_eq!(
            std::fs::read(out.join(&file.path)).unwrap(),
            file.data,
            "{}",
            file.path
        );
    }
}

#[test]
fn huggingface_download_follows_redirects_without_leaking_the_token() {
    let repo = hub_repo(None, false);
    let hub = Hub::start(vec![repo.clone()]);
    let sidecar = sidecar();
    let out = temp_dir("hf-public");
    // A token for a public repo: it may go to the Hub, never to the CDN.
    let config =
        serde_json::json!({ "hf_endpoint": hub.endpoint(), "hf_token": "hf_SECRET_TOKEN" });
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body("acme/tiny-llama", &out, &config.to_string(), ""),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    hub_files(&repo, &out);
    assert!(
        hub.cdn_requests.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "LFS bytes come from the CDN"
    );
    assert!(
        !hub.token_leaked.load(std::sync::atomic::Ordering::SeqCst),
        "the token reached another host"
    );
    assert!(!sidecar.log().contains("hf_SECRET_TOKEN"));
}

#[test]
fn huggingface_private_repository_needs_its_token() {
    let repo = hub_repo(Some("hf_private_token"), false);
    let hub = Hub::start(vec![repo.clone()]);
    let sidecar = sidecar();
    let out = temp_dir("hf-private");
    let without = serde_json::json!({ "hf_endpoint": hub.endpoint() }).to_string();
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body("acme/private-model", &out, &without, ""),
    );
    assert_eq!(response.status, 403, "{}", response.text());
    assert!(
        response.detail().contains("hf_token"),
        "{}",
        response.detail()
    );
    let with = serde_json::json!({ "hf_endpoint": hub.endpoint(), "hf_token": "hf_private_token" })
        .to_string();
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body("acme/private-model", &out, &with, ""),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    hub_files(&repo, &out);
}

#[test]
fn huggingface_wrong_revision_is_404() {
    let hub = Hub::start(vec![hub_repo(None, false)]);
    let sidecar = sidecar();
    let out = temp_dir("hf-revision");
    let config =
        serde_json::json!({ "hf_endpoint": hub.endpoint(), "hf_revision": "v9.9" }).to_string();
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body("acme/tiny-llama", &out, &config, ""),
    );
    assert_eq!(response.status, 404, "{}", response.text());
    assert!(
        response.detail().contains("Revision Not Found"),
        "{}",
        response.detail()
    );
    let config = serde_json::json!({ "hf_endpoint": hub.endpoint() }).to_string();
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body("acme/absent", &out, &config, ""),
    );
    assert_eq!(response.status, 404, "{}", response.text());
}

#[test]
fn huggingface_bytes_that_do_not_match_never_land() {
    let hub = Hub::start(vec![hub_repo(None, true)]);
    let sidecar = sidecar();
    let out = temp_dir("hf-corrupt");
    let config = serde_json::json!({ "hf_endpoint": hub.endpoint() }).to_string();
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body("acme/tiny-llama", &out, &config, ""),
    );
    assert_eq!(response.status, 502, "{}", response.text());
    assert!(
        response
            .detail()
            .contains("model.safetensors: SHA-256 mismatch"),
        "{}",
        response.detail()
    );
    assert!(!out.join("model.safetensors").exists());
    assert!(
        files_below(&out)
            .iter()
            .all(|f| !f.contains("model.safetensors")),
        "{:?}",
        files_below(&out)
    );
}

#[test]
fn pvc_copies_and_clear_errors() {
    let source = temp_dir("pvc-source");
    std::fs::create_dir_all(source.join("a/b")).unwrap();
    std::fs::write(source.join("a/b/weights.bin"), noise(20 * MIB, 7)).unwrap();
    std::fs::write(source.join("config.json"), b"{}").unwrap();
    std::fs::write(source.join("empty"), b"").unwrap();
    let sidecar = sidecar();
    let out = temp_dir("pvc-out");
    let pvc = format!(
        "pvc://{}",
        source.display().to_string().trim_start_matches('/')
    );
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body(&pvc, &out, "", ""),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_same_tree(&source, &out);

    let missing = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body("pvc://no/such/dir", &out, "", ""),
    );
    assert_eq!(missing.status, 404);
    assert!(
        missing
            .detail()
            .contains("pvc://no/such/dir does not exist"),
        "{}",
        missing.detail()
    );
    let file = format!("{pvc}/config.json");
    let not_dir = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body(&file, &out, "", ""),
    );
    assert_eq!(not_dir.status, 400);
    assert!(
        not_dir.detail().contains("must name a directory"),
        "{}",
        not_dir.detail()
    );
}

#[test]
fn concurrent_downloads_into_one_directory_take_turns() {
    let server = S3Server::start(&temp_dir("s3-lock")).unwrap();
    server.put("models", "m/weights.bin", &noise(24 * MIB, 11));
    let slow = Proxy::start(
        server.addr,
        Faults {
            bytes_per_second: 16 * MIB as u64,
            ..Faults::default()
        },
    );
    let sidecar = Sidecar::new("vllm", closed_port()).workers(2).start();
    let out = temp_dir("s3-lock-out");
    let body = download_body("s3://models/m", &out, &s3_config(&slow.endpoint()), "");
    let addr = sidecar.addr;
    let first = {
        let body = body.clone();
        std::thread::spawn(move || post_json(addr, "/v1/download_model", &body))
    };
    // The lock's holder writes its PID into the lock file.
    eventually("the first download holds the directory's lock", || {
        std::fs::read_to_string(out.join(".lock")).is_ok_and(|holder| holder.contains("pid="))
    });
    let second = post_json(addr, "/v1/download_model", &body);
    let first = first.join().unwrap();
    assert_eq!((first.status, second.status), (200, 200));
    assert!(
        sidecar
            .log()
            .contains("another download into this directory is running"),
        "{}",
        sidecar.log()
    );
    assert_eq!(
        std::fs::read(out.join("weights.bin")).unwrap(),
        noise(24 * MIB, 11)
    );
}

#[test]
fn s3_over_https_trusts_ssl_cert_file() {
    let (server, cert) = S3Server::start_tls(&temp_dir("s3-tls")).unwrap();
    server.put("models", "tls/config.json", b"{\"secure\":true}");
    server.put("models", "tls/weights.bin", &noise(20 * MIB, 13));
    let endpoint = format!("https://localhost:{}", server.addr.port());
    let out = temp_dir("s3-tls-out");
    let download = |ssl_cert_file: Option<&Path>| {
        let mut command = Command::new(BIN);
        command
            .args(["download", "--source", "s3://models/tls", "--output-dir"])
            .arg(&out)
            .args(["--config", &s3_config(&endpoint)]);
        match ssl_cert_file {
            Some(path) => command.env("SSL_CERT_FILE", path),
            None => command.env("SSL_CERT_FILE", "/dev/null/none"),
        };
        command.output_tied()
    };
    // Without the certificate the server is not trusted.
    let untrusted = download(None);
    assert_eq!(untrusted.status.code(), Some(1));
    let output = download(Some(&cert));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_same_tree(&server.root.join("models/tls"), &out);
}

#[test]
fn obs_is_s3_against_its_endpoint() {
    let fixture = bucket("obs", 3);
    let sidecar = sidecar();
    let out = temp_dir("obs-out");
    let body = download_body(
        "obs://models/llama",
        &out,
        &s3_config(&fixture.server.endpoint()),
        "",
    );
    let response = post_json(sidecar.addr, "/v1/download_model", &body);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_same_tree(&fixture.server.root.join("models/llama"), &out);
    let no_endpoint =
        serde_json::json!({ "access_key": ACCESS_KEY, "secret_key": SECRET_KEY }).to_string();
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body("obs://models/llama", &out, &no_endpoint, ""),
    );
    assert_eq!(response.status, 400);
    assert!(
        response.detail().contains("obs:// needs an endpoint"),
        "{}",
        response.detail()
    );
}

#[test]
fn old_stores_without_listobjectsv2_and_slowdowns_are_handled() {
    let fixture = bucket("s3-old", 30);
    let old = crate::proxy::OldS3::start(fixture.server.addr);
    let sidecar = sidecar();
    let out = temp_dir("s3-old-out");
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body("s3://models/llama", &out, &s3_config(&old.endpoint()), ""),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_same_tree(&fixture.server.root.join("models/llama"), &out);
    assert!(old.refused_v2.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert!(old.slowdowns.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert!(
        sidecar.log().contains("listing with V1 markers"),
        "{}",
        sidecar.log()
    );
}

/// Jobs beyond `--max-concurrent-jobs` (with no queue) are refused with 429 and
/// `Retry-After`, downloads and LoRA loads alike, and no job is
/// registered for them; the one running is not disturbed. (Unloads, short
/// engine calls, have a cap of their own.)
#[test]
fn jobs_beyond_the_cap_are_answered_429() {
    // A Hub that accepts and never answers: the first download holds the
    // one place for as long as the test runs.
    let silent = RawServer::start(|stream| {
        std::thread::sleep(Duration::from_secs(120));
        drop(stream);
    });
    let sidecar = Sidecar::new("vllm", closed_port())
        .workers(1)
        .arg("--max-concurrent-jobs")
        .arg("1")
        .arg("--max-queued-jobs")
        .arg("0")
        .start();
    let config =
        serde_json::json!({ "hf_endpoint": format!("http://{}", silent.addr) }).to_string();
    let first = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body(
            "acme/held",
            &temp_dir("cap-first"),
            &config,
            r#"{"async_download": true}"#,
        ),
    );
    assert_eq!(first.status, 202, "{}", first.text());
    for (path, body) in [
        (
            "/v1/download_model",
            download_body("acme/refused", &temp_dir("cap-second"), &config, ""),
        ),
        (
            "/v1/load_lora_adapter",
            serde_json::json!({
                "lora_name": "refused",
                "source": "acme/adapter",
                "output_dir": temp_dir("cap-lora"),
                "config": config,
            })
            .to_string(),
        ),
    ] {
        let refused = post_json(sidecar.addr, path, &body);
        assert_eq!(refused.status, 429, "{path}: {}", refused.text());
        assert!(refused.header("retry-after").is_some(), "{path}");
        assert!(
            refused.detail().contains("running"),
            "{path}: {}",
            refused.detail()
        );
    }
    let listed = get(sidecar.addr, "/v1/downloads").json();
    let jobs = listed["downloads"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{listed}");
    assert_eq!(jobs[0]["state"], "running", "{listed}");
}

/// Every spelling of a HuggingFace source the control planes send
/// (kthena's controller passes `hf://org/repo` through as it is), by the
/// API and by the `download` command: the bare id, `hf://`,
/// `huggingface://`, `hf://models/`, `@revision`, and a dataset
/// repository (`hf://datasets/…`) downloaded like a model.
#[test]
fn huggingface_sources_in_every_spelling() {
    let model = hub_repo(None, false);
    let mut dataset = hub_repo(None, false);
    dataset.id = "datasets/acme/corpus".into();
    dataset.files.truncate(2);
    let hub = Hub::start(vec![model.clone(), dataset.clone()]);
    let sidecar = sidecar();
    let config = serde_json::json!({ "hf_endpoint": hub.endpoint() }).to_string();
    let pinned = format!("hf://acme/tiny-llama@{}", model.commit);
    let spellings: [(&str, &HubRepo); 6] = [
        ("acme/tiny-llama", &model),
        ("hf://acme/tiny-llama", &model),
        ("huggingface://acme/tiny-llama", &model),
        ("hf://models/acme/tiny-llama", &model),
        (&pinned, &model),
        ("hf://datasets/acme/corpus", &dataset),
    ];
    for (i, (source, repo)) in spellings.iter().enumerate() {
        let out = temp_dir(&format!("hf-spelling-{i}"));
        let response = post_json(
            sidecar.addr,
            "/v1/download_model",
            &download_body(source, &out, &config, ""),
        );
        assert_eq!(response.status, 200, "{source}: {}", response.text());
        hub_files(repo, &out);
    }
    // The source's revision beats `hf_revision`; an unknown one is a 404.
    let wrong_revision =
        serde_json::json!({ "hf_endpoint": hub.endpoint(), "hf_revision": "no-such" }).to_string();
    let out = temp_dir("hf-spelling-pinned");
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body(&pinned, &out, &wrong_revision, ""),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body(
            "hf://acme/tiny-llama@v9.9",
            &temp_dir("hf-bad-rev"),
            &config,
            "",
        ),
    );
    assert_eq!(response.status, 404, "{}", response.text());
    // Malformed hf:// sources are refused before anything starts.
    for bad in ["hf://", "hf://a/b/c", "hf://acme/tiny-llama@"] {
        let response = post_json(
            sidecar.addr,
            "/v1/download_model",
            &download_body(bad, &temp_dir("hf-bad"), &config, ""),
        );
        assert_eq!(response.status, 400, "{bad}: {}", response.text());
        assert!(
            response.detail().contains("hf://"),
            "{bad}: {}",
            response.detail()
        );
    }
    // The `download` command reads the same spellings.
    for (i, (source, repo)) in spellings.iter().enumerate() {
        let out = temp_dir(&format!("hf-command-{i}"));
        let status = Command::new(BIN)
            .args(["download", "--source", source, "--output-dir"])
            .arg(&out)
            .args(["--config", &config])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{source}");
        hub_files(repo, &out);
    }
}

/// `allow_patterns` / `ignore_patterns` select files with
/// `huggingface_hub`'s semantics, for S3, HuggingFace and PVC sources
/// alike; an allow pattern that matches nothing is a 404 naming it;
/// `force_download` fetches again what is present and verified.
#[test]
fn file_selection_for_every_source_and_forced_downloads() {
    let sidecar = sidecar();
    let listed = |out: &Path| -> Vec<String> {
        files_below(out)
            .into_iter()
            .filter(|f| !f.starts_with('.') && !f.contains("/."))
            .collect()
    };
    // S3: the patterns apply to paths below the prefix.
    let fixture = bucket("select-s3", 3);
    let endpoint = fixture.server.endpoint();
    let select = |allow: serde_json::Value, ignore: serde_json::Value| {
        let mut config: serde_json::Value = serde_json::from_str(&s3_config(&endpoint)).unwrap();
        config["allow_patterns"] = allow;
        config["ignore_patterns"] = ignore;
        config.to_string()
    };
    let out = temp_dir("select-s3-out");
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body(
            "s3://models/llama",
            &out,
            &select(
                serde_json::json!(["*.json", "shards/"]),
                serde_json::json!(["*/part-0001.bin"]),
            ),
            "",
        ),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        listed(&out),
        [
            "config.json",
            "dir with space/naïve €.json",
            "shards/part-0000.bin",
            "shards/part-0002.bin"
        ]
    );
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body(
            "s3://models/llama",
            &temp_dir("select-s3-none"),
            &select(
                serde_json::json!(["*.json", "*.gguf"]),
                serde_json::Value::Null,
            ),
            "",
        ),
    );
    assert_eq!(response.status, 404, "{}", response.text());
    assert!(
        response.detail().contains("*.gguf"),
        "{}",
        response.detail()
    );
    assert!(
        !response.detail().contains("\"*.json\""),
        "{}",
        response.detail()
    );

    // HuggingFace: force_download fetches the LFS file from the CDN again.
    let repo = hub_repo(None, false);
    let hub = Hub::start(vec![repo.clone()]);
    let out = temp_dir("select-hf-out");
    let download = |config: serde_json::Value| {
        let mut full = serde_json::json!({ "hf_endpoint": hub.endpoint() });
        for (k, v) in config.as_object().unwrap() {
            full[k] = v.clone();
        }
        post_json(
            sidecar.addr,
            "/v1/download_model",
            &download_body("hf://acme/tiny-llama", &out, &full.to_string(), ""),
        )
    };
    let cdn = || hub.cdn_requests.load(std::sync::atomic::Ordering::SeqCst);
    let response = download(serde_json::json!({ "ignore_patterns": "*.safetensors" }));
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(!listed(&out).iter().any(|f| f.ends_with(".safetensors")));
    let response = download(serde_json::json!({}));
    assert_eq!(response.status, 200, "{}", response.text());
    hub_files(&repo, &out);
    let before = cdn();
    assert!(before > 0);
    let response = download(serde_json::json!({}));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(cdn(), before, "present and verified: nothing fetched again");
    let response = download(serde_json::json!({ "force_download": true }));
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(cdn() > before, "force_download fetches again");
    hub_files(&repo, &out);

    // PVC.
    let source = temp_dir("select-pvc-src");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    for name in ["a.json", "b.bin", "sub/c.json"] {
        std::fs::write(source.join(name), name.as_bytes()).unwrap();
    }
    let out = temp_dir("select-pvc-out");
    let config = serde_json::json!({ "allow_patterns": ["*.json"] }).to_string();
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body(
            &format!(
                "pvc://{}",
                source.display().to_string().trim_start_matches('/')
            ),
            &out,
            &config,
            "",
        ),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(listed(&out), ["a.json", "sub/c.json"]);
}
