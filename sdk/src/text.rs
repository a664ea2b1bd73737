//! The Prometheus text exposition format (0.0.4): [`parse`], and the name
//! checks; [`write`](crate::write) is in `output`.
//!
//! Well-formed input written back unchanged comes out byte for byte: HELP
//! text, label order, values and timestamps are kept as spelled. What is not
//! kept: comments other than `# HELP` and `# TYPE` (including OpenMetrics'
//! `# EOF`), blank lines, spacing beyond the single space the format uses
//! between tokens, and what the runtime would refuse (see
//! [`write`](crate::write)).

use std::fmt;

use crate::model::{Family, Sample};

/// Why a text could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    line: usize,
    message: String,
}

impl ParseError {
    /// The 1-based number of the offending line.
    pub fn line(&self) -> usize {
        self.line
    }

    /// What is wrong with it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

// === parse ===

/// Parses exposition text into families, in input order.
///
/// `# HELP` and `# TYPE` lines start a family (the second one joins the
/// first when they name the same family and no sample came in between). A
/// sample joins the current family when [`Family::owns`] its name, the
/// runtime's rule: the family's name plus a suffix the family's type allows
/// (`_total`, `_bucket`, ...), or the name alone for any type but the
/// histograms. Any other sample starts a family of its own name without
/// HELP or TYPE (so does a sample named like the histogram before it). The
/// parser is lenient: a TYPE it does not know, a negative timestamp or a
/// value out of range are read, and left for [`write`](crate::write) to
/// refuse. Label values are unescaped (`\\`, `\"`, `\n`); HELP text
/// too (`\\`, `\n`). Other comments and blank lines are dropped.
///
/// ```
/// let text = "# TYPE x_seconds histogram\n\
///             x_seconds_bucket{le=\"+Inf\"} 3\n\
///             x_seconds_sum 1.5\n\
///             other 1\n";
/// let families = matrixinfer_filter::parse(text).unwrap();
/// assert_eq!(families.len(), 2);
/// assert_eq!(families[0].samples.len(), 2);
/// assert_eq!(families[1].name, "other");
/// ```
pub fn parse(text: &str) -> Result<Vec<Family>, ParseError> {
    let mut families: Vec<Family> = Vec::new();
    for (index, line) in text.split('\n').enumerate() {
        let error = |message: String| ParseError {
            line: index + 1,
            message,
        };
        let line = line.trim_start_matches(BLANK);
        if line.trim_end_matches(BLANK).is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            match parse_comment(comment).map_err(error)? {
                Comment::Help(name, help) => match families.last_mut() {
                    Some(f) if f.name == name && f.help.is_none() && f.samples.is_empty() => {
                        f.help = Some(help);
                    }
                    _ => families.push(Family {
                        help: Some(help),
                        ..Family::new(name)
                    }),
                },
                Comment::Type(name, kind) => match families.last_mut() {
                    Some(f) if f.name == name && f.kind.is_none() && f.samples.is_empty() => {
                        f.kind = Some(kind.to_owned());
                    }
                    _ => families.push(Family {
                        kind: Some(kind.to_owned()),
                        ..Family::new(name)
                    }),
                },
                Comment::Other => {}
            }
            continue;
        }
        let sample = parse_sample(line).map_err(error)?;
        match families.last_mut() {
            Some(f) if f.owns(&sample.name) => f.samples.push(sample),
            _ => families.push(Family {
                name: sample.name.clone(),
                samples: vec![sample],
                ..Family::default()
            }),
        }
    }
    Ok(families)
}

/// Spaces and tabs: what separates tokens on a line.
const BLANK: [char; 2] = [' ', '\t'];

enum Comment<'a> {
    Help(&'a str, String),
    Type(&'a str, &'a str),
    Other,
}

