//! The process-wide stop signal that every worker listens for.
//!
//! SIGTERM arrives on the main thread; workers run their own runtimes. A
//! [`Shutdown`] is the one thing they share: an atomic flag for quick
//! checks and an [`event_listener::Event`] that wakes every task waiting
//! on it, across threads.

use std::sync::atomic::{AtomicBool, Ordering};

use event_listener::{Event, Listener};

/// A one-way, process-wide stop signal.
#[derive(Debug, Default)]
pub struct Shutdown {
    triggered: AtomicBool,
    event: Event,
}

impl Shutdown {
    /// Asks everyone to stop: listeners stop accepting, idle connections
    /// close, in-flight requests finish.
    pub fn trigger(&self) {
        self.triggered.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    /// Whether [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::SeqCst)
    }

    /// Resolves once the signal is triggered.
    pub async fn wait(&self) {
        loop {
            if self.is_triggered() {
                return;
            }
            let listener = self.event.listen();
            // Checked again: a trigger between the first check and
            // `listen` would otherwise be missed.
            if self.is_triggered() {
                return;
            }
            listener.await;
        }
    }
}

impl Shutdown {
    /// Blocks the calling thread until the signal is triggered.
    pub fn wait_blocking(&self) {
        loop {
            if self.is_triggered() {
                return;
            }
            let listener = self.event.listen();
            if self.is_triggered() {
                return;
            }
            listener.wait();
        }
    }

    /// Blocks the calling thread until the signal is triggered or
    /// `timeout` has passed; says whether it was triggered.
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.is_triggered() {
                return true;
            }
            let listener = self.event.listen();
            if self.is_triggered() {
                return true;
            }
            if listener.wait_deadline(deadline).is_none() {
                return self.is_triggered();
            }
        }
    }
}

/// Triggers `shutdown` on SIGTERM or SIGINT, from a small thread. A second
/// signal ends the process at once, for when draining takes too long for
/// whoever is waiting.
pub fn trigger_on_signals(shutdown: std::sync::Arc<Shutdown>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if shutdown.is_triggered() {
                    tracing::warn!(signal, "second signal: exiting now");
                    std::process::exit(1);
                }
                tracing::info!(
                    signal,
                    "shutting down: no new connections, finishing in-flight requests"
                );
                shutdown.trigger();
            }
        })?;
    Ok(())
}
