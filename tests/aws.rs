//! Local AWS credential services, written from AWS's documented APIs
//! because the real ones cannot be reached from here; each hands out
//! temporary keys from a [`Keyring`] that the tests' S3 store accepts
//! until they expire:
//!
//! - STS (`POST /`, form body): `AssumeRoleWithWebIdentity` for one role
//!   and one web identity token (unsigned, as the API is), and
//!   `AssumeRole` signed with given source keys; XML answers, and
//!   `<ErrorResponse>` refusals (`InvalidIdentityToken`, `AccessDenied`);
//! - the container credentials endpoint (ECS, EKS Pod Identity): `GET` of
//!   a path with the `Authorization` token, JSON with `AccessKeyId`,
//!   `SecretAccessKey`, `Token`, `Expiration`;
//! - IMDSv2: `PUT /latest/api/token` with a TTL header gives a session
//!   token; `GET /latest/meta-data/iam/security-credentials/[role]` with
//!   it gives the role name, then its keys (`"Code": "Success"`); without
//!   the token 401.

use std::collections::HashMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::hub::{Request, percent_decode, read_request, respond};
use crate::s3::{Issued, Keyring};
use crate::util::Tie;

/// A running service and what it saw.
pub struct Service {
    pub addr: SocketAddr,
    /// Keys handed out.
    pub handed_out: Arc<AtomicUsize>,
    /// Requests refused (bad token, unsigned, wrong role).
    pub refused: Arc<AtomicUsize>,
    /// Every web identity or authorization token received.
    pub tokens_seen: Arc<Mutex<Vec<String>>>,
}

impl Service {
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn serve(handle: impl Fn(&mut TcpStream, &Request, &[u8]) + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = Arc::new(handle);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let handle = handle.clone();
            thread::spawn(move || {
                let Some(request) = read_request(&mut stream) else {
                    return;
                };
                let length: usize = request
                    .headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                if stream.read_exact(&mut body).is_err() {
                    return;
                }
                handle(&mut stream, &request, &body);
            });
        }
    });
    addr
}

fn counters() -> (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
    (Arc::default(), Arc::default(), Arc::default())
}

fn form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(&v.replace('+', " "))))
        .collect()
}

fn sts_error(stream: &mut TcpStream, status: &str, code: &str, message: &str) {
    let body = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"
    );
    respond(
        stream,
        status,
        &[("content-type", "text/xml".into())],
        body.as_bytes(),
    );
}

fn sts_answer(stream: &mut TcpStream, action: &str, keys: &Issued) {
    let body = format!(
        "<{action}Response xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><{action}Result><Credentials><SessionToken>{}</SessionToken><SecretAccessKey>{}</SecretAccessKey><Expiration>{}</Expiration><AccessKeyId>{}</AccessKeyId></Credentials><AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/test/session</Arn><AssumedRoleId>AROA:session</AssumedRoleId></AssumedRoleUser></{action}Result><ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata></{action}Response>",
        keys.session, keys.secret, keys.expiration, keys.access
    );
    respond(
        stream,
        "200 OK",
        &[("content-type", "text/xml".into())],
        body.as_bytes(),
    );
}

