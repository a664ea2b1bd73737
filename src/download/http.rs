//! A blocking HTTP/1.1 client for downloads: keep-alive connections per
//! origin, rustls for `https://`, bodies read as they arrive.
//!
//! Downloads run on their own threads (see [`super::fetch`]), so this
//! client blocks: a thread per transfer in flight, bounded by
//! `max_workers`, is simple and keeps a stalled transfer from touching
//! anything else. It does not follow redirects: the callers decide, since
//! a token must not follow a redirect to another host.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::http::chunked::ChunkedDecoder;

/// Most idle connections kept per origin.
const MAX_IDLE_PER_ORIGIN: usize = 64;
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Scheme, host and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// Whether TLS is used.
    pub https: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

/// An absolute URL, split for sending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// Where to connect.
    pub origin: Origin,
    /// Path and query, as sent on the request line.
    pub target: String,
}

impl Url {
    /// Parses `http(s)://host[:port]/path?query`.
    pub fn parse(text: &str) -> Result<Url, String> {
        let uri: http::Uri = text.parse().map_err(|_| format!("{text:?} is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{text:?}: only http:// and https:// are supported")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{text:?} has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(format!("{text:?} has no host"));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let target = if target.is_empty() {
            "/".to_owned()
        } else {
            target.to_owned()
        };
        Ok(Url {
            origin: Origin { https, host, port },
            target,
        })
    }

    /// Resolves a `Location` header against this URL.
    pub fn join(&self, location: &str) -> Result<Url, String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            return Url::parse(location);
        }
        let mut url = self.clone();
        if let Some(rest) = location.strip_prefix("//") {
            let scheme = if self.origin.https { "https" } else { "http" };
            return Url::parse(&format!("{scheme}://{rest}"));
        }
        if location.starts_with('/') {
            url.target = location.to_owned();
        } else {
            let path = self.target.split('?').next().unwrap_or("/");
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            url.target = format!("{dir}{location}");
        }
        Ok(url)
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        let host = if self.origin.host.contains(':') {
            format!("[{}]", self.origin.host)
        } else {
            self.origin.host.clone()
        };
        let default_port = if self.origin.https { 443 } else { 80 };
        if self.origin.port == default_port {
            host
        } else {
            format!("{host}:{}", self.origin.port)
        }
    }

    /// The URL without its query string, for messages (queries may carry
    /// signatures).
    pub fn display_without_query(&self) -> String {
        let scheme = if self.origin.https { "https" } else { "http" };
        let path = self.target.split('?').next().unwrap_or("/");
        format!("{scheme}://{}{path}", self.host_header())
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

struct Connection {
    stream: Stream,
    /// Bytes read but not yet consumed.
    buf: Vec<u8>,
}

/// The client, shared by a job's transfer threads.
pub struct HttpClient {
    pool: Mutex<HashMap<Origin, Vec<Connection>>>,
    tls: OnceLock<Result<Arc<ClientConfig>, String>>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client whose connects, reads and writes each time out after
    /// `timeout` (a stalled transfer fails and is retried).
    pub fn new(timeout: Duration) -> HttpClient {
        HttpClient {
            pool: Mutex::new(HashMap::new()),
            tls: OnceLock::new(),
            timeout,
        }
    }

    /// Sends a request without a body and reads the response head.
    pub fn request(
        &self,
        method: &str,
        url: &Url,
        headers: &[(String, String)],
    ) -> io::Result<Response<'_>> {
        self.send(method, url, headers, &[])
    }

    /// Sends a request with a body (sent with `Content-Length`; none when
    /// empty) and reads the response head. A request on a pooled
    /// connection that the server had closed is sent again on a new one:
    /// the server never saw it.
    pub fn send(
        &self,
        method: &str,
        url: &Url,
        headers: &[(String, String)],
        body: &[u8],
    ) -> io::Result<Response<'_>> {
        let mut head = format!(
            "{method} {} HTTP/1.1\r\nhost: {}\r\n",
            url.target,
            url.host_header()
        );
        for (name, value) in headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("user-agent: matrixinfer-runtime/");
        head.push_str(env!("CARGO_PKG_VERSION"));
        if !body.is_empty() {
            head.push_str("\r\ncontent-length: ");
            head.push_str(&body.len().to_string());
        }
        head.push_str("\r\n\r\n");
        let mut head = head.into_bytes();
        head.extend_from_slice(body);
        loop {
            let pooled = self.take_idle(&url.origin);
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => self.connect(&url.origin)?,
            };
            match read_head(&mut conn, &head) {
                Ok(parsed) => {
                    let bodiless = method == "HEAD" || parsed.status == 204 || parsed.status == 304;
                    let body = if bodiless { Body::Done } else { parsed.body };
                    let done = matches!(body, Body::Done);
                    let mut response = Response {
                        client: self,
                        origin: url.origin.clone(),
                        conn: Some(conn),
                        status: parsed.status,
                        headers: parsed.headers,
                        body,
                        reusable: parsed.reusable,
                    };
                    if done {
                        response.release();
                    }
                    return Ok(response);
                }
                // A pooled connection the server closed while idle.
                Err(Fault::Stale) if reused => continue,
                Err(Fault::Stale) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "connection closed before an answer",
                    ));
                }
                Err(Fault::Io(e)) => return Err(e),
            }
        }
    }

    fn take_idle(&self, origin: &Origin) -> Option<Connection> {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(origin)
            .and_then(Vec::pop)
    }

    fn recycle(&self, origin: Origin, conn: Connection) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.entry(origin).or_default();
        if idle.len() < MAX_IDLE_PER_ORIGIN {
            idle.push(conn);
        }
    }

    fn connect(&self, origin: &Origin) -> io::Result<Connection> {
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} has no address", origin.host),
        );
        for addr in (origin.host.as_str(), origin.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(tcp) => {
                    tcp.set_nodelay(true)?;
                    tcp.set_read_timeout(Some(self.timeout))?;
                    tcp.set_write_timeout(Some(self.timeout))?;
                    let stream = if origin.https {
                        let config = self.tls_config()?;
                        let name = ServerName::try_from(origin.host.clone())
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                        let tls = ClientConnection::new(config, name).map_err(io::Error::other)?;
                        Stream::Tls(Box::new(StreamOwned::new(tls, tcp)))
                    } else {
                        Stream::Plain(tcp)
                    };
                    return Ok(Connection {
                        stream,
                        buf: Vec::with_capacity(16 * 1024),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// System roots (with `SSL_CERT_FILE` / `SSL_CERT_DIR` honoured), built
    /// once per client.
    fn tls_config(&self) -> io::Result<Arc<ClientConfig>> {
        let config = self.tls.get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(format!("no CA certificates found ({:?})", found.errors));
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|builder| {
                    Arc::new(builder.with_root_certificates(roots).with_no_client_auth())
                })
                .map_err(|e| e.to_string())
        });
        config.clone().map_err(io::Error::other)
    }
}

