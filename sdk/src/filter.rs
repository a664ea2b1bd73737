//! What a filter implements: [`Filter`] (parsed families in, edited in
//! place) or [`RawFilter`] (bytes in, bytes out).
//!
//! The runtime makes one instance per filter per worker, calls
//! [`Filter::new`] once with the operator's config, asks for the
//! [`selectors`](Filter::selectors) once, then calls
//! [`filter`](Filter::filter) once per scrape with the selected families.
//! Register the type with [`export_filter!`](crate::export_filter) or
//! [`export_raw_filter!`](crate::export_raw_filter).

use crate::abi::{Level, log};
use crate::model::Families;
use crate::output;
use crate::selector;
use crate::text;

/// How many refusals one call's warning names; the rest are counted.
const LOGGED_REFUSALS: usize = 10;

/// A filter over parsed families.
///
/// What it leaves in `families` replaces, in the runtime's output, the
/// families it was given. It may only output families it selected, or
/// families whose names appear nowhere else in the scrape (a renamed
/// family, a derived gauge). Output anything else and the runtime serves
/// the input unfiltered and counts an error. Within its output, the
/// format's rules are kept for it: [`write`](crate::write) leaves out each
/// family or sample the runtime would refuse (logging what and why, as a
/// warning, once per call) and writes a family that appears twice as one.
pub trait Filter: Sized + 'static {
    /// Builds the filter from its config (the text the operator gave, often
    /// JSON; empty when none was given). An `Err` refuses to run: the reason
    /// is logged as an error and the runtime does not load the filter.
    fn new(config: &str) -> Result<Self, String>;

    /// The families the filter wants, one selector each: an exact family
    /// name, or a prefix ending with `*` (`*` alone selects everything).
    /// Asked once, right after [`new`](Filter::new). A family's name is the
    /// one its HELP/TYPE lines spell (`x_total` or `x` for a counter, `x` for
    /// a histogram whose samples are `x_bucket`, ...).
    ///
    /// The default selects everything, which costs a full parse per scrape;
    /// select narrowly when you can.
    fn selectors(&self) -> Vec<String> {
        vec!["*".to_owned()]
    }

    /// Whether this scrape's selected families (`input`, as exposition
    /// text) need reshaping at all. `false` serves them as they came:
    /// [`filter`](Filter::filter) is not called, nothing is parsed, and the
    /// text is not copied out of the filter and compared, which is most of
    /// a filter's cost when it has nothing to do. Asked once per scrape,
    /// before `filter`; the default answers `true`. Answer `false` only
    /// when `filter` would leave the families as they are.
    fn changes(&mut self, input: &str) -> bool {
        let _ = input;
        true
    }

    /// Reshapes the selected families in place, once per scrape: edit,
    /// remove, reorder, or append families. The families arrive in scrape
    /// order, each with its HELP/TYPE lines; untouched samples are written
    /// back byte for byte.
    fn filter(&mut self, families: &mut Families);
}

/// A filter over the raw exposition text, for filters that do not need it
/// parsed (or parse it their own way).
///
/// The same rules as for [`Filter`] apply to what it outputs.
pub trait RawFilter: Sized + 'static {
    /// Builds the filter from its config; see [`Filter::new`].
    fn new(config: &str) -> Result<Self, String>;

    /// The families the filter wants; see [`Filter::selectors`]. The default
    /// selects everything.
    fn selectors(&self) -> Vec<String> {
        vec!["*".to_owned()]
    }

    /// Whether `input` needs reshaping at all; `false` serves it as it
    /// came, without calling [`filter_raw`](RawFilter::filter_raw). See
    /// [`Filter::changes`].
    fn changes(&mut self, input: &[u8]) -> bool {
        let _ = input;
        true
    }

    /// Writes the replacement for `input` (the selected families as
    /// exposition text) into `output`, which arrives empty.
    fn filter_raw(&mut self, input: &[u8], output: &mut Vec<u8>);
}

// === impl Instance ===

/// What one call of a filter came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The replacement is in `output`.
    Replaced,
    /// Serve the input as it came (`output` is left empty).
    Unchanged,
}

/// A running filter of either kind, as the ABI glue holds it.
pub(crate) trait Instance {
    fn selectors(&self) -> Vec<String>;

    /// `output` arrives empty.
    fn run(&mut self, input: &[u8], output: &mut Vec<u8>) -> Outcome;
}

/// Adapts a [`Filter`]: parses the input, filters, writes the output.
pub(crate) struct Structured<F>(pub(crate) F);

impl<F: Filter> Instance for Structured<F> {
    fn selectors(&self) -> Vec<String> {
        self.0.selectors()
    }

    fn run(&mut self, input: &[u8], output: &mut Vec<u8>) -> Outcome {
        let text = match std::str::from_utf8(input) {
            Ok(text) => text,
            Err(e) => {
                log(
                    Level::Warn,
                    &format!("input is not UTF-8 ({e}); passed through unchanged"),
                );
                return Outcome::Unchanged;
            }
        };
        if !self.0.changes(text) {
            return Outcome::Unchanged;
        }
        let mut families = match text::parse(text) {
            Ok(families) => Families::from(families),
            Err(e) => {
                log(
                    Level::Error,
                    &format!("cannot parse input ({e}); passed through unchanged"),
                );
                return Outcome::Unchanged;
            }
        };
        self.0.filter(&mut families);
        // `output` is empty, so this reuses its allocation without copying.
        let mut out = String::from_utf8(std::mem::take(output)).unwrap_or_default();
        out.reserve(input.len());
        let refusals = output::write(&families, &mut out);
        *output = out.into_bytes();
        if !refusals.is_empty() {
            // One line per call, bounded: the runtime rate-limits its log.
            log(Level::Warn, &output::summary(&refusals, LOGGED_REFUSALS));
        }
        Outcome::Replaced
    }
}

