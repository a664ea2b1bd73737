//! Work that must not run on a worker thread (a download, a LoRA call, a
//! filter compile): each job on a named thread, its answer handed back
//! over a one-slot channel the worker awaits, and a cap on how many run at
//! once.
//!
//! Beyond the cap a job may wait in a queue of bounded length (see
//! [`Offload::with_queue`]); a queued job owns no thread, only its closure.
//! When a running job ends, its thread takes the oldest queued job and runs
//! it, so the threads of one [`Offload`] never exceed its cap. Beyond the
//! queue a job is refused: the caller answers `429 Too Many Requests` with
//! `Retry-After` (a reload, capped at one, answers `409`), so a burst of
//! requests cannot create threads without bound.

use std::collections::VecDeque;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard};

/// A job's work; what it returns sends the answer.
type Task = Box<dyn FnOnce() -> Deliver + Send>;
/// Sends a job's answer, once its place is released or handed on.
type Deliver = Box<dyn FnOnce() + Send>;

/// Threads for one kind of work, at most `cap` at once, and up to
/// `queue_cap` jobs waiting for one.
#[derive(Debug)]
pub struct Offload {
    kind: &'static str,
    queue_cap: usize,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    cap: usize,
    state: Mutex<State>,
}

/// INVARIANT: `running <= cap`; `queue.len() <= queued`; the queue is
/// non-empty only while `running == cap` (a place that frees takes the
/// oldest queued job first).
#[derive(Default)]
struct State {
    /// Places reserved or running (each running place is one thread).
    running: usize,
    /// Places in the queue, reserved or holding a job.
    queued: usize,
    queue: VecDeque<Task>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("running", &self.running)
            .field("queued", &self.queued)
            .finish_non_exhaustive()
    }
}

/// The cap and the queue are full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{running} {kind} jobs are running and {queued} are queued, the most this process holds at once; try again when one ends"
)]
pub struct Busy {
    /// What kind of work.
    pub kind: &'static str,
    /// How many run (the cap).
    pub running: usize,
    /// How many wait (the queue's length).
    pub queued: usize,
}

/// Where a reserved job goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A thread starts it at once.
    Running,
    /// It waits for a running job to end.
    Queued,
}

/// A reserved place, running or queued, released when dropped unused, or
/// when the job it carries ends (or unwinds).
#[derive(Debug)]
pub struct Permit {
    shared: Arc<Shared>,
    /// `None` once the place is handed to a job.
    place: Option<Place>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A running place ends: it takes the oldest queued job, if any.
    fn next_or_release(&self) -> Option<Task> {
        let mut state = self.lock();
        match state.queue.pop_front() {
            Some(task) => {
                state.queued -= 1;
                Some(task)
            }
            None => {
                state.running -= 1;
                None
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        match self.place.take() {
            None => {}
            Some(Place::Queued) => self.shared.lock().queued -= 1,
            Some(Place::Running) => {
                if let Some(task) = self.shared.next_or_release() {
                    start_thread(&self.shared, "queued-job".into(), task);
                }
            }
        }
    }
}

impl Offload {
    /// Threads for `kind` of work, at most `cap` (at least one) at once,
    /// and no queue.
    pub fn new(kind: &'static str, cap: usize) -> Offload {
        Offload {
            kind,
            queue_cap: 0,
            shared: Arc::new(Shared {
                cap: cap.max(1),
                state: Mutex::default(),
            }),
        }
    }

    /// Lets up to `queue_cap` jobs wait for a place.
    pub fn with_queue(mut self, queue_cap: usize) -> Offload {
        self.queue_cap = queue_cap;
        self
    }

    /// Jobs running now (or about to).
    pub fn running(&self) -> usize {
        self.shared.lock().running
    }

    /// Jobs waiting now.
    pub fn queued(&self) -> usize {
        self.shared.lock().queued
    }

    /// Reserves a place, running if one is free, else queued; or says the
    /// cap and the queue are full. Reserve before registering anything
    /// the caller would have to undo.
    pub fn reserve(&self) -> Result<Permit, Busy> {
        let mut state = self.shared.lock();
        let place = if state.running < self.shared.cap {
            state.running += 1;
            Place::Running
        } else if state.queued < self.queue_cap {
            state.queued += 1;
            Place::Queued
        } else {
            return Err(Busy {
                kind: self.kind,
                running: state.running,
                queued: state.queued,
            });
        };
        Ok(Permit {
            shared: self.shared.clone(),
            place: Some(place),
        })
    }
}

impl Permit {
    /// Where the job goes.
    pub fn place(&self) -> Place {
        self.place.unwrap_or(Place::Running)
    }

    /// Runs `work` on a thread named `name`, at once or when a running
    /// job ends (on that job's thread); the receiver gets its result. The
    /// place is released (or handed to the next queued job) when `work`
    /// returns, before the answer is sent, or when it panics (the
    /// receiver then sees a disconnected channel).
    pub fn spawn<T: Send + 'static>(
        mut self,
        name: String,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<flume::Receiver<T>> {
        let (tx, rx) = flume::bounded(1);
        let task: Task = Box::new(move || {
            let result = work();
            Box::new(move || {
                let _ = tx.send(result);
            })
        });
        let shared = self.shared.clone();
        if self.place.take() == Some(Place::Queued) {
            let mut state = shared.lock();
            if state.running >= shared.cap {
                state.queue.push_back(task);
                return Ok(rx);
            }
            // Every running job ended since the reservation.
            state.queued -= 1;
            state.running += 1;
        }
        let spawned = std::thread::Builder::new().name(name).spawn({
            let shared = shared.clone();
            move || run(&shared, task)
        });
        if let Err(e) = spawned {
            // The task (and its sender) is gone; the place goes to the
            // queue's oldest job, or is freed.
            if let Some(next) = shared.next_or_release() {
                start_thread(&shared, "queued-job".into(), next);
            }
            return Err(e);
        }
        Ok(rx)
    }
}

/// Starts a thread for a task whose place is already counted; if no thread
/// can be started, the task is dropped (its caller sees a disconnected
/// channel) and the place moves on.
fn start_thread(shared: &Arc<Shared>, name: String, task: Task) {
    let mut task = Some(task);
    while let Some(current) = task.take() {
        let for_thread = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || run(&for_thread, current));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a thread for a queued job; it is dropped");
            task = shared.next_or_release();
        }
    }
}

