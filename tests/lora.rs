//! LoRA adapters through the real binary, against the simulated engine's
//! LoRA endpoints (which behave as vLLM's and SGLang's do: vLLM answers 400
//! for an adapter already loaded or unknown on unload, and text on
//! success; SGLang's paths have no `/v1` and answer JSON).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use crate::util::*;

/// An adapter directory as PEFT writes it.
fn adapter(name: &str) -> PathBuf {
    let dir = temp_dir(&format!("adapter-{name}"));
    std::fs::write(
        dir.join("adapter_config.json"),
        br#"{"peft_type":"LORA","r":8,"lora_alpha":16}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("adapter_model.safetensors"),
        noise(3 * 1024 * 1024 + 5, 42),
    )
    .unwrap();
    dir
}

fn pvc(dir: &Path) -> String {
    format!(
        "pvc://{}",
        dir.display().to_string().trim_start_matches('/')
    )
}

fn load_body(name: &str, source: &str, output_dir: &Path, extra: Value) -> String {
    let mut body = json!({ "lora_name": name, "source": source, "output_dir": output_dir });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body.to_string()
}

struct Setup {
    engine: Proc,
    sidecar: Proc,
}

fn setup(flavor: &str, engine_args: &[&str], sidecar_args: &[&str]) -> Setup {
    let mut engine = Engine::flavor(flavor).size("50k");
    for arg in engine_args {
        engine = engine.arg(arg);
    }
    let engine = engine.start();
    let kind = if flavor.starts_with("sglang") {
        "sglang"
    } else {
        "vllm"
    };
    let mut sidecar = Sidecar::new(kind, engine.addr).workers(2);
    for arg in sidecar_args {
        sidecar = sidecar.arg(arg);
    }
    let sidecar = sidecar.start();
    Setup { engine, sidecar }
}

fn engine_report(setup: &Setup) -> Value {
    get(setup.engine.addr, "/sim/lora").json()
}

#[test]
fn vllm_load_duplicate_unload_and_cleanup() {
    let s = setup("vllm-v1", &[], &[]);
    let source = adapter("sql");
    let out = temp_dir("lora-sql-out").join("sql-lora");
    let response = post_json(
        s.sidecar.addr,
        "/v1/load_lora_adapter",
        &load_body("sql-lora", &pvc(&source), &out, json!({})),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json(),
        json!({ "message": "Success: LoRA adapter 'sql-lora' added successfully." })
    );
    assert!(out.join("adapter_model.safetensors").is_file());
    assert_eq!(
        engine_report(&s)["loaded"]["sql-lora"],
        out.display().to_string()
    );

    // Loading it again: vLLM's 400, passed on.
    let again = post_json(
        s.sidecar.addr,
        "/v1/load_lora_adapter",
        &load_body("sql-lora", &pvc(&source), &out, json!({})),
    );
    assert_eq!(again.status, 400);
    let detail = again.detail();
    assert!(detail.starts_with("HTTP 400: "), "{detail}");
    assert!(detail.contains("has already been loaded"), "{detail}");

    // Unloading something else: vLLM's 400.
    let unknown = post_json(
        s.sidecar.addr,
        "/v1/unload_lora_adapter",
        r#"{"lora_name":"nope"}"#,
    );
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.detail().contains("cannot be found"),
        "{}",
        unknown.detail()
    );

    // Unloading it, with cleanup.
    let unload = post_json(
        s.sidecar.addr,
        "/v1/unload_lora_adapter",
        r#"{"lora_name":"sql-lora","cleanup":true}"#,
    );
    assert_eq!(unload.status, 200, "{}", unload.text());
    let body = unload.json();
    assert_eq!(
        body["message"],
        "Success: LoRA adapter 'sql-lora' removed successfully."
    );
    assert_eq!(body["cleanup"], format!("removed {}", out.display()));
    assert!(!out.exists());
    assert!(
        out.parent().unwrap().exists(),
        "nothing outside the adapter's directory"
    );
    assert!(
        source.join("adapter_config.json").exists(),
        "the source is untouched"
    );
    assert_eq!(engine_report(&s)["loaded"], json!({}));
}

