//! The family rules of a whole text: what [`crate::check_line`] cannot see
//! from one line. HELP and TYPE at most once per family and before its
//! samples, each family in one piece, no series twice, `le` and `quantile`
//! bounds that are numbers, nothing in the runtime's own namespace, no
//! family that belongs to someone else in the scrape ([`Scope`]), and no new
//! family whose samples another would claim by suffix.
//!
//! The runtime holds a WASM filter's output to [`Checker::check`]; the guest
//! SDK's tests hold what its writer emits to the same function.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;

use crate::{CLAIMED_SUFFIXES, Checked, LineError, MetricType};

/// Why output was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A line that is not exposition text.
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        error: LineError,
    },
    /// Bytes that are not UTF-8.
    NotUtf8,
    /// The last line has no `\n`: it would run into the next family.
    NoFinalNewline,
    /// A HELP or TYPE line after the family's samples, or twice.
    LateMetadata {
        /// 1-based line number.
        line: usize,
        /// The family.
        family: String,
    },
    /// A family declared twice, or split.
    Repeated(String),
    /// The same series twice.
    DuplicateSeries {
        /// 1-based line number.
        line: usize,
    },
    /// A histogram bucket or summary quantile whose bound is not a number.
    BadBound {
        /// 1-based line number.
        line: usize,
    },
    /// A family in the runtime's own `matrixinfer_runtime_` namespace.
    Reserved(String),
    /// A new family whose samples another family would claim by suffix,
    /// or that would claim another family's.
    Collides {
        /// The family written.
        family: String,
        /// The family it collides with.
        other: String,
    },
    /// A family the filter did not select, which exists elsewhere.
    Foreign(String),
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::Malformed { line, error } => write!(f, "line {line}: {error}"),
            Violation::NotUtf8 => write!(f, "not UTF-8"),
            Violation::NoFinalNewline => write!(f, "the last line has no final newline"),
            Violation::LateMetadata { line, family } => {
                write!(
                    f,
                    "line {line}: HELP or TYPE of {family} repeated or after its samples"
                )
            }
            Violation::Repeated(family) => write!(f, "family {family} appears twice"),
            Violation::DuplicateSeries { line } => write!(f, "line {line}: a series appears twice"),
            Violation::BadBound { line } => {
                write!(f, "line {line}: the le or quantile label is not a number")
            }
            Violation::Reserved(family) => {
                write!(f, "family {family} is in the runtime's own namespace")
            }
            Violation::Collides { family, other } => {
                write!(f, "family {family} collides with family {other} by suffix")
            }
            Violation::Foreign(family) => write!(
                f,
                "family {family} was not selected by this filter and exists elsewhere in the scrape"
            ),
        }
    }
}

impl std::error::Error for Violation {}

/// Where a family name stands in the scrape, as far as one filter's
/// output is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Nowhere else: the filter may create it.
    New,
    /// Given to this filter (it may write it back, changed or not).
    Mine,
    /// In the output, or given to another filter.
    Elsewhere,
}

/// What the check needs to know of the rest of the scrape.
pub trait Scope {
    /// Whether the filter's selectors select `family`.
    fn selects(&self, family: &[u8]) -> bool;
    /// Where `family` stands in the scrape.
    fn presence(&self, family: &[u8]) -> Presence;
    /// Whether the text may hold the runtime's own families (true only
    /// when checking a whole response).
    fn is_runtime(&self) -> bool {
        false
    }
}

/// Reusable state of [`check`], so a warm worker allocates little.
#[derive(Debug, Default)]
pub struct Checker {
    /// The series of the family being checked, by hash.
    series: HashSet<u64, foldhash::fast::FixedState>,
    /// The families checked so far, by a hash of their names.
    done: Families,
    name: Vec<u8>,
    hasher: foldhash::fast::FixedState,
}

type Families = HashMap<u64, MetricType, foldhash::fast::FixedState>;

