//! One policy for every outbound connection: S3, the Hub's API and CDN
//! and LoRA sources through a forward proxy that wants credentials
//! (CONNECT tunnels for https://, absolute-form requests for http://),
//! NO_PROXY hosts and the engine reached directly; an HTTPS Hub mirror
//! behind a private CA, trusted through `SSL_CERT_FILE` alone.

use std::path::Path;

use serde_json::json;

use crate::download::{MIB, download_body, hub_repo, start_job};
use crate::forward_proxy::{ForwardProxy, PrivateCa, TlsFront};
use crate::hub::Hub;
use crate::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use crate::util::*;

const PROXY_USER: &str = "fleet";
/// As written in the proxy URL (percent-encoded) and as the proxy checks it.
const PROXY_PASSWORD_URL: &str = "pr0xy%40pass%3Aword";
const PROXY_PASSWORD: &str = "pr0xy@pass:word";

fn s3_config(endpoint: &str) -> String {
    json!({ "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "endpoint": endpoint }).to_string()
}

/// A small bucket: one file large enough to be fetched in parallel parts.
fn store(name: &str) -> S3Server {
    let server = S3Server::start(&temp_dir(name)).unwrap();
    server.put("models", "small/config.json", br#"{"model_type":"llama"}"#);
    server.put("models", "small/weights.bin", &noise(20 * MIB + 3, 21));
    server.put(
        "adapters",
        "math/adapter_config.json",
        br#"{"peft_type":"LORA"}"#,
    );
    server.put(
        "adapters",
        "math/adapter_model.safetensors",
        &noise(MIB, 22),
    );
    server
}

fn assert_same_files(bucket_dir: &Path, out: &Path) {
    for file in files_below(bucket_dir) {
        assert_eq!(
            std::fs::read(out.join(&file)).ok(),
            std::fs::read(bucket_dir.join(&file)).ok(),
            "{file}"
        );
    }
}

#[test]
fn every_outbound_call_goes_through_the_proxy_but_no_proxy_hosts_and_the_engine() {
    let proxy = ForwardProxy::start(PROXY_USER, PROXY_PASSWORD);
    let s3 = store("outbound-s3");
    let hub = Hub::start(vec![hub_repo(None, false)]);
    let ca = PrivateCa::new("outbound");
    let mirror = TlsFront::start(hub.addr, &ca, &["hub.test"]);
    let engine = Engine::flavor("vllm-v1").start();
    let proxy_url = proxy.url(PROXY_USER, PROXY_PASSWORD_URL);
    let sidecar = Sidecar::new("vllm", engine.addr)
        .env("HTTPS_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env("NO_PROXY", "localhost,.example.internal")
        .env("SSL_CERT_FILE", ca.pem.to_str().unwrap())
        .start();
    // `.test` names resolve only at the proxy: whatever is fetched from
    // them came through it.
    let s3_port = s3.addr.port();
    let proxied_s3 = format!("http://s3.test:{s3_port}");

    // S3 over http://: absolute-form requests.
    let out = temp_dir("outbound-s3-out");
    let body = download_body("s3://models/small", &out, &s3_config(&proxied_s3), "");
    let response = post_json(sidecar.addr, "/v1/download_model", &body);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_same_files(&s3.root.join("models/small"), &out);

    // The Hub's API over https:// (a CONNECT tunnel, the mirror's CA
    // trusted through SSL_CERT_FILE), its CDN over http://.
    let out = temp_dir("outbound-hf-out");
    let config = json!({ "hf_endpoint": format!("https://hub.test:{}", mirror.addr.port()) });
    let body = download_body("hf://acme/tiny-llama", &out, &config.to_string(), "");
    let response = post_json(sidecar.addr, "/v1/download_model", &body);
    assert_eq!(response.status, 200, "{}", response.text());
    let repo = hub_repo(None, false);
    for file in &repo.files {
        assert_eq!(
            std::fs::read(out.join(&file.path)).unwrap(),
            file.data,
            "{}",
            file.path
        );
    }

    // A LoRA adapter from S3 through the proxy, loaded into the engine
    // directly.
    let lora_out = temp_dir("outbound-lora-out").join("math");
    let lora = json!({
        "lora_name": "math",
        "source": "s3://adapters/math",
        "output_dir": lora_out,
        "config": s3_config(&proxied_s3),
    });
    let response = post_json(sidecar.addr, "/v1/load_lora_adapter", &lora.to_string());
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        get(engine.addr, "/sim/lora").json()["loaded"]["math"],
        lora_out.display().to_string()
    );

    // A NO_PROXY host: reached directly (the proxy never hears of it).
    let out = temp_dir("outbound-direct-out");
    let direct_s3 = format!("http://localhost:{s3_port}");
    let body = download_body("s3://models/small", &out, &s3_config(&direct_s3), "");
    let response = post_json(sidecar.addr, "/v1/download_model", &body);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_same_files(&s3.root.join("models/small"), &out);

    // The engine's metrics, scraped directly as always.
    let scrape = get(sidecar.addr, "/metrics");
    assert_eq!(scrape.status, 200);

    let tunnels = proxy.tunnels();
    let forwarded = proxy.forwarded();
    let hub_authority = format!("hub.test:{}", mirror.addr.port());
    assert!(
        !tunnels.is_empty() && tunnels.iter().all(|t| *t == hub_authority),
        "{tunnels:?}"
    );
    assert!(mirror.handshakes.load(std::sync::atomic::Ordering::SeqCst) > 0);
    let s3_prefix = format!("http://s3.test:{s3_port}/");
    for wanted in [
        format!("{s3_prefix}models/small/weights.bin"),
        format!("{s3_prefix}adapters/math/adapter_model.safetensors"),
    ] {
        assert!(forwarded.contains(&wanted), "{wanted} not in {forwarded:?}");
    }
    // The LFS file's bytes came from the CDN, through the proxy.
    assert!(
        forwarded.iter().any(|f| f.contains("/blob/")),
        "{forwarded:?}"
    );
    assert!(hub.cdn_requests.load(std::sync::atomic::Ordering::SeqCst) > 0);
    // Every request carried the credentials; nothing went to the NO_PROXY
    // host or the engine through the proxy.
    assert_eq!(proxy.refused.load(std::sync::atomic::Ordering::SeqCst), 0);
    let carried = proxy.carried();
    assert!(!carried.contains("localhost"), "{carried}");
    assert!(
        !carried.contains(&format!(":{}", engine.addr.port())),
        "{carried}"
    );
    // The log says which proxy applies, never its password.
    let log = sidecar.log();
    assert!(log.contains("outbound proxies"), "{log}");
    assert!(!log.contains(PROXY_PASSWORD) && !log.contains(PROXY_PASSWORD_URL));
}

#[test]
fn an_https_hub_mirror_is_trusted_through_ssl_cert_file_alone() {
    let hub = Hub::start(vec![hub_repo(None, false)]);
    let ca = PrivateCa::new("mirror");
    let mirror = TlsFront::start(hub.addr, &ca, &["localhost"]);
    let other_ca = PrivateCa::new("other");
    let endpoint = format!("https://localhost:{}", mirror.addr.port());
    let download = |ssl_cert_file: &Path, name: &str| {
        let out = temp_dir(name);
        let output = std::process::Command::new(BIN)
            .args([
                "download",
                "--source",
                "hf://acme/tiny-llama",
                "--output-dir",
            ])
            .arg(&out)
            .args(["--config", &json!({ "hf_endpoint": endpoint }).to_string()])
            .env("SSL_CERT_FILE", ssl_cert_file)
            .env_remove("SSL_CERT_DIR")
            .output_tied();
        (output, out)
    };
    // Another CA in SSL_CERT_FILE: the mirror is not trusted, and the
    // error says why.
    let (untrusted, out) = download(&other_ca.pem, "mirror-untrusted");
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert_eq!(untrusted.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("certificate") && stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
    assert!(!out.join("config.json").exists());
    // Its own CA: the revision resolves and every file arrives.
    let (trusted, out) = download(&ca.pem, "mirror-trusted");
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    for file in &hub_repo(None, false).files {
        assert_eq!(
            std::fs::read(out.join(&file.path)).unwrap(),
            file.data,
            "{}",
            file.path
        );
    }
}

#[test]
fn a_wrong_proxy_password_is_a_clear_error_that_never_shows_it() {
    const WRONG: &str = "wr0ng-PROXY-pass";
    let proxy = ForwardProxy::start(PROXY_USER, PROXY_PASSWORD);
    let s3 = store("outbound-wrong-s3");
    let hub = Hub::start(vec![hub_repo(None, false)]);
    let ca = PrivateCa::new("wrong");
    let mirror = TlsFront::start(hub.addr, &ca, &["hub.test"]);
    let engine = Engine::flavor("vllm-v1").start();
    let proxy_url = proxy.url(PROXY_USER, WRONG);
    let sidecar = Sidecar::new("vllm", engine.addr)
        .env("MATRIXINFER_LOG", "trace")
        .env("HTTPS_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env("SSL_CERT_FILE", ca.pem.to_str().unwrap())
        .start();
    let s3_job = start_job(
        &sidecar,
        "/v1/download_model",
        &download_body(
            "s3://models/small",
            &temp_dir("outbound-wrong-s3-out"),
            &s3_config(&format!("http://s3.test:{}", s3.addr.port())),
            r#"{"async_download": true}"#,
        ),
    );
    let hf_job = start_job(
        &sidecar,
        "/v1/download_model",
        &download_body(
            "hf://acme/tiny-llama",
            &temp_dir("outbound-wrong-hf-out"),
            &json!({ "hf_endpoint": format!("https://hub.test:{}", mirror.addr.port()) })
                .to_string(),
            r#"{"async_download": true}"#,
        ),
    );
    let proxy_name = format!("proxy http://{}", proxy.addr);
    let mut seen = Vec::new();
    for (id, what) in [(&s3_job, " s3.test:"), (&hf_job, "CONNECT hub.test")] {
        let status = wait_for_job(&sidecar, id, patience() * 6);
        assert_eq!(status["state"], "failed", "{status}");
        let error = status["error"].to_string();
        assert!(
            error.contains(&proxy_name) && error.contains("407") && error.contains(what),
            "{error}"
        );
        assert!(error.contains("refused the credentials"), "{error}");
        seen.push(status.to_string());
    }
    // Refused credentials are not tried again: one refusal per download.
    assert_eq!(proxy.refused.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(!temp_dir_has_files("outbound-wrong-s3-out"));
    seen.push(get(sidecar.addr, "/v1/downloads").text());
    seen.push(get(sidecar.addr, "/metrics").text());
    seen.push(sidecar.log());
    for text in &seen {
        for secret in [WRONG, PROXY_PASSWORD, PROXY_PASSWORD_URL] {
            assert!(!text.contains(secret), "a proxy password is shown");
        }
        // Nor the Basic credentials that carry it.
        assert!(!text.contains("Basic "), "proxy credentials are shown");
    }
}

/// Whether a directory made by [`temp_dir`] (same name, this process)
/// holds any visible file.
fn temp_dir_has_files(name: &str) -> bool {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", std::process::id()));
    files_below(&dir).iter().any(|f| !f.starts_with('.'))
}
