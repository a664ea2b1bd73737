//! S3 without static keys: the AWS credential chain (web identity,
//! container credentials, shared profiles, IMDSv2) against local AWS
//! services, a store that accepts only the keys they hand out and only
//! until they expire; anonymous access; the bucket's region learned from
//! the store; requester-pays.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use crate::aws;
use crate::download::download_body;
use crate::proxy::{Faults, Proxy, RegionalS3};
use crate::s3::{Keyring, S3Server};
use crate::util::*;

const ROLE: &str = "arn:aws:iam::123456789012:role/model-reader";

/// A store with a few files under `models/qwen/`, accepting `keyring`.
fn store(name: &str, keyring: &Keyring) -> (S3Server, Vec<(String, Vec<u8>)>) {
    let s3 = S3Server::start_keyring(&temp_dir(&format!("{name}-store")), keyring.clone()).unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| {
            (
                format!("shard-{i:02}.bin"),
                noise(192 * 1024 + i, 40 + i as u64),
            )
        })
        .chain([(
            "config.json".to_owned(),
            b"{\"model_type\":\"qwen3\"}".to_vec(),
        )])
        .collect();
    for (name, data) in &files {
        s3.put("models", &format!("qwen/{name}"), data);
    }
    (s3, files)
}

fn assert_landed(files: &[(String, Vec<u8>)], out: &Path) {
    for (name, data) in files {
        assert_eq!(
            std::fs::read(out.join(name)).ok().as_ref(),
            Some(data),
            "{name}"
        );
    }
}

/// A sidecar with `env` and nothing of this machine's AWS set-up: its
/// own empty HOME, IMDS off unless `env` points it somewhere.
fn sidecar_with(name: &str, env: &[(&str, &str)]) -> Proc {
    let home = temp_dir(&format!("{name}-home"));
    let mut sidecar = Sidecar::new("vllm", closed_port())
        .workers(1)
        .env("HOME", home.to_str().unwrap());
    if !env
        .iter()
        .any(|(k, _)| *k == "AWS_EC2_METADATA_SERVICE_ENDPOINT")
    {
        sidecar = sidecar.env("AWS_EC2_METADATA_DISABLED", "true");
    }
    for (k, v) in env {
        sidecar = sidecar.env(k, v);
    }
    sidecar.start()
}

/// Starts an async download of `s3://models/qwen/` from `endpoint` and
/// waits for its end; the final status.
fn download(
    sidecar: &Proc,
    endpoint: &str,
    out: &Path,
    extra_config: serde_json::Value,
) -> serde_json::Value {
    let mut config = serde_json::json!({ "endpoint": endpoint, "region": "us-east-1" });
    for (k, v) in extra_config.as_object().unwrap() {
        config[k] = v.clone();
    }
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body(
            "s3://models/qwen/",
            out,
            &config.to_string(),
            r#"{"async_download": true, "max_workers": 2}"#,
        ),
    );
    assert_eq!(response.status, 202, "{}", response.text());
    let id = response.json()["id"].as_str().unwrap().to_owned();
    wait_for_job(sidecar, &id, Duration::from_secs(120))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// IRSA: the service account token is exchanged with STS for a role's
