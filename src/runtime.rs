//! Thread-per-core: worker threads, each with its own monoio runtime and
//! its own `SO_REUSEPORT` listener.
//!
//! Workers share nothing mutable: the kernel spreads connections over
//! their listeners, each worker owns its buffers and engine connections,
//! and counters are per worker (see [`crate::stats`]). io_uring is used
//! where the kernel allows it; where it does not (Docker's default seccomp
//! profile blocks it, old kernels lack it, a low memlock limit starves it),
//! the worker falls back to epoll and says so. A worker that ends by a
//! panic (one outside any request: a handler's own is caught by the
//! connection loop) stops the process, so that it is restarted rather than
//! left up with a deaf port.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use monoio::time::TimeDriver;
use monoio::{IoUringDriver, LegacyDriver, Runtime, RuntimeBuilder};
use socket2::{Domain, Protocol, Socket, Type};

use crate::shutdown::Shutdown;

/// The I/O driver a worker runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoDriver {
    /// Linux io_uring.
    IoUring,
    /// epoll readiness (monoio's legacy driver).
    Epoll,
}

impl IoDriver {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            IoDriver::IoUring => "io_uring",
            IoDriver::Epoll => "epoll",
        }
    }
}

/// Which driver to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverChoice {
    /// io_uring when it works here, epoll otherwise.
    Auto,
    /// io_uring or fail.
    IoUring,
    /// epoll, even where io_uring works.
    Epoll,
}

impl DriverChoice {
    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            DriverChoice::Auto => "auto",
            DriverChoice::IoUring => "io-uring",
            DriverChoice::Epoll => "epoll",
        }
    }
}

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
                tracing::debug!(error = %e, "io_uring unavailable");
                epoll()
            }),
        }
    }

    fn driver(&self) -> IoDriver {
        match self {
            WorkerRuntime::IoUring(_) => IoDriver::IoUring,
            WorkerRuntime::Epoll(_) => IoDriver::Epoll,
        }
    }

    fn block_on<F: Future>(&mut self, future: F) -> F::Output {
        match self {
            WorkerRuntime::IoUring(rt) => rt.block_on(future),
            WorkerRuntime::Epoll(rt) => rt.block_on(future),
        }
    }
}

/// What a worker is started with.
pub struct WorkerStart {
    /// Its index, 0-based.
    pub index: usize,
    /// Its listener, already bound.
    pub listener: monoio::net::TcpListener,
    /// The driver it runs on.
    pub driver: IoDriver,
}

/// Running workers.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<JoinHandle<()>>,
    drivers: Vec<IoDriver>,
}

impl Workers {
    /// The driver each worker runs on.
    pub fn drivers(&self) -> &[IoDriver] {
        &self.drivers
    }

    /// Waits for every worker to return; an error names those that ended
    /// by a panic.
    pub fn join(self) -> Result<(), WorkersPanicked> {
        let mut panicked = Vec::new();
        for handle in self.handles {
            let name = handle.thread().name().unwrap_or("worker").to_owned();
            if handle.join().is_err() {
                panicked.push(name);
            }
        }
        match panicked.is_empty() {
            true => Ok(()),
            false => Err(WorkersPanicked(panicked)),
        }
    }
}

/// Workers that ended by a panic, by thread name.
#[derive(Debug, thiserror::Error)]
#[error("{} ended by a panic (a bug: please report it with the log); the process stopped so that it is restarted", .0.join(", "))]
pub struct WorkersPanicked(pub Vec<String>);

/// Held by a worker's thread: should the thread unwind, the process stops
/// (the other workers drain, [`Workers::join`] reports it), instead of
/// staying up without the worker's listener.
struct StopOnPanic {
    index: usize,
    shutdown: Arc<Shutdown>,
}

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(
                worker = self.index,
                "worker ended by a panic outside any request; stopping the process"
            );
            self.shutdown.trigger();
        }
    }
}

/// Binds `count` listeners to `addr` with `SO_REUSEPORT`, all on the same
/// port (the first one's, when `addr` asks for port 0).
pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
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

