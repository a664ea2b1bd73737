//! Writing families as exposition text: [`write()`], which leaves out (and
//! reports, as [`Refusal`]s) whatever the runtime would refuse.
//!
//! The runtime checks a filter's whole output and refuses all of it for one
//! bad line (`docs/wasm-abi.md`): the scrape is then served unfiltered, and
//! the filter counts a failure. [`write()`] holds each family and sample to
//! the same rules, from the same implementation (the `expo` crate), so one
//! bad sample costs only itself. What it cannot know is the rest of the
//! scrape: a family the filter did not select, or a new one colliding with
//! a family elsewhere, is still the filter's to avoid.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault};

use expo::{CLAIMED_SUFFIXES, MetricType};

use crate::model::{Family, Sample};

// === Refusal ===

/// Something [`write()`] left out of its output, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The family's name.
    pub family: String,
    /// The sample left out; `None` when it is the whole family (or, for
    /// [`RefusalReason::TypeConflict`], one of its TYPE lines).
    pub sample: Option<Sample>,
    /// Why.
    pub reason: RefusalReason,
}

/// Why [`write()`] left something out: each is something for which the
/// runtime would refuse the whole output.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalReason {
    /// The family's name is not a metric name
    /// (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
    BadName,
    /// The family's or the sample's name is in the runtime's own
    /// `matrixinfer_runtime_` namespace.
    Reserved,
    /// The family's TYPE (given) is not one of the classic format's
    /// `counter`, `gauge`, `histogram`, `summary`, `untyped`.
    BadType(String),
    /// A later part of a family split in two declares another type (given).
    /// The parts are written as one family with the first type; only this
    /// TYPE is left out, and its samples are held to the first type.
    TypeConflict(String),
    /// A family written before (given) would read this family's samples
    /// as its own, or the other way round: histogram or summary `x` and a
    /// family `x_sum`, `x_count` (or `x_bucket`).
    Collides(String),
    /// The sample's name is not the family's name plus a suffix its type
    /// allows ([`Family::owns`]): a histogram's sample named like the
    /// family, a gauge's `x_total`, a name from another family.
    NotOwned,
    /// A label name (given) that is not `[a-zA-Z_][a-zA-Z0-9_]*`.
    BadLabelName(String),
    /// A label named `__name__`.
    ReservedLabel,
    /// A label name (given) twice in the sample.
    DuplicateLabel(String),
    /// The value is not a number Prometheus reads (hexadecimal, `_`,
    /// out of `f64`'s range, a signed `NaN`, ...).
    BadValue,
    /// The timestamp is not decimal digits within `i64`.
    BadTimestamp,
    /// A histogram bucket's `le` or a summary sample's `quantile` (given)
    /// that is not a number.
    BadBound(&'static str),
    /// The same sample name and label set (in any order) as an earlier
    /// sample of the family.
    DuplicateSeries,
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefusalReason::BadName => f.write_str("not a metric name"),
            RefusalReason::Reserved => write!(
                f,
                "in the runtime's own namespace ({})",
                expo::RESERVED_PREFIX
            ),
            RefusalReason::BadType(kind) => write!(
                f,
                "TYPE {kind:?} is not counter, gauge, histogram, summary or untyped"
            ),
            RefusalReason::TypeConflict(kind) => write!(
                f,
                "TYPE {kind:?} of a later part of the family differs from the first; not written"
            ),
            RefusalReason::Collides(other) => {
                write!(f, "collides by suffix with family {other}, written before")
            }
            RefusalReason::NotOwned => f.write_str("the family's type has no such sample name"),
            RefusalReason::BadLabelName(label) => write!(f, "{label:?} is not a label name"),
            RefusalReason::ReservedLabel => f.write_str("label __name__ is reserved"),
            RefusalReason::DuplicateLabel(label) => write!(f, "label {label} appears twice"),
            RefusalReason::BadValue => f.write_str("the value is not a number"),
            RefusalReason::BadTimestamp => {
                f.write_str("the timestamp is not a non-negative integer within i64")
            }
            RefusalReason::BadBound(label) => write!(f, "the {label} label is not a number"),
            RefusalReason::DuplicateSeries => f.write_str("the same series appears earlier"),
        }
    }
}

