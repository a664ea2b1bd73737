//! The blocking HTTP/1.1 client: keep-alive connections per origin,
//! rustls for `https://`, bodies read as they arrive. Heads and framing
//! come from [`super::h1`], trust from [`super::outbound`].
//!
//! Downloads and LoRA calls run on their own threads, so this client
//! blocks: a thread per transfer in flight, bounded by the caller, is
//! simple and keeps a stalled transfer from touching anything else. It
//! does not follow redirects: the callers decide, since a token must not
//! follow a redirect to another host.
//!
//! Every connection takes the route [`outbound::route`] gives (a client
//! made with [`HttpClient::direct`] excepted): through a proxy, an
//! `https://` origin is reached in a CONNECT tunnel (TLS end to end, the
//! proxy sees only the host and port) and an `http://` one by
//! absolute-form requests (`GET http://host/path`), both with the proxy's
//! `Proxy-Authorization`. Idle connections are pooled by origin and route,
//! so a tunnel, a proxied plain connection and a direct one never stand in
//! for each other.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use super::h1::{BodyDecoder, ResponseHead};
use super::is_stale;
use super::outbound::{self, Route};
use super::proxy::Proxy;
use super::stream::Stream;
use super::url::{Origin, Url};

/// Most idle connections kept per origin.
const MAX_IDLE_PER_ORIGIN: usize = 64;
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

struct Connection {
    stream: Stream,
    /// Bytes read but not yet consumed.
    buf: Vec<u8>,
}

/// What an idle connection is good for: an origin, reached directly or
/// through one proxy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PoolKey {
    origin: Origin,
    via: Option<Origin>,
}

/// The client, shared by a job's transfer threads.
pub struct HttpClient {
    pool: Mutex<HashMap<PoolKey, Vec<Connection>>>,
    timeout: Duration,
    /// Ignores the proxy policy: for the engine in the same Pod.
    direct_only: bool,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeout", &self.timeout)
            .field("direct_only", &self.direct_only)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client whose connects, reads and writes each time out after
    /// `timeout` (a stalled transfer fails and is retried).
    /// Connections follow the process's proxy policy.
    pub fn new(timeout: Duration) -> HttpClient {
        HttpClient {
            pool: Mutex::new(HashMap::new()),
            timeout,
            direct_only: false,
        }
    }

    /// The same, but every connection goes straight to its origin,
    /// whatever the proxy variables say: for the inference engine beside
    /// this sidecar in the same Pod (a proxy, often outside the node,
    /// cannot reach `localhost`, and would see adapter paths for nothing).
    pub fn direct(timeout: Duration) -> HttpClient {
        HttpClient {
            direct_only: true,
            ..HttpClient::new(timeout)
        }
    }

