//! No secret in anything a whole run shows: one sidecar, logging at its
//! most verbose, does every kind of work with known secrets (API token,
//! S3 secret key and session token, HuggingFace tokens from a request and
//! from the environment, the password of the proxy every download goes
//! through, the Redis password in `REDIS_URL`, wrong secrets too),
//! succeeding and failing; then every log line, answer (status, headers,
//! body), status listing and metric it produced is searched for every
//! secret.

use base64::Engine as _;

use crate::download::{MIB, bucket, download_body, hub_repo};
use crate::forward_proxy::ForwardProxy;
use crate::hub::Hub;
use crate::s3::{ACCESS_KEY, SECRET_KEY};
use crate::util::*;

const API_TOKEN: &str = "api-TOKEN-5d1e0b7c";
const SESSION_TOKEN: &str = "FwoGZXIvYXdzEXAMPLE-session-SECRET";
const WRONG_SECRET: &str = "wrong-S3-secret-0c4f1a";
const HF_TOKEN: &str = "hf_private_token";
const HF_ENV_TOKEN: &str = "hf_ENV-token-9b2e";
const HF_WRONG_TOKEN: &str = "hf_WRONG-token-77aa";
const PROXY_USER: &str = "fleet";
const PROXY_PASSWORD: &str = "proxy/PASS:9e1f";
/// The same, as written in the proxy URL.
const PROXY_PASSWORD_URL: &str = "proxy%2FPASS%3A9e1f";
const PROXY_WRONG_PASSWORD: &str = "proxy-WRONG-pass-41c2";
const REDIS_PASSWORD: &str = "redis-ACL-password-51c7";

/// Everything a client saw of one answer.
fn seen(response: &Response) -> String {
    format!(
        "{} {:?} {}",
        response.status,
        response.headers,
        String::from_utf8_lossy(&response.body)
    )
}

fn s3(endpoint: &str, secret: &str) -> String {
    serde_json::json!({
        "access_key": ACCESS_KEY,
        "secret_key": secret,
        "session_token": SESSION_TOKEN,
        "endpoint": endpoint,
    })
    .to_string()
}