enum Fault {
    /// Nothing came back on a reused connection.
    Stale,
    Io(io::Error),
}

struct ParsedHead {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
    reusable: bool,
}

fn read_head(conn: &mut Connection, request: &[u8]) -> Result<ParsedHead, Fault> {
    let stale = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
        )
    };
    if let Err(e) = conn
        .stream
        .write_all(request)
        .and_then(|()| conn.stream.flush())
    {
        return Err(if stale(&e) {
            Fault::Stale
        } else {
            Fault::Io(e)
        });
    }
    conn.buf.clear();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&conn.buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = response.code.unwrap_or(0);
                if (100..200).contains(&status) {
                    conn.buf.drain(..len);
                    continue;
                }
                let http10 = response.version == Some(0);
                let headers: Vec<(String, String)> = response
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).trim().to_owned(),
                        )
                    })
                    .collect();
                conn.buf.drain(..len);
                let get = |name: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                };
                let close =
                    get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) || http10;
                let body = if get("transfer-encoding")
                    .is_some_and(|v| v.to_ascii_lowercase().ends_with("chunked"))
                {
                    Body::Chunked(ChunkedDecoder::default())
                } else if let Some(len) = get("content-length") {
                    let len = len
                        .parse::<u64>()
                        .map_err(|_| Fault::Io(invalid("bad content-length")))?;
                    if len == 0 {
                        Body::Done
                    } else {
                        Body::Length(len)
                    }
                } else {
                    Body::UntilClose
                };
                let reusable = !close && !matches!(body, Body::UntilClose);
                return Ok(ParsedHead {
                    status,
                    headers,
                    body,
                    reusable,
                });
            }
            Ok(httparse::Status::Partial) if conn.buf.len() > MAX_HEAD => {
                return Err(Fault::Io(invalid("response head too large")));
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(Fault::Io(invalid(&format!("invalid response: {e}")))),
        }
        let mut chunk = [0u8; 16 * 1024];
        match conn.stream.read(&mut chunk) {
            Ok(0) if conn.buf.is_empty() => return Err(Fault::Stale),
            Ok(0) => return Err(Fault::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
            Err(e) if conn.buf.is_empty() && stale(&e) => return Err(Fault::Stale),
            Err(e) => return Err(Fault::Io(e)),
        }
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

enum Body {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// A response whose body is still to be read. Reading it to the end
/// returns the connection to the pool; dropping it early closes it.
pub struct Response<'c> {
    client: &'c HttpClient,
    origin: Origin,
    conn: Option<Connection>,
    /// The status code.
    pub status: u16,
    headers: Vec<(String, String)>,
    body: Body,
    reusable: bool,
}

impl Response<'_> {
    /// A header's value (names are matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Reads the rest of the body, up to `limit` bytes (the rest is
    /// discarded and the connection closed).
    pub fn text(&mut self, limit: usize) -> io::Result<String> {
        let mut body = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = self.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n.min(limit.saturating_sub(body.len()))]);
            if body.len() >= limit {
                self.conn = None;
                break;
            }
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    fn release(&mut self) {
        self.body = Body::Done;
        if let Some(conn) = self.conn.take()
            && self.reusable
        {
            self.client.recycle(self.origin.clone(), conn);
        }
    }

    /// Fills `conn.buf` from the socket; false at end of stream.
    fn fill(conn: &mut Connection) -> io::Result<bool> {
        let mut chunk = [0u8; 64 * 1024];
        let n = conn.stream.read(&mut chunk)?;
        conn.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }
}

