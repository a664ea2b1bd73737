//! The Prometheus text exposition format (classic, version 0.0.4): which
//! samples belong to which family, a strict check of one line as
//! Prometheus' own text parsers read it, and the family rules of a whole
//! text ([`check`]).
//!
//! One implementation for both sides of the filter boundary: the runtime
//! groups families with [`MetricType::owns`] and refuses filter output with
//! [`check::Checker`]; the guest SDK models families and writes its output
//! by the same rules (and its tests hold what it writes to the same
//! checker), so a filter written with it cannot produce what the host
//! refuses.
//!
//! Where Prometheus' two parsers differ (the server's `textparse` and the
//! `expfmt` parser `promtool` uses), [`check_line`] accepts only what both
//! accept: a line it passes is read the same way by either.
//!
//! ```
//! use expo::{Checked, MetricType, check_line};
//! assert!(MetricType::Histogram.owns(b"ttft", b"ttft_bucket"));
//! assert!(!MetricType::Histogram.owns(b"ttft", b"ttft"));
//! assert!(matches!(check_line(br#"up{job="a\"b"} 1"#), Ok(Checked::Sample { .. })));
//! assert!(check_line(br#"up{job="a} 1"#).is_err());
//! ```

use std::ops::Range;

pub mod check;

/// Family names the runtime keeps for its own metrics; nothing else may
/// use them.
pub const RESERVED_PREFIX: &str = "matrixinfer_runtime_";

/// Every suffix by which Prometheus' classic parser can read a sample as
/// part of a family of another name (see [`MetricType::claims`]).
pub const CLAIMED_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

// === impl MetricType ===

/// The type a `# TYPE` line declares for a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// `counter`: samples `x`, `x_total`, `x_created`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`: samples `x_bucket`, `x_sum`, `x_count`, `x_created`.
    Histogram,
    /// `gaugehistogram` (OpenMetrics): `x_bucket`, `x_gsum`, `x_gcount`.
    GaugeHistogram,
    /// `summary`: `x`, `x_sum`, `x_count`, `x_created`.
    Summary,
    /// `info` (OpenMetrics): `x_info`.
    Info,
    /// `stateset` (OpenMetrics).
    StateSet,
    /// `untyped`, `unknown`, a type we do not know, or no `# TYPE` line.
    Untyped,
}

impl MetricType {
    /// The type a TYPE line names, leniently: a type this crate does not
    /// know is [`MetricType::Untyped`] (engines' input is read this way).
    pub fn parse(token: &[u8]) -> MetricType {
        match token {
            b"counter" => MetricType::Counter,
            b"gauge" => MetricType::Gauge,
            b"histogram" => MetricType::Histogram,
            b"gaugehistogram" => MetricType::GaugeHistogram,
            b"summary" => MetricType::Summary,
            b"info" => MetricType::Info,
            b"stateset" => MetricType::StateSet,
            _ => MetricType::Untyped,
        }
    }

    /// The type a TYPE line names, strictly: only the five the classic
    /// text format has, spelled in lower case (what Prometheus accepts).
    pub fn parse_classic(token: &[u8]) -> Option<MetricType> {
        match token {
            b"counter" => Some(MetricType::Counter),
            b"gauge" => Some(MetricType::Gauge),
            b"histogram" => Some(MetricType::Histogram),
            b"summary" => Some(MetricType::Summary),
            b"untyped" => Some(MetricType::Untyped),
            _ => None,
        }
    }

    /// Whether a sample called `name` belongs to a family called `family`
    /// of this type. Counters own `x_total` as well as `x` because engines
    /// spell the TYPE line both ways (`# TYPE x_total counter` from
    /// prometheus_client, `# TYPE x counter` from OpenMetrics writers). A
    /// histogram's samples always carry a suffix: one named `x` is not
    /// part of histogram `x`.
    pub fn owns(self, family: &[u8], name: &[u8]) -> bool {
        name.strip_prefix(family)
            .is_some_and(|suffix| self.owns_suffix(suffix))
    }