#[test]
fn no_secret_in_any_log_line_answer_status_or_metric_of_a_whole_run() {
    let fixture = bucket("secrets-s3", 3);
    fixture.server.put(
        "adapters",
        "math/adapter_config.json",
        br#"{"peft_type":"LORA"}"#,
    );
    fixture
        .server
        .put("adapters", "math/adapter_model.safetensors", &noise(MIB, 3));
    let private = hub_repo(Some(HF_TOKEN), false);
    let public = hub_repo(None, false);
    let hub = Hub::start(vec![private, public]);
    let engine = Engine::flavor("vllm-v1").start();
    // Every download and LoRA source goes through a proxy that wants a
    // password.
    let proxy = ForwardProxy::start(PROXY_USER, PROXY_PASSWORD);
    // The KV bridge logs where Redis is (the URL), never its password.
    let redis_url = format!("rediss://kv-writer:{REDIS_PASSWORD}@127.0.0.1:1/0");
    let sidecar = Sidecar::new("vllm", engine.addr)
        .env("MATRIXINFER_LOG", "trace")
        .env("MATRIXINFER_API_TOKEN", API_TOKEN)
        .env("HF_TOKEN", HF_ENV_TOKEN)
        .env("http_proxy", &proxy.url(PROXY_USER, PROXY_PASSWORD_URL))
        .env("REDIS_URL", &redis_url)
        .start();
    let endpoint = fixture.server.endpoint();
    let hub_config = |token: Option<&str>| {
        let mut config = serde_json::json!({ "hf_endpoint": hub.endpoint() });
        if let Some(token) = token {
            config["hf_token"] = token.into();
        }
        config.to_string()
    };
    let out = |name: &str| temp_dir(&format!("secrets-out-{name}"));
    let mut answers: Vec<(String, Response)> = Vec::new();
    let mut call = |what: &str, path: &str, body: String, token: Option<&str>| {
        let authorization = token.map(|t| format!("Bearer {t}"));
        let response = post_json_authorized(sidecar.addr, path, &body, authorization.as_deref());
        let status = response.status;
        let shown = seen(&response);
        answers.push((what.to_owned(), response));
        (status, shown)
    };
    let download = "/v1/download_model";

    let s3_out = out("s3");
    let s3_ok = download_body("s3://models/llama", &s3_out, &s3(&endpoint, SECRET_KEY), "");
    let (status, shown) = call("s3 without the API token", download, s3_ok.clone(), None);
    assert_eq!(status, 401, "{shown}");
    let (status, shown) = call(
        "s3 with a wrong API token",
        download,
        s3_ok.clone(),
        Some("nope"),
    );
    assert_eq!(status, 401, "{shown}");
    let (status, shown) = call("s3", download, s3_ok, Some(API_TOKEN));
    assert_eq!(status, 200, "{shown}");
    let s3_wrong = download_body(
        "s3://models/llama",
        &out("s3-wrong"),
        &s3(&endpoint, WRONG_SECRET),
        "",
    );
    let (status, shown) = call(
        "s3 with a wrong secret",
        download,
        s3_wrong,
        Some(API_TOKEN),
    );
    assert_eq!(status, 403, "{shown}");
    let s3_async = download_body(
        "s3://models/llama",
        &out("s3-async"),
        &s3(&endpoint, WRONG_SECRET),
        r#"{"async_download": true}"#,
    );
    let (status, shown) = call("s3 async", download, s3_async, Some(API_TOKEN));
    assert_eq!(status, 202, "{shown}");
    let hf_ok = download_body(
        "acme/private-model",
        &out("hf"),
        &hub_config(Some(HF_TOKEN)),
        "",
    );
    let (status, shown) = call("hf private", download, hf_ok, Some(API_TOKEN));
    assert_eq!(status, 200, "{shown}");
    let hf_wrong = download_body(
        "acme/private-model",
        &out("hf-wrong"),
        &hub_config(Some(HF_WRONG_TOKEN)),
        "",
    );
    let (status, shown) = call("hf with a wrong token", download, hf_wrong, Some(API_TOKEN));
    assert_eq!(status, 403, "{shown}");
    let hf_env = download_body("acme/tiny-llama", &out("hf-env"), &hub_config(None), "");
    let (status, shown) = call(
        "hf with the token from the environment",
        download,
        hf_env,
        Some(API_TOKEN),
    );
    assert_eq!(status, 200, "{shown}");
    // Secrets in fields of the wrong type, which the answer names.
    let malformed = serde_json::json!({
        "source": "s3://models/llama",
        "output_dir": out("malformed"),
        "config": { "access_key": 7, "secret_key": SECRET_KEY, "hf_token": [HF_TOKEN] },
    });
    let (status, shown) = call(
        "malformed config",
        download,
        malformed.to_string(),
        Some(API_TOKEN),
    );
    assert_eq!(status, 400, "{shown}");
    let not_json = format!("{{\"source\": \"s3://x\", \"config\": \"{SECRET_KEY}");
    let (status, shown) = call("not JSON", download, not_json, Some(API_TOKEN));
    assert_eq!(status, 400, "{shown}");
    let lora = serde_json::json!({
        "lora_name": "math",
        "source": "s3://adapters/math",
        "output_dir": out("lora").join("math"),
        "config": s3(&endpoint, SECRET_KEY),
    });
    let (status, shown) = call(
        "lora from s3",
        "/v1/load_lora_adapter",
        lora.to_string(),
        Some(API_TOKEN),
    );
    assert_eq!(status, 200, "{shown}");
    let lora_wrong = serde_json::json!({
        "lora_name": "math2",
        "source": "s3://adapters/math",
        "output_dir": out("lora-wrong").join("math"),
        "config": s3(&endpoint, WRONG_SECRET),
    });
    let (status, shown) = call(
        "lora with a wrong secret",
        "/v1/load_lora_adapter",
        lora_wrong.to_string(),
        Some(API_TOKEN),
    );
    assert_eq!(status, 403, "{shown}");

    // The status API after everything, including the failed async job.
    let listing = get(sidecar.addr, "/v1/downloads");
    let async_id = listing.json()["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| {
            d["output_dir"]
                .as_str()
                .is_some_and(|o| o.contains("secrets-out-s3-async"))
        })
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("{}", listing.text()));
    let status = wait_for_job(&sidecar, &async_id, patience());
    assert_eq!(status["state"], "failed", "{status}");
    // The status document as a client reads it.
    answers.push((
        "status".into(),
        get(sidecar.addr, &format!("/v1/downloads/{async_id}")),
    ));
    answers.push(("listing".into(), get(sidecar.addr, "/v1/downloads")));
    for path in ["/metrics", "/health", "/ready", "/v1/downloads/nope"] {
        answers.push((path.into(), get(sidecar.addr, path)));
    }
    let help = std::process::Command::new(BIN)
        .arg("--help")
        .env("MATRIXINFER_API_TOKEN", API_TOKEN)
        .env("REDIS_URL", &redis_url)
        .output_tied();
    let cli = std::process::Command::new(BIN)
        .args(["download", "--source", "s3://models/llama", "--output-dir"])
        .arg(out("cli"))
        .args(["--config", &s3(&endpoint, WRONG_SECRET)])
        .env("MATRIXINFER_LOG", "trace")
        .output_tied();
    assert_eq!(cli.status.code(), Some(1));
    let cli_wrong_proxy = std::process::Command::new(BIN)
        .args(["download", "--source", "s3://models/llama", "--output-dir"])
        .arg(out("cli-proxy"))
        .args(["--config", &s3(&endpoint, SECRET_KEY)])
        .env("MATRIXINFER_LOG", "trace")
        .env("http_proxy", proxy.url(PROXY_USER, PROXY_WRONG_PASSWORD))
        .output_tied();
    assert_eq!(cli_wrong_proxy.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&cli_wrong_proxy.stderr).contains("407"),
        "{}",
        String::from_utf8_lossy(&cli_wrong_proxy.stderr)
    );

    let mut everything: Vec<(String, String)> = answers
        .iter()
        .map(|(what, response)| (what.clone(), seen(response)))
        .collect();
    everything.push(("the sidecar's log".into(), sidecar.log()));
    everything.push((
        "--help".into(),
        String::from_utf8_lossy(&help.stdout).into(),
    ));
    everything.push(("the download command".into(), format!("{cli:?}")));
    everything.push((
        "the download command with a wrong proxy password".into(),
        format!("{cli_wrong_proxy:?}"),
    ));
    let basic = |password: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("{PROXY_USER}:{password}"))
    };
    let (proxy_basic, proxy_wrong_basic) = (basic(PROXY_PASSWORD), basic(PROXY_WRONG_PASSWORD));
    let secrets = [
        API_TOKEN,
        SECRET_KEY,
        SESSION_TOKEN,
        WRONG_SECRET,
        HF_TOKEN,
        HF_ENV_TOKEN,
        HF_WRONG_TOKEN,
        PROXY_PASSWORD,
        PROXY_PASSWORD_URL,
        PROXY_WRONG_PASSWORD,
        &proxy_basic,
        &proxy_wrong_basic,
        REDIS_PASSWORD,
    ];
    let mut leaks = Vec::new();
    for (what, text) in &everything {
        for secret in secrets {
            if text.contains(secret) {
                // Say where, never what.
                leaks.push(format!(
                    "{what} shows secret #{}",
                    secrets.iter().position(|s| *s == secret).unwrap()
                ));
            }
        }
    }
    assert!(leaks.is_empty(), "{leaks:#?}");
    // The search saw real traffic: what the requests carried besides
    // secrets shows up, the log is verbose and the work was done.
    let all: String = everything.iter().map(|(_, text)| text.as_str()).collect();
    assert!(all.contains("s3://models/llama") && all.contains("acme/private-model"));
    assert!(sidecar.log().contains("rediss://kv-writer@127.0.0.1:1/0"));
    assert!(sidecar.log().contains("DEBUG") || sidecar.log().contains("TRACE"));
    assert!(s3_out.join("config.json").exists());
    // The downloads went through the proxy, with its password.
    let forwarded = proxy.forwarded();
    assert!(
        forwarded
            .iter()
            .any(|f| f.contains("/models/llama/config.json"))
            && forwarded.iter().any(|f| f.contains("/acme/private-model/")),
        "{forwarded:?}"
    );
}