impl fmt::Display for Refusal {
    /// `family x, sample x_bucket{le="a"} 1: the le label is not a number`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if expo::is_metric_name(self.family.as_bytes()) {
            write!(f, "family {}", self.family)?;
        } else {
            write!(f, "family {:?}", self.family)?;
        }
        if let Some(sample) = &self.sample {
            let mut line = String::new();
            push_sample(sample, &mut line);
            // Quoted when a name, value or timestamp breaks the line (label
            // values are escaped): a log line stays one line.
            if line.contains(['\n', '\r']) {
                write!(f, ", sample {line:?}")?;
            } else {
                write!(f, ", sample {line}")?;
            }
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for Refusal {}

/// The refusals in one line for a log: at most `limit`, then how many more.
pub(crate) fn summary(refusals: &[Refusal], limit: usize) -> String {
    let mut text = format!(
        "output: left out {} item(s) the runtime would refuse: ",
        refusals.len()
    );
    for (i, refusal) in refusals.iter().take(limit).enumerate() {
        if i > 0 {
            text.push_str("; ");
        }
        text.push_str(&refusal.to_string());
    }
    if refusals.len() > limit {
        text.push_str(&format!("; and {} more", refusals.len() - limit));
    }
    text
}

// === write ===

/// Appends the families to `out` as exposition text, leaving out what the
/// runtime would refuse, and returns what it left out (empty when nothing).
///
/// Each family is written as its `# HELP name text` line (escaping `\` and
/// newline), its `# TYPE name kind` line, then
/// `name{k="v",...} value[ timestamp]` per sample (escaping `\`, `"` and
/// newline in label values; no braces when a sample has no labels). Every
/// line ends with `\n`.
///
/// Families with the same name (a family split in two) are written as one,
/// where the first is: HELP and TYPE once, from the first part that has
/// them, then every part's samples in order (the runtime refuses a split
/// family).
///
/// Left out, whole: a family whose name is not a metric name or is in the
/// runtime's `matrixinfer_runtime_` namespace, whose TYPE is not one of the
/// classic five, or that collides by suffix with a family written before.
/// Left out, one sample at a time: a sample the family does not own (by the
/// runtime's rule, [`Family::owns`]), in the runtime's namespace, with a
/// label name that is not one, `__name__`, a label twice, a value or
/// timestamp Prometheus does not read, an `le` or `quantile` that is not a
/// number, or a series already written in the family. So every line written
/// passes [`expo::check_line`], and the whole passes the runtime's checks
/// of a family's lines.
///
/// ```
/// use matrixinfer_filter::{Family, RefusalReason, write};
/// let mut family = Family::new_gauge("pods", "Pods.");
/// family.push_sample([("zone", "a\"b")], 3.0);
/// family.push_sample([("1zone", "c")], 4.0);
/// let mut out = String::new();
/// let refusals = write(&[family], &mut out);
/// assert_eq!(out, "# HELP pods Pods.\n# TYPE pods gauge\npods{zone=\"a\\\"b\"} 3\n");
/// assert_eq!(refusals[0].reason, RefusalReason::BadLabelName("1zone".into()));
/// assert_eq!(
///     refusals[0].to_string(),
///     "family pods, sample pods{1zone=\"c\"} 4: \"1zone\" is not a label name"
/// );
/// ```
pub fn write(families: &[Family], out: &mut String) -> Vec<Refusal> {
    let mut writer = Writer::default();
    for parts in by_name(families) {
        writer.family(&parts, out);
    }
    writer.refusals
}

/// The families grouped by name, each group where its first part is.
fn by_name(families: &[Family]) -> Vec<Vec<&Family>> {
    let mut groups: Vec<Vec<&Family>> = Vec::with_capacity(families.len());
    let mut at: BTreeMap<&str, usize> = BTreeMap::new();
    for family in families {
        match at.get(family.name.as_str()) {
            Some(&i) => groups[i].push(family),
            None => {
                at.insert(&family.name, groups.len());
                groups.push(vec![family]);
            }
        }
    }
    groups
}

/// What the runtime will have read of the output so far, as far as the
/// checks need it.
#[derive(Default)]
struct Writer<'a> {
    refusals: Vec<Refusal>,
    /// Every family written so far, with its type.
    opened: BTreeMap<&'a str, MetricType>,
    /// The family the runtime reads the next sample line into, when that
    /// family owns the sample's name.
    current: Option<Current<'a>>,
}

