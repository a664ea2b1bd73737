//! The engine client: GETs against the inference engine beside us.
//!
//! Stage 1 of the metrics path. One [`EngineClient`] per worker keeps a few
//! idle keep-alive connections to the engine (so a scrape costs no TCP
//! handshake) and opens an [`Exchange`] per request. The exchange reads the
//! body as it arrives and hands it on decoded (chunked framing removed,
//! gzip inflated) one socket read at a time, so nothing waits for the
//! whole payload. Every exchange is bounded by `REQUEST_TIMEOUT`.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::time::Instant;

use crate::http::chunked::ChunkedDecoder;
use crate::http::gzip::GzipDecoder;

/// Idle connections kept per worker.
const MAX_IDLE: usize = 8;
/// Largest response head accepted from the engine.
const MAX_HEAD: usize = 64 * 1024;
/// Socket read size.
const READ_SIZE: usize = 64 * 1024;

/// Where the engine is.
#[derive(Clone, Debug)]
pub struct EngineEndpoint {
    /// The base URL as configured, for messages.
    pub base_url: String,
    /// `Host` header value.
    pub host: String,
    /// The host name or address, to resolve.
    pub hostname: String,
    /// The port.
    pub port: u16,
    /// Addresses to try, in order, as resolved at start; empty if the name
    /// did not resolve then (each connection attempt tries again).
    pub addrs: Vec<SocketAddr>,
    /// Path prefix of the base URL, without a trailing `/`.
    pub prefix: String,
}

/// Why a base URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Not a URL we understand.
    #[error("invalid engine base URL {url:?}: {reason}")]
    Invalid {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl EngineEndpoint {
    /// Parses `http://host[:port][/prefix]` and resolves the host once. The
    /// engine runs in the same Pod, so plain HTTP is all it speaks to us.
    pub fn parse(url: &str) -> Result<EngineEndpoint, EndpointError> {
        let invalid = |reason| EndpointError::Invalid {
            url: url.to_owned(),
            reason,
        };
        let uri: http::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https is not supported; the engine is reached over plain HTTP inside the Pod",
                ));
            }
            _ => return Err(invalid("the scheme must be http://")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        let host = authority.host();
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = authority.port_u16().unwrap_or(80);
        let hostname = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addrs = resolve(&hostname, port).unwrap_or_default();
        Ok(EngineEndpoint {
            base_url: url.trim_end_matches('/').to_owned(),
            host: authority.as_str().to_owned(),
            hostname,
            port,
            addrs,
            prefix: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

/// Resolves a host name. Blocking: called at start, and on a worker only
/// while the engine's name has never resolved (a misconfiguration or a DNS
/// outage, not the normal path).
fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no address"),
        ));
    }
    Ok(addrs)
}

/// An engine call that failed. Messages name the URL and never carry a
/// body longer than a line or two.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made.
    #[error("cannot connect to {url}")]
    Connect {
        /// The URL requested.
        url: String,
        /// The last connect error.
        #[source]
        source: io::Error,
    },
    /// The engine did not answer in time.
    #[error("no complete answer from {url} within {timeout:?}")]
    Timeout {
        /// The URL requested.
        url: String,
        /// The limit.
        timeout: Duration,
    },
    /// The engine answered with a non-2xx status.
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        /// The URL requested.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the engine's body.
        body: String,
    },
    /// The answer was not HTTP as we know it.
    #[error("invalid response from {url}: {reason}")]
    Protocol {
        /// The URL requested.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The connection failed midway.
    #[error("connection to {url} failed")]
    Io {
        /// The URL requested.
        url: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The body ended before its announced end.
    #[error("{url} closed the connection before the body was complete")]
    Truncated {
        /// The URL requested.
        url: String,
    },
}

impl UpstreamError {
    /// A short reason, used as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::Status { .. } => "status",
            UpstreamError::Protocol { .. } => "protocol",
            UpstreamError::Io { .. } => "io",
            UpstreamError::Truncated { .. } => "truncated",
        }
    }

    /// Whether the engine was too slow (504) rather than failing (502).
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::Timeout { .. })
    }
}

