//! Redis as fleets run it: a real `redis-server` that the sidecar may
//! only reach over TLS, with a certificate from a private CA made here
//! (trusted through `SSL_CERT_FILE` only), and ACL users instead of one
//! shared password. The server also listens in plain text on another
//! port, where the tests, as an admin user, read what the sidecar wrote
//! and who it logged in as.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::json;

use crate::kv_events::{Bridge, Publisher, RedisServer, assert_block, stored};
use crate::util::*;

const ADMIN_PASSWORD: &str = "admin-pw-for-the-tests";
const KV_USER: &str = "kv-writer";
const KV_PASSWORD: &str = "KV-acl-PASSWORD-3f9c1e";
const WRONG_PASSWORD: &str = "WRONG-acl-password-8d2b";

/// A private CA, and a server certificate for 127.0.0.1 it signed.
struct Pki {
    /// The CA's certificate (PEM), for `SSL_CERT_FILE`.
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params
}

impl Pki {
    fn new(dir: &std::path::Path) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let ca_params = ca_params("MatrixInfer test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", ca_cert.pem()),
            cert: write("redis.pem", cert.pem()),
            key: write("redis.key", key.serialize_pem()),
        }
    }

    /// Another CA's certificate, which signed nothing here.
    fn stranger(dir: &std::path::Path) -> PathBuf {
        let key = KeyPair::generate().unwrap();
        let cert = ca_params("Some other CA").self_signed(&key).unwrap();
        let path = dir.join("other-ca.pem");
        std::fs::write(&path, cert.pem()).unwrap();
        path
    }
}

/// A Redis with TLS on `tls_port` and ACL users: the default user is off,
/// `admin` may do anything, `kv-writer` only touch the index's keys.
struct TlsRedis {
    server: RedisServer,
    tls_port: u16,
    pki: Pki,
    dir: PathBuf,
}

impl TlsRedis {
    fn start(name: &str) -> TlsRedis {
        let dir = temp_dir(name);
        let pki = Pki::new(&dir);
        let acl = dir.join("users.acl");
        std::fs::write(
            &acl,
            format!(
                "user default off\n\
                 user admin on >{ADMIN_PASSWORD} ~* &* +@all\n\
                 user {KV_USER} on >{KV_PASSWORD} ~vllm:kv:* ~matrix:kv:* +@all\n"
            ),
        )
        .unwrap();
        let tls_port = closed_port().port();
        let path = |p: &PathBuf| p.to_str().unwrap().to_owned();
        let options = vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path(&pki.cert),
            "--tls-key-file".into(),
            path(&pki.key),
            "--tls-ca-cert-file".into(),
            path(&pki.ca),
            "--tls-auth-clients".into(),
            "no".into(),
            "--aclfile".into(),
            path(&acl),
        ];
        let server = RedisServer::start_with(options, Some(("admin", ADMIN_PASSWORD)));
        TlsRedis {
            server,
            tls_port,
            pki,
            dir,
        }
    }

    /// `CLIENT LIST`'s line of each connection to the TLS port.
    fn tls_clients(&self) -> Vec<String> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut self.server.connection())
            .unwrap();
        let laddr = format!("laddr=127.0.0.1:{} ", self.tls_port);
        list.lines()
            .filter(|line| line.contains(&laddr))
            .map(str::to_owned)
            .collect()
    }
}

/// Fails, saying where but never what, if any secret shows in the
/// sidecar's log, its answers, or `--help` run with the same environment.
fn assert_no_secret(bridge: &Bridge, env: &[(&str, &str)]) {
    let mut help = std::process::Command::new(BIN);
    help.arg("--help");
    for (k, v) in env {
        help.env(k, v);
    }
    let help = help.output_tied();
    let mut seen = vec![
        ("the log", bridge.sidecar.log()),
        ("--help", String::from_utf8_lossy(&help.stdout).into_owned()),
    ];
    for path in ["/metrics", "/health", "/ready"] {
        let answer = get(bridge.sidecar.addr, path);
        seen.push((path, format!("{:?} {}", answer.headers, answer.text())));
    }
    for (what, text) in &seen {
        for (i, secret) in [KV_PASSWORD, WRONG_PASSWORD].iter().enumerate() {
            assert!(!text.contains(secret), "{what} shows secret #{i}");
        }
    }
}