/// A job thread: its task, then the queued ones, oldest first, until the
/// queue is empty.
fn run(shared: &Shared, first: Task) {
    let mut next = Some(first);
    while let Some(task) = next.take() {
        // A panicking job loses its answer, not the thread or the place.
        let deliver = catch_unwind(AssertUnwindSafe(task)).ok();
        next = shared.next_or_release();
        if let Some(deliver) = deliver {
            deliver();
        }
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
                running: 2,
                queued: 0,
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

    #[test]
    fn queued_jobs_wait_for_a_place_and_run_in_order_on_its_thread() {
        let offload = Offload::new("test", 1).with_queue(2);
        let (go_tx, go_rx) = flume::unbounded::<()>();
        let first = offload.reserve().unwrap();
        assert_eq!(first.place(), Place::Running);
        let first = first
            .spawn("first".into(), move || {
                go_rx.recv().unwrap();
                std::thread::current().name().map(str::to_owned)
            })
            .unwrap();
        let (order_tx, order_rx) = flume::unbounded();
        let queued: Vec<_> = (0..2)
            .map(|i| {
                let permit = offload.reserve().unwrap();
                assert_eq!(permit.place(), Place::Queued);
                let order = order_tx.clone();
                permit
                    .spawn(format!("q{i}"), move || {
                        order.send(i).unwrap();
                        std::thread::current().name().map(str::to_owned)
                    })
                    .unwrap()
            })
            .collect();
        assert_eq!((offload.running(), offload.queued()), (1, 2));
        assert_eq!(
            offload.reserve().unwrap_err(),
            Busy {
                kind: "test",
                running: 1,
                queued: 2,
            }
        );
        // Nothing queued has started: no thread of its own.
        assert!(order_rx.is_empty());
        go_tx.send(()).unwrap();
        assert_eq!(first.recv().unwrap().as_deref(), Some("first"));
        for done in queued {
            // Run by the thread that ran the first job.
            assert_eq!(done.recv().unwrap().as_deref(), Some("first"));
        }
        assert_eq!(order_rx.drain().collect::<Vec<_>>(), [0, 1]);
        assert_eq!((offload.running(), offload.queued()), (0, 0));
    }

    #[test]
    fn unused_permits_free_or_hand_on_their_place() {
        let offload = Offload::new("test", 1).with_queue(1);
        let running = offload.reserve().unwrap();
        let queued = offload.reserve().unwrap();
        assert_eq!(queued.place(), Place::Queued);
        drop(queued);
        assert_eq!((offload.running(), offload.queued()), (1, 0));
        let queued = offload.reserve().unwrap();
        let done = queued.spawn("waits".into(), || 7).unwrap();
        assert!(done.is_empty());
        // The running place, dropped unused, starts the queued job.
        drop(running);
        assert_eq!(done.recv().unwrap(), 7);
        assert_eq!((offload.running(), offload.queued()), (0, 0));
    }

    #[test]
    fn a_queued_job_runs_when_the_place_freed_before_it_was_handed_over() {
        let offload = Offload::new("test", 1).with_queue(1);
        let running = offload.reserve().unwrap();
        let queued = offload.reserve().unwrap();
        drop(running);
        assert_eq!(
            queued.spawn("late".into(), || 3).unwrap().recv().unwrap(),
            3
        );
        assert_eq!((offload.running(), offload.queued()), (0, 0));
    }
}