/// The request a caller wants sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The configured metrics path.
    Metrics,
    /// `/health`.
    Health,
}

/// A per-worker client for the engine.
#[derive(Debug)]
pub struct EngineClient {
    endpoint: EngineEndpoint,
    timeout: Duration,
    metrics: Prepared,
    health: Prepared,
    idle: RefCell<Vec<TcpStream>>,
    addrs: RefCell<Vec<SocketAddr>>,
}

/// A request written out once at start.
#[derive(Debug)]
struct Prepared {
    url: String,
    bytes: Vec<u8>,
}

impl Prepared {
    fn new(endpoint: &EngineEndpoint, path: &str, accept: &str) -> Prepared {
        let url = format!("{}{path}", endpoint.base_url);
        let path = format!("{}{path}", endpoint.prefix);
        let bytes = format!(
            "GET {path} HTTP/1.1\r\nhost: {}\r\nuser-agent: matrixinfer-runtime/{}\r\n\
             accept: {accept}\r\naccept-encoding: identity\r\n\r\n",
            endpoint.host,
            env!("CARGO_PKG_VERSION"),
        );
        Prepared {
            url,
            bytes: bytes.into_bytes(),
        }
    }
}

impl EngineClient {
    /// A client for `endpoint` with `metrics_path` and a per-request limit.
    pub fn new(endpoint: EngineEndpoint, metrics_path: &str, timeout: Duration) -> EngineClient {
        // Classic text format: OpenMetrics from SGLang may spell sample
        // names differently from their TYPE line.
        let metrics = Prepared::new(
            &endpoint,
            metrics_path,
            "text/plain;version=0.0.4;q=1,*/*;q=0.1",
        );
        let health = Prepared::new(&endpoint, "/health", "*/*");
        let addrs = RefCell::new(endpoint.addrs.clone());
        EngineClient {
            endpoint,
            timeout,
            metrics,
            health,
            idle: RefCell::new(Vec::new()),
            addrs,
        }
    }

    /// The URL of `target`, for messages.
    pub fn url(&self, target: Target) -> &str {
        &self.prepared(target).url
    }

    fn prepared(&self, target: Target) -> &Prepared {
        match target {
            Target::Metrics => &self.metrics,
            Target::Health => &self.health,
        }
    }