impl Read for Response<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return match self.body {
                    Body::Done => Ok(0),
                    _ => Err(io::ErrorKind::UnexpectedEof.into()),
                };
            };
            match &mut self.body {
                Body::Done => return Ok(0),
                Body::Length(remaining) => {
                    if conn.buf.is_empty() && !Self::fill(conn)? {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "body shorter than its length",
                        ));
                    }
                    let n = (*remaining)
                        .min(conn.buf.len() as u64)
                        .min(out.len() as u64) as usize;
                    out[..n].copy_from_slice(&conn.buf[..n]);
                    conn.buf.drain(..n);
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        self.release();
                    }
                    return Ok(n);
                }
                Body::UntilClose => {
                    if conn.buf.is_empty() && !Self::fill(conn)? {
                        self.conn = None;
                        self.body = Body::Done;
                        return Ok(0);
                    }
                    let n = conn.buf.len().min(out.len());
                    out[..n].copy_from_slice(&conn.buf[..n]);
                    conn.buf.drain(..n);
                    return Ok(n);
                }
                Body::Chunked(decoder) => {
                    if conn.buf.is_empty() && !Self::fill(conn)? {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "chunked body cut short",
                        ));
                    }
                    // Decoded output is never longer than its input, so
                    // feeding at most `out.len()` bytes cannot overflow.
                    let take = conn.buf.len().min(out.len());
                    let mut written = 0;
                    let used = decoder
                        .decode(&conn.buf[..take], |data| {
                            out[written..written + data.len()].copy_from_slice(data);
                            written += data.len();
                        })
                        .map_err(|e| invalid(&e.to_string()))?;
                    conn.buf.drain(..used);
                    if decoder.is_done() {
                        self.release();
                    }
                    if written > 0 || matches!(self.body, Body::Done) {
                        return Ok(written);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let url = Url::parse("https://s3.example.com/bucket/key%20x?list-type=2").unwrap();
        assert_eq!(
            url.origin,
            Origin {
                https: true,
                host: "s3.example.com".into(),
                port: 443
            }
        );
        assert_eq!(url.target, "/bucket/key%20x?list-type=2");
        assert_eq!(url.host_header(), "s3.example.com");
        assert_eq!(
            url.display_without_query(),
            "https://s3.example.com/bucket/key%20x"
        );
        let url = Url::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            (url.target.as_str(), url.host_header().as_str()),
            ("/", "127.0.0.1:9000")
        );
        assert_eq!(
            Url::parse("http://[::1]:81/x").unwrap().host_header(),
            "[::1]:81"
        );
        assert!(Url::parse("ftp://x/y").is_err());
        let base = Url::parse("http://hub:8080/org/repo/resolve/main/a/b.bin").unwrap();
        assert_eq!(
            base.join("https://cdn.example/x?sig=1")
                .unwrap()
                .origin
                .host,
            "cdn.example"
        );
        assert_eq!(base.join("/api/x").unwrap().target, "/api/x");
        assert_eq!(
            base.join("c.bin").unwrap().target,
            "/org/repo/resolve/main/a/c.bin"
        );
        assert_eq!(
            base.join("//other:9/p").unwrap().origin,
            Origin {
                https: false,
                host: "other".into(),
                port: 9
            }
        );
    }
}