/// The credential chain's secrets, at the most verbose log level: the
/// web identity token, the keys and session tokens STS and the container
/// endpoint hand out (fetched again as they expire), the container
/// authorization token, and a ModelScope token: none in any log line,
/// answer, status or metric.
#[test]
fn no_secret_of_the_credential_chain_anywhere() {
    use crate::aws;
    use crate::modelscope::{ModelScope, MsRepo};
    use crate::s3::{Keyring, S3Server};
    use std::time::Duration;

    const ROLE: &str = "arn:aws:iam::123456789012:role/secrets";
    const WEB_IDENTITY: &str = "eyJ-web-identity-SECRET.token.sig";
    const CONTAINER_TOKEN: &str = "container-AUTH-token-1f2e";
    const MS_TOKEN: &str = "ms-SECRET-token-88aa";
    let keyring = Keyring::default();
    let store = S3Server::start_keyring(&temp_dir("secrets-chain-store"), keyring.clone()).unwrap();
    for i in 0..4 {
        store.put("models", &format!("m/{i}.bin"), &noise(64 * 1024, i));
    }
    let sts = aws::sts(
        &keyring,
        ROLE,
        WEB_IDENTITY,
        "AKIAUNUSED",
        Duration::from_secs(900),
    );
    let agent = aws::container(
        &keyring,
        "/creds",
        CONTAINER_TOKEN,
        Duration::from_secs(900),
    );
    let hub = ModelScope::start(vec![MsRepo {
        id: "acme/private".into(),
        revisions: vec!["master".into()],
        token: Some(MS_TOKEN.into()),
        files: vec![crate::hub::HubFile {
            path: "config.json".into(),
            data: b"{}".to_vec(),
            lfs: false,
            corrupt: false,
        }],
    }]);
    let dir = temp_dir("secrets-chain");
    std::fs::write(dir.join("token"), WEB_IDENTITY).unwrap();
    let mut everything: Vec<String> = Vec::new();
    let runs: [&[(&str, String)]; 2] = [
        &[
            ("AWS_ROLE_ARN", ROLE.into()),
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                dir.join("token").display().to_string(),
            ),
            ("AWS_ENDPOINT_URL_STS", sts.endpoint()),
        ],
        &[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("{}/creds", agent.endpoint()),
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", CONTAINER_TOKEN.into()),
        ],
    ];
    for env in runs {
        let mut sidecar = Sidecar::new("vllm", closed_port())
            .workers(1)
            .env("MATRIXINFER_LOG", "trace")
            .env("HOME", dir.to_str().unwrap())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("MS_TOKEN", MS_TOKEN)
            .env("MODELSCOPE_ENDPOINT", &hub.endpoint());
        for (k, v) in env {
            sidecar = sidecar.env(k, v);
        }
        let sidecar = sidecar.start();
        // Two downloads, the store calling the first keys expired between
        // them: the second fetches new ones.
        for i in 0..2 {
            let response = post_json(
                sidecar.addr,
                "/v1/download_model",
                &download_body(
                    "s3://models/m/",
                    &temp_dir(&format!("secrets-chain-out-{i}")),
                    &serde_json::json!({ "endpoint": store.endpoint() }).to_string(),
                    "",
                ),
            );
            assert_eq!(response.status, 200, "{}", response.text());
            everything.push(seen(&response));
            keyring.expire_all();
        }
        let response = post_json(
            sidecar.addr,
            "/v1/download_model",
            &download_body("ms://acme/private", &temp_dir("secrets-chain-ms"), "", ""),
        );
        assert_eq!(response.status, 200, "{}", response.text());
        everything.push(seen(&response));
        everything.push(get(sidecar.addr, "/v1/downloads").text());
        everything.push(get(sidecar.addr, "/metrics").text());
        everything.push(sidecar.log());
    }
    assert!(keyring_issued_at_least(&sts, &agent, 4));
    let all = everything.join("\n");
    assert!(all.contains("TRACE") || all.contains("DEBUG"));
    for fixed in [
        WEB_IDENTITY,
        CONTAINER_TOKEN,
        MS_TOKEN,
        "temp/secret+",
        "FwoGZXIvYXdzEXAMPLESESSION",
    ] {
        assert!(
            !all.contains(fixed),
            "a secret is shown ({} chars)",
            fixed.len()
        );
    }
}

/// Whether the chain really fetched keys again (each handing-out is one).
fn keyring_issued_at_least(
    sts: &crate::aws::Service,
    agent: &crate::aws::Service,
    n: usize,
) -> bool {
    use std::sync::atomic::Ordering::SeqCst;
    sts.handed_out.load(SeqCst) + agent.handed_out.load(SeqCst) >= n
}