    /// Sends a GET and reads the response head. `buf` is the read buffer
    /// the exchange works in.
    pub async fn get<'a>(
        &'a self,
        target: Target,
        buf: &'a mut Vec<u8>,
    ) -> Result<Exchange<'a>, UpstreamError> {
        let prepared = self.prepared(target);
        let deadline = Instant::now() + self.timeout;
        let timeout = || UpstreamError::Timeout {
            url: prepared.url.clone(),
            timeout: self.timeout,
        };
        loop {
            let pooled = self.idle.borrow_mut().pop();
            let reused = pooled.is_some();
            let stream = match pooled {
                Some(stream) => stream,
                None => self.connect(&prepared.url, deadline).await?,
            };
            let started =
                monoio::time::timeout_at(deadline, self.start(stream, prepared, buf)).await;
            match started {
                Err(_) => return Err(timeout()),
                Ok(Ok(started)) => {
                    return Ok(Exchange::new(self, prepared, started, buf, deadline));
                }
                // The engine closed an idle connection while it sat in the
                // pool; GET is safe to send again on a fresh one.
                Ok(Err(Start::Stale)) if reused => continue,
                Ok(Err(Start::Stale)) => {
                    return Err(UpstreamError::Protocol {
                        url: prepared.url.clone(),
                        reason: "connection closed without a response".into(),
                    });
                }
                Ok(Err(Start::Failed(e))) => return Err(e),
            }
        }
    }

    /// GETs `/health`; Ok when the engine answers 2xx.
    pub async fn check_health(&self, buf: &mut Vec<u8>) -> Result<(), UpstreamError> {
        let mut exchange = self.get(Target::Health, buf).await?;
        if !exchange.is_success() {
            return Err(exchange.into_status_error().await);
        }
        while exchange.read(|_| {}).await? {}
        Ok(())
    }

    async fn connect(&self, url: &str, deadline: Instant) -> Result<TcpStream, UpstreamError> {
        if self.addrs.borrow().is_empty() {
            let addrs = resolve(&self.endpoint.hostname, self.endpoint.port).map_err(|source| {
                UpstreamError::Connect {
                    url: url.to_owned(),
                    source,
                }
            })?;
            *self.addrs.borrow_mut() = addrs;
        }
        let addrs = self.addrs.borrow().clone();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in &addrs {
            match monoio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => last = e,
                Err(_) => {
                    return Err(UpstreamError::Timeout {
                        url: url.to_owned(),
                        timeout: self.timeout,
                    });
                }
            }
        }
        Err(UpstreamError::Connect {
            url: url.to_owned(),
            source: last,
        })
    }

    /// Sends the request and reads the response head into `buf`.
    async fn start(
        &self,
        mut stream: TcpStream,
        prepared: &Prepared,
        buf: &mut Vec<u8>,
    ) -> Result<Started, Start> {
        let url = &prepared.url;
        let io_error = |source| {
            Start::Failed(UpstreamError::Io {
                url: url.clone(),
                source,
            })
        };
        let (written, _) = stream.write_all(prepared.bytes.clone()).await;
        if let Err(e) = written {
            return Err(if is_stale(&e) {
                Start::Stale
            } else {
                io_error(e)
            });
        }
        buf.clear();
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let code = response.code.unwrap_or(0);
                    if (100..200).contains(&code) {
                        buf.drain(..head_len);
                        continue;
                    }
                    let head = Head::read(&response).map_err(|reason| {
                        Start::Failed(UpstreamError::Protocol {
                            url: url.clone(),
                            reason: reason.to_owned(),
                        })
                    })?;
                    return Ok(Started {
                        stream,
                        head_len,
                        head,
                        status: code,
                    });
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                    return Err(Start::Failed(UpstreamError::Protocol {
                        url: url.clone(),
                        reason: "response head too large".into(),
                    }));
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    return Err(Start::Failed(UpstreamError::Protocol {
                        url: url.clone(),
                        reason: e.to_string(),
                    }));
                }
            }
            match read_more(&mut stream, buf).await {
                Ok(0) if buf.is_empty() => return Err(Start::Stale),
                Ok(0) => return Err(Start::Failed(UpstreamError::Truncated { url: url.clone() })),
                Ok(_) => {}
                Err(e) if buf.is_empty() && is_stale(&e) => return Err(Start::Stale),
                Err(e) => return Err(io_error(e)),
            }
        }
    }

    fn recycle(&self, stream: TcpStream) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() < MAX_IDLE {
            idle.push(stream);
        }
    }
}

/// A response whose head has been read.
struct Started {
    stream: TcpStream,
    head_len: usize,
    head: Head,
    status: u16,
}

enum Start {
    /// The connection was dead before any byte of a response came back.
    Stale,
    Failed(UpstreamError),
}

fn is_stale(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

/// What the response head says about the body.
struct Head {
    framing: Framing,
    gzip: bool,
    close: bool,
}

enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

impl Head {
    fn read(response: &httparse::Response<'_, '_>) -> Result<Head, &'static str> {
        let mut length = None;
        let mut chunked = false;
        let mut gzip = false;
        let mut close = response.version == Some(0);
        for header in response.headers.iter() {
            let value = header.value.trim_ascii();
            if header.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok());
                length = Some(n.ok_or("bad content-length")?);
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                if !chunked {
                    return Err("unsupported transfer-encoding");
                }
            } else if header.name.eq_ignore_ascii_case("content-encoding") {
                if value.eq_ignore_ascii_case(b"gzip") || value.eq_ignore_ascii_case(b"x-gzip") {
                    gzip = true;
                } else if !value.eq_ignore_ascii_case(b"identity") && !value.is_empty() {
                    return Err("unsupported content-encoding");
                }
            } else if header.name.eq_ignore_ascii_case("connection") {
                for token in value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    close |= token.eq_ignore_ascii_case(b"close");
                    if response.version == Some(0) && token.eq_ignore_ascii_case(b"keep-alive") {
                        close = false;
                    }
                }
            }
        }
        let framing = match (chunked, length) {
            (true, _) => Framing::Chunked(ChunkedDecoder::default()),
            (false, Some(n)) => Framing::Length(n),
            (false, None) => Framing::UntilClose,
        };
        Ok(Head {
            framing,
            gzip,
            close,
        })
    }
}

