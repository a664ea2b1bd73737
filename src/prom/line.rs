//! One line of the Prometheus text format, classified without copying.
//!
//! [`classify`] looks at no more of a line than it needs: the `#` and the
//! keyword of a comment, the metric name of a sample. Everything it returns
//! is a range into the line it was given, so the caller keeps ownership of
//! the bytes and nothing is allocated.

use std::ops::Range;

pub use expo::MetricType;

/// What a line is. Ranges index the line passed to [`classify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// Empty or only blanks.
    Blank,
    /// `# HELP name text`.
    Help {
        /// The metric family name.
        name: Range<usize>,
    },
    /// `# TYPE name type`.
    Type {
        /// The metric family name.
        name: Range<usize>,
        /// The declared type.
        kind: MetricType,
    },
    /// `# EOF`, the OpenMetrics terminator.
    Eof,
    /// Any other comment.
    Comment,
    /// `name{labels} value [timestamp]`.
    Sample {
        /// The sample's metric name.
        name: Range<usize>,
    },
    /// Anything else; passed through untouched.
    Malformed,
}

/// Classifies one line, given without its `\n` (a trailing `\r` is
/// tolerated). Never fails: a line it cannot read is [`Line::Malformed`].
pub fn classify(line: &[u8]) -> Line {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let start = skip_blanks(line, 0);
    match line.get(start) {
        None => Line::Blank,
        Some(b'#') => classify_comment(line, start + 1),
        Some(_) => {
            let name = start..name_end(line, start);
            match line.get(name.end) {
                Some(b'{' | b' ' | b'\t') if !name.is_empty() => Line::Sample { name },
                _ => Line::Malformed,
            }
        }
    }
}

/// Classifies the first bytes of a line too long to hold whole. A name or
/// type that runs to the end of `head` may be cut short, so such a head is
/// [`Line::Malformed`] rather than a guess.
pub fn classify_head(head: &[u8]) -> Line {
    let line = classify(head);
    let cut_short = match &line {
        Line::Help { name } => name.end == head.len(),
        Line::Type { name, .. } => {
            let kind_start = skip_blanks(head, name.end);
            !head[kind_start..].iter().any(|&b| b == b' ' || b == b'\t')
        }
        _ => false,
    };
    if cut_short { Line::Malformed } else { line }
}

fn classify_comment(line: &[u8], after_hash: usize) -> Line {
    if &line[after_hash..] == b" EOF" {
        return Line::Eof;
    }
    let keyword_start = skip_blanks(line, after_hash);
    if keyword_start == after_hash {
        return Line::Comment;
    }
    let keyword = line.get(keyword_start..keyword_start + 4);
    let is_help = keyword == Some(b"HELP");
    if !is_help && keyword != Some(b"TYPE") {
        return Line::Comment;
    }
    let name_start = skip_blanks(line, keyword_start + 4);
    if name_start == keyword_start + 4 {
        // `# HELPER` and `# TYPEWRITER` are plain comments.
        return Line::Comment;
    }
    let name = name_start..name_end(line, name_start);
    let after = line.get(name.end).copied();
    if name.is_empty() || !matches!(after, None | Some(b' ' | b'\t')) {
        return Line::Malformed;
    }
    if is_help {
        return Line::Help { name };
    }
    let kind_start = skip_blanks(line, name.end);
    let kind_end = line[kind_start..]
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .map_or(line.len(), |i| kind_start + i);
    Line::Type {
        name,
        kind: MetricType::parse(&line[kind_start..kind_end]),
    }
}

