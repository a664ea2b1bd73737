//! Thread per worker: each builds its own monoio runtime and serves its
//! own `SO_REUSEPORT` listener, so the kernel spreads connections over
//! them and they share nothing mutable.
//!
//! io_uring where the kernel allows it; `auto` falls back to epoll where
//! it does not (Docker's default seccomp profile blocks it, old kernels
//! lack it, a low memlock limit starves it). The sidecar has its own
//! version of this (`src/runtime.rs`); this one is the minimum the engine
//! needs, kept separate so that the engine depends on nothing of the
//! sidecar.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use monoio::time::TimeDriver;
use monoio::{IoUringDriver, LegacyDriver, Runtime, RuntimeBuilder};
use socket2::{Domain, Protocol, Socket, Type};

use crate::DriverChoice;

/// A worker's runtime, on the driver it got.
enum WorkerRuntime {
    IoUring(Runtime<TimeDriver<IoUringDriver>>),
    Epoll(Runtime<TimeDriver<LegacyDriver>>),
}

impl WorkerRuntime {
    fn build(choice: DriverChoice) -> io::Result<WorkerRuntime> {
        let epoll = || {
            RuntimeBuilder::<LegacyDriver>::new()
                .enable_timer()
                .build()
                .map(WorkerRuntime::Epoll)
        };
        let uring = || {
            RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(1024)
                .enable_timer()
                .build()
                .map(WorkerRuntime::IoUring)
        };
        match choice {
            DriverChoice::Epoll => epoll(),
            DriverChoice::IoUring => uring(),
            DriverChoice::Auto => uring().or_else(|e| {
                tracing::debug!(error = %e, "io_uring unavailable; the simulated engine uses epoll");
                epoll()
            }),
        }
    }

    fn is_epoll(&self) -> bool {
        matches!(self, WorkerRuntime::Epoll(_))
    }

    fn block_on<F: Future>(&mut self, future: F) -> F::Output {
        match self {
            WorkerRuntime::IoUring(rt) => rt.block_on(future),
            WorkerRuntime::Epoll(rt) => rt.block_on(future),
        }
    }
}

/// Binds `count` listeners to `addr` with `SO_REUSEPORT`, all on the same
/// port (the first one's, when `addr` asks for port 0).
pub(crate) fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut listeners: Vec<std::net::TcpListener> = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Starts one thread per listener, named `{name}-{index}`; each runs
/// `work(index, listener)` to completion on its own runtime. Returns once
/// every worker is running, or the first error starting one (io_uring
/// forced where it is unavailable, say).
pub(crate) fn start<W, F>(
    name: &str,
    choice: DriverChoice,
    listeners: Vec<std::net::TcpListener>,
    work: W,
) -> io::Result<Vec<JoinHandle<()>>>
where
    W: Fn(usize, monoio::net::TcpListener) -> F + Send + Sync + 'static,
    F: Future<Output = ()>,
{
    let work = Arc::new(work);
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.into_iter().enumerate() {
        let work = work.clone();
        let ready = ready_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("{name}-{index}"))
            .spawn(move || {
                let mut runtime = match WorkerRuntime::build(choice) {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready.send(Err((index, e)));
                        return;
                    }
                };
                let epoll = runtime.is_epoll();
                runtime.block_on(async move {
                    // The legacy driver needs a non-blocking socket; io_uring
                    // must not get one (it would answer EAGAIN, not wait).
                    let listener = listener
                        .set_nonblocking(epoll)
                        .and_then(|()| monoio::net::TcpListener::from_std(listener));
                    match listener {
                        Ok(listener) => {
                            let _ = ready.send(Ok(()));
                            drop(ready);
                            work(index, listener).await;
                        }
                        Err(e) => {
                            let _ = ready.send(Err((index, e)));
                        }
                    }
                });
            })?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..handles.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err((index, e))) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("worker {index} could not start: {e}"),
                ));
            }
            Err(_) => return Err(io::Error::other("a worker thread exited during start")),
        }
    }
    Ok(handles)
}
