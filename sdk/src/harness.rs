//! Running a filter natively, for its tests: no wasm, no runtime, the same
//! changes? → parse → filter → write a module does on each call.

use crate::filter::{Filter, RawFilter};
use crate::model::Families;
use crate::output::{self, Refusal};
use crate::selector::{self, matches};
use crate::text;

/// Builds `F` from `config`, runs it once on `input`, and returns its output
/// as text (`input` itself when [`Filter::changes`] says there is nothing to
/// change, as the runtime would serve it). The `Err` is `F`'s refusal of its
/// config (or of its selectors, as `mi_init` would), a parse error in
/// `input`, or the list of what
/// [`write`](crate::write) left out of the output because the runtime would
/// refuse it (a module logs those as a warning and serves the rest; a test
/// should not pass with them). To test a filter that expects some, use
/// [`run_with_refusals`].
///
/// `input` is what the runtime would hand the filter: the selected families
/// only (see [`selected`]).
pub fn run<F: Filter>(config: &str, input: &str) -> Result<String, String> {
    let (out, refusals) = run_with_refusals::<F>(config, input)?;
    if refusals.is_empty() {
        return Ok(out);
    }
    let mut error = format!(
        "output: left out {} item(s) the runtime would refuse:",
        refusals.len()
    );
    for refusal in &refusals {
        error.push_str("\n  ");
        error.push_str(&refusal.to_string());
    }
    Err(error)
}

/// [`run`], except that what [`write`](crate::write) left out is returned
/// beside the output rather than as an error.
pub fn run_with_refusals<F: Filter>(
    config: &str,
    input: &str,
) -> Result<(String, Vec<Refusal>), String> {
    let mut filter = F::new(config)?;
    for s in filter.selectors() {
        selector::check(&s)?;
    }
    if !filter.changes(input) {
        return Ok((input.to_owned(), Vec::new()));
    }
    let mut families = Families::from(text::parse(input).map_err(|e| format!("input: {e}"))?);
    filter.filter(&mut families);
    let mut out = String::with_capacity(input.len());
    let refusals = output::write(&families, &mut out);
    Ok((out, refusals))
}

/// [`run`] for a [`RawFilter`]. Its output is returned as it is: it does
/// not go through [`write`](crate::write), so nothing is left out, and
/// nothing checked (check lines with [`expo::check_line`]).
pub fn run_raw<F: RawFilter>(config: &str, input: &[u8]) -> Result<Vec<u8>, String> {
    let mut filter = F::new(config)?;
    for s in filter.selectors() {
        selector::check(&s)?;
    }
    if !filter.changes(input) {
        return Ok(input.to_vec());
    }
    let mut out = Vec::with_capacity(input.len());
    filter.filter_raw(input, &mut out);
    Ok(out)
}

/// The names of the families in `input` (a whole scrape) that `F`, built
/// from `config`, selects: those the runtime would hand it. In input order,
/// each once.
pub fn selected<F: Filter>(config: &str, input: &str) -> Result<Vec<String>, String> {
    let selectors = F::new(config)?.selectors();
    let mut names: Vec<String> = Vec::new();
    for family in text::parse(input).map_err(|e| format!("input: {e}"))? {
        if matches(&selectors, &family.name) && !names.contains(&family.name) {
            names.push(family.name);
        }
    }
    Ok(names)
}

