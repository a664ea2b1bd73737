//! A local HuggingFace Hub for benchmarks: one model repository served
//! from a directory, so that this runtime's `hf://` source and
//! `huggingface_hub.snapshot_download` can be measured against the same
//! server on the same machine.
//!
//! It is a stand-in built from the Hub's documented HTTP API (and the
//! response shapes `huggingface_hub` parses), not the Hub itself:
//!
//! - `GET /api/models/{repo}[/revision/{rev}]` (`?blobs=true` adds each
//!   sibling's `size`, `blobId` and `lfs: {sha256, size, pointerSize}`):
//!   the commit (`sha`) and `siblings`;
//! - `GET /api/models/{repo}/tree/{rev}[/{path}][?recursive=true]`: entries
//!   `{type, oid, size, path, lfs: {oid, size, pointerSize}}`, one page;
//! - `HEAD`/`GET /{repo}/resolve/{rev}/{path}`, with `X-Repo-Commit`:
//!   a regular file is served with `ETag` (its git blob id) and
//!   `Content-Length`; an LFS file answers `302` to the CDN listener (the
//!   next port, another origin, as the Hub's CDN is another host) with
//!   `X-Linked-Etag` (the LFS SHA-256) and `X-Linked-Size`;
//! - `HEAD`/`GET /blob/{sha256}` on the CDN port: the LFS file's bytes;
//! - byte ranges (`Range: bytes=a-b`, `a-`, `-n`) answered `206`;
//!   unknown repositories, revisions and files answer with the Hub's
//!   `X-Error-Code` and `{"error": …}`.
//!
//! No Xet headers are sent, so `huggingface_hub` downloads over plain
//! HTTP. Files at or above `--lfs-above` bytes (default 10 MB, the size
//! above which the Hub requires LFS) are LFS files; their SHA-256 and
//! every file's git blob id are computed once at start. Bodies go from
//! the file to the socket with `std::io::copy` (`sendfile` on Linux);
//! connections are kept alive, one thread each.
//!
//! `cargo run --release --example hub_server -- <dir> <port> [org/name] [--lfs-above BYTES]`
//! serves `<dir>` as `org/name` (default `bench/model`) on
//! `127.0.0.1:<port>`, its CDN on `<port>+1`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha1::Digest as _;

struct RepoFile {
    /// Path in the repository, `/`-separated.
    path: String,
    disk: PathBuf,
    size: u64,
    /// Git blob id (SHA-1 of `blob {size}\0` and the content; for an LFS
    /// file, of its pointer file).
    blob_id: String,
    /// LFS SHA-256 of the content.
    lfs: Option<String>,
}

struct Repo {
    id: String,
    commit: String,
    files: Vec<RepoFile>,
}

const POINTER_SIZE: u64 = 134;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: hub_server <dir> <port> [org/name] [--lfs-above BYTES]";
    let mut positional = Vec::new();
    let mut lfs_above: u64 = 10_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--lfs-above" {
            lfs_above = args.next().ok_or(usage)?.parse()?;
        } else {
            positional.push(arg);
        }
    }
    let root = PathBuf::from(positional.first().ok_or(usage)?);
    let port: u16 = positional.get(1).ok_or(usage)?.parse()?;
    let id = positional
        .get(2)
        .cloned()
        .unwrap_or_else(|| "bench/model".into());

    let mut files = Vec::new();
    walk(&root, &root, &mut files)?;
    files.sort();
    let mut repo_files = Vec::new();
    let mut commit = sha1::Sha1::new();
    for (path, disk) in files {
        let size = std::fs::metadata(&disk)?.len();
        let (blob_id, lfs) = if size >= lfs_above {
            let sha256 = hex(&digest_file(&disk, sha2::Sha256::new(), &[])?);
            let pointer = format!(
                "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
            );
            (git_blob(pointer.as_bytes()), Some(sha256))
        } else {
            let header = format!("blob {size}\0");
            let id = hex(&digest_file(&disk, sha1::Sha1::new(), header.as_bytes())?);
            (id, None)
        };
        commit.update(format!("{path} {blob_id}\n").as_bytes());
        repo_files.push(RepoFile {
            path,
            disk,
            size,
            blob_id,
            lfs,
        });
    }
    let repo = Arc::new(Repo {
        id,
        commit: hex(&commit.finalize()),
        files: repo_files,
    });

    let hub = TcpListener::bind(("127.0.0.1", port))?;
    let cdn = TcpListener::bind(("127.0.0.1", port + 1))?;
    let cdn_base = format!("http://127.0.0.1:{}", port + 1);
    eprintln!(
        "hub server on http://127.0.0.1:{port} (CDN {cdn_base}) serving {} as {} at {}: {} files, {} LFS",
        root.display(),
        repo.id,
        repo.commit,
        repo.files.len(),
        repo.files.iter().filter(|f| f.lfs.is_some()).count()
    );
    let cdn_repo = repo.clone();
    std::thread::spawn(move || serve(cdn, cdn_repo, None));
    serve(hub, repo, Some(cdn_base));
    Ok(())
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push((rel.join("/"), path));
        }
    }
    Ok(())
}

