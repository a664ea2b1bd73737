//! A local ModelScope hub, written from the hub API the ModelScope SDK
//! uses (`modelscope.hub.api`, now the `modelscope_hub` package), because
//! the real one cannot be reached from here. The tests point the real SDK
//! (from PyPI) at it too, to show it is shaped like the real one.
//!
//! - `GET /api/v1/models/{owner}/{name}/repo/files?Revision=&Recursive=[&Root=]`:
//!   `{"Code": 200, "Data": {"Files": [...]}, "Success": true}`, each entry
//!   with `Name`, `Path`, `Type` (`blob`, or `tree` for a directory),
//!   `Size`, `Sha256`, `IsLFS` and `Revision`. Like the real server it cuts
//!   a listing at 3,000 entries and says nothing; `Root` scopes a listing
//!   to a directory, `Recursive=False` to its direct entries.
//! - `GET /api/v1/models/{owner}/{name}/repo?Revision=&FilePath=`: the
//!   file, honouring `Range`; LFS files through a redirect (302) to a CDN
//!   on another port.
//! - `GET /api/v1/repos/internalAccelerationInfo`: the SDK asks; an empty
//!   answer means none.
//! - Private repositories answer 401 without the token (as a bearer token
//!   or the `m_session_id` cookie, the SDK sends both), 403 with a wrong
//!   one; unknown repositories and revisions 404, with the business-code
//!   body the real server sends.
//!
//! The CDN records any credential it receives: a token must never reach it.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::thread;

use crate::hub::{
    HubFile, Request, percent_decode, read_request, respond, serve_bytes, sha256_hex,
};

/// Entries after which the real server cuts a `repo/files` listing.
pub const LISTING_CAP: usize = 3000;

#[derive(Clone)]
pub struct MsRepo {
    /// `owner/name`.
    pub id: String,
    /// Branches and tags it answers to (`master` first).
    pub revisions: Vec<String>,
    pub token: Option<String>,
    pub files: Vec<HubFile>,
}

pub struct ModelScope {
    pub addr: SocketAddr,
    /// Whether the CDN ever saw an `Authorization` or `Cookie` header.
    pub token_leaked: Arc<AtomicBool>,
    pub cdn_requests: Arc<AtomicUsize>,
    /// `repo/files` requests answered.
    pub listings: Arc<AtomicUsize>,
}

impl ModelScope {
    pub fn start(repos: Vec<MsRepo>) -> ModelScope {
        let token_leaked = Arc::new(AtomicBool::new(false));
        let cdn_requests = Arc::new(AtomicUsize::new(0));
        let listings = Arc::new(AtomicUsize::new(0));
        let repos = Arc::new(repos);

        let cdn_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn = cdn_listener.local_addr().unwrap();
        {
            let (leaked, count, repos) =
                (token_leaked.clone(), cdn_requests.clone(), repos.clone());
            serve(cdn_listener, move |stream, request| {
                count.fetch_add(1, SeqCst);
                if request.headers.contains_key("authorization")
                    || request.headers.contains_key("cookie")
                {
                    leaked.store(true, SeqCst);
                }
                let sha = request.path.trim_start_matches("/oss/");
                let file = repos
                    .iter()
                    .flat_map(|r| &r.files)
                    .find(|f| sha256_hex(&f.data) == sha);
                match file {
                    Some(file) => serve_bytes(stream, request, &served(file)),
                    None => respond(stream, "404 Not Found", &[], b"NoSuchKey"),
                }
            });
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        {
            let listings = listings.clone();
            serve(listener, move |stream, request| {
                hub_request(stream, request, &repos, cdn, &listings)
            });
        }
        ModelScope {
            addr,
            token_leaked,
            cdn_requests,
            listings,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// One thread per connection, one request per connection.
fn serve(listener: TcpListener, handle: impl Fn(&mut TcpStream, &Request) + Send + Sync + 'static) {
    let handle = Arc::new(handle);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let handle = handle.clone();
            thread::spawn(move || {
                if let Some(request) = read_request(&mut stream) {
                    handle(&mut stream, &request);
                }
            });
        }
    });
}

/// The bytes served for `file`: others than listed if it is corrupt.
fn served(file: &HubFile) -> Vec<u8> {
    let mut data = file.data.clone();
    if file.corrupt {
        data[0] ^= 0xff;
    }
    data
}

fn json(stream: &mut TcpStream, status: &str, body: serde_json::Value) {
    respond(
        stream,
        status,
        &[("content-type", "application/json".into())],
        body.to_string().as_bytes(),
    );
}

fn refuse(stream: &mut TcpStream, status: &str, code: u64, message: &str) {
    let body = serde_json::json!({
        "Code": code,
        "Message": message,
        "RequestId": "0a1b2c3d-test",
        "Success": false,
    });
    json(stream, status, body);
}

fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(&v.replace('+', " ")))
    })
}

