//! A local HuggingFace Hub, written from the Hub's documented HTTP API,
//! because the real one cannot be reached from here:
//!
//! - `GET /api/models/{repo}/revision/{revision}?blobs=true`: the commit
//!   (`sha`) and `siblings` with `rfilename`, `size`, `blobId` (git blob
//!   SHA-1) and, for LFS files, `lfs.sha256` / `lfs.size`;
//! - `GET /{repo}/resolve/{revision}/{path}`: regular files served
//!   directly, LFS files redirected (302) to a CDN on another host:port;
//! - dataset repositories (ids `datasets/{org}/{name}` here) the same way
//!   under `/api/datasets/…` and `/datasets/{repo}/resolve/…`, as the Hub
//!   and `huggingface_hub` (`repo_type="dataset"`) address them;
//! - private repositories answer 401 without `Authorization: Bearer`;
//!   unknown repositories and revisions 404 with `{"error": …}`.
//!
//! Both servers honour `Range: bytes=a-b` with 206. The CDN records any
//! `Authorization` header it receives: a token must never reach it.
//!
//! [`HubFaults`] make it misbehave as the real one sometimes does: 5xx
//! answers, and CDN links whose signature expires (403 after `Expires`,
//! as S3 and CloudFront presigned links do).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha1::Digest as _;

#[derive(Clone, Copy, Debug, Default)]
pub struct HubFaults {
    /// Every n-th request to the Hub or the CDN answers 500 or 503
    /// (0: never; 1: always).
    pub error_every: usize,
    /// CDN links expire this long after the Hub hands them out.
    pub link_lifetime: Option<Duration>,
    /// The CDN sends at most this many bytes per second per request.
    pub cdn_bytes_per_second: u64,
}

#[derive(Clone)]
pub struct HubFile {
    pub path: String,
    pub data: Vec<u8>,
    pub lfs: bool,
    /// Serve other bytes than those the listing describes.
    pub corrupt: bool,
}

#[derive(Clone)]
pub struct HubRepo {
    pub id: String,
    pub commit: String,
    pub token: Option<String>,
    pub files: Vec<HubFile>,
}

pub struct Hub {
    pub addr: SocketAddr,
    /// Whether the CDN ever saw an Authorization header.
    pub token_leaked: Arc<AtomicBool>,
    pub cdn_requests: Arc<AtomicUsize>,
    /// 5xx answers given by fault injection.
    pub errors: Arc<AtomicUsize>,
    /// CDN requests refused because their link had expired.
    pub expired: Arc<AtomicUsize>,
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&sha2::Sha256::digest(data))
}

fn git_blob_hex(data: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(data);
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub struct Request {
    pub path: String,
    pub query: String,
    pub headers: HashMap<String, String>,
}

pub fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    request.parse(&buf).ok()?;
    let target = request.path?.to_owned();
    let (path, query) = target
        .split_once('?')
        .map_or((target.clone(), String::new()), |(p, q)| {
            (p.into(), q.into())
        });
    let headers = request
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Some(Request {
        path,
        query,
        headers,
    })
}

pub fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    respond_at(stream, status, headers, body, 0);
}

/// The same, sending at most `bytes_per_second` of the body (0: at once).
fn respond_at(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
    bytes_per_second: u64,
) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    if bytes_per_second == 0 {
        let _ = stream.write_all(body);
        return;
    }
    let started = Instant::now();
    let mut sent = 0usize;
    for chunk in body.chunks(64 * 1024) {
        if stream.write_all(chunk).is_err() {
            return;
        }
        sent += chunk.len();
        let due = Duration::from_secs_f64(sent as f64 / bytes_per_second as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            thread::sleep(wait);
        }
    }
}

fn error(stream: &mut TcpStream, status: &str, message: &str) {
    let body = serde_json::json!({ "error": message }).to_string();
    respond(
        stream,
        status,
        &[("content-type", "application/json".into())],
        body.as_bytes(),
    );
}

/// Serves `data` honouring a Range header.
pub fn serve_bytes(stream: &mut TcpStream, request: &Request, data: &[u8]) {
    serve_bytes_at(stream, request, data, 0);
}