    fn route(&self, origin: &Origin) -> io::Result<Route> {
        if self.direct_only {
            return Ok(Route::Direct);
        }
        outbound::route(origin).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
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
    /// connection that the server had closed while idle (nothing at all
    /// came back) is sent again on a new one.
    pub fn send(
        &self,
        method: &str,
        url: &Url,
        headers: &[(String, String)],
        body: &[u8],
    ) -> io::Result<Response<'_>> {
        let route = self.route(&url.origin)?;
        let key = PoolKey {
            origin: url.origin.clone(),
            via: match route {
                Route::Direct => None,
                Route::Proxy(proxy) => Some(proxy.origin.clone()),
            },
        };
        // Plain HTTP through a proxy: the whole URL on the request line.
        let forwarded = match route {
            Route::Proxy(proxy) if !url.origin.https => Some(proxy),
            _ => None,
        };
        let mut head = match forwarded {
            Some(_) => format!("{method} {url} HTTP/1.1\r\nhost: {}\r\n", url.host_header()),
            None => format!(
                "{method} {} HTTP/1.1\r\nhost: {}\r\n",
                url.target,
                url.host_header()
            ),
        };
        if let Some(authorization) = forwarded.and_then(|p| p.authorization.as_ref()) {
            head.push_str("proxy-authorization: ");
            head.push_str(authorization.expose());
            head.push_str("\r\n");
        }
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
            let pooled = self.take_idle(&key);
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => self.connect(&url.origin, route)?,
            };
            match read_head(&mut conn, &head, method == "HEAD") {
                // The proxy's own refusal, not the origin's answer.
                Ok(parsed)
                    if parsed.status == 407
                        && let Some(proxy) = forwarded =>
                {
                    return Err(refused(
                        proxy,
                        &format!("{method} {}", url.host_header()),
                        407,
                    ));
                }
                Ok(parsed) => {
                    let mut response = Response {
                        client: self,
                        key: key.clone(),
                        conn: Some(conn),
                        status: parsed.status,
                        body: BodyDecoder::new(parsed.framing),
                        reusable: parsed.keep_alive,
                        headers: parsed.headers,
                    };
                    if response.body.is_done() {
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

    fn take_idle(&self, key: &PoolKey) -> Option<Connection> {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(key)
            .and_then(Vec::pop)
    }

    fn recycle(&self, key: PoolKey, conn: Connection) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.entry(key).or_default();
        if idle.len() < MAX_IDLE_PER_ORIGIN {
            idle.push(conn);
        }
    }

    /// A new connection to `origin` along `route`: TCP, then a CONNECT
    /// tunnel when a proxy carries an `https://` origin, then TLS.
    fn connect(&self, origin: &Origin, route: Route) -> io::Result<Connection> {
        let mut tcp = match route {
            Route::Direct => self.tcp(&origin.host, origin.port)?,
            Route::Proxy(proxy) => self
                .tcp(&proxy.origin.host, proxy.origin.port)
                .map_err(|e| io::Error::new(e.kind(), format!("proxy {proxy}: {e}")))?,
        };
        if let (Route::Proxy(proxy), true) = (route, origin.https) {
            tunnel(&mut tcp, proxy, origin)?;
        }
        let stream = if origin.https {
            let config = outbound::tls_config().map_err(io::Error::other)?;
            let name = ServerName::try_from(origin.host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = ClientConnection::new(config, name).map_err(io::Error::other)?;
            Stream::Tls(Box::new(StreamOwned::new(tls, tcp)))
        } else {
            Stream::Plain(tcp)
        };
        Ok(Connection {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    fn tcp(&self, host: &str, port: u16) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
        for addr in (host, port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(tcp) => {
                    tcp.set_nodelay(true)?;
                    tcp.set_read_timeout(Some(self.timeout))?;
                    tcp.set_write_timeout(Some(self.timeout))?;
                    return Ok(tcp);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Opens a CONNECT tunnel to `origin` through `proxy` on `tcp`.
fn tunnel(tcp: &mut TcpStream, proxy: &Proxy, origin: &Origin) -> io::Result<()> {
    let authority = if origin.host.contains(':') {
        format!("[{}]:{}", origin.host, origin.port)
    } else {
        format!("{}:{}", origin.host, origin.port)
    };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n");
    if let Some(authorization) = &proxy.authorization {
        request.push_str("proxy-authorization: ");
        request.push_str(authorization.expose());
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let broken =
        |e: io::Error| io::Error::new(e.kind(), format!("proxy {proxy}: CONNECT {authority}: {e}"));
    tcp.write_all(request.as_bytes()).map_err(broken)?;
    // The proxy says nothing more until the TLS handshake starts, so what
    // is read here is the answer's head (and, after a refusal, its body).
    let mut buf = Vec::new();
    let head = loop {
        // No body follows a 2xx answer to CONNECT: parsed as after HEAD.
        match ResponseHead::parse(&buf, MAX_HEAD, true, false) {
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(e) => return Err(broken(io::Error::new(io::ErrorKind::InvalidData, e))),
        }
        let mut chunk = [0u8; 4096];
        match tcp.read(&mut chunk).map_err(broken)? {
            0 => return Err(broken(io::ErrorKind::UnexpectedEof.into())),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    };
    if !(200..300).contains(&head.status) {
        return Err(refused(proxy, &format!("CONNECT {authority}"), head.status));
    }
    if buf.len() > head.len {
        return Err(broken(io::Error::new(
            io::ErrorKind::InvalidData,
            "data before the tunnel was used",
        )));
    }
    Ok(())
}

/// A proxy's refusal of `what`, naming the proxy (never its credentials).
fn refused(proxy: &Proxy, what: &str, status: u16) -> io::Error {
    let why = match status {
        407 if proxy.authorization.is_some() => {
            "407: the proxy refused the credentials in the proxy URL"
        }
        407 => "407: the proxy requires credentials (http://user:password@host:port)",
        _ => "",
    };
    let why = if why.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {why}")
    };
    let kind = if status == 407 {
        io::ErrorKind::PermissionDenied
    } else {
        io::ErrorKind::ConnectionRefused
    };
    io::Error::new(kind, format!("proxy {proxy} refused {what}: {why}"))
}

enum Fault {
    /// Nothing came back on a reused connection.
    Stale,
    Io(io::Error),
}

fn read_head(
    conn: &mut Connection,
    request: &[u8],
    head_request: bool,
) -> Result<ResponseHead, Fault> {
    if let Err(e) = conn
        .stream
        .write_all(request)
        .and_then(|()| conn.stream.flush())
    {
        return Err(if is_stale(&e) {
            Fault::Stale
        } else {
            Fault::Io(e)
        });
    }
    conn.buf.clear();
    loop {
        match ResponseHead::parse(&conn.buf, MAX_HEAD, head_request, true) {
            Ok(Some(head)) => {
                conn.buf.drain(..head.len);
                return Ok(head);
            }
            Ok(None) => {}
            Err(e) => return Err(Fault::Io(io::Error::new(io::ErrorKind::InvalidData, e))),
        }
        let mut chunk = [0u8; 16 * 1024];
        match conn.stream.read(&mut chunk) {
            Ok(0) if conn.buf.is_empty() => return Err(Fault::Stale),
            Ok(0) => return Err(Fault::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => conn.buf.extend_from_slice(&chunk[..n]),
            Err(e) if conn.buf.is_empty() && is_stale(&e) => return Err(Fault::Stale),
            Err(e) => return Err(Fault::Io(e)),
        }
    }
}

/// A response whose body is still to be read. Reading it to the end
/// returns the connection to the pool; dropping it early closes it.
pub struct Response<'c> {
    client: &'c HttpClient,
    key: PoolKey,
    conn: Option<Connection>,
    /// The status code.
    pub status: u16,
    headers: Vec<(String, String)>,
    body: BodyDecoder,
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
        if let Some(conn) = self.conn.take()
            && self.reusable
        {
            self.client.recycle(self.key.clone(), conn);
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
        if out.is_empty() || self.body.is_done() {
            return Ok(0);
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Err(io::ErrorKind::UnexpectedEof.into());
            };
            // Nothing buffered and no framing to remove: from the socket
            // straight into `out`, a read as large as the caller's buffer
            // and no copy through the connection's.
            if conn.buf.is_empty()
                && let Some(left) = self.body.passthrough()
            {
                let want = left.min(out.len() as u64) as usize;
                let n = conn.stream.read(&mut out[..want])?;
                if n == 0 {
                    self.conn = None;
                    self.body
                        .end_of_stream()
                        .map_err(|e| io::Error::new(io::ErrorKind::UnexpectedEof, e))?;
                    return Ok(0);
                }
                self.body.passed(n);
                if self.body.is_done() {
                    self.release();
                }
                return Ok(n);
            }
            if conn.buf.is_empty() && !Self::fill(conn)? {
                self.conn = None;
                self.body
                    .end_of_stream()
                    .map_err(|e| io::Error::new(io::ErrorKind::UnexpectedEof, e))?;
                return Ok(0);
            }
            // The payload is never longer than the input consumed, so
            // feeding at most `out.len()` bytes cannot overflow `out`.
            let take = conn.buf.len().min(out.len());
            let mut written = 0;
            let used = self
                .body
                .decode(&conn.buf[..take], |data| {
                    out[written..written + data.len()].copy_from_slice(data);
                    written += data.len();
                })
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            conn.buf.drain(..used);
            if self.body.is_done() {
                self.release();
            }
            if written > 0 || self.body.is_done() {
                return Ok(written);
            }
        }
    }
}