/// Starts one thread per listener, named `{name}-{index}`. Each builds its
/// runtime, then runs `work` to completion; one that panics triggers
/// `shutdown`. Returns once every worker has its runtime, or the first
/// error building one.
pub fn start<W, F>(
    name: &str,
    choice: DriverChoice,
    listeners: Vec<std::net::TcpListener>,
    shutdown: &Arc<Shutdown>,
    work: W,
) -> io::Result<Workers>
where
    W: Fn(WorkerStart) -> F + Send + Sync + 'static,
    F: Future<Output = ()>,
{
    let work = Arc::new(work);
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.into_iter().enumerate() {
        let work = work.clone();
        let ready = ready_tx.clone();
        let stop_on_panic = StopOnPanic {
            index,
            shutdown: shutdown.clone(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("{name}-{index}"))
            .spawn(move || {
                let _stop_on_panic = stop_on_panic;
                let mut runtime = match WorkerRuntime::build(choice) {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready.send((index, Err(e)));
                        return;
                    }
                };
                let driver = runtime.driver();
                runtime.block_on(async move {
                    // The legacy driver needs a non-blocking socket; io_uring
                    // must not get one (it would answer EAGAIN, not wait).
                    let listener = listener
                        .set_nonblocking(driver == IoDriver::Epoll)
                        .and_then(|()| monoio::net::TcpListener::from_std(listener));
                    let listener = match listener {
                        Ok(listener) => listener,
                        Err(e) => {
                            let _ = ready.send((index, Err(e)));
                            return;
                        }
                    };
                    let _ = ready.send((index, Ok(driver)));
                    drop(ready);
                    work(WorkerStart {
                        index,
                        listener,
                        driver,
                    })
                    .await;
                });
            })?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut drivers = vec![IoDriver::Epoll; handles.len()];
    for _ in 0..handles.len() {
        match ready_rx.recv() {
            Ok((index, Ok(driver))) => drivers[index] = driver,
            Ok((index, Err(e))) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("worker {index} could not start: {e}"),
                ));
            }
            Err(_) => return Err(io::Error::other("a worker thread exited during start")),
        }
    }
    Ok(Workers { handles, drivers })
}

/// Workers when `--workers` is not given. Prometheus keeps one keep-alive
/// connection per target and probes are rare, so one worker serves a
/// sidecar's traffic; more add threads and memory, not speed (see
/// docs/benchmarks.md, "Workers"). It never follows the node's size.
pub const DEFAULT_WORKERS: usize = 1;

/// The default worker count on a machine where this process may use
/// `cores` cores: [`DEFAULT_WORKERS`], or fewer when the cores (the CPU
/// affinity and the cgroup's `cpu.max` quota, see [`available_cores`])
/// are fewer.
pub fn default_workers(cores: usize) -> usize {
    DEFAULT_WORKERS.min(cores).max(1)
}

/// Test hook: the core count to assume, so that a test can make the
/// machine look as large as a GPU node.
const ASSUME_CORES: &str = "MATRIXINFER_TEST_ASSUME_CORES";

/// The number of cores this process may use: the CPU affinity mask and
/// the cgroup's CPU quota (`cpu.max`, rounded down, at least 1), as the
/// standard library reads them.
pub fn available_cores() -> usize {
    if let Some(cores) = std::env::var(ASSUME_CORES)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return cores;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Raises the soft limit on open files to the hard one (as Go's runtime
/// does), so that `connections` clients plus downloads fit; warns when
/// even the hard limit is too low for them.
pub fn raise_open_files_limit(connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!(error = %e, "cannot raise the open-files limit");
        }
    }
    let soft = getrlimit(Resource::Nofile).current;
    // Downloads, the engine pool, Redis and the listeners need some too.
    let wanted = connections as u64 + 1024;
    if let Some(soft) = soft.filter(|&soft| soft < wanted) {
        tracing::warn!(
            open_files = soft,
            max_connections = connections,
            "the open-files limit is below --max-connections plus headroom; \
             connections past it fail to be accepted instead of getting a 503"
        );
    }
}

#[cfg(test)]
mod tests;