fn hub_request(
    stream: &mut TcpStream,
    request: &Request,
    repos: &[MsRepo],
    cdn: SocketAddr,
    listings: &AtomicUsize,
) {
    if request.path == "/api/v1/repos/internalAccelerationInfo" {
        return json(
            stream,
            "200 OK",
            serde_json::json!({"Code": 200, "Data": {}, "Success": true}),
        );
    }
    let Some(rest) = request.path.strip_prefix("/api/v1/models/") else {
        return refuse(stream, "404 Not Found", 404, "Not Found");
    };
    let (id, listing) = match (rest.strip_suffix("/repo/files"), rest.strip_suffix("/repo")) {
        (Some(id), _) => (id, true),
        (None, Some(id)) => (id, false),
        (None, None) => return refuse(stream, "404 Not Found", 404, "Not Found"),
    };
    let Some(repo) = repos.iter().find(|r| r.id == id) else {
        return refuse(
            stream,
            "404 Not Found",
            10010205001,
            &format!("model {id} not found"),
        );
    };
    if let Some(token) = &repo.token {
        let bearer = request.headers.get("authorization").cloned();
        let cookie = request.headers.get("cookie").and_then(|c| {
            c.split(';')
                .find_map(|kv| kv.trim().strip_prefix("m_session_id=").map(str::to_owned))
        });
        let given = bearer
            .and_then(|b| b.strip_prefix("Bearer ").map(str::to_owned))
            .or(cookie);
        match given {
            None => return refuse(stream, "401 Unauthorized", 10010103009, "login required"),
            Some(given) if &given != token => {
                return refuse(
                    stream,
                    "403 Forbidden",
                    10010103009,
                    "AccessToken is invalid or expired",
                );
            }
            Some(_) => {}
        }
    }
    let revision = query_value(&request.query, "Revision").unwrap_or_else(|| "master".into());
    if !repo.revisions.contains(&revision) {
        return refuse(
            stream,
            "404 Not Found",
            10010205001,
            &format!("revision {revision} not found"),
        );
    }
    if listing {
        listings.fetch_add(1, SeqCst);
        let recursive =
            query_value(&request.query, "Recursive").is_none_or(|r| r.eq_ignore_ascii_case("true"));
        let root = query_value(&request.query, "Root")
            .map(|r| r.trim_matches('/').to_owned())
            .filter(|r| !r.is_empty());
        return json(
            stream,
            "200 OK",
            list(repo, &revision, root.as_deref(), recursive),
        );
    }
    let Some(path) = query_value(&request.query, "FilePath") else {
        return refuse(stream, "400 Bad Request", 400, "FilePath is required");
    };
    let Some(file) = repo.files.iter().find(|f| f.path == path) else {
        return refuse(
            stream,
            "404 Not Found",
            10010205001,
            &format!("file {path} not found"),
        );
    };
    if file.lfs {
        let location = format!(
            "http://{cdn}/oss/{}?Expires=9999999999&Signature=abc",
            sha256_hex(&file.data)
        );
        return respond(stream, "302 Found", &[("location", location)], b"");
    }
    serve_bytes(stream, request, &served(file));
}

/// The listing of `root` (the whole repository if `None`): files and the
/// directories that hold them, cut at [`LISTING_CAP`] entries.
fn list(repo: &MsRepo, revision: &str, root: Option<&str>, recursive: bool) -> serde_json::Value {
    let prefix = root.map(|r| format!("{r}/")).unwrap_or_default();
    let under = |path: &str| path.strip_prefix(&prefix).map(str::to_owned);
    let mut directories = BTreeSet::new();
    let mut entries = Vec::new();
    for file in &repo.files {
        let Some(rel) = under(&file.path) else {
            continue;
        };
        let parts: Vec<&str> = rel.split('/').collect();
        for depth in 1..parts.len() {
            if recursive || depth == 1 {
                directories.insert(format!("{prefix}{}", parts[..depth].join("/")));
            }
        }
        if !recursive && parts.len() > 1 {
            continue;
        }
        entries.push(serde_json::json!({
            "Name": parts.last().unwrap(),
            "Path": file.path,
            "Type": "blob",
            "Size": file.data.len(),
            "Sha256": sha256_hex(&file.data),
            "IsLFS": file.lfs,
            "Mode": "33188",
            "Revision": format!("{revision}-commit"),
        }));
    }
    for directory in directories {
        entries.push(serde_json::json!({
            "Name": directory.rsplit('/').next().unwrap(),
            "Path": directory,
            "Type": "tree",
            "Size": 0,
            "Sha256": "",
            "IsLFS": false,
            "Mode": "16384",
        }));
    }
    entries.truncate(LISTING_CAP);
    serde_json::json!({
        "Code": 200,
        "Data": { "Files": entries, "LatestCommitter": null },
        "Message": "success",
        "RequestId": "0a1b2c3d-test",
        "Success": true,
    })
}
