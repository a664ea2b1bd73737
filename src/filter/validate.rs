//! Checking what a filter returned before it is served.
//!
//! A Prometheus that cannot parse a scrape drops every metric of the Pod,
//! so a filter's output is held to what Prometheus' text parser accepts and
//! to what makes families valid in the whole scrape: [`expo::check`], the
//! one implementation the guest SDK's writer is tested against (each line
//! through `expo::check_line`; UTF-8, a final newline, HELP and TYPE once
//! and first, every family in one piece, no duplicate series, numeric
//! bounds, nothing reserved, no family that belongs to someone else, no
//! new family whose samples would merge with another by suffix). Here: the
//! reason a refusal counts under, and the split of text the runtime already
//! trusts.

use std::ops::Range;

use expo::MetricType;
pub use expo::check::{Checker, Presence, Scope, Violation};

use super::health::Reason;
use crate::prom::line::{Line, classify, sample_of};

/// The reason a refused output counts under.
pub fn reason(violation: &Violation) -> Reason {
    match violation {
        Violation::Foreign(_) => Reason::ForeignFamily,
        _ => Reason::InvalidOutput,
    }
}

/// Splits text the runtime already trusts (what it handed a filter, given
/// back unchanged) into families, without checking it: each family's name
/// and lines go to `family`.
pub fn families(text: &[u8], mut family: impl FnMut(Range<usize>, Range<usize>)) {
    struct Current {
        name: Range<usize>,
        kind: MetricType,
        start: usize,
    }
    let mut current: Option<Current> = None;
    let mut offset = 0;
    for raw in text.split_inclusive(|&b| b == b'\n') {
        let content = raw.strip_suffix(b"\n").unwrap_or(raw);
        let start = offset;
        offset += raw.len();
        if let Some(c) = &current
            && sample_of(content, &text[c.name.clone()], c.kind).is_some()
        {
            continue;
        }
        let (name, kind) = match classify(content) {
            Line::Sample { name } => (name, None),
            Line::Help { name } => (name, None),
            Line::Type { name, kind } => (name, Some(kind)),
            _ => continue,
        };
        let name = start + name.start..start + name.end;
        if let Some(c) = &mut current
            && text[c.name.clone()] == text[name.clone()]
        {
            if let Some(kind) = kind {
                c.kind = kind;
            }
            continue;
        }
        if let Some(c) = current.take() {
            family(c.name, c.start..start);
        }
        current = Some(Current {
            name,
            kind: kind.unwrap_or(MetricType::Untyped),
            start,
        });
    }
    if let Some(c) = current {
        family(c.name, c.start..offset);
    }
}

#[cfg(test)]
mod tests;