/// keys, which the store accepts; a wrong token is a 403 naming STS's
/// refusal. The token and the keys appear nowhere.
#[test]
fn web_identity_keys_from_sts() {
    let keyring = Keyring::default();
    let (s3, files) = store("irsa", &keyring);
    let token = "eyJhbGciOiJSUzI1NiJ9.service-account-token.sig";
    let sts = aws::sts(
        &keyring,
        ROLE,
        token,
        "AKIANOSOURCE",
        Duration::from_secs(900),
    );
    let dir = temp_dir("irsa-token");
    let token_file = write(&dir, "token", &format!("{token}\n"));
    let sidecar = sidecar_with(
        "irsa",
        &[
            ("AWS_ROLE_ARN", ROLE),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
            ("AWS_ENDPOINT_URL_STS", &sts.endpoint()),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    let out = temp_dir("irsa-out");
    let status = download(&sidecar, &s3.endpoint(), &out, serde_json::json!({}));
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(
        status["credentials"], "web identity (AWS_WEB_IDENTITY_TOKEN_FILE)",
        "{status}"
    );
    assert_landed(&files, &out);
    assert_eq!(
        sts.handed_out.load(SeqCst),
        1,
        "one exchange for the whole download"
    );
    assert_eq!(sts.tokens_seen.lock().unwrap().as_slice(), [token]);
    let log = sidecar.log();
    assert!(log.contains("web identity"), "{log}");
    for secret in [token, "temp/secret+"] {
        assert!(!log.contains(secret), "{secret} in the log");
        assert!(!status.to_string().contains(secret));
    }

    // The kubelet rotated in a token STS does not accept.
    write(&dir, "token", "eyJ.revoked.token");
    let other = sidecar_with(
        "irsa-bad",
        &[
            ("AWS_ROLE_ARN", ROLE),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
            ("AWS_ENDPOINT_URL_STS", &sts.endpoint()),
        ],
    );
    let status = download(
        &other,
        &s3.endpoint(),
        &temp_dir("irsa-bad-out"),
        serde_json::json!({}),
    );
    assert_eq!(status["state"], "failed", "{status}");
    assert!(
        status["error"]
            .as_str()
            .unwrap()
            .contains("InvalidIdentityToken"),
        "{status}"
    );
    assert!(!other.log().contains("eyJ.revoked.token"));
}

/// EKS Pod Identity / ECS: keys from the container endpoint with its
/// rotating authorization token file, living three seconds, through a
/// download that lasts longer: they are fetched again before they
/// expire, and the store never sees an expired key.
#[test]
fn container_credentials_are_refreshed_during_a_download() {
    let keyring = Keyring::default();
    let (s3, files) = store("pod-identity", &keyring);
    let authorization = "pod-identity-authorization-token";
    let agent = aws::container(
        &keyring,
        "/v1/credentials",
        authorization,
        Duration::from_secs(3),
    );
    let dir = temp_dir("pod-identity-token");
    let token_file = write(&dir, "token", authorization);
    // Slow enough that the download outlives several keys.
    let slow = Proxy::start(
        s3.addr,
        Faults {
            bytes_per_second: 256 * 1024,
            ..Faults::default()
        },
    );
    let sidecar = sidecar_with(
        "pod-identity",
        &[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                &format!("{}/v1/credentials", agent.endpoint()),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token_file.to_str().unwrap(),
            ),
        ],
    );
    let out = temp_dir("pod-identity-out");
    let status = download(&sidecar, &slow.endpoint(), &out, serde_json::json!({}));
    assert_eq!(status["state"], "completed", "{status}");
    assert_landed(&files, &out);
    assert!(
        status["credentials"]
            .as_str()
            .unwrap()
            .starts_with("container credentials"),
        "{status}"
    );
    assert!(
        agent.handed_out.load(SeqCst) >= 2,
        "keys fetched {} times in a download of several key lifetimes",
        agent.handed_out.load(SeqCst)
    );
    assert_eq!(
        keyring.expired.load(SeqCst),
        0,
        "a request went out with expired keys"
    );
    assert_eq!(agent.refused.load(SeqCst), 0);
    assert!(!sidecar.log().contains(authorization));
}

/// IMDSv2: a session token first, every metadata request with it; short
/// keys refreshed as above.
#[test]
fn instance_metadata_v2_keys() {
    let keyring = Keyring::default();
    let (s3, files) = store("imds", &keyring);
    let imds = aws::imds(&keyring, "model-reader-instance", Duration::from_secs(600));
    let sidecar = sidecar_with(
        "imds",
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.endpoint())],
    );
    let out = temp_dir("imds-out");
    let status = download(&sidecar, &s3.endpoint(), &out, serde_json::json!({}));
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(
        status["credentials"], "instance metadata (IMDSv2)",
        "{status}"
    );
    assert_landed(&files, &out);
    assert_eq!(
        imds.refused.load(SeqCst),
        0,
        "a request without the IMDSv2 token"
    );
    assert_eq!(imds.handed_out.load(SeqCst), 1);
}

