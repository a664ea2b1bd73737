//! Checking what a filter returned before it is served.
//!
//! A filter's output must be exposition text the runtime can stand behind:
//! every line readable, every family contiguous and declared once, every
//! sample value a number, and no family that belongs to someone else (one
//! the filter did not select that appears elsewhere in the scrape).

use std::collections::HashSet;
use std::ops::Range;

use crate::prom::line::{Line, MetricType, classify, labels_end};

/// Why output was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A line that is not exposition text.
    #[error("line {line} is not exposition text")]
    Malformed {
        /// 1-based line number.
        line: usize,
    },
    /// A sample whose value is not a number.
    #[error("line {line}: the value is not a number")]
    BadValue {
        /// 1-based line number.
        line: usize,
    },
    /// A family declared twice, or split.
    #[error("family {0} appears twice")]
    Repeated(String),
    /// A family the filter did not select, which exists elsewhere.
    #[error("family {0} was not selected by this filter and exists elsewhere in the scrape")]
    Foreign(String),
}

impl Violation {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Violation::Foreign(_) => "foreign_family",
            _ => "invalid_output",
        }
    }
}

/// Walks `text` family by family. `allowed(name)` says whether the filter
/// may write family `name`; `family(name, range)` receives each family's
/// byte range (so the caller can route it). Returns the first violation.
pub fn families<'t>(
    text: &'t [u8],
    mut allowed: impl FnMut(&[u8]) -> bool,
    mut family: impl FnMut(&'t [u8], Range<usize>),
) -> Result<(), Violation> {
    struct Current<'t> {
        name: &'t [u8],
        kind: MetricType,
        has_help: bool,
        has_type: bool,
        start: usize,
    }
    let mut done: HashSet<&[u8]> = HashSet::new();
    let mut close = |current: Option<Current<'t>>, end: usize| -> Result<(), Violation> {
        if let Some(c) = current {
            if !done.insert(c.name) {
                return Err(Violation::Repeated(
                    String::from_utf8_lossy(c.name).into_owned(),
                ));
            }
            family(c.name, c.start..end);
        }
        Ok(())
    };
    let mut current: Option<Current<'t>> = None;
    let mut offset = 0;
    for (n, raw) in text.split_inclusive(|&b| b == b'\n').enumerate() {
        let content = raw.strip_suffix(b"\n").unwrap_or(raw);
        let start = offset;
        offset += raw.len();
        let line = classify(content);
        let name = match &line {
            Line::Blank | Line::Comment => continue,
            Line::Eof | Line::Malformed => return Err(Violation::Malformed { line: n + 1 }),
            Line::Sample { name } => {
                check_value(content, name.clone())
                    .map_err(|()| Violation::BadValue { line: n + 1 })?;
                &content[name.clone()]
            }
            Line::Help { name } | Line::Type { name, .. } => &content[name.clone()],
        };
        let continues = match (&mut current, &line) {
            (None, _) => false,
            (Some(c), Line::Help { .. }) => {
                let same = c.name == name && !c.has_help;
                c.has_help |= same;
                same
            }
            (Some(c), Line::Type { kind, .. }) => {
                let same = c.name == name && !c.has_type;
                if same {
                    c.has_type = true;
                    c.kind = *kind;
                }
                same
            }
            (Some(c), _) => c.kind.owns(c.name, name),
        };
        if continues {
            continue;
        }
        close(current.take(), start)?;
        if !allowed(name) {
            return Err(Violation::Foreign(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
        current = Some(Current {
            name,
            kind: match line {
                Line::Type { kind, .. } => kind,
                _ => MetricType::Untyped,
            },
            has_help: matches!(line, Line::Help { .. }),
            has_type: matches!(line, Line::Type { .. }),
            start,
        });
    }
    close(current, offset)
}

/// A sample's value must be a float (`NaN`, `+Inf`, `-Inf` included); an
/// optional timestamp an integer.
fn check_value(content: &[u8], name: Range<usize>) -> Result<(), ()> {
    let rest = &content[labels_end(content, name.end)..];
    let text = std::str::from_utf8(rest).map_err(|_| ())?;
    let mut tokens = text.split_ascii_whitespace();
    let value = tokens.next().ok_or(())?;
    let ok = matches!(value, "NaN" | "+Inf" | "-Inf" | "Inf") || value.parse::<f64>().is_ok();
    if !ok {
        return Err(());
    }
    match tokens.next() {
        None => Ok(()),
        Some(ts) if ts.parse::<i64>().is_ok() && tokens.next().is_none() => Ok(()),
        Some(_) => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, allowed: &[&str]) -> Result<Vec<String>, Violation> {
        let mut seen = Vec::new();
        families(
            text.as_bytes(),
            |name| allowed.iter().any(|a| a.as_bytes() == name),
            |name, range| {
                seen.push(format!(
                    "{}:{}",
                    String::from_utf8_lossy(name),
                    &text[range].lines().count()
                ))
            },
        )?;
        Ok(seen)
    }

    #[test]
    fn good_output() {
        let text = "# HELP a A.\n# TYPE a histogram\na_bucket{le=\"+Inf\"} 1\na_sum 2.5\na_count 1\n\
                    # TYPE b gauge\nb{x=\"}\"} NaN 1712345678000\nc 1e3\n";
        assert_eq!(
            check(text, &["a", "b", "c"]).unwrap(),
            ["a:5", "b:2", "c:1"]
        );
        assert_eq!(check("", &[]).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn refusals() {
        assert_eq!(
            check("a 1\n\u{0}garbage\n", &["a"]),
            Err(Violation::Malformed { line: 2 })
        );
        assert_eq!(
            check("a one\n", &["a"]),
            Err(Violation::BadValue { line: 1 })
        );
        assert_eq!(
            check("a 1 2 3\n", &["a"]),
            Err(Violation::BadValue { line: 1 })
        );
        assert_eq!(
            check("a 1\nb 1\na 2\n", &["a", "b"]),
            Err(Violation::Repeated("a".into()))
        );
        assert_eq!(
            check("# TYPE a gauge\n# TYPE a gauge\na 1\n", &["a"]),
            Err(Violation::Repeated("a".into()))
        );
        assert_eq!(
            check("a 1\nother 2\n", &["a"]),
            Err(Violation::Foreign("other".into()))
        );
        assert_eq!(
            check("a 1\n# EOF\n", &["a"]),
            Err(Violation::Malformed { line: 2 })
        );
        assert_eq!(Violation::Foreign("x".into()).reason(), "foreign_family");
    }
}
