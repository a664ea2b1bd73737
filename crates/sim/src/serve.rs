//! The engine's own HTTP/1.1 serving: an accept loop per worker and a
//! loop per connection.
//!
//! Keep-alive and pipelined requests, as uvicorn (vLLM, SGLang) allows
//! them; an idle connection closes after [`IDLE_TIMEOUT`], a request must
//! arrive whole within [`READ_TIMEOUT`] (else 408). A bad request is
//! answered (400, 411, 413, 431) and the connection closed. Parsing is in
//! [`request`], framing in [`response`]; this file only moves bytes.

pub(crate) mod request;
pub(crate) mod response;

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use event_listener::Event;
use http::StatusCode;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

use crate::engine::SimEngine;
use request::{Progress, RequestError, RequestReader};
use response::Responder;

/// How long a keep-alive connection may wait for its next request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a request may take to arrive once started.
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// How long requests in flight get to finish after a stop.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The engine's stop signal, shared by its workers: an atomic flag for
/// quick checks and an event that wakes every task waiting on it.
#[derive(Default)]
pub struct Stop {
    stopped: AtomicBool,
    event: Event,
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl Stop {
    /// Stops the engine: listeners close, idle connections close,
    /// requests in flight finish.
    pub fn trigger(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    /// Whether [`Stop::trigger`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Resolves once triggered.
    async fn wait(&self) {
        loop {
            if self.is_stopped() {
                return;
            }
            let listener = self.event.listen();
            // Checked again: a trigger between the first check and
            // `listen` would otherwise be missed.
            if self.is_stopped() {
                return;
            }
            listener.await;
        }
    }
}

/// Accepts connections until stopped, then gives the open ones
/// [`STOP_GRACE`] to finish.
pub(crate) async fn serve(listener: TcpListener, engine: SimEngine, stop: Arc<Stop>) {
    let engine = Rc::new(engine);
    let open = Rc::new(Cell::new(0usize));
    loop {
        let accepted = monoio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait() => break,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                let (engine, stop, open) = (engine.clone(), stop.clone(), open.clone());
                open.set(open.get() + 1);
                monoio::spawn(async move {
                    connection(stream, &engine, &stop).await;
                    open.set(open.get() - 1);
                });
            }
            Err(e) => {
                // Out of file descriptors, mostly: back off, keep serving.
                tracing::warn!(error = %e, "simulated engine: accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    let deadline = Instant::now() + STOP_GRACE;
    while open.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Serves requests on one connection until either side ends it.
async fn connection(mut stream: TcpStream, engine: &SimEngine, stop: &Stop) {
    let (mut input, mut output) = (Vec::new(), Vec::new());
    let mut reader = RequestReader::default();
    loop {
        let mut deadline = None;
        let request = loop {
            let send_continue = match reader.advance(&mut input) {
                Ok(Progress::Request(request)) => break request,
                Ok(Progress::NeedMore { send_continue }) => send_continue,
                Err(error) => return refuse(stream, output, error).await,
            };
            if send_continue {
                let (result, _) = stream
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
                    .await;
                if result.is_err() {
                    return;
                }
            }
            if reader.is_idle(&input) && !wait_for_request(&stream, stop).await {
                return;
            }
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + READ_TIMEOUT);
            match monoio::time::timeout_at(deadline.into(), read_more(&mut stream, &mut input))
                .await
            {
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => {
                    let mut res = Responder::new(&mut stream, &mut output, false, false);
                    let _ = res
                        .error(StatusCode::REQUEST_TIMEOUT, "request timed out")
                        .await;
                    return;
                }
            }
        };
        let keep_alive = request.keep_alive && !stop.is_stopped();
        let mut res = Responder::new(&mut stream, &mut output, request.http10, keep_alive);
        // Boxed: a handler's state would otherwise be part of every idle
        // connection's future.
        let result = Box::pin(engine.call(&request, &mut res)).await;
        if result.is_err() || !res.is_keep_alive() || stop.is_stopped() {
            return;
        }
    }
}

/// Answers a bad request and closes without losing the answer: closing a
/// socket with unread bytes sends a reset, which can destroy the answer
/// before the client reads it. So: half-close, then drain briefly.
async fn refuse(mut stream: TcpStream, mut output: Vec<u8>, error: RequestError) {
    let mut res = Responder::new(&mut stream, &mut output, false, false);
    if res.error(error.status(), error.detail()).await.is_err() {
        return;
    }
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

/// Waits for the next request's first byte, holding no buffer meanwhile.
/// False when the connection closed or idled out, or the engine stops.
async fn wait_for_request(stream: &TcpStream, stop: &Stop) -> bool {
    monoio::select! {
        ready = monoio::time::timeout(IDLE_TIMEOUT, stream.readable(false)) => {
            matches!(ready, Ok(Ok(())))
        }
        _ = stop.wait() => false,
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
