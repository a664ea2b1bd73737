//! Values clap cannot parse by itself: durations in seconds, sizes with
//! units, paths with their leading `/`.

use std::time::Duration;

pub(super) fn normalize_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

/// Parses a positive number of seconds (fractions allowed).
pub fn parse_seconds(value: &str) -> Result<Duration, String> {
    let seconds: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds.is_finite() && seconds <= 86_400.0 * 365.0) {
        return Err(format!("{value:?} must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a number of seconds that may be zero.
pub fn parse_seconds_or_zero(value: &str) -> Result<Duration, String> {
    if value.trim().parse::<f64>() == Ok(0.0) {
        return Ok(Duration::ZERO);
    }
    parse_seconds(value)
}

/// Parses a size: `1048576`, `114k`, `1m` (binary multiples).
pub fn parse_size(value: &str) -> Result<usize, String> {
    let value = value.trim();
    let lower = value.to_ascii_lowercase();
    let (digits, multiplier) = match lower.strip_suffix(['k', 'm']) {
        Some(digits) if lower.ends_with('k') => (digits, 1024),
        Some(digits) => (digits, 1024 * 1024),
        None => (lower.as_str(), 1),
    };
    let n: usize = digits
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a size"))?;
    n.checked_mul(multiplier)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{value:?} is out of range"))
}
