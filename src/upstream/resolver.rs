//! The engine's addresses, looked up on a thread of their own and cached:
//! no worker ever calls the blocking `getaddrinfo` (DESIGN §7).
//!
//! A [`Resolver`] for a host name starts one thread, `engine-dns`, that
//! looks the name up at once, then again every TTL ([`RESOLVE_TTL`]) and
//! whenever a worker asks ([`Resolver::refresh`], after a failed connect).
//! Workers only read the cached answer. While the name has never resolved
//! the answer is the resolver's error, which the metrics path turns into a
//! `502` naming the host; a lookup that fails after one succeeded keeps the
//! last addresses (a DNS blip does not take scrapes down) and logs why. An
//! address literal needs no lookup and no thread. The KV bridge reads the
//! same resolver when its publisher is on the engine's host (the usual
//! Pod: both `localhost`), so one thread serves both.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long looked-up addresses are used before the name is looked up
/// again.
pub const RESOLVE_TTL: Duration = Duration::from_secs(30);

/// A blocking lookup: the system's ([`system_lookup`]) or a test's.
pub type Lookup = dyn Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync;

/// The engine's addresses, kept fresh off the workers.
#[derive(Debug)]
pub struct Resolver {
    host: String,
    shared: Arc<Shared>,
    /// Wakes the lookup thread early; `None` for an address literal.
    wake: Option<flume::Sender<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    answer: Mutex<Answer>,
    answered: Condvar,
}

/// The cached answer.
#[derive(Clone, Debug, Default)]
enum Answer {
    /// No lookup has finished yet.
    #[default]
    Pending,
    /// The addresses of the last lookup that found some.
    Found(Arc<[SocketAddr]>),
    /// Every lookup so far failed; the last error.
    Failed(String),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Answer> {
        self.answer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Resolver {
    /// A resolver for `host`:`port` with the system's lookup, every
    /// [`RESOLVE_TTL`].
    pub fn start(host: &str, port: u16) -> io::Result<Resolver> {
        Resolver::start_as("engine-dns", host, port)
    }

    /// As [`Resolver::start`], its thread named `thread`.
    pub fn start_as(thread: &str, host: &str, port: u16) -> io::Result<Resolver> {
        Resolver::spawn(thread, host, port, RESOLVE_TTL, Arc::new(system_lookup))
    }

    /// A resolver for `host`:`port` that calls `lookup` on its own thread
    /// at once, then every `ttl` and on [`Resolver::refresh`]. The thread
    /// ends when the resolver is dropped.
    pub fn start_with(
        host: &str,
        port: u16,
        ttl: Duration,
        lookup: Arc<Lookup>,
    ) -> io::Result<Resolver> {
        Resolver::spawn("engine-dns", host, port, ttl, lookup)
    }

    fn spawn(
        thread: &str,
        host: &str,
        port: u16,
        ttl: Duration,
        lookup: Arc<Lookup>,
    ) -> io::Result<Resolver> {
        let shared = Arc::new(Shared::default());
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            *shared.lock() = Answer::Found(Arc::new([SocketAddr::new(ip, port)]));
            return Ok(Resolver {
                host: host.to_owned(),
                shared,
                wake: None,
            });
        }
        let (wake, woken) = flume::bounded(1);
        let (for_thread, name) = (shared.clone(), host.to_owned());
        std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || {
                loop {
                    let found = lookup(&name, port).and_then(|addrs| {
                        if addrs.is_empty() {
                            Err(io::Error::new(
                                io::ErrorKind::NotFound,
                                format!("{name} has no address"),
                            ))
                        } else {
                            Ok(addrs)
                        }
                    });
                    let mut answer = for_thread.lock();
                    match (found, &*answer) {
                        (Ok(addrs), _) => *answer = Answer::Found(addrs.into()),
                        (Err(e), Answer::Found(_)) => {
                            tracing::warn!(host = %name, error = %e, "the engine host no longer resolves; keeping its last addresses");
                        }
                        (Err(e), _) => *answer = Answer::Failed(e.to_string()),
                    }
                    drop(answer);
                    for_thread.answered.notify_all();
                    match woken.recv_timeout(ttl) {
                        Ok(()) | Err(flume::RecvTimeoutError::Timeout) => {}
                        Err(flume::RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(Resolver {
            host: host.to_owned(),
            shared,
            wake: Some(wake),
        })
    }

    /// The host name looked up.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The cached addresses, or why there are none. Never blocks on a
    /// lookup.
    pub fn addresses(&self) -> Result<Arc<[SocketAddr]>, String> {
        match &*self.shared.lock() {
            Answer::Found(addrs) => Ok(addrs.clone()),
            Answer::Pending => Err("the first lookup has not finished".into()),
            Answer::Failed(reason) => Err(reason.clone()),
        }
    }

    /// Asks the lookup thread to look the name up again now (after a
    /// failed connect); returns at once.
    pub fn refresh(&self) {
        if let Some(wake) = &self.wake {
            let _ = wake.try_send(());
        }
    }

    /// Waits, up to `limit`, for the first lookup to finish: at start, on
    /// the starting thread (never a worker), so the first scrape finds
    /// the addresses.
    pub fn wait_first(&self, limit: Duration) -> Result<Arc<[SocketAddr]>, String> {
        let answer = self.shared.lock();
        let (answer, _) = self
            .shared
            .answered
            .wait_timeout_while(answer, limit, |a| matches!(a, Answer::Pending))
            .unwrap_or_else(|e| e.into_inner());
        drop(answer);
        self.addresses()
    }
}

/// The system's lookup (`getaddrinfo`). Blocking: only for the lookup
/// thread.
pub fn system_lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok(std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?.collect())
}

#[cfg(test)]
mod tests;
