//! The listening side: accept loop and the per-connection request loop.
//!
//! Each worker runs [`serve`] on its own `SO_REUSEPORT` listener. A
//! connection task reads into one owned buffer, parses as many requests as
//! it holds (pipelining: they are answered one after another, so in
//! order), reads bodies, and hands each request to the [`Service`].
//! Timeouts: a keep-alive connection may sit idle for `idle_timeout`; once
//! a request has started, all of it must arrive within `read_timeout`.
//! Connections beyond [`ConnectionLimit`] (process-wide, across workers)
//! get a 503 and are closed, so a flood of idle or slow clients cannot
//! exhaust file descriptors or memory. A handler that panics costs its
//! request (500 when nothing was sent yet) and its connection, never the
//! worker: monoio does not catch a task's panic, and a worker's end would
//! silence its listener (with the default single worker, every endpoint).

use std::any::Any;
use std::cell::Cell;
use std::future::Future;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::StatusCode;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::{TcpListener, TcpStream};
use monoio::time::Instant;

use super::chunked::ChunkedDecoder;
use super::request::{BodyFraming, Limits, Request, RequestError, parse_head};
use super::response::{Responder, write_all};
use crate::prom::expo;
use crate::shutdown::Shutdown;
use crate::stats::MetricsSection;

/// Something that answers requests.
pub trait Service {
    /// Answers `req` through `res`. An error means the connection is
    /// broken and will be closed.
    fn call(&self, req: Request, res: &mut Responder<'_>) -> impl Future<Output = io::Result<()>>;
}

/// Connection-level settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Request size limits.
    pub limits: Limits,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// How long a request may take to arrive once it has started.
    pub read_timeout: Duration,
    /// How long one write to a client may take.
    pub write_timeout: Duration,
    /// How long in-flight requests get to finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// Open connections of the process, and how many it accepts.
    pub connections: Arc<ConnectionLimit>,
    /// Requests of the process whose handler panicked.
    pub panics: Arc<HandlerPanics>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            idle_timeout: Duration::from_secs(120),
            read_timeout: Duration::from_secs(15),
            write_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(20),
            connections: Arc::new(ConnectionLimit::new(DEFAULT_MAX_CONNECTIONS)),
            panics: Arc::default(),
        }
    }
}

/// Connections a process keeps open by default: thousands of idle
/// keep-alive clients fit, well below the usual descriptor limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;

/// The process-wide cap on open connections, shared by every worker.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: usize,
    open: AtomicUsize,
    refused: AtomicU64,
}

