//! The blocking HTTP/1.1 client: keep-alive connections per origin,
//! rustls for `https://`, bodies read as they arrive. Heads and framing
//! come from [`super::h1`], trust from [`super::outbound`].
//!
//! Downloads and LoRA calls run on their own threads, so this client
//! blocks: a thread per transfer in flight, bounded by the caller, is
//! simple and keeps a stalled transfer from touching anything else. It
//! does not follow redirects: the callers decide, since a token must not
//! follow a redirect to another host.

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
use super::url::{Origin, Url};

/// Most idle connections kept per origin.
const MAX_IDLE_PER_ORIGIN: usize = 64;
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

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
    /// connection that the server had closed while idle (nothing at all
    /// came back) is sent again on a new one.
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
            match read_head(&mut conn, &head, method == "HEAD") {
                Ok(parsed) => {
                    let mut response = Response {
                        client: self,
                        origin: url.origin.clone(),
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
        match outbound::route(origin) {
            Route::Direct => {}
        }
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
                        let config = outbound::tls_config().map_err(io::Error::other)?;
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
    origin: Origin,
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
        if out.is_empty() || self.body.is_done() {
            return Ok(0);
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Err(io::ErrorKind::UnexpectedEof.into());
            };
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