fn digest_file<D: sha1::Digest>(path: &Path, mut hasher: D, prefix: &[u8]) -> io::Result<Vec<u8>> {
    hasher.update(prefix);
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize().to_vec());
        }
        hasher.update(&buf[..n]);
    }
}

fn git_blob(data: &[u8]) -> String {
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("blob {}\0", data.len()).as_bytes());
    hasher.update(data);
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Accepts connections, one thread each. `cdn` is the CDN's base URL on
/// the Hub listener, `None` on the CDN's own.
fn serve(listener: TcpListener, repo: Arc<Repo>, cdn: Option<String>) {
    let cdn = Arc::new(cdn);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (repo, cdn) = (repo.clone(), cdn.clone());
        std::thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let _ = connection(stream, &repo, cdn.as_deref());
        });
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    range: Option<String>,
    close: bool,
}

/// Serves the requests of one keep-alive connection.
fn connection(stream: TcpStream, repo: &Repo, cdn: Option<&str>) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let Some(request) = read_request(&mut reader)? else {
            return Ok(());
        };
        match cdn {
            Some(cdn) => hub_request(&mut out, &request, repo, cdn)?,
            None => cdn_request(&mut out, &request, repo)?,
        }
        if request.close {
            return Ok(());
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let http10 = parts.next() == Some("HTTP/1.0");
    let (mut range, mut close) = (None, http10);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Ok(None);
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "range" => range = Some(value.to_owned()),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target, String::new()),
    };
    Ok(Some(Request {
        method,
        path: percent_decode(&path),
        query,
        range,
        close,
    }))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn head(out: &mut TcpStream, status: &str, headers: &[(&str, String)], len: u64) -> io::Result<()> {
    let mut text = format!("HTTP/1.1 {status}\r\ncontent-length: {len}\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    out.write_all(text.as_bytes())
}

fn json(
    out: &mut TcpStream,
    request: &Request,
    status: &str,
    body: &serde_json::Value,
) -> io::Result<()> {
    json_with(out, request, status, &[], body)
}

fn json_with(
    out: &mut TcpStream,
    request: &Request,
    status: &str,
    extra: &[(&str, String)],
    body: &serde_json::Value,
) -> io::Result<()> {
    let body = body.to_string();
    let mut headers = vec![("content-type", "application/json; charset=utf-8".to_owned())];
    headers.extend(extra.iter().cloned());
    head(out, status, &headers, body.len() as u64)?;
    if request.method != "HEAD" {
        out.write_all(body.as_bytes())?;
    }
    Ok(())
}

/// The Hub's errors: a status, `X-Error-Code` (which `huggingface_hub`
/// maps to its exceptions) and `{"error": …}`.
fn hub_error(
    out: &mut TcpStream,
    request: &Request,
    status: &str,
    code: &str,
    message: &str,
) -> io::Result<()> {
    json_with(
        out,
        request,
        status,
        &[
            ("x-error-code", code.to_owned()),
            ("x-error-message", message.to_owned()),
        ],
        &serde_json::json!({ "error": message }),
    )
}

fn hub_request(out: &mut TcpStream, request: &Request, repo: &Repo, cdn: &str) -> io::Result<()> {
    if let Some(rest) = request.path.strip_prefix("/api/models/") {
        return api(out, request, repo, rest);
    }
    let Some(rest) = request.path.strip_prefix(&format!("/{}/resolve/", repo.id)) else {
        return hub_error(
            out,
            request,
            "401 Unauthorized",
            "RepoNotFound",
            "Repository not found",
        );
    };
    let Some((revision, path)) = rest.split_once('/') else {
        return hub_error(
            out,
            request,
            "404 Not Found",
            "EntryNotFound",
            "Entry not found",
        );
    };
    if !known_revision(repo, revision) {
        return hub_error(
            out,
            request,
            "404 Not Found",
            "RevisionNotFound",
            "Invalid rev id",
        );
    }
    let Some(file) = repo.files.iter().find(|f| f.path == path) else {
        let headers = [
            ("x-repo-commit", repo.commit.clone()),
            ("x-error-code", "EntryNotFound".into()),
        ];
        let body = serde_json::json!({ "error": "Entry not found" });
        return json_with(out, request, "404 Not Found", &headers, &body);
    };
    let commit = ("x-repo-commit", repo.commit.clone());
    match &file.lfs {
        Some(sha256) => {
            let location = format!("{cdn}/blob/{sha256}?X-Amz-Expires=3600&X-Amz-Signature=bench");
            head(
                out,
                "302 Found",
                &[
                    commit,
                    ("etag", format!("\"{}\"", file.blob_id)),
                    ("x-linked-etag", format!("\"{sha256}\"")),
                    ("x-linked-size", file.size.to_string()),
                    ("location", location),
                ],
                0,
            )
        }
        None => {
            let headers = [commit, ("etag", format!("\"{}\"", file.blob_id))];
            send_file(out, request, file, &headers)
        }
    }
}

fn cdn_request(out: &mut TcpStream, request: &Request, repo: &Repo) -> io::Result<()> {
    let sha = request.path.trim_start_matches("/blob/");
    match repo.files.iter().find(|f| f.lfs.as_deref() == Some(sha)) {
        Some(file) => send_file(out, request, file, &[("etag", format!("\"{sha}\""))]),
        None => {
            let body = b"<Error><Code>NoSuchKey</Code></Error>";
            head(
                out,
                "404 Not Found",
                &[("content-type", "application/xml".into())],
                body.len() as u64,
            )?;
            out.write_all(body)
        }
    }
}

fn known_revision(repo: &Repo, revision: &str) -> bool {
    revision == "main" || revision == repo.commit
}

/// `GET /api/models/{repo}[/revision/{rev}]` and `…/tree/{rev}[/{path}]`.
fn api(out: &mut TcpStream, request: &Request, repo: &Repo, rest: &str) -> io::Result<()> {
    let Some(rest) = rest.strip_prefix(&repo.id) else {
        return hub_error(
            out,
            request,
            "401 Unauthorized",
            "RepoNotFound",
            "Repository not found",
        );
    };
    let query: Vec<(&str, &str)> = request
        .query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let flag = |name: &str| {
        query
            .iter()
            .any(|(k, v)| *k == name && (*v == "true" || *v == "True" || *v == "1"))
    };
    if let Some(tree) = rest.strip_prefix("/tree/") {
        let (revision, dir) = tree.split_once('/').unwrap_or((tree, ""));
        if !known_revision(repo, revision) {
            return hub_error(
                out,
                request,
                "404 Not Found",
                "RevisionNotFound",
                "Invalid rev id",
            );
        }
        return json(
            out,
            request,
            "200 OK",
            &tree_listing(repo, dir, flag("recursive")),
        );
    }
    let revision = match rest {
        "" => "main",
        _ => match rest.strip_prefix("/revision/") {
            Some(revision) => revision,
            None => return hub_error(out, request, "404 Not Found", "EntryNotFound", "Not found"),
        },
    };
    if !known_revision(repo, revision) {
        return hub_error(
            out,
            request,
            "404 Not Found",
            "RevisionNotFound",
            "Invalid rev id",
        );
    }
    let blobs = flag("blobs");
    let siblings: Vec<_> = repo
        .files
        .iter()
        .map(|f| {
            let mut entry = serde_json::json!({ "rfilename": f.path });
            if blobs {
                entry["size"] = f.size.into();
                entry["blobId"] = f.blob_id.clone().into();
                if let Some(sha256) = &f.lfs {
                    entry["lfs"] = serde_json::json!({ "sha256": sha256, "size": f.size, "pointerSize": POINTER_SIZE });
                }
            }
            entry
        })
        .collect();
    json(
        out,
        request,
        "200 OK",
        &serde_json::json!({
            "_id": &repo.commit[..24],
            "id": repo.id,
            "modelId": repo.id,
            "author": repo.id.split('/').next(),
            "sha": repo.commit,
            "private": false,
            "disabled": false,
            "gated": false,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "library_name": "transformers",
            "siblings": siblings,
        }),
    )
}

/// The tree API's entries under `dir`: its files and folders, and with
/// `recursive` everything below it.
fn tree_listing(repo: &Repo, dir: &str, recursive: bool) -> serde_json::Value {
    let prefix = match dir {
        "" => String::new(),
        d => format!("{}/", d.trim_end_matches('/')),
    };
    let mut folders = BTreeSet::new();
    let mut entries = Vec::new();
    for f in repo.files.iter().filter(|f| f.path.starts_with(&prefix)) {
        let below = &f.path[prefix.len()..];
        let components: Vec<&str> = below.split('/').collect();
        for depth in 1..components.len() {
            if recursive || depth == 1 {
                folders.insert(format!("{prefix}{}", components[..depth].join("/")));
            }
        }
        if components.len() > 1 && !recursive {
            continue;
        }
        let mut entry =
            serde_json::json!({ "type": "file", "oid": f.blob_id, "size": f.size, "path": f.path });
        if let Some(sha256) = &f.lfs {
            entry["lfs"] =
                serde_json::json!({ "oid": sha256, "size": f.size, "pointerSize": POINTER_SIZE });
        }
        entries.push(entry);
    }
    let mut listing: Vec<serde_json::Value> = folders
        .into_iter()
        .map(|path| {
            let oid = git_blob(path.as_bytes());
            serde_json::json!({ "type": "directory", "oid": oid, "size": 0, "path": path })
        })
        .collect();
    listing.extend(entries);
    listing.into()
}

/// Serves `file` (whole, or the byte range asked for) with `headers`.
fn send_file(
    out: &mut TcpStream,
    request: &Request,
    file: &RepoFile,
    headers: &[(&str, String)],
) -> io::Result<()> {
    let size = file.size;
    let range = request
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="));
    let mut all: Vec<(&str, String)> = headers.to_vec();
    all.push(("accept-ranges", "bytes".into()));
    all.push(("content-type", "application/octet-stream".into()));
    let (status, start, len) = match range.filter(|r| !r.contains(',')) {
        None => ("200 OK", 0, size),
        Some(spec) => match parse_range(spec, size) {
            Some((start, end)) => {
                all.push(("content-range", format!("bytes {start}-{end}/{size}")));
                ("206 Partial Content", start, end + 1 - start)
            }
            None => {
                all.push(("content-range", format!("bytes */{size}")));
                head(out, "416 Range Not Satisfiable", &all, 0)?;
                return Ok(());
            }
        },
    };
    head(out, status, &all, len)?;
    if request.method == "HEAD" {
        return Ok(());
    }
    let mut body = File::open(&file.disk)?;
    body.seek(SeekFrom::Start(start))?;
    // File to socket: sendfile(2) on Linux.
    let sent = io::copy(&mut body.take(len), out)?;
    if sent != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// `a-b`, `a-` or `-n` of a file of `size` bytes, as an inclusive range.
fn parse_range(spec: &str, size: u64) -> Option<(u64, u64)> {
    let (a, b) = spec.trim().split_once('-')?;
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        (true, false) => {
            let n: u64 = b.parse().ok()?;
            (size.checked_sub(n.min(size))?, size.checked_sub(1)?)
        }
        (false, true) => (a.parse().ok()?, size.checked_sub(1)?),
        (false, false) => (
            a.parse().ok()?,
            b.parse::<u64>().ok()?.min(size.checked_sub(1)?),
        ),
        (true, true) => return None,
    };
    (start <= end && start < size).then_some((start, end))
}