/// Parses what follows the `#` of a comment line.
fn parse_comment(rest: &str) -> Result<Comment<'_>, String> {
    let rest = rest.trim_start_matches(BLANK);
    let (keyword, rest) = rest.split_at(rest.find(BLANK).unwrap_or(rest.len()));
    if keyword != "HELP" && keyword != "TYPE" {
        return Ok(Comment::Other);
    }
    let rest = rest.trim_start_matches(BLANK);
    let (name, rest) = rest.split_at(rest.find(BLANK).unwrap_or(rest.len()));
    if !is_metric_name(name) {
        return Err(format!("{keyword} line with invalid metric name {name:?}"));
    }
    if keyword == "HELP" {
        // One blank separates the name from the text; the text is the rest
        // of the line verbatim (trailing spaces included).
        let text = rest.get(1..).unwrap_or("");
        return Ok(Comment::Help(name, unescape_help(text)));
    }
    match rest.trim_matches(BLANK) {
        "" => Err(format!("TYPE line for {name} without a type")),
        kind if kind.contains(BLANK) => Err(format!("TYPE line for {name} with type {kind:?}")),
        kind => Ok(Comment::Type(name, kind)),
    }
}

/// Parses `name{labels} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let (name, mut rest) = line.split_at(expo::name_end(line.as_bytes(), 0));
    if !is_metric_name(name) {
        return Err(format!("invalid metric name at {:?}", snippet(line)));
    }
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        rest = parse_labels(rest, &mut labels)?;
    }
    if !rest.starts_with(BLANK) {
        return Err(format!(
            "expected a blank before the value of {name}, found {:?}",
            snippet(rest)
        ));
    }
    let mut tokens = rest.split(BLANK).filter(|t| !t.is_empty());
    let value = tokens
        .next()
        .ok_or_else(|| format!("sample {name} without a value"))?;
    if value.parse::<f64>().is_err() {
        return Err(format!("invalid value {:?} for {name}", snippet(value)));
    }
    let timestamp = tokens.next();
    if let Some(t) = timestamp
        && t.parse::<i64>().is_err()
    {
        return Err(format!("invalid timestamp {:?} for {name}", snippet(t)));
    }
    if let Some(extra) = tokens.next() {
        return Err(format!(
            "unexpected {:?} after the sample {name}",
            snippet(extra)
        ));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value: value.to_owned(),
        timestamp: timestamp.map(str::to_owned),
    })
}

/// Parses `{k="v",...}` at the start of `s` into `labels`, and returns what
/// follows the closing brace. Blanks between tokens and a trailing comma
/// are accepted.
fn parse_labels<'a>(s: &'a str, labels: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    let mut rest = &s[1..];
    loop {
        rest = rest.trim_start_matches(BLANK);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let end = rest
            .find(|c: char| !is_label_name_char(c))
            .unwrap_or(rest.len());
        let (name, after) = rest.split_at(end);
        if !is_label_name(name) {
            return Err(format!("expected a label name at {:?}", snippet(rest)));
        }
        rest = after.trim_start_matches(BLANK);
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("expected = after label {name}"))?;
        rest = rest.trim_start_matches(BLANK);
        rest = rest
            .strip_prefix('"')
            .ok_or_else(|| format!("expected \" to open label {name}"))?;
        let (value, after) = unescape_label_value(rest)
            .ok_or_else(|| format!("unterminated value of label {name}"))?;
        labels.push((name.to_owned(), value));
        rest = after.trim_start_matches(BLANK);
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!(
                "expected , or }} after label {name}, found {:?}",
                snippet(rest)
            ));
        }
    }
}

/// Reads a label value up to its closing quote, decoding `\\`, `\"` and
/// `\n` (any other backslash is kept as is); returns it and what follows
/// the quote, or `None` if the line ends first.
fn unescape_label_value(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut rest = s;
    loop {
        let at = rest.find(['"', '\\'])?;
        value.push_str(&rest[..at]);
        if rest.as_bytes()[at] == b'"' {
            return Some((value, &rest[at + 1..]));
        }
        let mut chars = rest[at + 1..].chars();
        match chars.next()? {
            'n' => value.push('\n'),
            '\\' => value.push('\\'),
            '"' => value.push('"'),
            other => {
                value.push('\\');
                value.push(other);
            }
        }
        rest = chars.as_str();
    }
}