/// One request/response with the engine, its body still to be read.
pub struct Exchange<'a> {
    client: &'a EngineClient,
    prepared: &'a Prepared,
    stream: Option<TcpStream>,
    /// Read buffer; `buf[pos..]` is body not yet handed out.
    buf: &'a mut Vec<u8>,
    pos: usize,
    framing: Framing,
    gzip: Option<Box<(GzipDecoder, Vec<u8>)>>,
    close: bool,
    status: u16,
    deadline: Instant,
    done: bool,
    /// Body bytes received, as sent on the wire (before inflating).
    wire_bytes: u64,
}

impl<'a> Exchange<'a> {
    fn new(
        client: &'a EngineClient,
        prepared: &'a Prepared,
        started: Started,
        buf: &'a mut Vec<u8>,
        deadline: Instant,
    ) -> Self {
        let Started {
            stream,
            head_len,
            head,
            status,
        } = started;
        let done = matches!(head.framing, Framing::Length(0));
        Exchange {
            client,
            prepared,
            stream: Some(stream),
            buf,
            pos: head_len,
            framing: head.framing,
            gzip: head
                .gzip
                .then(|| Box::new((GzipDecoder::default(), Vec::new()))),
            close: head.close,
            status,
            deadline,
            done,
            wire_bytes: 0,
        }
    }

    /// The engine's status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Body bytes received so far, as they came over the wire.
    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes
    }

    /// Reads the next piece of the body and hands it, decoded, to `sink`
    /// (possibly in several calls). Returns false once the body is complete.
    pub async fn read(&mut self, mut sink: impl FnMut(&[u8])) -> Result<bool, UpstreamError> {
        if self.done {
            return Ok(false);
        }
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            let stream = self.stream.as_mut().expect("stream present until done");
            let read = monoio::time::timeout_at(self.deadline, read_more(stream, self.buf)).await;
            let n = match read {
                Err(_) => return Err(self.timeout()),
                Ok(Err(source)) => {
                    return Err(UpstreamError::Io {
                        url: self.prepared.url.clone(),
                        source,
                    });
                }
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                if matches!(self.framing, Framing::UntilClose) {
                    self.finish_body()?;
                    return Ok(false);
                }
                return Err(UpstreamError::Truncated {
                    url: self.prepared.url.clone(),
                });
            }
        }
        let data_start = self.pos;
        let available = &self.buf[data_start..];
        let mut gzip_error = None;
        let mut deliver = |data: &[u8]| match &mut self.gzip {
            Some(gz) => {
                let (decoder, scratch) = &mut **gz;
                if gzip_error.is_none()
                    && let Err(e) = decoder.decode(data, scratch, &mut sink)
                {
                    gzip_error = Some(e);
                }
            }
            None => sink(data),
        };
        let (used, body_done) = match &mut self.framing {
            Framing::Length(remaining) => {
                let take = (*remaining).min(available.len() as u64) as usize;
                deliver(&available[..take]);
                *remaining -= take as u64;
                (take, *remaining == 0)
            }
            Framing::Chunked(decoder) => {
                let used = decoder.decode(available, &mut deliver).map_err(|e| {
                    UpstreamError::Protocol {
                        url: self.prepared.url.clone(),
                        reason: e.to_string(),
                    }
                })?;
                (used, decoder.is_done())
            }
            Framing::UntilClose => {
                deliver(available);
                (available.len(), false)
            }
        };
        self.wire_bytes += used as u64;
        self.pos += used;
        if let Some(e) = gzip_error {
            return Err(UpstreamError::Protocol {
                url: self.prepared.url.clone(),
                reason: format!("bad gzip body: {e}"),
            });
        }
        if body_done {
            if self.pos < self.buf.len() {
                // Bytes after the body: the connection is out of step.
                self.close = true;
            }
            self.finish_body()?;
            return Ok(false);
        }
        Ok(true)
    }

    fn finish_body(&mut self) -> Result<(), UpstreamError> {
        self.done = true;
        if let Some(gz) = &self.gzip
            && !gz.0.is_done()
        {
            return Err(UpstreamError::Protocol {
                url: self.prepared.url.clone(),
                reason: "gzip body ended early".into(),
            });
        }
        let reusable = !self.close && !matches!(self.framing, Framing::UntilClose);
        if let Some(stream) = self.stream.take()
            && reusable
        {
            self.client.recycle(stream);
        }
        Ok(())
    }

    fn timeout(&self) -> UpstreamError {
        UpstreamError::Timeout {
            url: self.prepared.url.clone(),
            timeout: self.client.timeout,
        }
    }

    /// Turns a non-2xx answer into an error carrying the start of its body.
    pub async fn into_status_error(mut self) -> UpstreamError {
        const KEEP: usize = 512;
        let mut body = Vec::new();
        while body.len() < KEEP {
            match self
                .read(|d| body.extend_from_slice(&d[..d.len().min(KEEP - body.len().min(KEEP))]))
                .await
            {
                Ok(true) => {}
                Ok(false) | Err(_) => break,
            }
        }
        body.truncate(KEEP);
        let text = String::from_utf8_lossy(&body);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        UpstreamError::Status {
            url: self.prepared.url.clone(),
            status: self.status,
            body: text,
        }
    }
}