struct Current<'a> {
    name: &'a str,
    kind: MetricType,
    /// Its series, by a hash of the sample name and its labels in any
    /// order (no allocation per sample: this runs on every scrape).
    series: HashSet<u64, BuildHasherDefault<DefaultHasher>>,
}

impl<'a> Writer<'a> {
    /// Writes one family, given as its parts (more than one when split).
    fn family(&mut self, parts: &[&'a Family], out: &mut String) {
        let name = parts[0].name.as_str();
        let kind_text = parts.iter().find_map(|p| p.kind.as_deref());
        let help = parts.iter().find_map(|p| p.help.as_deref());
        let has_metadata = kind_text.is_some() || help.is_some();
        if !has_metadata && parts.iter().all(|p| p.samples.is_empty()) {
            return;
        }
        let refusals = &mut self.refusals;
        if !expo::is_metric_name(name.as_bytes()) {
            return refuse(refusals, name, None, RefusalReason::BadName);
        }
        if expo::is_reserved(name.as_bytes()) {
            return refuse(refusals, name, None, RefusalReason::Reserved);
        }
        let kind = match kind_text {
            None => MetricType::Untyped,
            Some(text) => match MetricType::parse_classic(text.as_bytes()) {
                Some(kind) => kind,
                None => {
                    let reason = RefusalReason::BadType(text.to_owned());
                    return refuse(refusals, name, None, reason);
                }
            },
        };

        // A family without HELP or TYPE whose name the family before owns
        // is, to the runtime, more samples of that family: its series and
        // bounds count there.
        let joins_previous = !has_metadata
            && self
                .current
                .as_ref()
                .is_some_and(|c| c.kind.owns(c.name.as_bytes(), name.as_bytes()));
        let previous = if joins_previous {
            None
        } else {
            if let Some(other) = self.collision(name, kind) {
                let reason = RefusalReason::Collides(other);
                return refuse(&mut self.refusals, name, None, reason);
            }
            let next = Current {
                name,
                kind,
                series: HashSet::default(),
            };
            Some(self.current.replace(next))
        };
        for part in &parts[1..] {
            if let Some(other) = part.kind.as_deref()
                && Some(other) != kind_text
            {
                let reason = RefusalReason::TypeConflict(other.to_owned());
                refuse(&mut self.refusals, name, None, reason);
            }
        }

        let start = out.len();
        if let Some(help) = help {
            out.push_str("# HELP ");
            out.push_str(name);
            out.push(' ');
            escape_into(help, &['\\', '\n'], out);
            out.push('\n');
        }
        if let Some(kind) = kind_text {
            out.push_str("# TYPE ");
            out.push_str(name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
        }
        let current = self
            .current
            .as_mut()
            .expect("a family is current: this one, or the one it joins");
        for sample in parts.iter().flat_map(|p| &p.samples) {
            match check(sample, name, kind, current) {
                Ok(()) => {
                    push_sample(sample, out);
                    out.push('\n');
                }
                Err(reason) => refuse(&mut self.refusals, name, Some(sample), reason),
            }
        }
        if let Some(previous) = previous {
            if out.len() > start {
                self.opened.insert(name, kind);
            } else {
                // Nothing written: to the runtime, the family before goes on.
                self.current = previous;
            }
        }
    }

    /// A family written before that would read the samples of a family
    /// `name` of type `kind` as its own, or whose samples it would read.
    fn collision(&self, name: &str, kind: MetricType) -> Option<String> {
        for suffix in CLAIMED_SUFFIXES {
            if let Some(base) = name.strip_suffix(suffix)
                && self
                    .opened
                    .get(base)
                    .is_some_and(|k| k.claims().contains(&suffix))
            {
                return Some(base.to_owned());
            }
        }
        kind.claims()
            .iter()
            .map(|suffix| format!("{name}{suffix}"))
            .find(|other| self.opened.contains_key(other.as_str()))
    }
}

fn refuse(
    refusals: &mut Vec<Refusal>,
    family: &str,
    sample: Option<&Sample>,
    reason: RefusalReason,
) {
    refusals.push(Refusal {
        family: family.to_owned(),
        sample: sample.cloned(),
        reason,
    });
}

/// Why `sample`, of family `family` of type `kind`, cannot be written after
/// what `current` (the family the runtime reads it into) already holds;
/// records its series when it can.
fn check<'a>(
    sample: &'a Sample,
    family: &str,
    kind: MetricType,
    current: &mut Current<'a>,
) -> Result<(), RefusalReason> {
    let name = sample.name.as_str();
    if !kind.owns(family.as_bytes(), name.as_bytes()) {
        return Err(RefusalReason::NotOwned);
    }
    if expo::is_reserved(name.as_bytes()) {
        return Err(RefusalReason::Reserved);
    }
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    let mut series = hasher.hash_one(name);
    for (i, (label, value)) in sample.labels.iter().enumerate() {
        if !expo::is_label_name(label.as_bytes()) {
            return Err(RefusalReason::BadLabelName(label.clone()));
        }
        if label == "__name__" {
            return Err(RefusalReason::ReservedLabel);
        }
        if sample.labels[..i]
            .iter()
            .any(|(earlier, _)| earlier == label)
        {
            return Err(RefusalReason::DuplicateLabel(label.clone()));
        }
        series = series.wrapping_add(hasher.hash_one((label, value)));
    }
    if !expo::is_value(sample.value.as_bytes()) {
        return Err(RefusalReason::BadValue);
    }
    if let Some(timestamp) = &sample.timestamp
        && !expo::is_timestamp(timestamp.as_bytes())
    {
        return Err(RefusalReason::BadTimestamp);
    }
    let bound = match (current.kind, name.strip_prefix(current.name)) {
        (MetricType::Histogram, Some("_bucket")) => Some("le"),
        (MetricType::Summary, Some("")) => Some("quantile"),
        _ => None,
    };
    if let Some(bound) = bound
        && let Some(value) = sample.label(bound)
        && !expo::is_value(value.as_bytes())
    {
        return Err(RefusalReason::BadBound(bound));
    }
    if !current.series.insert(series) {
        return Err(RefusalReason::DuplicateSeries);
    }
    Ok(())
}

/// Appends `name{k="v",...} value[ timestamp]`, without the newline.
fn push_sample(sample: &Sample, out: &mut String) {
    out.push_str(&sample.name);
    if !sample.labels.is_empty() {
        out.push('{');
        for (i, (name, value)) in sample.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(name);
            out.push_str("=\"");
            escape_into(value, &['\\', '"', '\n'], out);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&sample.value);
    if let Some(timestamp) = &sample.timestamp {
        out.push(' ');
        out.push_str(timestamp);
    }
}

/// Appends `s` with each of `special` backslash-escaped (newline as `\n`).
fn escape_into(s: &str, special: &[char], out: &mut String) {
    let mut rest = s;
    while let Some(at) = rest.find(special) {
        out.push_str(&rest[..at]);
        out.push('\\');
        let c = rest.as_bytes()[at];
        out.push(if c == b'\n' { 'n' } else { char::from(c) });
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
}
