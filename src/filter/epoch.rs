//! The epoch clock: what turns a filter's deadline into a trap. wasmtime
//! checks each store's deadline against its engine's epoch; this clock
//! advances the epoch every [`TICK`], but only while a call into a guest
//! may be running. Between calls (between scrapes, most of a sidecar's
//! life) nothing ticks: no wake-ups, no CPU.
//!
//! The ticks come from a timer (a `timerfd`) that a thread of its own
//! reads. The call that finds the timer stopped starts it, a system call
//! that wakes no one (waking a parked ticker thread cost each scrape with
//! a filter about 5 µs in the `filter` benchmark, an interrupt to the
//! other core); calls while it runs only count themselves. A scrape holds
//! one [`Running`] over all its calls, so that they start the timer once.
//!
//! Who stops it depends on how far apart the calls come. When the last
//! call ends more than [`SPARSE`] after the one before it ended (a scrape
//! every few seconds: the common case), it stops the timer itself, a
//! second system call, so that the thread never wakes: that wake, a tick
//! that finds nothing running, cost 45 µs of CPU per scrape with a filter
//! at 10 scrapes/s (docs/benchmarks.md). When calls come closer together
//! the timer keeps running, and the thread stops it at the first tick that
//! finds no call running, one wake for many calls.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};
use wasmtime::Engine;

/// How often the epoch advances while a call runs; deadlines are counted
/// in these ticks.
pub const TICK: Duration = Duration::from_millis(2);

/// Calls that end further apart than this stop the timer themselves.
pub const SPARSE: Duration = Duration::from_millis(4);

/// Epoch ticks for a duration (at least one).
pub fn ticks(duration: Duration) -> u64 {
    (duration.as_nanos() / TICK.as_nanos()).max(1) as u64
}

/// The clock of one engine.
#[derive(Debug)]
pub struct EpochClock {
    /// Calls into a guest that may be running now.
    running: AtomicUsize,
    /// Whether the timer runs. Cleared only under `switch`, before a last
    /// look at `running` ([`EpochClock::stop_unless_running`]): a call
    /// counted after that look sees it cleared and starts the timer again.
    armed: AtomicBool,
    /// Held while the timer is started or stopped.
    switch: Mutex<()>,
    timer: OwnedFd,
    /// Epoch increments so far.
    ticks: AtomicU64,
    /// When the clock started, the origin of `last_idle`.
    born: Instant,
    /// When the calls running last dropped to none, in nanoseconds since
    /// `born`.
    last_idle: AtomicU64,
}

impl EpochClock {
    /// Starts the clock's thread, idle until a call runs.
    pub fn start(engine: &Engine) -> std::io::Result<Arc<EpochClock>> {
        let timer = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC)?;
        let clock = Arc::new(EpochClock {
            running: AtomicUsize::new(0),
            armed: AtomicBool::new(false),
            switch: Mutex::new(()),
            timer,
            ticks: AtomicU64::new(0),
            born: Instant::now(),
            last_idle: AtomicU64::new(0),
        });
        let ticker = clock.clone();
        let engine = engine.clone();
        std::thread::Builder::new()
            .name("filter-epoch".into())
            .spawn(move || ticker.tick(&engine))?;
        Ok(clock)
    }

    /// Marks a call into a guest (or a scrape's calls) as running, until
    /// the guard drops: the clock ticks meanwhile.
    pub fn run(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, SeqCst);
        if !self.armed.load(SeqCst) {
            let _switch = self.switch.lock().unwrap_or_else(|e| e.into_inner());
            if !self.armed.load(SeqCst) {
                self.set_timer(TICK);
                self.armed.store(true, SeqCst);
            }
        }
        Running(self.clone())
    }

    /// The last running call ended: stop the timer now if the one before
    /// ended long enough ago (see the module doc).
    fn went_idle(&self) {
        let now = u64::try_from(self.born.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let before = self.last_idle.swap(now, SeqCst);
        if now.saturating_sub(before) > SPARSE.as_nanos() as u64 {
            self.stop_unless_running();
        }
    }

    /// The ticker thread: one epoch per tick, while calls run.
    fn tick(&self, engine: &Engine) {
        let mut expirations = [0u8; 8];
        loop {
            match rustix::io::read(&self.timer, &mut expirations) {
                Ok(8) => {}
                Err(rustix::io::Errno::INTR) => continue,
                other => {
                    // Never seen; deadlines must hold regardless.
                    tracing::error!(result = ?other, "the filter epoch timer failed; ticking by sleeping");
                    loop {
                        std::thread::sleep(TICK);
                        self.advance(engine, 1);
                    }
                }
            }
            // A late read counts every tick it missed.
            self.advance(engine, u64::from_ne_bytes(expirations).min(1 << 20));
            if self.running.load(SeqCst) == 0 {
                self.stop_unless_running();
            }
        }
    }

    /// Stops the timer unless a call runs. The flag is cleared before the
    /// last look at `running`, so that a call counted after that look
    /// finds it cleared and starts the timer again.
    fn stop_unless_running(&self) {
        let _switch = self.switch.lock().unwrap_or_else(|e| e.into_inner());
        if !self.armed.load(SeqCst) {
            return;
        }
        self.armed.store(false, SeqCst);
        if self.running.load(SeqCst) == 0 {
            self.set_timer(Duration::ZERO);
        } else {
            self.armed.store(true, SeqCst);
        }
    }

    fn advance(&self, engine: &Engine, ticks: u64) {
        for _ in 0..ticks {
            engine.increment_epoch();
        }
        self.ticks.fetch_add(ticks, SeqCst);
    }

    /// Starts the timer ticking every `every`, or stops it (zero).
    fn set_timer(&self, every: Duration) {
        let every = Timespec {
            tv_sec: every.as_secs() as _,
            tv_nsec: every.subsec_nanos() as _,
        };
        let spec = Itimerspec {
            it_interval: every,
            it_value: every,
        };
        if let Err(e) = timerfd_settime(&self.timer, TimerfdTimerFlags::empty(), &spec) {
            // Only an invalid argument fails; keep the state consistent.
            tracing::error!(error = %e, "cannot set the filter epoch timer");
        }
    }
}

