//! The epoch clock: what turns a filter's deadline into a trap. wasmtime
//! checks each store's deadline against its engine's epoch; this clock
//! advances the epoch every [`TICK`] from a thread of its own, but only
//! while a call into a guest may be running. Between calls (between
//! scrapes, most of a sidecar's life) its thread is parked: no wake-ups,
//! no CPU.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances while a call runs; deadlines are counted
/// in these ticks.
pub const TICK: Duration = Duration::from_millis(2);

/// Epoch ticks for a duration (at least one).
pub fn ticks(duration: Duration) -> u64 {
    (duration.as_nanos() / TICK.as_nanos()).max(1) as u64
}

/// The clock of one engine.
#[derive(Debug)]
pub struct EpochClock {
    /// Calls into a guest that may be running now.
    running: Arc<AtomicUsize>,
    ticker: Thread,
}

impl EpochClock {
    /// Starts the clock's thread, parked until a call runs.
    pub fn start(engine: &Engine) -> std::io::Result<Arc<EpochClock>> {
        let running = Arc::new(AtomicUsize::new(0));
        let calls = running.clone();
        let engine = engine.clone();
        let ticker = std::thread::Builder::new()
            .name("filter-epoch".into())
            .spawn(move || {
                loop {
                    // A call that starts after this load unparks us, and an
                    // unpark before the park makes the park return at once.
                    if calls.load(Ordering::SeqCst) == 0 {
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Arc::new(EpochClock {
            running,
            ticker: ticker.thread().clone(),
        }))
    }

    /// Marks a call into a guest as running, until the guard drops: the
    /// clock ticks meanwhile.
    pub fn run(self: &Arc<Self>) -> Running {
        if self.running.fetch_add(1, Ordering::SeqCst) == 0 {
            self.ticker.unpark();
        }
        Running(self.clone())
    }
}

/// A call into a guest, running; see [`EpochClock::run`].
#[derive(Debug)]
pub struct Running(Arc<EpochClock>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest loop under a deadline: the clock must tick for it, and it
    /// must trap, however long the clock was parked before.
    #[test]
    fn a_looping_call_meets_its_deadline_after_the_clock_was_parked() {
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
        assert_eq!(clock.running.load(Ordering::SeqCst), 0);
    }
}