/// Shared files: `AWS_PROFILE` picks static keys, a role assumed with a
/// `source_profile`'s keys (STS checks who signed), or a
/// `credential_process`.
#[test]
fn shared_profiles() {
    let keyring = Keyring::default();
    keyring.add("AKIABASEPROFILE", "base/secret");
    let (s3, files) = store("profiles", &keyring);
    let sts = aws::sts(
        &keyring,
        ROLE,
        "unused",
        "AKIABASEPROFILE",
        Duration::from_secs(900),
    );
    let issued = keyring.issue(Duration::from_secs(900));
    let dir = temp_dir("profiles-files");
    let config = write(
        &dir,
        "config",
        &format!(
            "[default]\nregion = us-east-1\n\n[profile reader]\nrole_arn = {ROLE}\nsource_profile = base\n\n[profile tool]\ncredential_process = printf '{{\"Version\":1,\"AccessKeyId\":\"{}\",\"SecretAccessKey\":\"{}\",\"SessionToken\":\"{}\",\"Expiration\":\"{}\"}}'\n",
            issued.access, issued.secret, issued.session, issued.expiration
        ),
    );
    let credentials = write(
        &dir,
        "credentials",
        "[base]\naws_access_key_id = AKIABASEPROFILE\naws_secret_access_key = base/secret\n",
    );
    for (profile, expected) in [
        ("base", "profile base (static keys)".to_owned()),
        ("reader", format!("profile reader (assumed role {ROLE})")),
        ("tool", "profile tool (credential_process)".to_owned()),
    ] {
        let sidecar = sidecar_with(
            &format!("profile-{profile}"),
            &[
                ("AWS_PROFILE", profile),
                ("AWS_CONFIG_FILE", config.to_str().unwrap()),
                ("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap()),
                ("AWS_ENDPOINT_URL_STS", &sts.endpoint()),
            ],
        );
        let out = temp_dir(&format!("profile-{profile}-out"));
        let status = download(&sidecar, &s3.endpoint(), &out, serde_json::json!({}));
        assert_eq!(status["state"], "completed", "{profile}: {status}");
        assert_eq!(status["credentials"], expected.as_str(), "{profile}");
        assert_landed(&files, &out);
        let log = sidecar.log();
        assert!(
            !log.contains("base/secret") && !log.contains(&issued.secret),
            "{profile}"
        );
    }
    assert_eq!(sts.handed_out.load(SeqCst), 1, "the reader profile's role");
    assert_eq!(sts.refused.load(SeqCst), 0);
}

/// Unsigned requests only when asked for, or when nothing supplies keys
/// (said once in the log); the store then refuses them, and the answer
/// says so.
#[test]
fn anonymous_only_when_asked_or_when_nothing_is_found() {
    let keyring = Keyring::default();
    keyring.add("AKIAENVIRONMENT", "env/secret");
    let (s3, files) = store("anonymous", &keyring);
    let sidecar = sidecar_with(
        "anonymous",
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT"),
            ("AWS_SECRET_ACCESS_KEY", "env/secret"),
        ],
    );
    let out = temp_dir("anonymous-env");
    let status = download(&sidecar, &s3.endpoint(), &out, serde_json::json!({}));
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(status["credentials"], "environment");
    assert_landed(&files, &out);
    let status = download(
        &sidecar,
        &s3.endpoint(),
        &temp_dir("anonymous-asked"),
        serde_json::json!({ "anonymous": true }),
    );
    assert_eq!(status["state"], "failed", "{status}");
    assert_eq!(status["credentials"], "anonymous (asked for)");
    assert!(
        status["error"].as_str().unwrap().contains("403"),
        "{status}"
    );

    let nothing = sidecar_with("anonymous-nothing", &[]);
    for i in 0..2 {
        let status = download(
            &nothing,
            &s3.endpoint(),
            &temp_dir(&format!("anonymous-nothing-{i}")),
            serde_json::json!({}),
        );
        assert_eq!(
            status["credentials"], "anonymous (no credentials found)",
            "{status}"
        );
        assert_eq!(status["state"], "failed", "{status}");
    }
    assert_eq!(
        nothing.log().matches("no S3 credentials found").count(),
        1,
        "said once: {}",
        nothing.log()
    );
}