/// Appends what the socket has to `buf`.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(READ_SIZE);
    }
    let owned = std::mem::take(buf);
    let (len, cap) = (owned.len(), owned.capacity());
    let (result, slice) = stream.read(owned.slice_mut(len..cap)).await;
    *buf = slice.into_inner();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = EngineEndpoint::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!(e.host, "127.0.0.1:8000");
        assert_eq!(e.prefix, "");
        assert_eq!(e.addrs, ["127.0.0.1:8000".parse().unwrap()]);
        let e = EngineEndpoint::parse("http://localhost:8000/engine/").unwrap();
        assert_eq!(e.prefix, "/engine");
        assert!(!e.addrs.is_empty());
        let e = EngineEndpoint::parse("http://[::1]:81").unwrap();
        assert_eq!(e.addrs, ["[::1]:81".parse().unwrap()]);
        assert_eq!(
            EngineEndpoint::parse("http://10.0.0.1").unwrap().addrs[0].port(),
            80
        );
        let unresolved = EngineEndpoint::parse("http://no-such-host.invalid:8000").unwrap();
        assert!(unresolved.addrs.is_empty());
        assert_eq!(
            (unresolved.hostname.as_str(), unresolved.port),
            ("no-such-host.invalid", 8000)
        );
        for bad in [
            "https://localhost:8000",
            "localhost:8000",
            "ftp://x",
            "http://",
            "not a url",
        ] {
            assert!(EngineEndpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prepared_requests() {
        let e = EngineEndpoint::parse("http://localhost:8000/p").unwrap();
        let client = EngineClient::new(e, "/metrics", Duration::from_secs(1));
        assert_eq!(
            client.url(Target::Metrics),
            "http://localhost:8000/p/metrics"
        );
        let request = String::from_utf8(client.metrics.bytes.clone()).unwrap();
        assert!(
            request.starts_with("GET /p/metrics HTTP/1.1\r\nhost: localhost:8000\r\n"),
            "{request}"
        );
        assert!(request.ends_with("\r\n\r\n"));
    }
}