    /// Whether a sample named family name + `suffix` belongs to a family of
    /// this type. A `match` on byte strings compiles to length checks and
    /// inline compares, which the runtime's `relabel` benchmark showed to
    /// matter.
    #[inline]
    pub fn owns_suffix(self, suffix: &[u8]) -> bool {
        match self {
            MetricType::Counter => matches!(suffix, b"" | b"_total" | b"_created"),
            MetricType::Histogram => {
                matches!(suffix, b"_bucket" | b"_sum" | b"_count" | b"_created")
            }
            MetricType::GaugeHistogram => matches!(suffix, b"_bucket" | b"_gsum" | b"_gcount"),
            MetricType::Summary => matches!(suffix, b"" | b"_sum" | b"_count" | b"_created"),
            MetricType::Info => matches!(suffix, b"" | b"_info"),
            MetricType::Gauge | MetricType::StateSet | MetricType::Untyped => suffix.is_empty(),
        }
    }

    /// The suffixes by which Prometheus' classic parser reads samples of
    /// another name as part of a family of this type: a histogram's
    /// `_bucket`, `_sum` and `_count`, a summary's `_sum` and `_count`. A
    /// family named like that beside it would have its samples merged.
    /// (`_created` and `_total` are separate families in that format, as
    /// prometheus_client writes them.)
    pub fn claims(self) -> &'static [&'static str] {
        match self {
            MetricType::Histogram => &["_bucket", "_sum", "_count"],
            MetricType::Summary => &["_sum", "_count"],
            _ => &[],
        }
    }

    /// The suffixes (other than none) its samples may add to the family's
    /// name.
    pub fn suffixes(self) -> &'static [&'static str] {
        match self {
            MetricType::Counter => &["_total", "_created"],
            MetricType::Histogram => &["_bucket", "_sum", "_count", "_created"],
            MetricType::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
            MetricType::Summary => &["_sum", "_count", "_created"],
            MetricType::Info => &["_info"],
            MetricType::Gauge | MetricType::StateSet | MetricType::Untyped => &[],
        }
    }
}

// === names ===

const NAME_START: u8 = 1;
const NAME_DIGIT: u8 = 2;
const LABEL_ONLY_NOT: u8 = 4;

/// Which bytes may appear in a metric name: a table lookup per byte rather
/// than a chain of range checks. `:` is a name byte but not a label byte.
static NAME_BYTE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphabetic() || c == b'_' {
            table[b] = NAME_START;
        } else if c == b':' {
            table[b] = NAME_START | LABEL_ONLY_NOT;
        } else if c.is_ascii_digit() {
            table[b] = NAME_DIGIT;
        }
        b += 1;
    }
    table
};

/// End of the metric name starting at `start` (`[a-zA-Z_:][a-zA-Z0-9_:]*`);
/// `start` when there is none.
#[inline]
pub fn name_end(line: &[u8], start: usize) -> usize {
    match line.get(start) {
        Some(&b) if NAME_BYTE[usize::from(b)] & NAME_START != 0 => name_continue(line, start + 1),
        _ => start,
    }
}

