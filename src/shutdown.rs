//! The process-wide stop signal that every worker listens for.
//!
//! SIGTERM arrives on the main thread; workers run their own runtimes. A
//! [`Shutdown`] is the one thing they share: an atomic flag for quick
//! checks and an [`event_listener::Event`] that wakes every task waiting
//! on it, across threads.

use std::sync::atomic::{AtomicBool, Ordering};

use event_listener::{Event, Listener};

/// A one-way, process-wide stop signal.
#[derive(Default)]
pub struct Shutdown {
    triggered: AtomicBool,
    event: Event,
    /// Set while the process starts: nothing to drain yet, and loading
    /// (filters, above all) is no reason to ignore a signal.
    starting: AtomicBool,
    /// What SIGHUP does (reload the filters), if anything.
    on_hangup: std::sync::Mutex<Option<Hook>>,
    /// What runs once when the signal is triggered, on the triggering
    /// thread (a hook instead of a thread of its own waiting for it).
    on_trigger: std::sync::Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

type Hook = std::sync::Arc<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

/// Marks the process as starting until dropped: a signal meanwhile ends it
/// at once.
#[derive(Debug)]
pub struct Starting<'s>(&'s Shutdown);

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.0.starting.store(false, Ordering::SeqCst);
    }
}

impl Shutdown {
    /// Asks everyone to stop: listeners stop accepting, idle connections
    /// close, in-flight requests finish.
    pub fn trigger(&self) {
        self.triggered.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
        let hooks = std::mem::take(&mut *self.on_trigger.lock().unwrap_or_else(|p| p.into_inner()));
        for hook in hooks {
            hook();
        }
    }

    /// Runs `hook` once when the signal is triggered (at once if it has
    /// been), on the thread that triggers it: it must not block.
    pub fn on_trigger(&self, hook: impl FnOnce() + Send + 'static) {
        let mut hooks = self.on_trigger.lock().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock `trigger` takes: a hook is either run by
        // `trigger` or here, never both, never neither.
        if self.is_triggered() {
            drop(hooks);
            hook();
        } else {
            hooks.push(Box::new(hook));
        }
    }

    /// The process is starting until the guard drops: SIGTERM or SIGINT
    /// meanwhile exits at once.
    pub fn starting(&self) -> Starting<'_> {
        self.starting.store(true, Ordering::SeqCst);
        Starting(self)
    }

    /// Runs `hook` on every SIGHUP, on the signal thread: it must return
    /// at once (start its work elsewhere).
    pub fn on_hangup(&self, hook: impl Fn() + Send + Sync + 'static) {
        *self
            .on_hangup
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(std::sync::Arc::new(hook));
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
/// whoever is waiting; so does the first while the process is starting.
/// SIGHUP runs the hook set with [`Shutdown::on_hangup`], or is one more
/// stop signal when there is none.
pub fn trigger_on_signals(shutdown: std::sync::Arc<Shutdown>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let hook = (signal == SIGHUP)
                    .then(|| {
                        shutdown
                            .on_hangup
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .clone()
                    })
                    .flatten();
                // Without a hook, SIGHUP ends the process as it always did.
                // The hook must not block: SIGTERM is handled here too.
                if let Some(hook) = hook {
                    hook();
                    continue;
                }
                if shutdown.starting.load(Ordering::SeqCst) {
                    tracing::warn!(signal, "signal while starting: exiting now");
                    std::process::exit(128 + signal);
                }
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
