//! How each filter is faring: why calls fail, what the runtime does about
//! it, and the switch that takes a failing filter out of the path for a
//! cool-down and puts it back on trial afterwards.
//!
//! This state is per process: every worker's instances of a filter count
//! into one streak and share one switch, so a filter that fails on one
//! worker is switched off on all of them. The instances themselves (and
//! whatever a filter keeps in its memory) are per worker.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Why a filter call failed, as its metric label says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The guest trapped (a panic, an unreachable, a bad access).
    Trap,
    /// It ran past its deadline.
    Deadline,
    /// It tried to grow its memory past the cap.
    Memory,
    /// Its output is larger than allowed.
    OutputTooLarge,
    /// It broke the ABI (a missing export, a bad pointer).
    Abi,
    /// Its output is not exposition text Prometheus accepts.
    InvalidOutput,
    /// Its output has a family it did not select that exists elsewhere.
    ForeignFamily,
}

impl Reason {
    /// Every reason, in metric order.
    pub const ALL: [Reason; 7] = [
        Reason::Trap,
        Reason::Deadline,
        Reason::Memory,
        Reason::OutputTooLarge,
        Reason::Abi,
        Reason::InvalidOutput,
        Reason::ForeignFamily,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Trap => "trap",
            Reason::Deadline => "deadline",
            Reason::Memory => "memory",
            Reason::OutputTooLarge => "output_too_large",
            Reason::Abi => "abi",
            Reason::InvalidOutput => "invalid_output",
            Reason::ForeignFamily => "foreign_family",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a failed call does to the scrape (`--filter-on-error`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    /// The filter's families are served as they came to it.
    #[default]
    Unfiltered,
    /// The filter's families are left out of that scrape.
    Drop,
    /// The scrape answers 502 naming the filter: for filters that redact
    /// what must never leak.
    Fail,
}

impl OnError {
    /// As the flag spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Unfiltered => "unfiltered",
            OnError::Drop => "drop",
            OnError::Fail => "fail",
        }
    }
}

/// When a failing filter is switched off, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Consecutive failures that switch a filter off.
    pub max_failures: u32,
    /// The first cool-down; each switch-off after a failed trial doubles it.
    pub cooldown: Duration,
    /// The longest cool-down.
    pub max_cooldown: Duration,
}

impl Default for Recovery {
    fn default() -> Self {
        Recovery {
            max_failures: 5,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(600),
        }
    }
}

/// Nanoseconds since the first call, on the monotonic clock.
fn now_nanos() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// One filter's streak, switch and counters, shared by every worker.
#[derive(Debug, Default)]
pub struct Health {
    failures: AtomicU32,
    off: AtomicBool,
    /// While off: when (see [`now_nanos`]) it goes back on trial.
    retry_at: AtomicU64,
    /// The next cool-down, in nanoseconds; 0 before the first.
    cooldown: AtomicU64,
}

/// What a failure changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Streak {
    /// The first failure after a success: worth a log line.
    Started,
    /// Another failure of the same streak.
    Continued,
    /// This failure switched the filter off, for this long.
    SwitchedOff(Duration),
}

impl Health {
    /// Whether the filter runs (not switched off).
    pub fn is_on(&self) -> bool {
        !self.off.load(Relaxed)
    }

    /// A call succeeded: the streak ends, and a trial that passed earns
    /// the next switch-off the first cool-down again.
    pub fn success(&self) {
        if self.failures.swap(0, Relaxed) != 0 {
            self.cooldown.store(0, Relaxed);
        }
    }

    /// A call failed.
    pub fn failure(&self, recovery: &Recovery) -> Streak {
        self.failure_at(recovery, now_nanos())
    }