/// End of a metric name whose bytes before `from` are known to be a name.
///
/// Eight bytes at a time ([`name_bytes`]): a byte-by-byte table lookup was
/// half of classifying a HELP or TYPE line, whose name is most of what is
/// read of it (the `relabel` benchmark and `perf` of a scrape).
#[inline]
pub fn name_continue(line: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(word) = line.get(i..i + 8) {
        let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let others = !name_bytes(word) & HIGH_BITS;
        if others != 0 {
            // Little-endian: the lowest set bit is the first such byte.
            return i + (others.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    line[i..]
        .iter()
        .position(|&b| NAME_BYTE[usize::from(b)] == 0)
        .map_or(line.len(), |at| i + at)
}

const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` set where that byte is a name byte
/// (`[a-zA-Z0-9_:]`), every other bit clear. Exact for every byte: each
/// range test adds to bytes whose high bit is masked off, so no carry
/// crosses into the next byte.
#[inline(always)]
fn name_bytes(word: u64) -> u64 {
    /// High bit set in each byte of `low7` (bytes below 0x80) that lies
    /// in `lo..=hi`.
    #[inline(always)]
    fn in_range(low7: u64, lo: u8, hi: u8) -> u64 {
        let at_least_lo = low7 + LOW_BITS * u64::from(0x80 - lo);
        let above_hi = low7 + LOW_BITS * u64::from(0x7f - hi);
        at_least_lo & !above_hi & HIGH_BITS
    }
    let low7 = word & !HIGH_BITS;
    // `| 0x20` folds upper case onto lower case; `0`..`9` and `:` are
    // adjacent (0x30..=0x3a).
    let letters = in_range(low7 | (LOW_BITS * 0x20), b'a', b'z');
    let digits_colon = in_range(low7, b'0', b':');
    let underscore = in_range(low7, b'_', b'_');
    (letters | digits_colon | underscore) & !word
}

/// End of the label name starting at `start` (`[a-zA-Z_][a-zA-Z0-9_]*`).
fn label_name_end(line: &[u8], start: usize) -> usize {
    let is = |b: u8, bits: u8| {
        let class = NAME_BYTE[usize::from(b)];
        class & bits != 0 && class & LABEL_ONLY_NOT == 0
    };
    match line.get(start) {
        Some(&b) if is(b, NAME_START) => line[start + 1..]
            .iter()
            .position(|&b| !is(b, NAME_START | NAME_DIGIT))
            .map_or(line.len(), |i| start + 1 + i),
        _ => start,
    }
}

/// Whether `name` is a metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_metric_name(name: &[u8]) -> bool {
    !name.is_empty() && name_end(name, 0) == name.len()
}

/// Whether `name` is a label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(name: &[u8]) -> bool {
    !name.is_empty() && label_name_end(name, 0) == name.len()
}

/// Whether `name` is in the runtime's own namespace.
pub fn is_reserved(name: &[u8]) -> bool {
    // The first byte first: asked of every family of every filtered
    // scrape, and almost none start like the prefix.
    name.first() == RESERVED_PREFIX.as_bytes().first()
        && name.starts_with(RESERVED_PREFIX.as_bytes())
}

// === values ===

/// Whether `token` is a sample value Prometheus reads: a decimal number
/// (`1`, `-0.5`, `.5`, `1.`, `8.128902e+06`) within `f64`'s range, or
/// `NaN`, `Inf`, `Infinity` with an optional sign on the infinities, in any
/// case. Hexadecimal and `_` separators are refused, as Prometheus does.
pub fn is_value(token: &[u8]) -> bool {
    let (signed, body) = match token.first() {
        Some(b'+' | b'-') => (true, &token[1..]),
        _ => (false, token),
    };
    let digits = |i: &mut usize| {
        let start = *i;
        while body.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let mut i = 0;
    let whole = digits(&mut i);
    let fraction = if body.get(i) == Some(&b'.') {
        i += 1;
        digits(&mut i)
    } else {
        0
    };
    if whole + fraction == 0 {
        return is_special(body, signed);
    }
    let mut exponent = false;
    if matches!(body.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(body.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
        exponent = true;
    }
    if i != body.len() {
        return false;
    }
    // Out of range is an error to Prometheus (Go's ParseFloat): possible
    // only with an exponent or more digits than any finite f64 has.
    if exponent || whole > 308 {
        return std::str::from_utf8(token)
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
            .is_some_and(f64::is_finite);
    }
    true
}

fn is_special(body: &[u8], signed: bool) -> bool {
    body.eq_ignore_ascii_case(b"inf")
        || body.eq_ignore_ascii_case(b"infinity")
        || (!signed && body.eq_ignore_ascii_case(b"nan"))
}

/// Whether `token` is a timestamp both parsers read: decimal digits only
/// (milliseconds), within `i64`.
pub fn is_timestamp(token: &[u8]) -> bool {
    const MAX: &[u8] = b"9223372036854775807";
    !token.is_empty()
        && token.iter().all(u8::is_ascii_digit)
        && (token.len() < MAX.len() || (token.len() == MAX.len() && token <= MAX))
}

// === check_line ===

/// A line that passed [`check_line`]. Ranges index the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checked {
    /// Empty or only blanks.
    Blank,
    /// A comment other than HELP and TYPE.
    Comment,
    /// `# HELP name text`.
    Help {
        /// The family name.
        name: Range<usize>,
    },
    /// `# TYPE name type`.
    Type {
        /// The family name.
        name: Range<usize>,
        /// One of the classic format's five types.
        kind: MetricType,
    },
    /// `name{labels} value [timestamp]`.
    Sample {
        /// The sample's name.
        name: Range<usize>,
        /// Between the braces (empty without them).
        labels: Range<usize>,
        /// The value.
        value: Range<usize>,
    },
}

/// Why a line is not exposition text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineError {
    /// A metric name is missing or has a byte a name cannot have.
    BadName,
    /// A label name is missing or has a byte a label name cannot have.
    BadLabelName,
    /// A label named `__name__`.
    ReservedLabel,
    /// The same label twice in one sample.
    DuplicateLabel,
    /// A label set that is not `{name="value",...}`.
    BadLabelSyntax,
    /// A label value whose closing quote is missing.
    UnterminatedValue,
    /// An escape other than `\\`, `\"` and `\n` (`\\` and `\n` in HELP).
    BadEscape,
    /// A missing value, or one that is not a number.
    BadValue,
    /// A timestamp that is not an integer in range, bytes after it, or
    /// blanks after the value with no timestamp.
    BadTimestamp,
    /// A TYPE line whose type is not one of the classic five, or with
    /// anything around it.
    BadType,
    /// `#HELP`/`#TYPE`: metadata to one parser, a comment to the other.
    AmbiguousComment,
}

impl LineError {
    /// What is wrong, in a few words.
    pub fn as_str(self) -> &'static str {
        match self {
            LineError::BadName => "bad metric name",
            LineError::BadLabelName => "bad label name",
            LineError::ReservedLabel => "label __name__ is reserved",
            LineError::DuplicateLabel => "a label appears twice",
            LineError::BadLabelSyntax => "bad label set",
            LineError::UnterminatedValue => "unterminated label value",
            LineError::BadEscape => "bad escape sequence",
            LineError::BadValue => "the value is not a number",
            LineError::BadTimestamp => "bad timestamp",
            LineError::BadType => "bad TYPE line",
            LineError::AmbiguousComment => "#HELP or #TYPE without a blank",
        }
    }
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for LineError {}

/// Checks one line (without its `\n`) as Prometheus' parsers would. The
/// caller checks UTF-8 (once for a whole text is far cheaper than per line).
pub fn check_line(line: &[u8]) -> Result<Checked, LineError> {
    check_line_with_labels(line, |_, _| {})
}

/// [`check_line`], handing each label of a sample to `label` as it goes
/// (its name's range, its value's range inside the quotes, still escaped),
/// so that a caller who needs them does not parse the label set twice.
pub fn check_line_with_labels(
    line: &[u8],
    label: impl FnMut(Range<usize>, Range<usize>),
) -> Result<Checked, LineError> {
    let start = skip_blanks(line, 0);
    match line.get(start) {
        None => Ok(Checked::Blank),
        Some(b'#') => check_comment(line, start),
        Some(_) => check_sample(line, start, label),
    }
}

fn skip_blanks(line: &[u8], mut i: usize) -> usize {
    while matches!(line.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

fn check_comment(line: &[u8], hash: usize) -> Result<Checked, LineError> {
    let keyword = skip_blanks(line, hash + 1);
    let keyword_end = line[keyword..]
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .map_or(line.len(), |i| keyword + i);
    let is_help = match &line[keyword..keyword_end] {
        b"HELP" => true,
        b"TYPE" => false,
        _ => return Ok(Checked::Comment),
    };
    if keyword == hash + 1 {
        return Err(LineError::AmbiguousComment);
    }
    let name_start = skip_blanks(line, keyword_end);
    let name = name_start..name_end(line, name_start);
    if name.is_empty() {
        return Err(LineError::BadName);
    }
    let after = line.get(name.end).copied();
    if !matches!(after, None | Some(b' ' | b'\t')) {
        return Err(LineError::BadName);
    }
    if is_help {
        let text = line.get(name.end + 1..).unwrap_or_default();
        check_escapes(text, b"\\n").map_err(|()| LineError::BadEscape)?;
        return Ok(Checked::Help { name });
    }
    // Exactly one blank, then the type and nothing else: the server's
    // parser takes the rest of the line, less one byte, as the type.
    let kind = line.get(name.end + 1..).unwrap_or_default();
    let kind = MetricType::parse_classic(kind).ok_or(LineError::BadType)?;
    Ok(Checked::Type { name, kind })
}

/// Every backslash in `text` followed by one of `allowed`.
fn check_escapes(text: &[u8], allowed: &[u8]) -> Result<(), ()> {
    let mut i = 0;
    while let Some(at) = text[i..].iter().position(|&b| b == b'\\') {
        i += at + 1;
        match text.get(i) {
            Some(b) if allowed.contains(b) => i += 1,
            _ => return Err(()),
        }
    }
    Ok(())
}

fn check_sample(
    line: &[u8],
    start: usize,
    label: impl FnMut(Range<usize>, Range<usize>),
) -> Result<Checked, LineError> {
    let name = start..name_end(line, start);
    if name.is_empty() {
        return Err(LineError::BadName);
    }
    let mut i = skip_blanks(line, name.end);
    let labels = if line.get(i) == Some(&b'{') {
        let open = i + 1;
        i = check_labels(line, open, label)?;
        let labels = open..i - 1;
        i = skip_blanks(line, i);
        labels
    } else {
        if i == name.end && i < line.len() {
            return Err(LineError::BadName);
        }
        name.end..name.end
    };
    let value_end = line[i..]
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .map_or(line.len(), |at| i + at);
    let value = i..value_end;
    if !is_value(&line[value.clone()]) {
        return Err(LineError::BadValue);
    }
    // A blank after the value promises a timestamp (promtool's parser
    // reads one, and refuses an empty one), which ends the line.
    if value_end < line.len() && !is_timestamp(&line[skip_blanks(line, value_end)..]) {
        return Err(LineError::BadTimestamp);
    }
    Ok(Checked::Sample {
        name,
        labels,
        value,
    })
}

/// Checks the label set after its `{`; returns the index past its `}`.
fn check_labels(
    line: &[u8],
    mut i: usize,
    mut label: impl FnMut(Range<usize>, Range<usize>),
) -> Result<usize, LineError> {
    // Label names seen so far, for the duplicate check: on the stack for
    // any sane sample, on the heap past that.
    let mut names: [(u32, u32); 16] = [(0, 0); 16];
    let mut count = 0;
    let mut more: Vec<Range<usize>> = Vec::new();
    loop {
        i = skip_blanks(line, i);
        match line.get(i) {
            Some(b'}') => return Ok(i + 1),
            None => return Err(LineError::BadLabelSyntax),
            Some(_) => {}
        }
        let name = i..label_name_end(line, i);
        if name.is_empty() {
            return Err(LineError::BadLabelName);
        }
        let this = &line[name.clone()];
        if this == b"__name__" {
            return Err(LineError::ReservedLabel);
        }
        let repeated = names[..count]
            .iter()
            .any(|&(s, e)| &line[s as usize..e as usize] == this)
            || more.iter().any(|r| &line[r.clone()] == this);
        if repeated {
            return Err(LineError::DuplicateLabel);
        }
        if count < names.len() {
            names[count] = (name.start as u32, name.end as u32);
            count += 1;
        } else {
            more.push(name.clone());
        }
        i = skip_blanks(line, name.end);
        if line.get(i) != Some(&b'=') {
            return Err(LineError::BadLabelSyntax);
        }
        i = skip_blanks(line, i + 1);
        if line.get(i) != Some(&b'"') {
            return Err(LineError::BadLabelSyntax);
        }
        let value_start = i + 1;
        i = value_end(line, value_start)?;
        label(name, value_start..i - 1);
        i = skip_blanks(line, i);
        match line.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Ok(i + 1),
            _ => return Err(LineError::BadLabelSyntax),
        }
    }
}

/// Past the closing quote of the label value starting at `i`.
fn value_end(line: &[u8], mut i: usize) -> Result<usize, LineError> {
    loop {
        let at = memchr::memchr2(b'"', b'\\', &line[i..]).ok_or(LineError::UnterminatedValue)?;
        i += at;
        if line[i] == b'"' {
            return Ok(i + 1);
        }
        match line.get(i + 1) {
            Some(b'\\' | b'"' | b'n') => i += 2,
            _ => return Err(LineError::BadEscape),
        }
    }
}

#[cfg(test)]
mod tests;