/// Checks a filter crate's test pair: runs `F` with the config in
/// `<dir>/testdata/config.json` (or `config`, or an empty config when there
/// is neither) on
/// `<dir>/testdata/in.prom` and panics unless the output is
/// `<dir>/testdata/out.prom` byte for byte. Pass `env!("CARGO_MANIFEST_DIR")`.
///
/// It also checks that the pair is honest: every family of `in.prom` is one
/// `F` selects (so `in.prom` is exactly what the runtime would hand it),
/// nothing was left out of the output (see [`run`]), every output line
/// passes the runtime's [`expo::check_line`], and the output declares each
/// family once.
#[cfg(not(target_arch = "wasm32"))]
pub fn assert_testdata<F: Filter>(dir: &str) {
    let read = |name: &str| {
        let path = format!("{dir}/testdata/{name}");
        std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))
    };
    let config = read("config.json")
        .or_else(|_| read("config"))
        .unwrap_or_default();
    let input = read("in.prom").unwrap_or_else(|e| panic!("{e}"));
    let expected = read("out.prom").unwrap_or_else(|e| panic!("{e}"));

    let filter = F::new(&config).unwrap_or_else(|e| panic!("config refused: {e}"));
    let selectors = filter.selectors();
    for family in text::parse(&input).unwrap_or_else(|e| panic!("in.prom: {e}")) {
        assert!(
            matches(&selectors, &family.name),
            "in.prom holds {}, which the filter does not select ({selectors:?})",
            family.name
        );
    }

    let actual = run::<F>(&config, &input).unwrap_or_else(|e| panic!("{e}"));
    if actual != expected {
        let line = actual
            .lines()
            .zip(expected.lines())
            .take_while(|(a, e)| a == e)
            .count();
        panic!(
            "output differs from out.prom at line {}:\n  expected: {:?}\n  actual:   {:?}\n\
             --- actual output ---\n{actual}",
            line + 1,
            expected.lines().nth(line).unwrap_or("<end>"),
            actual.lines().nth(line).unwrap_or("<end>"),
        );
    }

    for (n, line) in actual.lines().enumerate() {
        if let Err(e) = expo::check_line(line.as_bytes()) {
            panic!("output line {}: {e}: {line:?}", n + 1);
        }
    }
    let families = text::parse(&actual).unwrap_or_else(|e| panic!("output: {e}"));
    for (i, family) in families.iter().enumerate() {
        assert!(
            !families[..i].iter().any(|f| f.name == family.name),
            "output declares {} twice",
            family.name
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct DropNan;

    impl Filter for DropNan {
        fn new(config: &str) -> Result<Self, String> {
            if config == "no" {
                Err("refused".to_owned())
            } else {
                Ok(DropNan)
            }
        }

        fn selectors(&self) -> Vec<String> {
            vec!["vllm:*".to_owned()]
        }

        fn filter(&mut self, families: &mut Families) {
            for f in families.iter_mut() {
                f.samples
                    .retain(|s| !s.value_f64().is_some_and(f64::is_nan));
            }
        }
    }

    #[test]
    fn runs() {
        assert_eq!(
            run::<DropNan>("", "vllm:a 1\nvllm:a NaN\n").unwrap(),
            "vllm:a 1\n"
        );
        assert_eq!(run::<DropNan>("no", "").unwrap_err(), "refused");
        assert!(
            run::<DropNan>("", "vllm:a\n")
                .unwrap_err()
                .starts_with("input: line 1")
        );
    }

    struct Hex;

    impl Filter for Hex {
        fn new(_: &str) -> Result<Self, String> {
            Ok(Hex)
        }

        fn filter(&mut self, families: &mut Families) {
            for sample in families.iter_mut().flat_map(|f| &mut f.samples) {
                sample.value = "0x10".to_owned();
            }
        }
    }

    #[test]
    fn refusals_fail_run() {
        let e = run::<Hex>("", "a 1\nb{c=\"d\"} 2\n").unwrap_err();
        assert_eq!(
            e,
            "output: left out 2 item(s) the runtime would refuse:\n  \
             family a, sample a 0x10: the value is not a number\n  \
             family b, sample b{c=\"d\"} 0x10: the value is not a number"
        );
        let (out, refusals) = run_with_refusals::<Hex>("", "a 1\n").unwrap();
        assert_eq!(out, "");
        assert_eq!(refusals.len(), 1);
        assert_eq!(
            run_with_refusals::<Hex>("", "").unwrap(),
            (String::new(), vec![])
        );
    }

    #[test]
    fn selects() {
        let scrape = "vllm:a 1\nsglang:b 2\n# TYPE vllm:c counter\nvllm:c_total 1\nvllm:a 3\n";
        assert_eq!(
            selected::<DropNan>("", scrape).unwrap(),
            ["vllm:a", "vllm:c"]
        );
    }
}
