//! A local HuggingFace Hub, written from the Hub's documented HTTP API,
//! because the real one cannot be reached from here:
//!
//! - `GET /api/models/{repo}/revision/{revision}?blobs=true`: the commit
//!   (`sha`) and `siblings` with `rfilename`, `size`, `blobId` (git blob
//!   SHA-1) and, for LFS files, `lfs.sha256` / `lfs.size`;
//! - `GET /{repo}/resolve/{revision}/{path}`: regular files served
//!   directly, LFS files redirected (302) to a CDN on another host:port;
//! - private repositories answer 401 without `Authorization: Bearer`;
//!   unknown repositories and revisions 404 with `{"error": …}`.
//!
//! Both servers honour `Range: bytes=a-b` with 206. The CDN records any
//! `Authorization` header it receives: a token must never reach it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;

use sha1::Digest as _;

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
}

fn sha256_hex(data: &[u8]) -> String {
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

struct Request {
    path: String,
    query: String,
    headers: HashMap<String, String>,
}

fn read_request(stream: &mut TcpStream) -> Option<Request> {
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

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
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
fn serve_bytes(stream: &mut TcpStream, request: &Request, data: &[u8]) {
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
            respond(
                stream,
                "206 Partial Content",
                &[("content-range", content_range)],
                &data[start..=end],
            );
        }
        None => respond(stream, "200 OK", &[], data),
    }
}

impl Hub {
    pub fn start(repos: Vec<HubRepo>) -> Hub {
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
            thread::spawn(move || {
                for stream in cdn_listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let (leaked, count, blobs) = (leaked.clone(), count.clone(), blobs.clone());
                    thread::spawn(move || {
                        let Some(request) = read_request(&mut stream) else {
                            return;
                        };
                        count.fetch_add(1, SeqCst);
                        if request.headers.contains_key("authorization") {
                            leaked.store(true, SeqCst);
                        }
                        let sha = request.path.trim_start_matches("/blob/").to_owned();
                        let data = blobs.lock().unwrap().get(&sha).cloned();
                        match data {
                            Some(data) => serve_bytes(&mut stream, &request, &data),
                            None => error(&mut stream, "404 Not Found", "no such blob"),
                        }
                    });
                }
            });
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let repos = Arc::new(repos);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let repos = repos.clone();
                thread::spawn(move || hub_request(&mut stream, &repos, cdn));
            }
        });
        Hub {
            addr,
            token_leaked,
            cdn_requests,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn hub_request(stream: &mut TcpStream, repos: &[HubRepo], cdn: SocketAddr) {
    let Some(request) = read_request(stream) else {
        return;
    };
    let find = |id: &str| repos.iter().find(|r| r.id == id);
    let authorized = |repo: &HubRepo| match &repo.token {
        None => true,
        Some(token) => request.headers.get("authorization") == Some(&format!("Bearer {token}")),
    };
    if let Some(rest) = request.path.strip_prefix("/api/models/") {
        let Some((id, revision)) = rest.split_once("/revision/") else {
            return error(stream, "404 Not Found", "Not Found");
        };
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
    // /{org}/{name}/resolve/{revision}/{path}
    let parts: Vec<&str> = request
        .path
        .trim_start_matches('/')
        .splitn(5, '/')
        .collect();
    if parts.len() == 5 && parts[2] == "resolve" {
        let id = format!("{}/{}", parts[0], parts[1]);
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
            let location = format!(
                "http://{cdn}/blob/{}?X-Amz-Signature=abc&Expires=9999999999",
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
        return serve_bytes(stream, &request, &data);
    }
    error(stream, "404 Not Found", "Not Found")
}

fn percent_decode(text: &str) -> String {
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
