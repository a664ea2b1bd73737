//! Where start-up time goes: marks from `main`'s first line to the port
//! answering, logged once with the "listening" line. The time from exec
//! to `main` (the loader, the kernel) is outside the process's view; the
//! harness measures exec to the first `/health` 200 and the two together
//! tell where the rest went.

use std::fmt::Write;
use std::sync::Mutex;
use std::time::Instant;

static MARKS: Mutex<Vec<(&'static str, Instant)>> = Mutex::new(Vec::new());

/// Ends a phase named `phase` now (the first mark starts the clock).
pub fn mark(phase: &'static str) {
    MARKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((phase, Instant::now()));
}

/// Each phase's milliseconds since the mark before it, then the total:
/// `arguments=0.31 logging=0.05 … total=1.92`; empty before two marks.
pub fn summary() -> String {
    let marks = MARKS.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = String::new();
    let Some(&(_, first)) = marks.first() else {
        return out;
    };
    let ms = |from: Instant, to: Instant| to.duration_since(from).as_secs_f64() * 1e3;
    for pair in marks.windows(2) {
        let _ = write!(out, "{}={:.2} ", pair[1].0, ms(pair[0].1, pair[1].1));
    }
    if let Some(&(_, last)) = marks.last().filter(|_| marks.len() > 1) {
        let _ = write!(out, "total={:.2}", ms(first, last));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn phases_are_the_gaps_between_marks() {
        super::mark("main");
        super::mark("one");
        super::mark("two");
        let summary = super::summary();
        let fields: Vec<&str> = summary.split(' ').collect();
        let names: Vec<&str> = fields
            .iter()
            .map(|f| f.split('=').next().unwrap())
            .collect();
        assert_eq!(names, ["one", "two", "total"], "{summary}");
        let values: Vec<f64> = fields
            .iter()
            .map(|f| f.split('=').nth(1).unwrap().parse().unwrap())
            .collect();
        assert!(
            (values[0] + values[1] - values[2]).abs() < 0.02,
            "{summary}"
        );
    }
}