fn skip_blanks(line: &[u8], mut i: usize) -> usize {
    while matches!(line.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

pub use expo::name_continue;
use expo::name_end;

/// The fast path of classification: if `content` is a sample of the
/// family `family` (of type `kind`), where its name ends. One prefix
/// compare and a scan of the suffix, instead of a full [`classify`]: most
/// lines of a payload continue the family before them (measured by the
/// `relabel` benchmark).
#[inline]
pub fn sample_of(content: &[u8], family: &[u8], kind: MetricType) -> Option<usize> {
    if family.is_empty() || !has_prefix(content, family) {
        return None;
    }
    let end = name_continue(content, family.len());
    if !matches!(content.get(end), Some(b'{' | b' ' | b'\t')) {
        return None;
    }
    kind.owns_suffix(&content[family.len()..end]).then_some(end)
}

/// `content.starts_with(prefix)`, for the prefixes that family names are
/// (tens of bytes): eight bytes at a time, the last word overlapping,
/// differences gathered without a branch per word.
#[inline(always)]
fn has_prefix(content: &[u8], prefix: &[u8]) -> bool {
    let n = prefix.len();
    if content.len() < n {
        return false;
    }
    if n < 8 {
        return content[..n] == *prefix;
    }
    let word =
        |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("eight bytes"));
    let mut diff = word(content, n - 8) ^ word(prefix, n - 8);
    let mut at = 0;
    while at + 8 < n {
        diff |= word(content, at) ^ word(prefix, at);
        at += 8;
    }
    diff == 0
}

/// End of the label set of the sample whose name ends at `name_end`: one
/// past its closing `}`, or `name_end` when it has none. Quotes and escapes
/// inside label values are honoured, so a `}` in a value does not end it.
/// An unterminated label set runs to the end of the line.
pub fn labels_end(line: &[u8], name_end: usize) -> usize {
    if line.get(name_end) != Some(&b'{') {
        return name_end;
    }
    // Jumps from quote to quote with memchr rather than stepping through
    // every byte of every label value (the `filter` benchmark).
    let mut i = name_end + 1;
    loop {
        let Some(at) = memchr::memchr2(b'"', b'}', &line[i..]) else {
            return line.len();
        };
        i += at;
        if line[i] == b'}' {
            return i + 1;
        }
        // Inside a quoted value: to its closing quote, past escapes.
        i += 1;
        loop {
            let Some(at) = memchr::memchr2(b'"', b'\\', &line[i..]) else {
                return line.len();
            };
            i += at;
            if line[i] == b'\\' {
                i += 2;
                if i >= line.len() {
                    return line.len();
                }
                continue;
            }
            i += 1;
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_of(line: &str) -> Option<&str> {
        match classify(line.as_bytes()) {
            Line::Sample { name } | Line::Help { name } | Line::Type { name, .. } => {
                Some(&line[name])
            }
            _ => None,
        }
    }

    /// The word-at-a-time prefix compare agrees with `starts_with` for
    /// every prefix length around the word size, a difference at every
    /// place, and content shorter than the prefix.
    #[test]
    fn prefix_compare() {
        let text = b"vllm:time_to_first_token_seconds_bucket{le=\"0.5\"} 1";
        for n in 0..=40 {
            let prefix = &text[..n];
            for len in 0..=text.len() {
                assert_eq!(has_prefix(&text[..len], prefix), len >= n, "{n} {len}");
            }
            for at in 0..n {
                let mut other = text.to_vec();
                other[at] ^= 0x01;
                assert!(!has_prefix(&other, prefix), "{n}: differs at {at}");
            }
        }
    }

    #[test]
    fn samples() {
        assert_eq!(
            name_of("vllm:num_requests_waiting{model_name=\"m\"} 0.0"),
            Some("vllm:num_requests_waiting")
        );
        assert_eq!(name_of("up 1"), Some("up"));
        assert_eq!(name_of("up\t1"), Some("up"));
        assert_eq!(name_of("  indented 1"), Some("indented"));
        assert_eq!(name_of("_x:y_z9 1"), Some("_x:y_z9"));
    }

    #[test]
    fn malformed_lines() {
        for line in [
            "up",
            "9lives 1",
            "{} 1",
            "\"quoted\" 1",
            "é 1",
            "a-b 1",
            "\u{0}",
        ] {
            assert_eq!(classify(line.as_bytes()), Line::Malformed, "{line:?}");
        }
        assert_eq!(classify(b"\xff\xfe 1"), Line::Malformed);
    }

    #[test]
    fn blanks_and_comments() {
        assert_eq!(classify(b""), Line::Blank);
        assert_eq!(classify(b"  \t"), Line::Blank);
        assert_eq!(classify(b"\r"), Line::Blank);
        assert_eq!(classify(b"# just a comment"), Line::Comment);
        assert_eq!(classify(b"#"), Line::Comment);
        assert_eq!(classify(b"#HELP x y"), Line::Comment);
        assert_eq!(classify(b"# HELPER x"), Line::Comment);
        assert_eq!(classify(b"# EOF"), Line::Eof);
        assert_eq!(classify(b"# EOF trailing"), Line::Comment);
    }

    #[test]
    fn metadata() {
        assert_eq!(
            name_of("# HELP vllm:x Help: with \"quotes\" "),
            Some("vllm:x")
        );
        assert_eq!(name_of("# HELP vllm:x"), Some("vllm:x"));
        assert_eq!(name_of("#  TYPE\tx  counter"), Some("x"));
        let kind = |l: &str| match classify(l.as_bytes()) {
            Line::Type { kind, .. } => Some(kind),
            _ => None,
        };
        assert_eq!(kind("# TYPE x_total counter"), Some(MetricType::Counter));
        assert_eq!(kind("# TYPE x histogram\r"), Some(MetricType::Histogram));
        assert_eq!(kind("# TYPE x summary extra"), Some(MetricType::Summary));
        assert_eq!(
            kind("# TYPE x gaugehistogram"),
            Some(MetricType::GaugeHistogram)
        );
        assert_eq!(kind("# TYPE x weird"), Some(MetricType::Untyped));
        assert_eq!(kind("# TYPE x"), Some(MetricType::Untyped));
        assert_eq!(classify(b"# TYPE 1x gauge"), Line::Malformed);
        assert_eq!(classify(b"# HELP x{ y"), Line::Malformed);
    }

    #[test]
    fn heads_of_long_lines() {
        assert_eq!(classify_head(b"# HELP vllm:num_"), Line::Malformed);
        assert_eq!(classify_head(b"# TYPE x hist"), Line::Malformed);
        assert_eq!(
            classify_head(b"# TYPE x histogram "),
            classify(b"# TYPE x histogram")
        );
        assert_eq!(
            classify_head(b"# HELP x some tex"),
            Line::Help { name: 7..8 }
        );
        assert_eq!(classify_head(b"vllm:num_requ"), Line::Malformed);
        assert_eq!(classify_head(b"x{a=\"lo"), Line::Sample { name: 0..1 });
    }

    #[test]
    fn label_set_end() {
        fn end(l: &str, name: usize) -> &str {
            &l[..labels_end(l.as_bytes(), name)]
        }
        assert_eq!(end("a{b=\"c\"} 1", 1), "a{b=\"c\"}");
        assert_eq!(end("a{b=\"}\\\"}\"} 1", 1), "a{b=\"}\\\"}\"}");
        assert_eq!(end("a 1", 1), "a");
        assert_eq!(end("a{b=\"unterminated 1", 1), "a{b=\"unterminated 1");
    }
}
