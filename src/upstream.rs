//! The engine client: GETs against the inference engine beside us.
//!
//! Stage 1 of the metrics path. One [`EngineClient`] per worker keeps a few
//! idle keep-alive connections to the engine (so a scrape costs no TCP
//! handshake) and opens an [`Exchange`] per request. The exchange reads the
//! body as it arrives and hands it on decoded (chunked framing removed,
//! gzip inflated) one socket read at a time, so nothing waits for the
//! whole payload. Every exchange is bounded by `REQUEST_TIMEOUT`. The
//! protocol itself (the response head, the body's framing) is
//! [`crate::net::h1`], shared with the blocking client.
//!
//! It connects straight to the engine, whatever `HTTPS_PROXY`/`http_proxy`
//! say: the engine is in the same Pod, so the outbound proxy policy of
//! [`crate::net::outbound`] is not for it.

mod endpoint;
mod exchange;
mod resolver;

use std::cell::RefCell;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::time::Instant;

pub use endpoint::{EndpointError, EngineEndpoint};
pub use exchange::Exchange;
pub use resolver::{Lookup, RESOLVE_TTL, Resolver, system_lookup};

use crate::net::h1::{Coding, ResponseHead};
use crate::net::is_stale;
pub use crate::stats::Failure;

/// Idle connections kept per worker.
const MAX_IDLE: usize = 8;
/// Largest response head accepted from the engine.
const MAX_HEAD: usize = 64 * 1024;
/// Socket read size.
const READ_SIZE: usize = 64 * 1024;

/// An engine call that failed. Messages name the URL and never carry a
/// body longer than a line or two.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The engine's host name has never resolved.
    #[error("cannot connect to {url}: the engine host {host} does not resolve: {reason}")]
    Resolve {
        /// The URL requested.
        url: String,
        /// The host name.
        host: String,
        /// The resolver's error.
        reason: String,
    },
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
    /// Why, as counted.
    pub fn reason(&self) -> Failure {
        match self {
            UpstreamError::Connect { .. } | UpstreamError::Resolve { .. } => Failure::Connect,
            UpstreamError::Timeout { .. } => Failure::Timeout,
            UpstreamError::Status { .. } => Failure::Status,
            UpstreamError::Protocol { .. } => Failure::Protocol,
            UpstreamError::Io { .. } => Failure::Io,
            UpstreamError::Truncated { .. } => Failure::Truncated,
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
    resolver: Arc<Resolver>,
    presence: Option<Arc<EnginePresence>>,
}

/// Whether the engine answered the last request a worker sent it: set by
/// the engine clients, read by what paces itself by the engine (the KV
/// subscriber probes less often for a publisher once the engine answers
/// without one).
#[derive(Debug, Default)]
pub struct EnginePresence(AtomicU8);

impl EnginePresence {
    const ANSWERED: u8 = 1;
    const FAILED: u8 = 2;

    /// Whether the engine answered the last request; `None` before the
    /// first.
    pub fn answering(&self) -> Option<bool> {
        match self.0.load(Relaxed) {
            Self::ANSWERED => Some(true),
            Self::FAILED => Some(false),
            _ => None,
        }
    }

    /// Records how the last request went.
    pub fn record(&self, answered: bool) {
        let state = if answered {
            Self::ANSWERED
        } else {
            Self::FAILED
        };
        self.0.store(state, Relaxed);
    }
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
    /// A client for `endpoint`, whose addresses `resolver` keeps, with
    /// `metrics_path` and a per-request limit.
    pub fn new(
        endpoint: EngineEndpoint,
        resolver: Arc<Resolver>,
        metrics_path: &str,
        timeout: Duration,
    ) -> EngineClient {
        // Classic text format: OpenMetrics from SGLang may spell sample
        // names differently from their TYPE line.
        let metrics = Prepared::new(
            &endpoint,
            metrics_path,
            "text/plain;version=0.0.4;q=1,*/*;q=0.1",
        );
        let health = Prepared::new(&endpoint, "/health", "*/*");
        EngineClient {
            endpoint,
            timeout,
            metrics,
            health,
            idle: RefCell::new(Vec::new()),
            resolver,
            presence: None,
        }
    }

    /// Records in `presence` whether each request got an answer.
    pub fn reporting_to(mut self, presence: Arc<EnginePresence>) -> EngineClient {
        self.presence = Some(presence);
        self
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
        let answer = self.send(target, buf).await;
        if let Some(presence) = &self.presence {
            presence.record(answer.is_ok());
        }
        answer
    }

    async fn send<'a>(
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
        // The cached addresses: the lookup runs on the resolver's thread.
        let addrs = self
            .resolver
            .addresses()
            .map_err(|reason| UpstreamError::Resolve {
                url: url.to_owned(),
                host: self.endpoint.hostname.clone(),
                reason,
            })?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in addrs.iter() {
            match monoio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => last = e,
                Err(_) => {
                    self.resolver.refresh();
                    return Err(UpstreamError::Timeout {
                        url: url.to_owned(),
                        timeout: self.timeout,
                    });
                }
            }
        }
        // The engine may have moved: look the name up again, off-thread.
        self.resolver.refresh();
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
            match ResponseHead::parse(buf, MAX_HEAD, false, false) {
                // Only gzip is inflated; anything else would be passed on
                // still encoded.
                Ok(Some(head)) if head.coding == Coding::Other => {
                    return Err(Start::Failed(UpstreamError::Protocol {
                        url: url.clone(),
                        reason: "unsupported content-encoding".into(),
                    }));
                }
                Ok(Some(head)) => return Ok(Started { stream, head }),
                Ok(None) => {}
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
    head: ResponseHead,
}

enum Start {
    /// The connection was dead before any byte of a response came back.
    Stale,
    Failed(UpstreamError),
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
    fn failure_reasons_index_their_labels() {
        for (i, reason) in Failure::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{}", reason.as_str());
        }
    }

    #[test]
    fn prepared_requests() {
        let e = EngineEndpoint::parse("http://localhost:8000/p").unwrap();
        let lookup: Arc<Lookup> = Arc::new(|_: &str, _| Ok(Vec::new()));
        let resolver = Resolver::start_with("localhost", 8000, RESOLVE_TTL, lookup).unwrap();
        let client = EngineClient::new(e, Arc::new(resolver), "/metrics", Duration::from_secs(1));
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
