//! The metric model a [`Filter`](crate::Filter) edits: [`Families`] of
//! [`Family`], each holding its [`Sample`]s.
//!
//! Everything is kept as the exposition text spelled it (names, label order,
//! the value's digits, the timestamp), so a sample the filter does not touch
//! is written back byte for byte.
//!
//! The builders take any name and any label, so that editing stays simple;
//! [`write`](crate::write) is where the runtime's rules are enforced: a
//! family or sample the runtime would refuse (a name that is not a metric
//! name or is in its `matrixinfer_runtime_` namespace, a label name that is
//! not one, `__name__`, a value that is not a number, a series twice, ...)
//! is left out and reported, and the rest of the output still counts.

use std::fmt::Write as _;
use std::ops::{Deref, DerefMut};

use expo::MetricType;

// === impl Family ===

/// One metric family: its `# HELP` and `# TYPE` lines, if it had them, and
/// its samples, in input order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Family {
    /// The family's name, as its HELP/TYPE lines spell it (for a counter
    /// that may be `x` or `x_total`), or its samples' name when it has no
    /// metadata.
    pub name: String,
    /// The HELP text, unescaped (`\\` and `\n` decoded); `None` without a
    /// HELP line.
    pub help: Option<String>,
    /// The type as the TYPE line spells it: `counter`, `gauge`,
    /// `histogram`, `summary`, `untyped`, ...; `None` without a TYPE line.
    pub kind: Option<String>,
    /// The samples, in input order.
    pub samples: Vec<Sample>,
}

impl Family {
    /// A family with neither HELP nor TYPE line, and no samples.
    ///
    /// A `name` that is not a metric name, or is in the runtime's
    /// `matrixinfer_runtime_` namespace, is not checked here: [`write`]
    /// leaves such a family out, and reports it.
    ///
    /// [`write`]: crate::write
    pub fn new(name: impl Into<String>) -> Family {
        Family {
            name: name.into(),
            ..Family::default()
        }
    }

    /// A gauge family with a HELP line and no samples yet. The name is
    /// checked when written, as for [`Family::new`].
    ///
    /// ```
    /// let mut f = matrixinfer_filter::Family::new_gauge("x_ratio", "A ratio.");
    /// f.push_sample([("pod", "p-1")], 0.5);
    /// assert_eq!(f.samples[0].name, "x_ratio");
    /// ```
    pub fn new_gauge(name: impl Into<String>, help: impl Into<String>) -> Family {
        Family {
            name: name.into(),
            help: Some(help.into()),
            kind: Some("gauge".to_owned()),
            samples: Vec::new(),
        }
    }

    /// Appends a sample named like the family, with these labels (in this
    /// order) and this value (formatted as [`Sample::set_value`] does), and
    /// returns it for further changes.
    pub fn push_sample<K, V>(
        &mut self,
        labels: impl IntoIterator<Item = (K, V)>,
        value: f64,
    ) -> &mut Sample
    where
        K: Into<String>,
        V: Into<String>,
    {
        let mut sample = Sample::new(self.name.clone(), value);
        sample.labels = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self.samples.push(sample);
        self.samples.last_mut().expect("a sample was just pushed")
    }

    /// Renames the family and each of its samples. A sample keeps whatever
    /// followed the family's name in its own name, so `x_bucket` becomes
    /// `y_bucket` and `x_total` becomes `y_total`; a sample whose name does
    /// not start with the family's name (which the parser never produces)
    /// is left as it is. The new name is checked when written, as for
    /// [`Family::new`]: check it with [`is_metric_name`] and [`is_reserved`]
    /// first to keep the old one instead.
    ///
    /// [`is_metric_name`]: crate::is_metric_name
    /// [`is_reserved`]: crate::is_reserved
    pub fn rename(&mut self, new: &str) {
        for sample in &mut self.samples {
            if let Some(suffix) = sample.name.strip_prefix(self.name.as_str()) {
                sample.name = format!("{new}{suffix}");
            }
        }
        new.clone_into(&mut self.name);
    }

    /// The suffixes a sample name may add to the family's name and still
    /// belong to it, by the family's type: a counter's `_total` and
    /// `_created`, a histogram's `_bucket`, `_sum`, `_count` and `_created`,
    /// a summary's `_sum`, `_count` and `_created` (OpenMetrics'
    /// `gaugehistogram` and `info` too). Other types have none: their
    /// samples carry the family's name exactly. The runtime's rule
    /// ([`expo::MetricType::suffixes`]), not a copy of it.
    pub fn sample_suffixes(&self) -> &'static [&'static str] {
        self.metric_type().suffixes()
    }

    /// Whether a sample called `sample_name` belongs to this family, by the
    /// rule the runtime groups samples with ([`expo::MetricType::owns`]):
    /// the family's name plus one of its
    /// [`sample_suffixes`](Family::sample_suffixes), or the name alone for
    /// every type but the histograms (whose samples always carry a suffix).
    pub fn owns(&self, sample_name: &str) -> bool {
        self.metric_type()
            .owns(self.name.as_bytes(), sample_name.as_bytes())
    }

    /// The type [`kind`](Family::kind) names, leniently (a type the
    /// runtime does not know, or none, is untyped).
    pub(crate) fn metric_type(&self) -> MetricType {
        self.kind.as_deref().map_or(MetricType::Untyped, |kind| {
            MetricType::parse(kind.as_bytes())
        })
    }
}