/// STS for `role_arn`: web identity `token` exchanged, and `AssumeRole`
/// signed by `source_access_key`; keys live `ttl`.
pub fn sts(
    keyring: &Keyring,
    role_arn: &str,
    token: &str,
    source_access_key: &str,
    ttl: Duration,
) -> Service {
    let (handed_out, refused, tokens_seen) = counters();
    let (keyring, role_arn, token, source) = (
        keyring.clone(),
        role_arn.to_owned(),
        token.to_owned(),
        source_access_key.to_owned(),
    );
    let (h, r, t) = (handed_out.clone(), refused.clone(), tokens_seen.clone());
    let addr = serve(move |stream, request, body| {
        let form = form(body);
        let action = form.get("Action").map(String::as_str).unwrap_or("");
        if request.path != "/" || form.get("Version").map(String::as_str) != Some("2011-06-15") {
            r.fetch_add(1, SeqCst);
            return sts_error(stream, "400 Bad Request", "InvalidAction", "bad request");
        }
        if form.get("RoleArn") != Some(&role_arn) {
            r.fetch_add(1, SeqCst);
            return sts_error(
                stream,
                "403 Forbidden",
                "AccessDenied",
                "Not authorized to perform sts:AssumeRole",
            );
        }
        match action {
            "AssumeRoleWithWebIdentity" => {
                let given = form.get("WebIdentityToken").cloned().unwrap_or_default();
                t.lock().unwrap().push(given.clone());
                if given != token {
                    r.fetch_add(1, SeqCst);
                    return sts_error(
                        stream,
                        "400 Bad Request",
                        "InvalidIdentityToken",
                        "The web identity token that was passed could not be validated by AWS.",
                    );
                }
            }
            "AssumeRole" => {
                // SigV4 checked as far as whose keys signed it: the
                // credential scope names the access key.
                let signed_by = request
                    .headers
                    .get("authorization")
                    .and_then(|a| a.split("Credential=").nth(1))
                    .and_then(|c| c.split('/').next())
                    .unwrap_or("");
                let scope_service = request
                    .headers
                    .get("authorization")
                    .is_some_and(|a| a.contains("/sts/aws4_request"));
                if signed_by != source || !scope_service {
                    r.fetch_add(1, SeqCst);
                    return sts_error(
                        stream,
                        "403 Forbidden",
                        "InvalidClientTokenId",
                        "The security token included in the request is invalid.",
                    );
                }
            }
            _ => {
                r.fetch_add(1, SeqCst);
                return sts_error(stream, "400 Bad Request", "InvalidAction", action);
            }
        }
        h.fetch_add(1, SeqCst);
        sts_answer(stream, action, &keyring.issue(ttl));
    });
    Service {
        addr,
        handed_out,
        refused,
        tokens_seen,
    }
}

fn json_keys(stream: &mut TcpStream, keys: &Issued, imds: bool) {
    let mut body = serde_json::json!({
        "AccessKeyId": keys.access,
        "SecretAccessKey": keys.secret,
        "Token": keys.session,
        "Expiration": keys.expiration,
    });
    if imds {
        body["Code"] = "Success".into();
        body["Type"] = "AWS-HMAC".into();
        body["LastUpdated"] = "2026-12-02T12:00:00Z".into();
    } else {
        body["RoleArn"] = "arn:aws:iam::123456789012:role/pod".into();
    }
    respond(
        stream,
        "200 OK",
        &[("content-type", "application/json".into())],
        body.to_string().as_bytes(),
    );
}

/// The container credentials endpoint at `path`, for `authorization`.
pub fn container(keyring: &Keyring, path: &str, authorization: &str, ttl: Duration) -> Service {
    let (handed_out, refused, tokens_seen) = counters();
    let (keyring, path, authorization) =
        (keyring.clone(), path.to_owned(), authorization.to_owned());
    let (h, r, t) = (handed_out.clone(), refused.clone(), tokens_seen.clone());
    let addr = serve(move |stream, request, _| {
        let given = request
            .headers
            .get("authorization")
            .cloned()
            .unwrap_or_default();
        t.lock().unwrap().push(given.clone());
        if request.path != path || given != authorization {
            r.fetch_add(1, SeqCst);
            return respond(
                stream,
                "401 Unauthorized",
                &[],
                b"{\"message\":\"unauthorized\"}",
            );
        }
        h.fetch_add(1, SeqCst);
        json_keys(stream, &keyring.issue(ttl), false);
    });
    Service {
        addr,
        handed_out,
        refused,
        tokens_seen,
    }
}