fn serve_bytes_at(stream: &mut TcpStream, request: &Request, data: &[u8], bytes_per_second: u64) {
    match request
        .headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
    {
        Some(range) => {
            let (a, b) = range.split_once('-').unwrap();
            let start: usize = a.parse().unwrap();
            let end: usize = if b.is_empty() {
                data.len() - 1
            } else {
                b.parse::<usize>().unwrap().min(data.len() - 1)
            };
            let content_range = format!("bytes {start}-{end}/{}", data.len());
            respond_at(
                stream,
                "206 Partial Content",
                &[("content-range", content_range)],
                &data[start..=end],
                bytes_per_second,
            );
        }
        None => respond_at(stream, "200 OK", &[], data, bytes_per_second),
    }
}

/// Answers a 5xx when `faults` say this request is one to fail.
fn injected_error(stream: &mut TcpStream, faults: &HubFaults, requests: &AtomicUsize) -> bool {
    let n = requests.fetch_add(1, SeqCst) + 1;
    if faults.error_every == 0 || !n.is_multiple_of(faults.error_every) {
        return false;
    }
    if n.is_multiple_of(2) {
        error(stream, "503 Service Unavailable", "Service Unavailable");
    } else {
        error(stream, "500 Internal Server Error", "Internal Error");
    }
    true
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

impl Hub {
    pub fn start(repos: Vec<HubRepo>) -> Hub {
        Hub::start_with(repos, HubFaults::default())
    }

    pub fn start_with(repos: Vec<HubRepo>, faults: HubFaults) -> Hub {
        let errors = Arc::new(AtomicUsize::new(0));
        let expired = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let token_leaked = Arc::new(AtomicBool::new(false));
        let cdn_requests = Arc::new(AtomicUsize::new(0));
        // Blobs the CDN serves, by SHA-256 of what the listing says.
        let blobs: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        for repo in &repos {
            for file in repo.files.iter().filter(|f| f.lfs) {
                let mut served = file.data.clone();
                if file.corrupt {
                    served[0] ^= 0xff;
                }
                blobs.lock().unwrap().insert(sha256_hex(&file.data), served);
            }
        }
        let cdn_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn = cdn_listener.local_addr().unwrap();
        {
            let (leaked, count, blobs) =
                (token_leaked.clone(), cdn_requests.clone(), blobs.clone());
            let (errors, expired, requests) = (errors.clone(), expired.clone(), requests.clone());
            thread::spawn(move || {
                for stream in cdn_listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let (leaked, count, blobs) = (leaked.clone(), count.clone(), blobs.clone());
                    let (errors, expired, requests) =
                        (errors.clone(), expired.clone(), requests.clone());
                    thread::spawn(move || {
                        let Some(request) = read_request(&mut stream) else {
                            return;
                        };
                        count.fetch_add(1, SeqCst);
                        if request.headers.contains_key("authorization") {
                            leaked.store(true, SeqCst);
                        }
                        if injected_error(&mut stream, &faults, &requests) {
                            errors.fetch_add(1, SeqCst);
                            return;
                        }
                        let expires = request
                            .query
                            .split('&')
                            .find_map(|kv| kv.strip_prefix("Expires="))
                            .and_then(|v| v.parse::<u64>().ok())
                            .unwrap_or(0);
                        if unix_now() > expires {
                            expired.fetch_add(1, SeqCst);
                            return respond(
                                &mut stream,
                                "403 Forbidden",
                                &[("content-type", "application/xml".into())],
                                b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                            );
                        }
                        let sha = request.path.trim_start_matches("/blob/").to_owned();
                        let data = blobs.lock().unwrap().get(&sha).cloned();
                        match data {
                            Some(data) => serve_bytes_at(
                                &mut stream,
                                &request,
                                &data,
                                faults.cdn_bytes_per_second,
                            ),
                            None => error(&mut stream, "404 Not Found", "no such blob"),
                        }
                    });
                }
            });
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let repos = Arc::new(repos);
        {
            let errors = errors.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let (repos, errors, requests) =
                        (repos.clone(), errors.clone(), requests.clone());
                    thread::spawn(move || {
                        let Some(request) = read_request(&mut stream) else {
                            return;
                        };
                        if injected_error(&mut stream, &faults, &requests) {
                            errors.fetch_add(1, SeqCst);
                        } else {
                            hub_request(&mut stream, &request, &repos, cdn, &faults);
                        }
                    });
                }
            });
        }
        Hub {
            addr,
            token_leaked,
            cdn_requests,
            errors,
            expired,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn hub_request(
    stream: &mut TcpStream,
    request: &Request,
    repos: &[HubRepo],
    cdn: SocketAddr,
    faults: &HubFaults,
) {
    let find = |id: &str| repos.iter().find(|r| r.id == id);
    let authorized = |repo: &HubRepo| match &repo.token {
        None => true,
        Some(token) => request.headers.get("authorization") == Some(&format!("Bearer {token}")),
    };
    let api = match (
        request.path.strip_prefix("/api/models/"),
        request.path.strip_prefix("/api/datasets/"),
    ) {
        (Some(rest), _) => Some((rest, "")),
        (None, Some(rest)) => Some((rest, "datasets/")),
        (None, None) => None,
    };
    if let Some((rest, kind)) = api {
        let Some((id, revision)) = rest.split_once("/revision/") else {
            return error(stream, "404 Not Found", "Not Found");
        };
        let id = &format!("{kind}{id}");
        let Some(repo) = find(id) else {
            return error(stream, "404 Not Found", "Repository Not Found");
        };
        if !authorized(repo) {
            return error(
                stream,
                "401 Unauthorized",
                "Invalid credentials in Authorization header",
            );
        }
        if revision != "main" && revision != repo.commit {
            return error(
                stream,
                "404 Not Found",
                &format!("Revision Not Found for url: /api/models/{id}/revision/{revision}"),
            );
        }
        let blobs = request.query.contains("blobs=true");
        let siblings: Vec<_> = repo
            .files
            .iter()
            .map(|f| {
                let mut entry = serde_json::json!({ "rfilename": f.path });
                if blobs {
                    entry["size"] = f.data.len().into();
                    entry["blobId"] = git_blob_hex(&f.data).into();
                    if f.lfs {
                        entry["lfs"] = serde_json::json!({ "sha256": sha256_hex(&f.data), "size": f.data.len(), "pointerSize": 134 });
                    }
                }
                entry
            })
            .collect();
        let body = serde_json::json!({ "id": id, "modelId": id, "sha": repo.commit, "private": repo.token.is_some(), "siblings": siblings });
        return respond(
            stream,
            "200 OK",
            &[("content-type", "application/json".into())],
            body.to_string().as_bytes(),
        );
    }
    // [/datasets]/{org}/{name}/resolve/{revision}/{path}
    let (kind, path) = match request.path.strip_prefix("/datasets/") {
        Some(rest) => ("datasets/", rest),
        None => ("", request.path.trim_start_matches('/')),
    };
    let parts: Vec<&str> = path.splitn(5, '/').collect();
    if parts.len() == 5 && parts[2] == "resolve" {
        let id = format!("{kind}{}/{}", parts[0], parts[1]);
        let Some(repo) = find(&id) else {
            return error(stream, "404 Not Found", "Repository Not Found");
        };
        if !authorized(repo) {
            return error(
                stream,
                "401 Unauthorized",
                "Invalid credentials in Authorization header",
            );
        }
        if parts[3] != repo.commit && parts[3] != "main" {
            return error(stream, "404 Not Found", "Revision Not Found");
        }
        let path = percent_decode(parts[4]);
        let Some(file) = repo.files.iter().find(|f| f.path == path) else {
            return error(stream, "404 Not Found", "Entry Not Found");
        };
        if file.lfs {
            let expires = faults
                .link_lifetime
                .map_or(9_999_999_999, |lifetime| unix_now() + lifetime.as_secs());
            let location = format!(
                "http://{cdn}/blob/{}?X-Amz-Signature=abc&Expires={expires}",
                sha256_hex(&file.data)
            );
            return respond(
                stream,
                "302 Found",
                &[
                    ("location", location),
                    ("x-repo-commit", repo.commit.clone()),
                ],
                b"",
            );
        }
        let mut data = file.data.clone();
        if file.corrupt {
            data[0] ^= 0xff;
        }
        return serve_bytes(stream, request, &data);
    }
    error(stream, "404 Not Found", "Not Found")
}

pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}