/// A bucket in another region than assumed: the store's
/// `x-amz-bucket-region` is followed once, with a log line, and every
/// later request goes there at once; `request_payer` sends
/// `x-amz-request-payer: requester` on every request.
#[test]
fn the_bucket_region_is_learned_and_requester_pays() {
    let keyring = Keyring::default();
    keyring.add("AKIAREGIONAL", "regional/secret");
    let (s3, files) = store("regional", &keyring);
    let front = RegionalS3::start(s3.addr, "eu-west-2");
    let sidecar = sidecar_with("regional", &[]);
    let out = temp_dir("regional-out");
    let status = download(
        &sidecar,
        &front.endpoint(),
        &out,
        serde_json::json!({
            "access_key": "AKIAREGIONAL",
            "secret_key": "regional/secret",
            "request_payer": true,
        }),
    );
    assert_eq!(status["state"], "completed", "{status}");
    assert_landed(&files, &out);
    assert_eq!(
        front.redirected.load(SeqCst),
        1,
        "one redirect, then the right region"
    );
    let passed = front.passed.load(SeqCst);
    assert!(passed > files.len(), "{passed}");
    assert_eq!(front.payer_requests.load(SeqCst), passed + 1);
    assert!(sidecar.log().contains("eu-west-2"), "{}", sidecar.log());
}

/// IRSA against moto, a real STS and S3: the sidecar exchanges its token
/// with moto's STS, and moto's S3, which checks every signature, serves
/// the object to those temporary keys (and refuses keys it does not
/// know).
#[test]
fn web_identity_against_moto() {
    let data = noise(300 * 1024, 77);
    let moto = aws::Moto::start("weights", &[("model.safetensors".to_owned(), data.clone())]);
    let dir = temp_dir("moto-token");
    let token_file = write(
        &dir,
        "token",
        "eyJhbGciOiJSUzI1NiJ9.moto-service-account.sig",
    );
    let sidecar = sidecar_with(
        "moto",
        &[
            ("AWS_ROLE_ARN", &moto.role_arn),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
            ("AWS_ENDPOINT_URL_STS", &moto.endpoint),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    let out = temp_dir("moto-out");
    let config = serde_json::json!({ "endpoint": moto.endpoint }).to_string();
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body("s3://weights/qwen/", &out, &config, ""),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), data);
    // Keys moto does not know are refused: it does check.
    let strangers = serde_json::json!({
        "endpoint": moto.endpoint,
        "access_key": "AKIASTRANGER",
        "secret_key": "not-known",
    })
    .to_string();
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body(
            "s3://weights/qwen/",
            &temp_dir("moto-stranger"),
            &strangers,
            "",
        ),
    );
    assert_eq!(response.status, 403, "{}", response.text());
}