// === impl Sample ===

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// The sample's name: the family's name, or it plus a suffix such as
    /// `_bucket` (see [`Family::owns`]).
    pub name: String,
    /// Labels in input order, values unescaped.
    pub labels: Vec<(String, String)>,
    /// The value exactly as the input spelled it (`3.0`, `8.128902e+06`,
    /// `NaN`, `+Inf`), so that an untouched sample is written back byte for
    /// byte. Read it with [`value_f64`](Sample::value_f64), change it with
    /// [`set_value`](Sample::set_value).
    pub value: String,
    /// The timestamp (milliseconds since the epoch) as the input spelled it.
    pub timestamp: Option<String>,
}

impl Sample {
    /// A sample without labels or timestamp.
    pub fn new(name: impl Into<String>, value: f64) -> Sample {
        let mut sample = Sample {
            name: name.into(),
            ..Sample::default()
        };
        sample.set_value(value);
        sample
    }

    /// The value as a number: `NaN`, `+Inf`, `-Inf` (any case, `Inf` and
    /// `Infinity` too), and decimal or exponent notation such as
    /// `8.128902e+06`. `None` if the text is not a number.
    pub fn value_f64(&self) -> Option<f64> {
        self.value.parse().ok()
    }

    /// Sets the value, formatted as follows:
    ///
    /// - `NaN`, `+Inf` and `-Inf` for those values;
    /// - a whole number below 10^15 in magnitude as plain digits, with no
    ///   fraction or exponent: `3`, `41510`, `-0`;
    /// - any other number from 10^-4 up to 10^15 in magnitude as the
    ///   shortest decimal that reads back as the same `f64`: `0.0734`,
    ///   `1712.0312091`;
    /// - anything else as the shortest mantissa with an exponent, as Rust's
    ///   `{:e}` writes it: `1.5e-7`, `1e21`.
    ///
    /// Prometheus parses all of these.
    pub fn set_value(&mut self, value: f64) {
        self.value.clear();
        let magnitude = value.abs();
        let _ = if value.is_nan() {
            write!(self.value, "NaN")
        } else if value.is_infinite() {
            write!(self.value, "{}", if value > 0.0 { "+Inf" } else { "-Inf" })
        } else if magnitude < 1e15 && (value.fract() == 0.0 || magnitude >= 1e-4) {
            write!(self.value, "{value}")
        } else {
            write!(self.value, "{value:e}")
        };
    }

    /// The value of the label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets the label `name` to `value`: in place if the sample has it,
    /// otherwise appended after the other labels. Any value works (it is
    /// escaped when written); a `name` that is not a label name
    /// ([`is_label_name`](crate::is_label_name)), or `__name__`, makes
    /// [`write`](crate::write) leave the sample out.
    pub fn set_label(&mut self, name: &str, value: &str) {
        match self.labels.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => value.clone_into(v),
            None => self.labels.push((name.to_owned(), value.to_owned())),
        }
    }

    /// Removes the label `name` and returns its value, if the sample had it.
    pub fn remove_label(&mut self, name: &str) -> Option<String> {
        let at = self.labels.iter().position(|(k, _)| k == name)?;
        Some(self.labels.remove(at).1)
    }
}

// === impl Families ===

/// The families given to a filter, in input order; the filter edits them in
/// place, and what remains afterwards is its output.
///
/// It dereferences to `[Family]`, so slice methods (`iter`, `iter_mut`,
/// `len`, indexing, sorting) work too. A family split in two in the input
/// (as multiprocess exporters do) appears twice with the same name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Families(Vec<Family>);

impl Families {
    /// No families.
    pub fn new() -> Families {
        Families(Vec::new())
    }

    /// The first family called `name`.
    pub fn find(&self, name: &str) -> Option<&Family> {
        self.0.iter().find(|f| f.name == name)
    }

    /// The first family called `name`, to change it.
    pub fn find_mut(&mut self, name: &str) -> Option<&mut Family> {
        self.0.iter_mut().find(|f| f.name == name)
    }

    /// Appends a family at the end.
    pub fn push(&mut self, family: Family) {
        self.0.push(family);
    }

    /// Keeps only the families for which `keep` returns true, in order.
    pub fn retain(&mut self, keep: impl FnMut(&Family) -> bool) {
        self.0.retain(keep);
    }

