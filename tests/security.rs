//! Access control and exhaustion: the optional API token on the mutating
//! endpoints, downloads confined to allowed directories, and the cap on
//! open connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use crate::util::*;

const TOKEN: &str = "tok-7f3a9c2e-never-printed";

fn pvc_body(source: &Path, output_dir: &Path) -> String {
    serde_json::json!({
        "source": format!("pvc://{}", source.display().to_string().trim_start_matches('/')),
        "output_dir": output_dir,
    })
    .to_string()
}

#[test]
fn the_api_token_guards_every_mutating_endpoint_and_nothing_else() {
    let engine = Engine::flavor("vllm-v1").start();
    let sidecar = Sidecar::new("vllm", engine.addr)
        .env("MATRIXINFER_API_TOKEN", TOKEN)
        .start();
    let source = temp_dir("token-source");
    std::fs::write(source.join("config.json"), b"{}").unwrap();
    let out = temp_dir("token-out").join("model");
    let download = pvc_body(&source, &out);
    let lora = serde_json::json!({
        "lora_name": "a", "source": format!("pvc://{}", source.display().to_string().trim_start_matches('/')),
        "output_dir": temp_dir("token-lora").join("a"),
    })
    .to_string();
    let unload = r#"{"lora_name":"a"}"#;

    for (path, body) in [
        ("/v1/download_model", download.as_str()),
        ("/v1/load_lora_adapter", lora.as_str()),
        ("/v1/unload_lora_adapter", unload),
    ] {
        for authorization in [
            None,
            Some("Bearer wrong-token"),
            Some(&*format!("Basic {TOKEN}")),
            Some("Bearer"),
        ] {
            let answer = post_json_authorized(sidecar.addr, path, body, authorization);
            assert_eq!(
                answer.status,
                401,
                "{path} {authorization:?}: {}",
                answer.text()
            );
            assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
            assert!(!answer.detail().is_empty());
            assert!(!answer.text().contains(TOKEN));
        }
    }
    assert!(!out.exists(), "nothing is written for a refused request");

    // Reads stay open for probes and Prometheus.
    for path in ["/health", "/ready", "/metrics", "/v1/downloads"] {
        assert_eq!(get(sidecar.addr, path).status, 200, "{path}");
    }

    let bearer = format!("Bearer {TOKEN}");
    let answer = post_json_authorized(sidecar.addr, "/v1/download_model", &download, Some(&bearer));
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(out.join("config.json").exists());
    // Past the token, the endpoints check their bodies as before.
    let answer = post_json_authorized(sidecar.addr, "/v1/unload_lora_adapter", "{}", Some(&bearer));
    assert_eq!(answer.status, 400, "{}", answer.text());

    let log = sidecar.log();
    assert!(!log.contains(TOKEN), "the token is never logged:\n{log}");
    let help = Command::new(BIN)
        .arg("--help")
        .env("MATRIXINFER_API_TOKEN", TOKEN)
        .output_tied();
    assert!(!String::from_utf8_lossy(&help.stdout).contains(TOKEN));
}

#[test]
fn downloads_and_adapters_stay_under_the_allowed_roots() {
    let engine = Engine::flavor("vllm-v1").start();
    let base = temp_dir("roots");
    let models = base.join("models");
    let adapters = base.join("adapters");
    let elsewhere = base.join("elsewhere");
    for dir in [&models, &adapters, &elsewhere] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::os::unix::fs::symlink(&elsewhere, models.join("escape")).unwrap();
    let source = temp_dir("roots-source");
    std::fs::write(source.join("config.json"), b"{}").unwrap();
    // What the (simulated, as vLLM) engine looks for in an adapter.
    std::fs::write(source.join("adapter_config.json"), b"{}").unwrap();
    let roots = format!("{}:{}", models.display(), adapters.display());
    let sidecar = Sidecar::new("vllm", engine.addr)
        .env("MATRIXINFER_ALLOWED_ROOTS", &roots)
        .start();

    for refused in [
        elsewhere.join("m"),
        models.join("escape/m"),
        base.join("models-sibling/m"),
        "/etc/matrixinfer".into(),
    ] {
        let answer = post_json_authorized(
            sidecar.addr,
            "/v1/download_model",
            &pvc_body(&source, &refused),
            None,
        );
        assert_eq!(
            answer.status,
            403,
            "{}: {}",
            refused.display(),
            answer.text()
        );
        assert!(
            answer.detail().contains("outside the allowed directories"),
            "{}",
            answer.detail()
        );
        assert!(!refused.exists());
    }
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

    let inside = models.join("llama");
    let answer = post_json_authorized(
        sidecar.addr,
        "/v1/download_model",
        &pvc_body(&source, &inside),
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(inside.join("config.json").exists());

    let lora = |dir: &Path| {
        serde_json::json!({
            "lora_name": "a",
            "source": format!("pvc://{}", source.display().to_string().trim_start_matches('/')),
            "output_dir": dir,
        })
        .to_string()
    };
    let answer = post_json_authorized(
        sidecar.addr,
        "/v1/load_lora_adapter",
        &lora(&elsewhere.join("a")),
        None,
    );
    assert_eq!(answer.status, 403, "{}", answer.text());
    let answer = post_json_authorized(
        sidecar.addr,
        "/v1/load_lora_adapter",
        &lora(&adapters.join("a")),
        None,
    );
    assert_eq!(answer.status, 200, "{}", answer.text());

    // A root that is not there is a usage error at start, not a surprise later.
    let output = Command::new(BIN)
        .args(vllm_sidecar_args(&["--allowed-root"]))
        .arg(base.join("missing"))
        .output_tied();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--allowed-root"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn connections_past_the_cap_get_a_503_and_the_rest_keep_working() {
    let engine = Engine::flavor("vllm-v1").size("50k").start();
    // One worker: one accept queue, so connections are taken in the order
    // they came (the cap itself is process-wide).
    let sidecar = Sidecar::new("vllm", engine.addr)
        .workers(1)
        .arg("--max-connections")
        .arg("4")
        .start();
    // Three keep-alive clients, each answered once (so surely accepted),
    // and one that never sends a request, take every slot.
    let idle: Vec<Client> = (0..3)
        .map(|_| {
            let mut client = Client::connect(sidecar.addr);
            assert_eq!(client.get("/health").status, 200);
            client
        })
        .collect();
    let silent = TcpStream::connect(sidecar.addr).unwrap();
    let mut extra = TcpStream::connect(sidecar.addr).unwrap();
    extra.set_read_timeout(Some(patience())).unwrap();
    let mut answer = String::new();
    extra.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.contains("Too many connections"), "{answer}");

    // A slot freed is a slot served.
    drop(silent);
    eventually("a freed slot serves a scrape", || {
        let mut client = TcpStream::connect(sidecar.addr).unwrap();
        client.set_read_timeout(Some(patience())).unwrap();
        let _ = client.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer);
        answer.starts_with(b"HTTP/1.1 200")
    });
    let refused = metric(&sidecar, "matrixinfer_runtime_connections_refused_total");
    assert!(refused >= 1.0, "{refused}");
    drop(idle);
    // Only the scrape's own connection stays open (until the others are
    // counted out, a scrape may still find the cap reached: 503).
    let series = "matrixinfer_runtime_connections_open ";
    eventually("the idle connections are closed and counted out", || {
        let scrape = get(sidecar.addr, "/metrics");
        scrape.status == 200 && scrape.text().lines().any(|l| l == format!("{series}1"))
    });
}