#[test]
fn the_bridge_writes_over_tls_as_an_acl_user() {
    let redis = TlsRedis::start("kv-redis-tls");
    let mut publisher = Publisher::start();
    let url = format!("rediss://{KV_USER}@127.0.0.1:{}/0", redis.tls_port);
    let ca = redis.pki.ca.to_str().unwrap().to_owned();
    let env = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_PASSWORD", KV_PASSWORD),
        ("SSL_CERT_FILE", ca.as_str()),
    ];
    let bridge = Bridge::start_configured(&publisher, |mut sidecar| {
        for (k, v) in env {
            sidecar = sidecar.env(k, v);
        }
        sidecar.env("MATRIXINFER_LOG", "debug")
    });
    bridge.warm_up(&mut publisher, "kv-events");
    bridge.apply(
        &mut publisher,
        json!({ "events": [stored(json!([41, 42]), &[1, 2, 3, 4, 5, 6])] }),
    );
    assert_block(&redis.server, "vllm", "41", publisher.std_hash(&[1, 2, 3]));
    assert_block(&redis.server, "vllm", "42", publisher.std_hash(&[4, 5, 6]));
    // Written by the ACL user, over the TLS port (the only one it knows).
    let clients = redis.tls_clients();
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert!(
        clients[0].contains(&format!(" user={KV_USER} ")),
        "{clients:?}"
    );
    assert_eq!(bridge.metric("matrixinfer_runtime_kv_redis_connected"), 1.0);
    let log = bridge.sidecar.log();
    assert!(
        log.contains(&format!(
            "rediss://{KV_USER}@127.0.0.1:{}/0",
            redis.tls_port
        )),
        "{log}"
    );
    assert_no_secret(&bridge, &env);
}

#[test]
fn an_untrusted_redis_certificate_is_refused_and_the_log_says_why() {
    let redis = TlsRedis::start("kv-redis-untrusted");
    let mut publisher = Publisher::start();
    let stranger = Pki::stranger(&redis.dir);
    let port = redis.tls_port.to_string();
    let bridge = Bridge::start_configured(&publisher, |sidecar| {
        sidecar
            .arg("--redis-host")
            .arg("127.0.0.1")
            .arg("--redis-port")
            .arg(&port)
            .env("REDIS_TLS", "true")
            .env("REDIS_USERNAME", KV_USER)
            .env("REDIS_PASSWORD", KV_PASSWORD)
            .env("SSL_CERT_FILE", stranger.to_str().unwrap())
    });
    bridge.warm_up(&mut publisher, "kv-events");
    publisher.publish(json!({ "events": [stored(json!([7]), &[7, 7])] }));
    let expected = format!(
        "TLS handshake with 127.0.0.1:{port} failed (its certificate must chain to a CA in the system roots, SSL_CERT_FILE or SSL_CERT_DIR, and name the host): invalid peer certificate: UnknownIssuer"
    );
    eventually("the log says why Redis is unavailable", || {
        bridge.sidecar.log().contains(&expected)
    });
    // Still serving, the bridge counted and waits; nothing was written.
    let scrape = get(bridge.sidecar.addr, "/metrics");
    assert_eq!(scrape.status, 200);
    assert!(
        scrape
            .text()
            .contains("matrixinfer_runtime_kv_redis_connected 0")
    );
    assert!(bridge.metric("matrixinfer_runtime_kv_redis_errors_total{kind=\"connection\"}") >= 1.0);
    assert_eq!(get(bridge.sidecar.addr, "/health").status, 200);
    assert!(redis.server.keys().is_empty());
    assert!(redis.tls_clients().is_empty());
    assert_no_secret(&bridge, &[("REDIS_PASSWORD", KV_PASSWORD)]);
}

#[test]
fn a_wrong_redis_password_is_refused_without_showing_it() {
    let redis = TlsRedis::start("kv-redis-wrongpass");
    let mut publisher = Publisher::start();
    let url = format!(
        "rediss://{KV_USER}:{WRONG_PASSWORD}@127.0.0.1:{}",
        redis.tls_port
    );
    let ca = redis.pki.ca.to_str().unwrap().to_owned();
    let env = [("REDIS_URL", url.as_str()), ("SSL_CERT_FILE", ca.as_str())];
    let bridge = Bridge::start_configured(&publisher, |mut sidecar| {
        for (k, v) in env {
            sidecar = sidecar.env(k, v);
        }
        sidecar.env("MATRIXINFER_LOG", "trace")
    });
    bridge.warm_up(&mut publisher, "kv-events");
    publisher.publish(json!({ "events": [stored(json!([7]), &[7, 7])] }));
    let expected = format!(
        "authentication as user \"{KV_USER}\" failed: WRONGPASS invalid username-password pair or user is disabled."
    );
    eventually("the log says the login was refused", || {
        bridge.sidecar.log().contains(&expected)
    });
    assert_eq!(get(bridge.sidecar.addr, "/health").status, 200);
    assert_eq!(bridge.metric("matrixinfer_runtime_kv_redis_connected"), 0.0);
    assert!(redis.server.keys().is_empty());
    assert_no_secret(&bridge, &env);
}