    /// Keeps only the families for which `keep` returns true, and lets it
    /// change them on the way.
    pub fn retain_mut(&mut self, keep: impl FnMut(&mut Family) -> bool) {
        self.0.retain_mut(keep);
    }

    /// The underlying vector.
    pub fn into_vec(self) -> Vec<Family> {
        self.0
    }
}

impl Deref for Families {
    type Target = [Family];

    fn deref(&self) -> &[Family] {
        &self.0
    }
}

impl DerefMut for Families {
    fn deref_mut(&mut self) -> &mut [Family] {
        &mut self.0
    }
}

impl From<Vec<Family>> for Families {
    fn from(families: Vec<Family>) -> Families {
        Families(families)
    }
}

impl From<Families> for Vec<Family> {
    fn from(families: Families) -> Vec<Family> {
        families.0
    }
}

impl FromIterator<Family> for Families {
    fn from_iter<I: IntoIterator<Item = Family>>(iter: I) -> Families {
        Families(iter.into_iter().collect())
    }
}

impl Extend<Family> for Families {
    fn extend<I: IntoIterator<Item = Family>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl IntoIterator for Families {
    type Item = Family;
    type IntoIter = std::vec::IntoIter<Family>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Families {
    type Item = &'a Family;
    type IntoIter = std::slice::Iter<'a, Family>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a mut Families {
    type Item = &'a mut Family;
    type IntoIter = std::slice::IterMut<'a, Family>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: f64) -> String {
        Sample::new("x", v).value
    }

    #[test]
    fn value_f64_reads_what_engines_write() {
        let read = |s: &str| {
            Sample {
                value: s.to_owned(),
                ..Sample::default()
            }
            .value_f64()
        };
        assert_eq!(read("3.0"), Some(3.0));
        assert_eq!(read("8.128902e+06"), Some(8_128_902.0));
        assert_eq!(read("1.7453004711863737e+09"), Some(1.7453004711863737e9));
        assert_eq!(read("+Inf"), Some(f64::INFINITY));
        assert_eq!(read("-Inf"), Some(f64::NEG_INFINITY));
        assert!(read("NaN").unwrap().is_nan());
        assert_eq!(read("-0.0"), Some(0.0));
        assert_eq!(read("0"), Some(0.0));
        assert_eq!(read("1e-3"), Some(0.001));
        assert_eq!(read("three"), None);
        assert_eq!(read(""), None);
    }

    #[test]
    fn set_value_formats() {
        assert_eq!(value(f64::NAN), "NaN");
        assert_eq!(value(f64::INFINITY), "+Inf");
        assert_eq!(value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(value(3.0), "3");
        assert_eq!(value(0.0), "0");
        assert_eq!(value(-0.0), "-0");
        assert_eq!(value(41510.0), "41510");
        assert_eq!(value(8_128_902.0), "8128902");
        assert_eq!(value(-12.0), "-12");
        assert_eq!(value(0.0734), "0.0734");
        assert_eq!(value(1712.0312091), "1712.0312091");
        assert_eq!(value(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(value(1e-4), "0.0001");
        assert_eq!(value(1.5e-7), "1.5e-7");
        assert_eq!(value(1e15), "1e15");
        assert_eq!(value(1.7453004711863737e9), "1745300471.1863737");
        assert_eq!(value(1e300), "1e300");
        assert_eq!(value(f64::MIN_POSITIVE), "2.2250738585072014e-308");
    }

    #[test]
    fn set_value_reads_back_exactly() {
        for v in [
            0.1,
            1.0 / 3.0,
            1e-9,
            123_456_789.123,
            9.99e14,
            1e16 + 2.0,
            -5e-5,
        ] {
            let mut s = Sample::default();
            s.set_value(v);
            assert_eq!(s.value_f64(), Some(v), "{v} written as {}", s.value);
        }
    }

    #[test]
    fn labels() {
        let mut s = Sample::new("x", 1.0);
        s.labels = vec![("a".into(), "1".into()), ("le".into(), "0.5".into())];
        assert_eq!(s.label("le"), Some("0.5"));
        assert_eq!(s.label("b"), None);
        s.set_label("a", "2");
        s.set_label("b", "");
        assert_eq!(
            s.labels,
            [
                ("a".into(), "2".into()),
                ("le".into(), "0.5".into()),
                ("b".into(), String::new())
            ]
        );
        assert_eq!(s.label("b"), Some(""));
        assert_eq!(s.remove_label("le").as_deref(), Some("0.5"));
        assert_eq!(s.remove_label("le"), None);
        assert_eq!(s.labels.len(), 2);
    }

    #[test]
    fn rename_keeps_sample_suffixes() {
        let mut f = Family::new("vllm:ttft_seconds");
        f.kind = Some("histogram".into());
        for name in [
            "vllm:ttft_seconds_bucket",
            "vllm:ttft_seconds_sum",
            "vllm:ttft_seconds_count",
        ] {
            f.samples.push(Sample::new(name, 1.0));
        }
        f.samples.push(Sample::new("other", 1.0));
        f.rename("engine:ttft_seconds");
        assert_eq!(f.name, "engine:ttft_seconds");
        let names: Vec<_> = f.samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "engine:ttft_seconds_bucket",
                "engine:ttft_seconds_sum",
                "engine:ttft_seconds_count",
                "other"
            ]
        );
    }

    #[test]
    fn rename_counter_declared_without_total() {
        let mut f = Family::new("vllm:generation_tokens");
        f.kind = Some("counter".into());
        f.samples
            .push(Sample::new("vllm:generation_tokens_total", 1.0));
        f.samples
            .push(Sample::new("vllm:generation_tokens_created", 1.0));
        f.rename("x");
        assert_eq!(f.samples[0].name, "x_total");
        assert_eq!(f.samples[1].name, "x_created");
    }

    #[test]
    fn owns_by_type() {
        let mut f = Family::new("x");
        assert!(f.owns("x"));
        assert!(!f.owns("x_total"));
        assert!(!f.owns("y"));
        f.kind = Some("counter".into());
        assert!(f.owns("x_total") && f.owns("x_created") && !f.owns("x_sum"));
        f.kind = Some("histogram".into());
        assert!(f.owns("x_bucket") && f.owns("x_sum") && f.owns("x_count"));
        assert!(!f.owns("x_total") && !f.owns("x_bucketx"));
        assert!(!f.owns("x"), "a histogram's samples carry a suffix");
        f.kind = Some("summary".into());
        assert!(f.owns("x") && f.owns("x_sum") && !f.owns("x_bucket"));
        f.kind = Some("gauge".into());
        assert!(f.owns("x") && !f.owns("x_total"));
        f.kind = Some("info".into());
        assert!(f.owns("x") && f.owns("x_info"));
        f.kind = Some("something new".into());
        assert!(f.owns("x") && !f.owns("x_total"));
    }

    #[test]
    fn histogram_does_not_own_its_bare_name() {
        // The runtime's rule: a sample named like a histogram is not one of
        // its samples (Prometheus reads it as a family of its own).
        let mut f = Family::new("h");
        f.kind = Some("histogram".into());
        assert!(!f.owns("h"));
        assert!(!expo::MetricType::Histogram.owns(b"h", b"h"));
        f.kind = Some("gaugehistogram".into());
        assert!(!f.owns("h") && f.owns("h_gsum"));
        assert_eq!(f.sample_suffixes(), ["_bucket", "_gsum", "_gcount"]);
    }

    #[test]
    fn owns_is_the_runtimes_rule() {
        for kind in [
            None,
            Some("counter"),
            Some("gauge"),
            Some("histogram"),
            Some("gaugehistogram"),
            Some("summary"),
            Some("info"),
            Some("stateset"),
            Some("untyped"),
            Some("unknown"),
        ] {
            let mut f = Family::new("x");
            f.kind = kind.map(str::to_owned);
            let rule = expo::MetricType::parse(kind.unwrap_or("").as_bytes());
            for suffix in [
                "", "_total", "_created", "_bucket", "_sum", "_count", "_info",
            ] {
                let name = format!("x{suffix}");
                assert_eq!(
                    f.owns(&name),
                    rule.owns(b"x", name.as_bytes()),
                    "{kind:?} {name}"
                );
            }
            assert_eq!(f.sample_suffixes(), rule.suffixes());
        }
    }

    #[test]
    fn new_gauge_and_push_sample() {
        let mut f = Family::new_gauge("m", "Help.");
        f.push_sample([("a", "1")], 2.5).timestamp = Some("17".into());
        f.push_sample(Vec::<(String, String)>::new(), 1.0);
        assert_eq!(f.kind.as_deref(), Some("gauge"));
        assert_eq!(f.samples[0].labels, [("a".to_owned(), "1".to_owned())]);
        assert_eq!(f.samples[0].value, "2.5");
        assert_eq!(f.samples[1].value, "1");
    }

    #[test]
    fn families_find_push_retain() {
        let mut fs: Families = ["a", "b", "a"].into_iter().map(Family::new).collect();
        fs[2].help = Some("second".into());
        assert_eq!(fs.find("a").unwrap().help, None);
        fs.find_mut("b").unwrap().help = Some("b".into());
        fs.push(Family::new("c"));
        fs.retain(|f| f.name != "a");
        let names: Vec<_> = fs.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["b", "c"]);
        assert!(fs.find("a").is_none());
        for f in &mut fs {
            f.name.push('!');
        }
        assert_eq!(fs.into_vec()[0].name, "b!");
    }
}
