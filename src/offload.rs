//! Work that must not run on a worker thread (a download, a LoRA call, a
//! filter compile): each job on a named thread of its own, its answer
//! handed back over a one-slot channel the worker awaits, and a cap on how
//! many run at once. Beyond the cap a job is refused, not queued: the
//! caller answers `429 Too Many Requests` with `Retry-After` (a reload,
//! capped at one, answers `409`), so a burst of requests cannot create
//! threads without bound.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads for one kind of work, at most `cap` at once.
#[derive(Debug)]
pub struct Offload {
    kind: &'static str,
    cap: usize,
    running: Arc<AtomicUsize>,
}

/// The cap is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{running} {kind} jobs are running, the most this process runs at once; try again when one ends"
)]
pub struct Busy {
    /// What kind of work.
    pub kind: &'static str,
    /// How many run (the cap).
    pub running: usize,
}

/// A reserved place under the cap, released when dropped: by the job's
/// thread when it ends (or unwinds), or here if the job never starts.
#[derive(Debug)]
pub struct Permit {
    running: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Offload {
    /// Threads for `kind` of work, at most `cap` (at least one) at once.
    pub fn new(kind: &'static str, cap: usize) -> Offload {
        Offload {
            kind,
            cap: cap.max(1),
            running: Arc::default(),
        }
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Reserves a place, or says the cap is reached. Reserve before
    /// registering anything the caller would have to undo.
    pub fn reserve(&self) -> Result<Permit, Busy> {
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.cap).then_some(n + 1)
            })
            .map(|_| Permit {
                running: self.running.clone(),
            })
            .map_err(|running| Busy {
                kind: self.kind,
                running,
            })
    }
}

impl Permit {
    /// Runs `work` on a thread named `name`; the receiver gets its result.
    /// The place is released when `work` returns (before the answer is
    /// sent) or panics (the receiver then sees a disconnected channel).
    pub fn spawn<T: Send + 'static>(
        self,
        name: String,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<flume::Receiver<T>> {
        let (tx, rx) = flume::bounded(1);
        std::thread::Builder::new().name(name).spawn(move || {
            let permit = self;
            let result = work();
            // Free the place before answering: a caller that sends its
            // next job on the answer must find it free.
            drop(permit);
            let _ = tx.send(result);
        })?;
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_releases() {
        let offload = Offload::new("test", 2);
        let (go_tx, go_rx) = flume::unbounded::<()>();
        let started: Vec<_> = (0..2)
            .map(|i| {
                let go = go_rx.clone();
                offload
                    .reserve()
                    .unwrap()
                    .spawn(format!("t{i}"), move || go.recv().is_ok())
                    .unwrap()
            })
            .collect();
        assert_eq!(offload.running(), 2);
        assert_eq!(
            offload.reserve().unwrap_err(),
            Busy {
                kind: "test",
                running: 2
            }
        );
        drop(go_tx);
        for done in started {
            assert!(!done.recv().unwrap());
        }
        // Each place is free before its answer is sent.
        assert_eq!(offload.running(), 0);
        let permit = offload.reserve().unwrap();
        drop(permit);
        assert_eq!(offload.running(), 0);
    }

    #[test]
    fn a_panicking_job_releases_its_place() {
        let offload = Offload::new("test", 1);
        let done = offload
            .reserve()
            .unwrap()
            .spawn("panics".into(), || -> u8 { panic!("job failed") })
            .unwrap();
        assert!(done.recv().is_err());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while offload.reserve().is_err() {
            assert!(std::time::Instant::now() < deadline, "place never released");
            std::thread::yield_now();
        }
    }
}