/// Adapts a [`RawFilter`].
pub(crate) struct Raw<F>(pub(crate) F);

impl<F: RawFilter> Instance for Raw<F> {
    fn selectors(&self) -> Vec<String> {
        self.0.selectors()
    }

    fn run(&mut self, input: &[u8], output: &mut Vec<u8>) -> Outcome {
        if !self.0.changes(input) {
            return Outcome::Unchanged;
        }
        self.0.filter_raw(input, output);
        Outcome::Replaced
    }
}

/// Builds an instance of either kind from its config, checking its
/// selectors; the `Err` says why it cannot run.
pub(crate) fn build(
    new: impl FnOnce(&str) -> Result<Box<dyn Instance>, String>,
    config: &str,
) -> Result<Box<dyn Instance>, String> {
    let instance = new(config)?;
    for s in instance.selectors() {
        selector::check(&s)?;
    }
    Ok(instance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Family;

    struct Upper;

    impl Filter for Upper {
        fn new(_: &str) -> Result<Self, String> {
            Ok(Upper)
        }

        fn filter(&mut self, families: &mut Families) {
            for family in families.iter_mut() {
                family.help = family.help.as_deref().map(str::to_uppercase);
            }
            families.push(Family::new_gauge("added", "Added."));
        }
    }

    /// What the runtime would serve: the output, or the input as it came.
    fn served(instance: &mut dyn Instance, input: &[u8]) -> (Vec<u8>, Outcome) {
        let mut out = b"stale".to_vec();
        out.clear();
        match instance.run(input, &mut out) {
            Outcome::Replaced => (out, Outcome::Replaced),
            Outcome::Unchanged => {
                assert!(out.is_empty(), "an unchanged answer leaves output empty");
                (input.to_vec(), Outcome::Unchanged)
            }
        }
    }

    fn run(input: &[u8]) -> Vec<u8> {
        served(&mut Structured(Upper), input).0
    }

    #[test]
    fn structured_parses_filters_writes() {
        assert_eq!(
            run(b"# HELP x Hi.\nx 1\n"),
            b"# HELP x HI.\nx 1\n# HELP added Added.\n# TYPE added gauge\n"
        );
        assert_eq!(run(b""), b"# HELP added Added.\n# TYPE added gauge\n");
    }

    #[test]
    fn structured_passes_bad_input_through() {
        for input in [&b"x 1\n\xff\n"[..], b"x one\n"] {
            assert_eq!(
                served(&mut Structured(Upper), input),
                (input.to_vec(), Outcome::Unchanged)
            );
        }
    }

    /// Drops `drop_me`; has nothing to do, and says so, without it.
    struct DropOne;

    impl Filter for DropOne {
        fn new(_: &str) -> Result<Self, String> {
            Ok(DropOne)
        }

        fn changes(&mut self, input: &str) -> bool {
            input.contains("drop_me")
        }

        fn filter(&mut self, families: &mut Families) {
            families.retain(|f| f.name != "drop_me");
        }
    }

    impl RawFilter for DropOne {
        fn new(_: &str) -> Result<Self, String> {
            Ok(DropOne)
        }

        fn changes(&mut self, input: &[u8]) -> bool {
            input.windows(7).any(|w| w == b"drop_me")
        }

        fn filter_raw(&mut self, input: &[u8], output: &mut Vec<u8>) {
            let text = std::str::from_utf8(input).unwrap();
            for line in text.split_inclusive('\n') {
                if !line.contains("drop_me") {
                    output.extend_from_slice(line.as_bytes());
                }
            }
        }
    }

    #[test]
    fn a_filter_with_nothing_to_change_answers_unchanged() {
        let keep = b"# TYPE x gauge\nx 1\n";
        let drop = b"# TYPE x gauge\nx 1\ndrop_me 2\n";
        for instance in [
            &mut Structured(DropOne) as &mut dyn Instance,
            &mut Raw(DropOne),
        ] {
            assert_eq!(served(instance, keep), (keep.to_vec(), Outcome::Unchanged));
            assert_eq!(served(instance, drop), (keep.to_vec(), Outcome::Replaced));
        }
    }

    struct Reserved;

    impl Filter for Reserved {
        fn new(_: &str) -> Result<Self, String> {
            Ok(Reserved)
        }

        fn filter(&mut self, families: &mut Families) {
            for family in families.iter_mut() {
                family.rename("matrixinfer_runtime_filter_enabled");
            }
            let mut kept = Family::new("kept");
            kept.push_sample([("a", "1")], 1.0);
            families.push(kept);
        }
    }

    #[test]
    fn structured_leaves_out_what_the_runtime_refuses() {
        assert_eq!(
            served(&mut Structured(Reserved), b"x 1\n"),
            (b"kept{a=\"1\"} 1\n".to_vec(), Outcome::Replaced)
        );
    }

    #[test]
    fn default_selects_everything() {
        assert_eq!(Upper.selectors(), ["*"]);
    }
}