struct Current<'t> {
    name: &'t [u8],
    name_at: Range<usize>,
    kind: MetricType,
    has_help: bool,
    has_type: bool,
    has_samples: bool,
    start: usize,
}

impl Checker {
    /// Checks `text`, a filter's whole output, family by family; each
    /// family's name and lines go to `family` (so the caller can route it).
    /// Returns the first violation.
    pub fn check<'t>(
        &mut self,
        text: &'t [u8],
        scope: &impl Scope,
        mut family: impl FnMut(Range<usize>, Range<usize>),
    ) -> Result<(), Violation> {
        if text.is_empty() {
            return Ok(());
        }
        if text.last() != Some(&b'\n') {
            return Err(Violation::NoFinalNewline);
        }
        std::str::from_utf8(text).map_err(|_| Violation::NotUtf8)?;
        let mut done = std::mem::take(&mut self.done);
        done.clear();
        let mut current: Option<Current<'t>> = None;
        let mut offset = 0;
        let mut number = 0;
        // The text ends with a newline (checked above): every line has one.
        for newline in memchr::memchr_iter(b'\n', text) {
            number += 1;
            let content = &text[offset..newline];
            let start = offset;
            offset = newline + 1;
            let malformed = |error| Violation::Malformed {
                line: number,
                error,
            };
            // Each label of a sample is hashed as the check passes it: the
            // series' identity, whatever the order of its labels.
            let mut labels_hash = 0u64;
            let mut bounds = Bounds::default();
            let checked = crate::check_line_with_labels(content, |name, value| {
                let (label, value_bytes) = (&content[name], &content[value.clone()]);
                let mut hasher = self.hasher.build_hasher();
                hasher.write(label);
                hasher.write_u8(0xff);
                hasher.write(value_bytes);
                labels_hash = labels_hash.wrapping_add(hasher.finish());
                match label {
                    b"le" => bounds.le = Some(value),
                    b"quantile" => bounds.quantile = Some(value),
                    _ => {}
                }
            })
            .map_err(malformed)?;
            let (name_range, kind) = match &checked {
                Checked::Blank | Checked::Comment => continue,
                Checked::Help { name } => (name.clone(), None),
                Checked::Type { name, kind } => (name.clone(), Some(*kind)),
                Checked::Sample { name, .. } => {
                    let name_bytes = &content[name.clone()];
                    if crate::is_reserved(name_bytes) && !scope.is_runtime() {
                        return Err(Violation::Reserved(lossy(name_bytes)));
                    }
                    if let Some(c) = &mut current
                        && c.kind.owns(c.name, name_bytes)
                    {
                        c.has_samples = true;
                        let sample = Sample {
                            name: name.clone(),
                            bounds: bounds.clone(),
                            labels_hash,
                        };
                        self.sample(content, sample, c, number)?;
                        continue;
                    }
                    (name.clone(), None)
                }
            };
            let name = &content[name_range.clone()];
            let is_sample = matches!(checked, Checked::Sample { .. });
            if let Some(c) = &mut current
                && c.name == name
                && !is_sample
            {
                let repeated = if kind.is_some() {
                    c.has_type
                } else {
                    c.has_help
                };
                if repeated || c.has_samples {
                    return Err(Violation::LateMetadata {
                        line: number,
                        family: lossy(name),
                    });
                }
                if let Some(kind) = kind {
                    c.has_type = true;
                    c.kind = kind;
                } else {
                    c.has_help = true;
                }
                continue;
            }
            if let Some(c) = current.take() {
                self.close(c, start, &mut done, scope, &mut family)?;
            }
            self.open(name, &done, scope)?;
            let mut next = Current {
                name,
                name_at: start + name_range.start..start + name_range.end,
                kind: kind.unwrap_or(MetricType::Untyped),
                has_help: matches!(checked, Checked::Help { .. }),
                has_type: kind.is_some(),
                has_samples: is_sample,
                start,
            };
            self.series.clear();
            if let Checked::Sample { name, .. } = checked {
                let sample = Sample {
                    name,
                    bounds,
                    labels_hash,
                };
                self.sample(content, sample, &mut next, number)?;
            }
            current = Some(next);
        }
        if let Some(c) = current.take() {
            self.close(c, offset, &mut done, scope, &mut family)?;
        }
        self.done = done;
        Ok(())
    }

    /// A family starts: it must be the filter's to write, and not one
    /// that another family's samples would claim.
    fn open(&mut self, name: &[u8], done: &Families, scope: &impl Scope) -> Result<(), Violation> {
        if crate::is_reserved(name) && !scope.is_runtime() {
            return Err(Violation::Reserved(lossy(name)));
        }
        if done.contains_key(&self.hasher.hash_one(name)) {
            return Err(Violation::Repeated(lossy(name)));
        }
        let presence = scope.presence(name);
        if presence == Presence::Elsewhere && !scope.selects(name) {
            return Err(Violation::Foreign(lossy(name)));
        }
        for suffix in CLAIMED_SUFFIXES {
            let Some(base) = name.strip_suffix(suffix.as_bytes()) else {
                continue;
            };
            // The type of a family elsewhere in the scrape is not known
            // here: any base name there counts.
            let claimed = match done.get(&self.hasher.hash_one(base)) {
                Some(kind) => kind.claims().contains(&suffix),
                None => presence == Presence::New && scope.presence(base) == Presence::Elsewhere,
            };
            if claimed {
                return Err(Violation::Collides {
                    family: lossy(name),
                    other: lossy(base),
                });
            }
        }
        Ok(())
    }

    /// A family ends: its samples' names must not be families of their
    /// own elsewhere.
    fn close(
        &mut self,
        c: Current<'_>,
        end: usize,
        done: &mut Families,
        scope: &impl Scope,
        family: &mut impl FnMut(Range<usize>, Range<usize>),
    ) -> Result<(), Violation> {
        let new = scope.presence(c.name) == Presence::New;
        for suffix in c.kind.claims() {
            self.name.clear();
            self.name.extend_from_slice(c.name);
            self.name.extend_from_slice(suffix.as_bytes());
            let other = self.name.as_slice();
            let in_output = done.contains_key(&self.hasher.hash_one(other));
            if in_output || (new && scope.presence(other) == Presence::Elsewhere) {
                return Err(Violation::Collides {
                    family: lossy(c.name),
                    other: lossy(other),
                });
            }
        }
        done.insert(self.hasher.hash_one(c.name), c.kind);
        family(c.name_at, c.start..end);
        Ok(())
    }

    /// One sample of family `c`: its bound, and a series not seen before.
    fn sample(
        &mut self,
        line: &[u8],
        sample: Sample,
        c: &mut Current<'_>,
        number: usize,
    ) -> Result<(), Violation> {
        let name = &line[sample.name];
        let bound = match (c.kind, &name[c.name.len()..]) {
            (MetricType::Histogram, b"_bucket") => sample.bounds.le,
            (MetricType::Summary, b"") => sample.bounds.quantile,
            _ => None,
        };
        if bound.is_some_and(|value| !crate::is_value(&line[value])) {
            return Err(Violation::BadBound { line: number });
        }
        let hash = self.hasher.hash_one(name).wrapping_add(sample.labels_hash);
        if !self.series.insert(hash) {
            return Err(Violation::DuplicateSeries { line: number });
        }
        Ok(())
    }
}

/// The values of a sample's `le` and `quantile` labels.
#[derive(Clone, Default)]
struct Bounds {
    le: Option<Range<usize>>,
    quantile: Option<Range<usize>>,
}

/// What the check kept of a sample line.
struct Sample {
    name: Range<usize>,
    bounds: Bounds,
    /// Its labels' hashes, added up (so their order does not matter).
    labels_hash: u64,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests;