/// Decodes `\\` and `\n` in HELP text; any other backslash is kept as is.
fn unescape_help(text: &str) -> String {
    if !text.contains('\\') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// At most 40 characters of `s`, for error messages.
fn snippet(s: &str) -> &str {
    s.char_indices().nth(40).map_or(s, |(at, _)| &s[..at])
}

/// Whether `name` is a valid metric (family or sample) name:
/// `[a-zA-Z_:][a-zA-Z0-9_:]*` (the runtime's check, [`expo::is_metric_name`]).
pub fn is_metric_name(name: &str) -> bool {
    expo::is_metric_name(name.as_bytes())
}

fn is_label_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `name` is a valid label name: `[a-zA-Z_][a-zA-Z0-9_]*` (the
/// runtime's check, [`expo::is_label_name`]). `__name__` is one, but a
/// sample may not carry it.
pub fn is_label_name(name: &str) -> bool {
    expo::is_label_name(name.as_bytes())
}

/// Whether `name` is in the runtime's own namespace
/// ([`expo::RESERVED_PREFIX`], `matrixinfer_runtime_`), which no filter may
/// output.
pub fn is_reserved(name: &str) -> bool {
    expo::is_reserved(name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{RefusalReason, write};

    fn roundtrip(text: &str) -> String {
        let families = parse(text).unwrap_or_else(|e| panic!("{e} in {text:?}"));
        let mut out = String::new();
        let refusals = write(&families, &mut out);
        assert_eq!(refusals, [], "{text:?}");
        out
    }

    fn labels(line: &str) -> Vec<(String, String)> {
        parse(line).unwrap().remove(0).samples.remove(0).labels
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn roundtrips_byte_for_byte() {
        for text in [
            "",
            "x 1\n",
            "x{a=\"\"} 1\n",
            "x{a=\"we\\\"ird\\\\name\\nhere\",b=\"\"} 8.128902e+06\n",
            "x{a=\"b\"} NaN 1712345678000\n",
            "x -Inf 0\n",
            "# HELP x Help with \\\\ and \\n and : \"quotes\" and trailing spaces.   \n",
            "# HELP x \n# TYPE x gauge\nx 1\n",
            "# TYPE x counter\nx_total 1\nx_created 1.7e+09\n",
            "# HELP h H.\n# TYPE h histogram\nh_bucket{a=\"1\",le=\"0.1\",z=\"2\"} 0.0\n\
             h_bucket{a=\"1\",le=\"+Inf\",z=\"2\"} 3.0\nh_sum{a=\"1\",z=\"2\"} 1.5\nh_count{a=\"1\",z=\"2\"} 3.0\n",
            "x{a=\"ünïcödé ✓\"} 1\n",
        ] {
            assert_eq!(roundtrip(text), text);
        }
    }

    #[test]
    fn label_values_unescape() {
        assert_eq!(labels("x{a=\"\"} 1"), pairs(&[("a", "")]));
        assert_eq!(labels(r#"x{a="q\"q"} 1"#), pairs(&[("a", "q\"q")]));
        assert_eq!(labels(r#"x{a="b\\s"} 1"#), pairs(&[("a", "b\\s")]));
        assert_eq!(labels(r#"x{a="n\nn"} 1"#), pairs(&[("a", "n\nn")]));
        assert_eq!(labels(r#"x{a="\\n"} 1"#), pairs(&[("a", "\\n")]));
        assert_eq!(labels(r#"x{a="\\"} 1"#), pairs(&[("a", "\\")]));
        // Unknown escapes stay as written.
        assert_eq!(labels(r#"x{a="\t"} 1"#), pairs(&[("a", "\\t")]));
        assert_eq!(
            labels(r#"x{a="a,b",c="}{"} 1"#),
            pairs(&[("a", "a,b"), ("c", "}{")])
        );
    }

    #[test]
    fn lenient_spacing_and_trailing_comma() {
        assert_eq!(
            labels("x{ a = \"1\" , b=\"2\", } 1"),
            pairs(&[("a", "1"), ("b", "2")])
        );
        assert_eq!(roundtrip("x{a=\"1\",}  1 \t 17 \n"), "x{a=\"1\"} 1 17\n");
        assert_eq!(roundtrip("x\t2\n"), "x 2\n");
        assert_eq!(roundtrip("x{} 1\n"), "x 1\n");
    }

    #[test]
    fn escapes_when_writing() {
        let mut family = Family::new_gauge("x", "back\\slash\nnewline \"quote\"");
        family.push_sample([("v", "a\\b\"c\nd")], 1.0);
        let mut out = String::new();
        assert_eq!(write(&[family], &mut out), []);
        assert_eq!(
            out,
            "# HELP x back\\\\slash\\nnewline \"quote\"\n# TYPE x gauge\nx{v=\"a\\\\b\\\"c\\nd\"} 1\n"
        );
        let back = parse(&out).unwrap();
        assert_eq!(
            back[0].help.as_deref(),
            Some("back\\slash\nnewline \"quote\"")
        );
        assert_eq!(back[0].samples[0].label("v"), Some("a\\b\"c\nd"));
    }

    #[test]
    fn help_unescape() {
        let help = |line: &str| parse(line).unwrap().remove(0).help.unwrap();
        assert_eq!(help("# HELP x a\\\\b\\nc"), "a\\b\nc");
        assert_eq!(help("# HELP x trailing   "), "trailing   ");
        assert_eq!(help("# HELP x  two spaces"), " two spaces");
        assert_eq!(help("# HELP x"), "");
        assert_eq!(help("# HELP x \\q"), "\\q");
        assert_eq!(help("#   HELP\tx tab"), "tab");
    }

    #[test]
    fn values_and_timestamps() {
        let sample = |line: &str| parse(line).unwrap().remove(0).samples.remove(0);
        let s = sample("x{le=\"+Inf\"} NaN 1712345678000");
        assert_eq!(
            (s.value.as_str(), s.timestamp.as_deref()),
            ("NaN", Some("1712345678000"))
        );
        assert!(s.value_f64().unwrap().is_nan());
        assert_eq!(sample("x +Inf").value_f64(), Some(f64::INFINITY));
        assert_eq!(sample("x -Inf -1").timestamp.as_deref(), Some("-1"));
        assert_eq!(sample("x 8.128902e+06").value, "8.128902e+06");
        assert_eq!(sample("x -0.0").value, "-0.0");
    }

    #[test]
    fn families_by_type_and_name() {
        let text = "\
# HELP c Counter declared without _total.
# TYPE c counter
c_total{a=\"1\"} 3
c_created{a=\"1\"} 1.7e+09
# HELP d_total Counter declared with _total.
# TYPE d_total counter
d_total 4
# TYPE h histogram
h_bucket{le=\"1\"} 1
h_bucket{le=\"+Inf\"} 2
h_count 2
h_sum 0.5
h_created 1.7e+09
# TYPE s summary
s{quantile=\"0.5\"} 1
s_sum 3
s_count 2
# TYPE g gauge
g 1
g_total 2
bare 1
bare{a=\"1\"} 2
bare_sum 3
";
        let families = parse(text).unwrap();
        let shape: Vec<_> = families
            .iter()
            .map(|f| {
                (
                    f.name.as_str(),
                    f.kind.as_deref(),
                    f.help.is_some(),
                    f.samples.len(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("c", Some("counter"), true, 2),
                ("d_total", Some("counter"), true, 1),
                ("h", Some("histogram"), false, 5),
                ("s", Some("summary"), false, 3),
                ("g", Some("gauge"), false, 1),
                ("g_total", None, false, 1),
                ("bare", None, false, 2),
                ("bare_sum", None, false, 1),
            ]
        );
        assert_eq!(roundtrip(text), text);
    }

    #[test]
    fn metadata_joins_or_starts_families() {
        // TYPE before HELP joins; a repeated declaration after samples starts
        // a new family of the same name (multiprocess split); HELP of another
        // name starts a new family even without samples in between.
        let text = "\
# TYPE a gauge
# HELP a A.
a 1
# HELP a A.
# TYPE a gauge
a{p=\"2\"} 2
# HELP b B.
# HELP c C.
c 3
";
        let families = parse(text).unwrap();
        let shape: Vec<_> = families
            .iter()
            .map(|f| (f.name.as_str(), f.samples.len()))
            .collect();
        assert_eq!(shape, [("a", 1), ("a", 1), ("b", 0), ("c", 1)]);
        assert_eq!(families[0].help.as_deref(), Some("A."));
        // Written back in the canonical HELP-then-TYPE order, the split
        // family as one.
        assert_eq!(
            roundtrip(text),
            "# HELP a A.\n# TYPE a gauge\na 1\na{p=\"2\"} 2\n# HELP b B.\n# HELP c C.\nc 3\n"
        );
    }

    #[test]
    fn a_sample_named_like_the_histogram_is_not_its_own() {
        // The runtime's rule: `h` starts a family of its own, which the
        // writer then joins to histogram `h` (a split family) and refuses.
        let text = "# TYPE h histogram\nh_count 1\nh 2\nh_sum 3\n";
        let families = parse(text).unwrap();
        let shape: Vec<_> = families
            .iter()
            .map(|f| (f.name.as_str(), f.kind.as_deref(), f.samples.len()))
            .collect();
        assert_eq!(
            shape,
            [
                ("h", Some("histogram"), 1),
                ("h", None, 1),
                ("h_sum", None, 1)
            ]
        );
        let mut out = String::new();
        let refusals = write(&families, &mut out);
        assert_eq!(out, "# TYPE h histogram\nh_count 1\nh_sum 3\n");
        let reasons: Vec<_> = refusals.iter().map(|r| &r.reason).collect();
        assert_eq!(reasons, [&RefusalReason::NotOwned]);
    }

    #[test]
    fn lenient_input_strict_output() {
        let text = "x -Inf -5\ny 1e400\n# TYPE z info\nz_info 1\n";
        let families = parse(text).unwrap();
        assert_eq!(families.len(), 3);
        let mut out = String::new();
        let reasons: Vec<_> = write(&families, &mut out)
            .into_iter()
            .map(|r| r.reason)
            .collect();
        assert_eq!(out, "");
        assert_eq!(
            reasons,
            [
                RefusalReason::BadTimestamp,
                RefusalReason::BadValue,
                RefusalReason::BadType("info".into())
            ]
        );
    }

    #[test]
    fn drops_other_comments_and_blank_lines() {
        let text = "# A comment\n\n   \n  x 1\n# EOF\n";
        assert_eq!(roundtrip(text), "x 1\n");
        assert_eq!(roundtrip("x 1"), "x 1\n");
        assert_eq!(roundtrip("#HELPER x y\n"), "");
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, message) in [
            ("x 1\n2x 1\n", 2, "invalid metric name"),
            ("x\n", 1, "expected a blank"),
            ("x{a=\"1\"}1\n", 1, "expected a blank"),
            ("x \n", 1, "without a value"),
            ("x one\n", 1, "invalid value \"one\""),
            ("x 1 2.5\n", 1, "invalid timestamp"),
            ("x 1 2 3\n", 1, "unexpected"),
            ("x{a=\"1} 1\n", 1, "unterminated"),
            ("x{a=1} 1\n", 1, "expected \" to open"),
            ("x{a} 1\n", 1, "expected = after"),
            ("x{1a=\"\"} 1\n", 1, "expected a label name"),
            ("x{a=\"1\" b=\"2\"} 1\n", 1, "expected , or }"),
            ("\n\n# TYPE x\n", 3, "without a type"),
            ("# TYPE x foo bar\n", 1, "with type"),
            ("# HELP 9x y\n", 1, "invalid metric name"),
        ] {
            let e = parse(text).expect_err(text);
            assert_eq!(e.line(), line, "{text:?}: {e}");
            assert!(e.message().contains(message), "{text:?}: {e}");
        }
    }

    #[test]
    fn names() {
        assert!(is_reserved("matrixinfer_runtime_x") && !is_reserved("matrixinfer:x"));
        assert!(is_metric_name("vllm:num_requests_running"));
        assert!(is_metric_name("_x") && is_metric_name(":x"));
        assert!(!is_metric_name("") && !is_metric_name("1x") && !is_metric_name("a-b"));
        assert!(is_label_name("le") && is_label_name("_a1"));
        assert!(!is_label_name("a:b") && !is_label_name("1a") && !is_label_name(""));
    }
}