#[test]
fn sglang_load_from_s3_and_unload() {
    let server = S3Server::start(&temp_dir("lora-s3")).unwrap();
    server.put(
        "adapters",
        "math/adapter_config.json",
        br#"{"peft_type":"LORA"}"#,
    );
    server.put(
        "adapters",
        "math/adapter_model.safetensors",
        &noise(40 * 1024 * 1024, 8),
    );
    let s = setup("sglang-0.5", &[], &[]);
    let out = temp_dir("lora-s3-out").join("math");
    let config = json!({ "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "endpoint": format!("http://{}", server.addr) });
    let body = load_body(
        "math-lora",
        "s3://adapters/math",
        &out,
        json!({ "config": config.to_string() }),
    );
    let response = post_json(s.sidecar.addr, "/v1/load_lora_adapter", &body);
    assert_eq!(response.status, 200, "{}", response.text());
    let answer = response.json();
    assert_eq!(answer["success"], true);
    assert_eq!(
        answer["loaded_adapters"]["math-lora"],
        out.display().to_string()
    );
    assert_eq!(
        std::fs::read(out.join("adapter_model.safetensors")).unwrap(),
        noise(40 * 1024 * 1024, 8)
    );

    let unload = post_json(
        s.sidecar.addr,
        "/v1/unload_lora_adapter",
        r#"{"lora_name":"math-lora"}"#,
    );
    assert_eq!(unload.status, 200, "{}", unload.text());
    assert_eq!(unload.json()["success"], true);
    assert!(out.exists(), "no cleanup unless asked");
    let unknown = post_json(
        s.sidecar.addr,
        "/v1/unload_lora_adapter",
        r#"{"lora_name":"math-lora"}"#,
    );
    assert_eq!(unknown.status, 400);
    assert!(
        unknown.detail().starts_with("HTTP 400: {\"success\":false"),
        "{}",
        unknown.detail()
    );
}

#[test]
fn async_load_is_tracked_by_the_status_api() {
    let s = setup("vllm-v1", &[], &[]);
    let source = adapter("chat");
    let out = temp_dir("lora-async-out").join("chat");
    let body = load_body(
        "chat",
        &pvc(&source),
        &out,
        json!({ "async_download": true }),
    );
    let started = post_json(s.sidecar.addr, "/v1/load_lora_adapter", &body);
    assert_eq!(started.status, 202, "{}", started.text());
    let started = started.json();
    assert_eq!(started["status"], "started");
    assert_eq!(
        started["message"],
        "LoRA adapter download and load started in background"
    );
    assert_eq!(started["lora_name"], "chat");
    let id = started["id"].as_str().unwrap().to_owned();
    let mut status = Value::Null;
    eventually("the load finishes", || {
        status = get(s.sidecar.addr, &format!("/v1/downloads/{id}")).json();
        status["state"] != "running"
    });
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(status["kind"], "lora_load");
    assert_eq!(status["files_done"], 2);
    assert_eq!(status["result"]["status"], 200);
    assert_eq!(
        status["result"]["body"]["message"],
        "Success: LoRA adapter 'chat' added successfully."
    );

    // The same again fails at the engine: the job says why.
    let id = post_json(s.sidecar.addr, "/v1/load_lora_adapter", &body).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("the second load finishes", || {
        status = get(s.sidecar.addr, &format!("/v1/downloads/{id}")).json();
        status["state"] != "running"
    });
    assert_eq!(status["state"], "failed", "{status}");
    assert!(
        status["error"]
            .as_str()
            .unwrap()
            .contains("has already been loaded"),
        "{status}"
    );
    assert_eq!(status["result"]["status"], 400);
}

#[test]
fn loads_of_one_name_take_turns_and_different_names_do_not() {
    let s = setup("vllm-v1", &["--lora-delay-ms", "400"], &[]);
    let source = adapter("turns");
    let base = temp_dir("lora-turns-out");
    let addr = s.sidecar.addr;
    let load = |name: &str, dir: &str| {
        let body = load_body(name, &pvc(&source), &base.join(dir), json!({}));
        std::thread::spawn(move || post_json(addr, "/v1/load_lora_adapter", &body))
    };
    let (a, b) = (load("same", "a"), load("same", "b"));
    let mut statuses = vec![a.join().unwrap().status, b.join().unwrap().status];
    statuses.sort();
    assert_eq!(statuses, [200, 400], "one loads, the other finds it loaded");
    assert_eq!(
        engine_report(&s)["max_in_flight"],
        1,
        "calls for one name never overlap"
    );

    let (c, d) = (load("first", "c"), load("second", "d"));
    assert_eq!(
        (c.join().unwrap().status, d.join().unwrap().status),
        (200, 200)
    );
    assert_eq!(
        engine_report(&s)["max_in_flight"],
        2,
        "different names run in parallel"
    );
}

#[test]
fn engine_down_slow_or_starting() {
    let source = adapter("down");
    // Down: 502 once the retry window is over.
    let sidecar = Sidecar::new("vllm", closed_port())
        .arg("--engine-retry-window")
        .arg("0.5")
        .start();
    let out = temp_dir("lora-down-out");
    let response = post_json(
        sidecar.addr,
        "/v1/load_lora_adapter",
        &load_body("x", &pvc(&source), &out.join("x"), json!({})),
    );
    assert_eq!(response.status, 502, "{}", response.text());
    assert!(
        response.detail().starts_with(
            "Failed to load LoRA adapter: cannot reach the engine at http://127.0.0.1:"
        ),
        "{}",
        response.detail()
    );
    let unload = post_json(
        sidecar.addr,
        "/v1/unload_lora_adapter",
        r#"{"lora_name":"x"}"#,
    );
    assert_eq!(unload.status, 502);

    // Slow: 504 after REQUEST_TIMEOUT.
    let s = setup(
        "vllm-v1",
        &["--lora-delay-ms", "3000"],
        &["--request-timeout", "0.5"],
    );
    let response = post_json(
        s.sidecar.addr,
        "/v1/load_lora_adapter",
        &load_body("y", &pvc(&source), &out.join("y"), json!({})),
    );
    assert_eq!(response.status, 504, "{}", response.text());
    assert!(
        response.detail().contains("did not answer in time"),
        "{}",
        response.detail()
    );

    // Starting: refused at first, up a little later; the load waits for it.
    let port = closed_port().port();
    let sidecar = Sidecar::new("vllm", format!("127.0.0.1:{port}").parse().unwrap()).start();
    let addr = sidecar.addr;
    let body = load_body("z", &pvc(&source), &out.join("z"), json!({}));
    let pending = std::thread::spawn(move || post_json(addr, "/v1/load_lora_adapter", &body));
    // The engine is started only once the load has been refused by it.
    eventually("the load finds the engine not up yet", || {
        sidecar.log().contains("cannot reach the engine yet")
    });
    let _engine = Proc::start(&["simulate", "--port", &port.to_string()], &[]);
    let response = pending.join().unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
}

#[test]
fn bad_names_and_bodies() {
    let s = setup("vllm-v1", &[], &[]);
    let out = temp_dir("lora-bad");
    for (body, detail) in [
        (
            json!({ "source": "pvc://x", "output_dir": out }),
            "Missing required parameter: lora_name",
        ),
        (
            json!({ "lora_name": "../escape", "source": "pvc://x", "output_dir": out }),
            "Invalid parameter: lora_name must be",
        ),
        (
            json!({ "lora_name": "a/b", "source": "pvc://x", "output_dir": out }),
            "Invalid parameter: lora_name must be",
        ),
        (
            json!({ "lora_name": "x".repeat(129), "source": "pvc://x", "output_dir": out }),
            "Invalid parameter: lora_name must be",
        ),
        (
            json!({ "lora_name": 7, "source": "pvc://x", "output_dir": out }),
            "Invalid parameter: lora_name must be a string",
        ),
        (
            json!({ "lora_name": "ok", "output_dir": out }),
            "Missing required parameter: source",
        ),
        (
            json!({ "lora_name": "ok", "source": "pvc://x" }),
            "Missing required parameter: output_dir",
        ),
        (
            json!({ "lora_name": "ok", "source": "pvc://x", "output_dir": out, "max_workers": 100 }),
            "Invalid parameter: max_workers",
        ),
    ] {
        let response = post_json(s.sidecar.addr, "/v1/load_lora_adapter", &body.to_string());
        assert_eq!(response.status, 400, "{body}");
        assert!(
            response.detail().starts_with(detail),
            "{body}: {}",
            response.detail()
        );
    }
    for body in [
        "[]",
        "{",
        r#"{"lora_name":"../x"}"#,
        r#"{"lora_name":"ok","cleanup":"yes"}"#,
    ] {
        let response = post_json(s.sidecar.addr, "/v1/unload_lora_adapter", body);
        assert_eq!(response.status, 400, "{body}");
    }
    // A download that fails is the download's error.
    let response = post_json(
        s.sidecar.addr,
        "/v1/load_lora_adapter",
        &load_body("ok", "pvc://no/such/adapter", &out.join("ok"), json!({})),
    );
    assert_eq!(response.status, 404, "{}", response.text());
    assert!(
        response
            .detail()
            .starts_with("LoRA adapter download failed: not found: pvc://no/such/adapter"),
        "{}",
        response.detail()
    );
    let text = get(s.sidecar.addr, "/metrics").text();
    for line in [
        "matrixinfer_runtime_lora_operations_total{operation=\"load\",outcome=\"bad_request\"} 8",
        "matrixinfer_runtime_lora_operations_total{operation=\"unload\",outcome=\"bad_request\"} 4",
        "matrixinfer_runtime_lora_operations_total{operation=\"load\",outcome=\"download_error\"} 1",
        "matrixinfer_runtime_lora_operation_duration_seconds_count{operation=\"load\"} 9",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}");
    }
}

#[test]
fn unload_during_a_load_of_the_same_name_is_a_quick_409() {
    let server = S3Server::start(&temp_dir("lora-busy")).unwrap();
    server.put(
        "adapters",
        "big/adapter_config.json",
        br#"{"peft_type":"LORA"}"#,
    );
    server.put(
        "adapters",
        "big/adapter_model.safetensors",
        &noise(24 * 1024 * 1024, 6),
    );
    // 4 MiB/s: the load downloads for several seconds.
    let slow = crate::proxy::Proxy::start(
        server.addr,
        crate::proxy::Faults {
            bytes_per_second: 4 * 1024 * 1024,
            ..Default::default()
        },
    );
    let s = setup("vllm-v1", &[], &[]);
    let config =
        json!({ "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "endpoint": slow.endpoint() });
    let body = load_body(
        "big",
        "s3://adapters/big",
        &temp_dir("lora-busy-out").join("big"),
        json!({ "config": config.to_string(), "async_download": true }),
    );
    let started = post_json(s.sidecar.addr, "/v1/load_lora_adapter", &body);
    assert_eq!(started.status, 202, "{}", started.text());
    eventually("the download is under way", || {
        slow.bytes.load(std::sync::atomic::Ordering::SeqCst) > 0
    });
    // Had it waited for the download, it would have had the engine's answer.
    let busy = post_json(
        s.sidecar.addr,
        "/v1/unload_lora_adapter",
        r#"{"lora_name":"big"}"#,
    );
    assert_eq!(busy.status, 409, "{}", busy.text());
    assert!(
        busy.detail().contains("'big' is being loaded"),
        "{}",
        busy.detail()
    );
    // Other names are not held up, and once loaded, the unload works.
    let other = post_json(
        s.sidecar.addr,
        "/v1/unload_lora_adapter",
        r#"{"lora_name":"other"}"#,
    );
    assert_eq!(other.status, 400, "{}", other.text());
    let id = started.json()["id"].as_str().unwrap().to_owned();
    let loaded = wait_for_job(&s.sidecar, &id, Duration::from_secs(60));
    assert_eq!(loaded["state"], "completed", "{loaded}");
    let unload = post_json(
        s.sidecar.addr,
        "/v1/unload_lora_adapter",
        r#"{"lora_name":"big"}"#,
    );
    assert_eq!(unload.status, 200, "{}", unload.text());
}

/// LoRA adapter sources take every HuggingFace spelling the download API
/// does (the control plane sends `hf://org/adapter`), from the local Hub.
#[test]
fn adapters_from_huggingface_in_every_spelling() {
    use crate::hub::{Hub, HubFile, HubRepo};
    let repo = HubRepo {
        id: "acme/sql-adapter".into(),
        commit: "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567".into(),
        token: None,
        files: vec![
            HubFile {
                path: "adapter_config.json".into(),
                data: br#"{"peft_type":"LORA","r":8}"#.to_vec(),
                lfs: false,
                corrupt: false,
            },
            HubFile {
                path: "adapter_model.safetensors".into(),
                data: noise(512 * 1024 + 3, 7),
                lfs: true,
                corrupt: false,
            },
        ],
    };
    let hub = Hub::start(vec![repo.clone()]);
    let s = setup("sglang-0.5", &[], &[]);
    let config = json!({ "hf_endpoint": hub.endpoint() }).to_string();
    let pinned = format!("hf://acme/sql-adapter@{}", repo.commit);
    for (i, source) in [
        "acme/sql-adapter",
        "hf://acme/sql-adapter",
        "huggingface://acme/sql-adapter",
        pinned.as_str(),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("sql-{i}");
        let out = temp_dir(&format!("lora-hf-{i}")).join(&name);
        let response = post_json(
            s.sidecar.addr,
            "/v1/load_lora_adapter",
            &load_body(&name, source, &out, json!({ "config": config })),
        );
        assert_eq!(response.status, 200, "{source}: {}", response.text());
        for file in &repo.files {
            assert_eq!(
                std::fs::read(out.join(&file.path)).unwrap(),
                file.data,
                "{source}"
            );
        }
        assert_eq!(
            engine_report(&s)["loaded"][&name],
            out.display().to_string(),
            "{source}"
        );
    }
}

/// An adapter from ModelScope (`ms://owner/name[@revision]`), its
/// endpoint and token from the request's `config`.
#[test]
fn adapters_from_modelscope() {
    use crate::hub::HubFile;
    use crate::modelscope::{ModelScope, MsRepo};
    let repo = MsRepo {
        id: "acme/sql-adapter".into(),
        revisions: vec!["master".into(), "v2".into()],
        token: Some("ms-adapter-token".into()),
        files: vec![
            HubFile {
                path: "adapter_config.json".into(),
                data: br#"{"peft_type":"LORA","r":8}"#.to_vec(),
                lfs: false,
                corrupt: false,
            },
            HubFile {
                path: "adapter_model.safetensors".into(),
                data: noise(512 * 1024 + 3, 8),
                lfs: true,
                corrupt: false,
            },
        ],
    };
    let hub = ModelScope::start(vec![repo.clone()]);
    let s = setup("vllm-v1", &[], &[]);
    let config = json!({ "ms_endpoint": hub.endpoint(), "ms_token": "ms-adapter-token" });
    for (i, source) in ["ms://acme/sql-adapter", "ms://acme/sql-adapter@v2"]
        .into_iter()
        .enumerate()
    {
        let name = format!("ms-sql-{i}");
        let out = temp_dir(&format!("lora-ms-{i}")).join(&name);
        let response = post_json(
            s.sidecar.addr,
            "/v1/load_lora_adapter",
            &load_body(&name, source, &out, json!({ "config": config.to_string() })),
        );
        assert_eq!(response.status, 200, "{source}: {}", response.text());
        for file in &repo.files {
            assert_eq!(
                std::fs::read(out.join(&file.path)).unwrap(),
                file.data,
                "{source}"
            );
        }
        assert_eq!(
            engine_report(&s)["loaded"][&name],
            out.display().to_string(),
            "{source}"
        );
    }
    assert!(!s.sidecar.log().contains("ms-adapter-token"));
}