/// IMDSv2 with an instance role `role`.
pub fn imds(keyring: &Keyring, role: &str, ttl: Duration) -> Service {
    let (handed_out, refused, tokens_seen) = counters();
    let (keyring, role) = (keyring.clone(), role.to_owned());
    let (h, r) = (handed_out.clone(), refused.clone());
    let session = format!("AQAEAtestsessiontoken{}==", std::process::id());
    let addr = serve(move |stream, request, _| {
        if request.path == "/latest/api/token" {
            let ttl_header = request.headers.get("x-aws-ec2-metadata-token-ttl-seconds");
            if !ttl_header.is_some_and(|v| v.parse::<u32>().is_ok_and(|s| (1..=21600).contains(&s)))
            {
                r.fetch_add(1, SeqCst);
                return respond(stream, "400 Bad Request", &[], b"");
            }
            return respond(
                stream,
                "200 OK",
                &[("x-aws-ec2-metadata-token-ttl-seconds", "21600".into())],
                session.as_bytes(),
            );
        }
        if request.headers.get("x-aws-ec2-metadata-token") != Some(&session) {
            r.fetch_add(1, SeqCst);
            return respond(stream, "401 Unauthorized", &[], b"");
        }
        let base = "/latest/meta-data/iam/security-credentials/";
        match request.path.strip_prefix(base) {
            Some("") => respond(stream, "200 OK", &[], role.as_bytes()),
            Some(name) if name == role => {
                h.fetch_add(1, SeqCst);
                json_keys(stream, &keyring.issue(ttl), true);
            }
            _ => respond(stream, "404 Not Found", &[], b""),
        }
    });
    Service {
        addr,
        handed_out,
        refused,
        tokens_seen,
    }
}

/// moto's server (PyPI `moto[server]`), a real implementation of STS and
/// S3 together: with authentication on, its S3 checks every signature
/// and accepts only keys it knows, among them the temporary ones its STS
/// hands out for `AssumeRoleWithWebIdentity`. The first
/// `INITIAL_NO_AUTH_ACTION_COUNT` calls go unchecked: the set-up's four
/// (role, its policy, bucket, objects, made with boto3) and the web
/// identity exchange, which moto can only take unsigned as the first
/// unchecked call after them (AWS takes it unsigned always).
pub struct Moto {
    pub endpoint: String,
    pub role_arn: String,
    child: crate::util::Tied,
}

impl Moto {
    /// moto with a role allowed to read S3 and `files` under `bucket`.
    pub fn start(bucket: &str, files: &[(String, Vec<u8>)]) -> Moto {
        let python = std::env::var("MATRIXINFER_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "5")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn_tied();
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut moto = Moto {
            endpoint,
            role_arn: String::new(),
            child,
        };
        crate::util::eventually("moto listens", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let dir = crate::util::temp_dir("moto-files");
        for (name, data) in files {
            std::fs::write(dir.join(name), data).unwrap();
        }
        let script = r#"
import json, os, sys
import boto3
endpoint, bucket, directory = sys.argv[1:4]
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="AKIAMOTOSETUP", aws_secret_access_key="setup")
iam, s3 = boto3.client("iam", **kw), boto3.client("s3", **kw)
trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
         "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.example"},
         "Action": "sts:AssumeRoleWithWebIdentity"}]}
arn = iam.create_role(RoleName="model-reader", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
iam.put_role_policy(RoleName="model-reader", PolicyName="read", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
s3.create_bucket(Bucket=bucket)
# One action for all objects: an upload per object would each count.
name = sorted(os.listdir(directory))[0]
s3.put_object(Bucket=bucket, Key="qwen/" + name, Body=open(os.path.join(directory, name), "rb").read())
print(arn)
"#;
        assert_eq!(
            files.len(),
            1,
            "moto's unchecked calls leave room for one object"
        );
        let output = std::process::Command::new(&python)
            .args(["-c", script, &moto.endpoint, bucket])
            .arg(&dir)
            .output_tied();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        moto.role_arn = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        moto
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