impl ConnectionLimit {
    /// A cap of `max` open connections.
    pub fn new(max: usize) -> ConnectionLimit {
        ConnectionLimit {
            max,
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes a slot, or `None` (counted) when all are taken.
    fn acquire(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |open| {
                (open < self.max).then_some(open + 1)
            });
        match taken {
            Ok(_) => Some(ConnectionSlot(self.clone())),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// An open connection's place under the cap, given back when dropped.
struct ConnectionSlot(Arc<ConnectionLimit>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl MetricsSection for ConnectionLimit {
    fn render(&self, out: &mut Vec<u8>) {
        let name = "matrixinfer_runtime_connections_open";
        expo::header(out, name, "gauge", "Client connections open now.");
        expo::sample(out, name, &[], self.open.load(Ordering::Relaxed) as u64);
        let name = "matrixinfer_runtime_connections_refused_total";
        expo::header(
            out,
            name,
            "counter",
            "Client connections refused with 503 because the connection cap was reached.",
        );
        expo::sample(out, name, &[], self.refused.load(Ordering::Relaxed));
    }
}

/// Requests whose handler panicked, counted across workers.
#[derive(Debug, Default)]
pub struct HandlerPanics(AtomicU64);

impl HandlerPanics {
    /// How many so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl MetricsSection for HandlerPanics {
    fn render(&self, out: &mut Vec<u8>) {
        let name = "matrixinfer_runtime_handler_panics_total";
        expo::header(
            out,
            name,
            "counter",
            "Requests whose handler panicked (a bug in the runtime): answered 500 if nothing \
             had been sent, their connection closed; the worker went on serving.",
        );
        expo::sample(out, name, &[], self.count());
    }
}

/// Accepts connections until shutdown, then waits (up to the grace
/// period) for open connections to finish their requests.
pub async fn serve<S: Service + 'static>(
    listener: TcpListener,
    service: Rc<S>,
    config: Rc<ServerConfig>,
    shutdown: Arc<Shutdown>,
) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        let accepted = monoio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait() => break,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                let Some(slot) = config.connections.acquire() else {
                    monoio::spawn(refuse_connection(stream, config.connections.max));
                    continue;
                };
                let guard = OpenConnection::new(&open);
                let service = service.clone();
                let config = config.clone();
                let shutdown = shutdown.clone();
                monoio::spawn(async move {
                    let _guard = (guard, slot);
                    serve_connection(stream, &*service, &config, &shutdown).await;
                });
            }
            Err(e) => {
                // Out of file descriptors, mostly: back off instead of
                // spinning, and keep serving the connections we have.
                tracing::warn!(error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    let deadline = Instant::now() + config.shutdown_grace;
    while open.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    if open.get() > 0 {
        tracing::warn!(
            open = open.get(),
            "shutdown grace period over; closing connections"
        );
    }
}

/// Answers a connection over the cap with 503 and closes it, without
/// waiting for its request: a client that never sends one must not hold
/// the slot the refusal was meant to protect.
async fn refuse_connection(mut stream: TcpStream, max: usize) {
    let detail =
        format!("Too many connections: this runtime keeps at most {max} open; retry later");
    let body = serde_json::json!({ "detail": detail }).to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (result, _) = write_all(&mut stream, response.into_bytes(), Duration::from_secs(2)).await;
    if result.is_ok() {
        linger(&mut stream).await;
    }
}

/// Counts a connection as open for as long as it lives.
struct OpenConnection(Rc<Cell<usize>>);

impl OpenConnection {
    fn new(open: &Rc<Cell<usize>>) -> Self {
        open.set(open.get() + 1);
        OpenConnection(open.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// What reading the next request gave.
enum Next {
    Request(Request),
    /// The client closed, went idle for too long, or we are shutting down.
    Close,
    /// The request is bad: answer with this error, then close.
    Refuse(RequestError),
}

/// Serves requests on one connection until either side ends it.
pub async fn serve_connection<S: Service>(
    mut stream: TcpStream,
    service: &S,
    config: &ServerConfig,
    shutdown: &Shutdown,
) {
    let mut input = Vec::new();
    let mut output = Vec::new();
    loop {
        if input.is_empty() && !wait_for_request(&stream, config, shutdown).await {
            return;
        }
        // Boxed, as the handler below: an idle connection's future is
        // then only this loop's state, a few hundred bytes.
        let next = Box::pin(read_request(&mut stream, &mut input, config)).await;
        let request = match next {
            Next::Request(request) => request,
            Next::Close => return,
            Next::Refuse(error) => {
                let mut res =
                    Responder::new(&mut stream, &mut output, config.write_timeout, false, false);
                if res.error(error.status(), &error.to_string()).await.is_ok() {
                    linger(&mut stream).await;
                }
                return;
            }
        };
        let keep_alive = request.keep_alive && !shutdown.is_triggered();
        let mut res = Responder::new(
            &mut stream,
            &mut output,
            config.write_timeout,
            request.http10,
            keep_alive,
        );
        let (method, path) = (request.method.clone(), request.path.clone());
        // Boxed: a handler's state (a scrape's buffers and upstream
        // client) would otherwise be part of every connection's future,
        // kilobytes held by each idle keep-alive connection.
        let called = CatchPanic(Box::pin(service.call(request, &mut res))).await;
        let result = match called {
            Ok(result) => result,
            Err(panic) => {
                config.panics.0.fetch_add(1, Ordering::Relaxed);
                // The path without its query, which may carry a secret.
                tracing::error!(
                    %method,
                    path,
                    panic = panic_message(&*panic),
                    "request handler panicked: a bug, please report it; \
                     the request failed and its connection closes, the worker goes on"
                );
                // What the handler left half-done (a response begun, bytes
                // still unread) cannot be trusted: the connection ends here,
                // after a linger like any error answer's.
                if !res.is_sent() {
                    res.close_after();
                    let answered = res.error(StatusCode::INTERNAL_SERVER_ERROR, "Internal error");
                    if answered.await.is_ok() {
                        linger(&mut stream).await;
                    }
                }
                return;
            }
        };
        if result.is_ok() && !res.is_sent() {
            res.close_after();
            let _ = res
                .error(StatusCode::INTERNAL_SERVER_ERROR, "no response")
                .await;
        }
        if result.is_err() || !res.is_keep_alive() || shutdown.is_triggered() {
            return;
        }
        if input.is_empty() {
            // Nothing pipelined: the connection goes idle, and an idle
            // keep-alive connection holds no buffer.
            input = Vec::new();
            output = Vec::new();
        }
    }
}

/// A handler's future whose panic, should it panic while polled, becomes
/// its output instead of unwinding through the worker's runtime.
struct CatchPanic<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Unwind safety: a panicked future is never polled again (it is
        // dropped with this one, and its scratch state with it); what it
        // shares with other requests sits behind `RefCell`s and `Cell`s
        // whose guards are released on the way out.
        match catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// A panic's message, when it has one.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "(no message)"
    }
}

/// Closes after an error answer without losing it: closing a socket with
/// unread request bytes sends a reset, which can destroy the answer before
/// the client reads it. So: half-close, then drain briefly.
async fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = Vec::with_capacity(16 * 1024);
        for _ in 0..64 {
            buf.clear();
            match stream.read(buf).await {
                (Ok(n), back) if n > 0 => buf = back,
                _ => return,
            }
        }
    };
    let _ = monoio::time::timeout(Duration::from_secs(1), drain).await;
}

/// Waits for the first byte of the next request, holding no buffer (an
/// io_uring read would pin one: with thousands of idle keep-alive
/// connections, 8 KB each would be most of the sidecar's memory). False
/// when the connection closed or idled out, or the server is stopping.
async fn wait_for_request(stream: &TcpStream, config: &ServerConfig, shutdown: &Shutdown) -> bool {
    monoio::select! {
        ready = monoio::time::timeout(config.idle_timeout, stream.readable(false)) => {
            matches!(ready, Ok(Ok(())))
        }
        _ = shutdown.wait() => false,
    }
}

/// Reads the next request, head and body, from `input` and the socket;
/// it has begun to arrive, and must be whole within the read timeout.
async fn read_request(stream: &mut TcpStream, input: &mut Vec<u8>, config: &ServerConfig) -> Next {
    let deadline = Instant::now() + config.read_timeout;
    let (mut request, head_len) = loop {
        match parse_head(input, &config.limits) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            Err(error) => return Next::Refuse(error),
        }
        match read_until(stream, input, deadline, config).await {
            Ok(0) => return Next::Close,
            Ok(_) => {}
            Err(next) => return next,
        }
    };
    input.drain(..head_len);

    if request.expect_continue && request.framing != BodyFraming::None && input.is_empty() {
        let (result, _) = write_all(
            stream,
            b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
            config.write_timeout,
        )
        .await;
        if result.is_err() {
            return Next::Close;
        }
    }
    match request.framing {
        BodyFraming::None => {}
        BodyFraming::Length(len) => {
            let len = len as usize;
            while input.len() < len {
                match read_until(stream, input, deadline, config).await {
                    Ok(0) => return Next::Close,
                    Ok(_) => {}
                    Err(next) => return next,
                }
            }
            request.body = input.drain(..len).collect();
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            let mut body = Vec::new();
            loop {
                let used = match decoder.decode(input, |data| body.extend_from_slice(data)) {
                    Ok(used) => used,
                    Err(e) => return Next::Refuse(RequestError::Invalid(e.to_string())),
                };
                input.drain(..used);
                if body.len() > config.limits.max_body {
                    return Next::Refuse(RequestError::BodyTooLarge(config.limits.max_body));
                }
                if decoder.is_done() {
                    break;
                }
                match read_until(stream, input, deadline, config).await {
                    Ok(0) => return Next::Close,
                    Ok(_) => {}
                    Err(next) => return next,
                }
            }
            request.body = body;
        }
    }
    Next::Request(request)
}

/// Reads more of a started request, failing with 408 at `deadline`.
async fn read_until(
    stream: &mut TcpStream,
    input: &mut Vec<u8>,
    deadline: Instant,
    config: &ServerConfig,
) -> Result<usize, Next> {
    match monoio::time::timeout_at(deadline, read_more(stream, input)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(_)) => Err(Next::Close),
        Err(_) => Err(Next::Refuse(RequestError::Timeout(
            config.read_timeout.as_secs(),
        ))),
    }
}

/// Appends what the socket has to `input`.
async fn read_more(stream: &mut TcpStream, input: &mut Vec<u8>) -> io::Result<usize> {
    if input.capacity() - input.len() < 4096 {
        input.reserve(8192);
    }
    let buf = std::mem::take(input);
    let (len, cap) = (buf.len(), buf.capacity());
    let (result, slice) = stream.read(buf.slice_mut(len..cap)).await;
    *input = slice.into_inner();
    result
}

#[cfg(test)]
mod tests;
