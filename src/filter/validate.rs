//! Checking what a filter returned before it is served.
//!
//! A filter's output must be exposition text the runtime can stand behind:
//! every line readable, every family contiguous and declared once, every
//! sample value a number, and no family that belongs to someone else (one
//! the filter did not select that appears elsewhere in the scrape).

use std::collections::HashSet;
use std::ops::Range;

use crate::prom::line::{Line, MetricType, classify, sample_of};

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
/// may write family `name`; `family(name, bytes)` receives the ranges of
/// each family's name and of its lines (so the caller can route it).
/// Returns the first violation.
pub fn families<'t>(
    text: &'t [u8],
    mut allowed: impl FnMut(&[u8]) -> bool,
    mut family: impl FnMut(Range<usize>, Range<usize>),
) -> Result<(), Violation> {
    struct Current<'t> {
        name: &'t [u8],
        name_at: Range<usize>,
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
            family(c.name_at, c.start..end);
        }
        Ok(())
    };
    let mut current: Option<Current<'t>> = None;
    let mut offset = 0;
    for (n, raw) in text.split_inclusive(|&b| b == b'\n').enumerate() {
        let content = raw.strip_suffix(b"\n").unwrap_or(raw);
        let start = offset;
        offset += raw.len();
        // Most lines continue the family before them.
        if let Some(c) = &current
            && let Some(end) = sample_of(content, c.name, c.kind)
        {
            check_value(content, 0..end).map_err(|()| Violation::BadValue { line: n + 1 })?;
            continue;
        }
        let line = classify(content);
        let name_range = match &line {
            Line::Blank | Line::Comment => continue,
            Line::Eof | Line::Malformed => return Err(Violation::Malformed { line: n + 1 }),
            Line::Sample { name } => {
                check_value(content, name.clone())
                    .map_err(|()| Violation::BadValue { line: n + 1 })?;
                name.clone()
            }
            Line::Help { name } | Line::Type { name, .. } => name.clone(),
        };
        let name = &content[name_range.clone()];
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
            name_at: start + name_range.start..start + name_range.end,
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
/// optional timestamp an integer. Read from the end of the line, so the
/// label set is not scanned (the `filter` benchmark): the value is the last
/// token, or the one before a timestamp, and what precedes it must close
/// the label set (or be the bare name).
fn check_value(content: &[u8], name: Range<usize>) -> Result<(), ()> {
    let line = content.trim_ascii_end();
    let has_labels = content.get(name.end) == Some(&b'{');
    let head_ok = |head: &[u8]| {
        let head = head.trim_ascii_end();
        if has_labels {
            head.ends_with(b"}") && head.len() > name.end
        } else {
            head.len() == name.end
        }
    };
    let (rest, last) = split_last_token(line).ok_or(())?;
    if is_float(last) && head_ok(rest) {
        return Ok(());
    }
    if is_integer(last)
        && let Some((head, value)) = split_last_token(rest.trim_ascii_end())
        && is_float(value)
        && head_ok(head)
    {
        return Ok(());
    }
    Err(())
}

/// `(everything before, last token)` of a line split at its last blank.
fn split_last_token(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = line.iter().rposition(|&b| b == b' ' || b == b'\t')?;
    Some((&line[..at], &line[at + 1..]))
}

/// `[+-]digits[.digits][e[+-]digits]`, checked byte by byte (the common
/// case, and much cheaper than parsing); anything else through `f64`'s
/// parser, which knows the rest (`NaN`, `Inf`, `.5`, …).
fn is_float(token: &[u8]) -> bool {
    let mut i = usize::from(matches!(token.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while token.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    let whole = digits(&mut i);
    let fraction = token.get(i) == Some(&b'.') && {
        i += 1;
        digits(&mut i)
    };
    let mut simple = whole || fraction;
    if simple && matches!(token.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(token.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        simple = digits(&mut i);
    }
    if simple && i == token.len() {
        return true;
    }
    std::str::from_utf8(token)
        .is_ok_and(|t| matches!(t, "NaN" | "+Inf" | "-Inf" | "Inf") || t.parse::<f64>().is_ok())
}

fn is_integer(token: &[u8]) -> bool {
    let digits = token.strip_prefix(b"-").unwrap_or(token);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, allowed: &[&str]) -> Result<Vec<String>, Violation> {
        let mut seen = Vec::new();
        families(
            text.as_bytes(),
            |name| allowed.iter().any(|a| a.as_bytes() == name),
            |name, range| seen.push(format!("{}:{}", &text[name], &text[range].lines().count())),
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
    fn floats() {
        for good in [
            "1",
            "-1",
            "+1.5",
            "1.",
            "8.128902e+06",
            "1E-3",
            "NaN",
            "+Inf",
            "-Inf",
            ".5",
            "0.0",
        ] {
            assert!(is_float(good.as_bytes()), "{good}");
        }
        for bad in ["", "one", "1e", "1.2.3", "--1", "0x10", "1,5"] {
            assert!(!is_float(bad.as_bytes()), "{bad}");
        }
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