/// `addressing_style: virtual` against an S3-compatible endpoint: the
/// bucket goes into the host name (`models.s3.test`), which only the
/// tests' forward proxy resolves, so the download's arrival proves every
/// request went virtual-hosted; `path` keeps it in the path.
#[test]
fn virtual_hosted_and_path_style_addressing() {
    use crate::forward_proxy::ForwardProxy;
    use crate::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
    let s3 = S3Server::start_virtual(&temp_dir("virtual-store"), "s3.test").unwrap();
    let data = noise(100_000, 9);
    s3.put("models", "qwen/model.bin", &data);
    let proxy = ForwardProxy::start("u", "p");
    let sidecar = sidecar_with("virtual", &[("http_proxy", &proxy.url("u", "p"))]);
    for style in ["virtual", "path"] {
        let out = temp_dir(&format!("virtual-{style}"));
        let config = serde_json::json!({
            "endpoint": format!("http://s3.test:{}", s3.addr.port()),
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "addressing_style": style,
        });
        let response = post_json(
            sidecar.addr,
            "/v1/download_model",
            &download_body("s3://models/qwen/", &out, &config.to_string(), ""),
        );
        assert_eq!(response.status, 200, "{style}: {}", response.text());
        assert_eq!(std::fs::read(out.join("model.bin")).unwrap(), data);
    }
    let forwarded = proxy.forwarded();
    let port = s3.addr.port();
    let virtual_get = format!("http://models.s3.test:{port}/qwen/model.bin");
    let path_get = format!("http://s3.test:{port}/models/qwen/model.bin");
    assert!(forwarded.contains(&virtual_get), "{forwarded:?}");
    assert!(forwarded.contains(&path_get), "{forwarded:?}");
    let response = post_json(
        sidecar.addr,
        "/v1/download_model",
        &download_body(
            "s3://models/qwen/",
            &temp_dir("virtual-bad"),
            &serde_json::json!({ "addressing_style": "sideways" }).to_string(),
            "",
        ),
    );
    assert_eq!(response.status, 400, "{}", response.text());
    assert!(
        response.text().contains("addressing_style"),
        "{}",
        response.text()
    );
}

/// The credential services are outbound calls like any other: with a
/// proxy set, STS (here at `sts.test`, a name only the tests' forward
/// proxy resolves) and the store are reached through it.
#[test]
fn credential_services_follow_the_proxy() {
    use crate::forward_proxy::ForwardProxy;
    let keyring = Keyring::default();
    let (s3, files) = store("proxied-chain", &keyring);
    let token = "eyJ.proxied.token";
    let sts = aws::sts(&keyring, ROLE, token, "AKIANONE", Duration::from_secs(900));
    let dir = temp_dir("proxied-chain-token");
    let token_file = write(&dir, "token", token);
    let proxy = ForwardProxy::start("fleet", "pw");
    let sts_url = format!("http://sts.test:{}", sts.addr.port());
    let sidecar = sidecar_with(
        "proxied-chain",
        &[
            ("AWS_ROLE_ARN", ROLE),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
            ("AWS_ENDPOINT_URL_STS", &sts_url),
            ("http_proxy", &proxy.url("fleet", "pw")),
        ],
    );
    let out = temp_dir("proxied-chain-out");
    let endpoint = format!("http://s3.test:{}", s3.addr.port());
    let status = download(&sidecar, &endpoint, &out, serde_json::json!({}));
    assert_eq!(status["state"], "completed", "{status}");
    assert_landed(&files, &out);
    let forwarded = proxy.forwarded();
    assert!(
        forwarded
            .iter()
            .any(|f| f.starts_with(&format!("{sts_url}/"))),
        "{forwarded:?}"
    );
    assert!(
        forwarded.iter().any(|f| f.starts_with(&endpoint)),
        "{forwarded:?}"
    );
}

/// Keys the store calls expired before their stated expiry (clocks
/// differ): the `ExpiredToken` refusal fetches new ones at once, and the
/// download goes on.
#[test]
fn keys_the_store_calls_expired_are_fetched_again() {
    let keyring = Keyring::default();
    keyring.overstate(Duration::from_secs(3600));
    let (s3, files) = store("expired-early", &keyring);
    let agent = aws::container(&keyring, "/creds", "tok", Duration::from_secs(2));
    let slow = Proxy::start(
        s3.addr,
        Faults {
            bytes_per_second: 256 * 1024,
            ..Faults::default()
        },
    );
    let sidecar = sidecar_with(
        "expired-early",
        &[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                &format!("{}/creds", agent.endpoint()),
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "tok"),
        ],
    );
    let out = temp_dir("expired-early-out");
    let status = download(&sidecar, &slow.endpoint(), &out, serde_json::json!({}));
    assert_eq!(status["state"], "completed", "{status}");
    assert_landed(&files, &out);
    assert!(
        keyring.expired.load(SeqCst) >= 1,
        "the store never refused: nothing shown"
    );
    assert!(agent.handed_out.load(SeqCst) >= 2);
    assert!(sidecar.log().contains("refused the temporary credentials"));
}