    /// [`Health::failure`] at `now` (see [`now_nanos`]): tests set the clock.
    fn failure_at(&self, recovery: &Recovery, now: u64) -> Streak {
        let failures = self.failures.fetch_add(1, Relaxed) + 1;
        if failures < recovery.max_failures.max(1) {
            return if failures == 1 {
                Streak::Started
            } else {
                Streak::Continued
            };
        }
        if self.off.swap(true, Relaxed) {
            return Streak::Continued;
        }
        let first = recovery.cooldown.as_nanos() as u64;
        let cooldown = match self.cooldown.load(Relaxed) {
            0 => first,
            last => last
                .saturating_mul(2)
                .min(recovery.max_cooldown.as_nanos() as u64)
                .max(first),
        };
        self.cooldown.store(cooldown, Relaxed);
        self.retry_at.store(now + cooldown, Relaxed);
        Streak::SwitchedOff(Duration::from_nanos(cooldown))
    }

    /// Puts a switched-off filter back on trial once its cool-down is
    /// over: one more failure switches it off again, for twice as long.
    /// True for the one caller that did it.
    pub fn retry_if_due(&self, recovery: &Recovery) -> bool {
        self.retry_if_due_at(recovery, now_nanos())
    }

    /// [`Health::retry_if_due`] at `now`.
    fn retry_if_due_at(&self, recovery: &Recovery, now: u64) -> bool {
        if self.is_on() || now < self.retry_at.load(Relaxed) {
            return false;
        }
        self.failures
            .store(recovery.max_failures.max(1) - 1, Relaxed);
        self.off
            .compare_exchange(true, false, Relaxed, Relaxed)
            .is_ok()
    }

    /// Seconds until it goes back on trial; 0 while on.
    pub fn seconds_to_retry(&self) -> f64 {
        if self.is_on() {
            return 0.0;
        }
        let left = self.retry_at.load(Relaxed).saturating_sub(now_nanos());
        left as f64 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switched_off_then_on_trial_with_a_doubling_cooldown() {
        let recovery = Recovery {
            max_failures: 3,
            cooldown: Duration::from_millis(100),
            max_cooldown: Duration::from_millis(250),
        };
        let ms = |n: u64| n * 1_000_000;
        let health = Health::default();
        assert_eq!(health.failure_at(&recovery, 0), Streak::Started);
        assert_eq!(health.failure_at(&recovery, 0), Streak::Continued);
        assert_eq!(
            health.failure_at(&recovery, ms(1)),
            Streak::SwitchedOff(Duration::from_millis(100))
        );
        assert!(!health.is_on());
        assert!(
            !health.retry_if_due_at(&recovery, ms(100)),
            "still cooling down"
        );
        assert!(health.retry_if_due_at(&recovery, ms(101)));
        assert!(health.is_on());
        assert!(
            !health.retry_if_due_at(&recovery, ms(102)),
            "already on trial"
        );
        // On trial: one failure is enough, and the cool-down doubles.
        assert_eq!(
            health.failure_at(&recovery, ms(110)),
            Streak::SwitchedOff(Duration::from_millis(200))
        );
        assert!(!health.retry_if_due_at(&recovery, ms(309)));
        assert!(health.retry_if_due_at(&recovery, ms(310)));
        assert_eq!(
            health.failure_at(&recovery, ms(400)),
            Streak::SwitchedOff(Duration::from_millis(250)),
            "capped"
        );
        assert!(!health.retry_if_due_at(&recovery, ms(649)));
        assert!(health.retry_if_due_at(&recovery, ms(650)));
        // A trial that passes ends the streak and resets the cool-down.
        health.success();
        assert_eq!(health.failure_at(&recovery, ms(700)), Streak::Started);
    }

    #[test]
    fn the_clock_is_the_monotonic_one() {
        let recovery = Recovery {
            max_failures: 1,
            cooldown: Duration::from_millis(1),
            max_cooldown: Duration::from_millis(1),
        };
        let health = Health::default();
        health.failure(&recovery);
        let switched_off = Instant::now();
        while !health.retry_if_due(&recovery) {
            assert!(switched_off.elapsed() < Duration::from_secs(60));
            std::thread::yield_now();
        }
        assert!(switched_off.elapsed() > Duration::ZERO);
    }
}