/// A call into a guest, running; see [`EpochClock::run`].
#[derive(Debug)]
pub struct Running(Arc<EpochClock>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, SeqCst) == 1 {
            self.0.went_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest loop under a deadline: the clock must tick for it, and it
    /// must trap, however long the clock was stopped before.
    #[test]
    fn a_looping_call_meets_its_deadline_after_the_clock_stopped() {
        let engine = super::super::module::engine().unwrap();
        let clock = EpochClock::start(&engine).unwrap();
        let wasm = wat::parse_str(r#"(module (func (export "spin") (loop (br 0))))"#).unwrap();
        let module = wasmtime::Module::new(&engine, wasm).unwrap();
        for _ in 0..3 {
            let mut store = wasmtime::Store::new(&engine, ());
            store.epoch_deadline_trap();
            store.set_epoch_deadline(ticks(Duration::from_millis(10)));
            let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
            let spin = instance
                .get_typed_func::<(), ()>(&mut store, "spin")
                .unwrap();
            let _running = clock.run();
            let trap = spin.call(&mut store, ()).unwrap_err();
            assert_eq!(
                trap.downcast_ref::<wasmtime::Trap>(),
                Some(&wasmtime::Trap::Interrupt)
            );
        }
        assert_eq!(clock.running.load(SeqCst), 0);
    }

    /// Waits for `done`, failing (not hanging) if the clock never gets
    /// there: a bound on liveness, far above any tick, not a timing.
    fn wait_for(what: &str, done: impl Fn() -> bool) {
        for _ in 0..5_000 {
            if done() {
                return;
            }
            std::thread::sleep(TICK);
        }
        panic!("waited 10 s for {what}");
    }

    /// The timer runs while calls do and, when calls come close together,
    /// stops at the first tick after the last one ended: an idle clock
    /// does not advance.
    #[test]
    fn the_clock_stops_when_no_call_runs() {
        let engine = super::super::module::engine().unwrap();
        let clock = EpochClock::start(&engine).unwrap();
        assert!(!clock.armed.load(SeqCst));
        for _ in 0..3 {
            let call = clock.run();
            let nested = clock.run();
            assert!(clock.armed.load(SeqCst));
            let before = clock.ticks.load(SeqCst);
            wait_for("two ticks", || clock.ticks.load(SeqCst) >= before + 2);
            drop(nested);
            assert!(clock.armed.load(SeqCst), "stopped with a call running");
            // As if calls had gone idle a moment ago: this one ending
            // leaves the stop to the ticker.
            clock.last_idle.store(u64::MAX, SeqCst);
            drop(call);
            assert!(clock.armed.load(SeqCst), "close calls must not stop it");
            wait_for("the timer to stop", || !clock.armed.load(SeqCst));
            let stopped = clock.ticks.load(SeqCst);
            std::thread::sleep(TICK * 10);
            assert_eq!(clock.ticks.load(SeqCst), stopped, "ticked while stopped");
        }
    }

    /// A call that ends long after the last one did stops the timer
    /// itself, so the ticker thread is not woken to do it; a call nested
    /// in it stops nothing.
    #[test]
    fn sparse_calls_stop_the_timer_as_they_end() {
        let engine = super::super::module::engine().unwrap();
        let clock = EpochClock::start(&engine).unwrap();
        for _ in 0..3 {
            std::thread::sleep(SPARSE * 2);
            let scrape = clock.run();
            assert!(clock.armed.load(SeqCst));
            drop(clock.run());
            assert!(clock.armed.load(SeqCst), "a nested call stopped it");
            drop(scrape);
            assert!(!clock.armed.load(SeqCst), "a sparse call left it running");
        }
    }
}
