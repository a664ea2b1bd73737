use super::*;
use crate::LineError;

/// A scrape where `elsewhere` went out or to other filters, `mine` came to
/// this filter, and the filter selects names starting with `select`.
struct TestScope {
    select: &'static str,
    mine: &'static [&'static str],
    elsewhere: &'static [&'static str],
}

impl Scope for TestScope {
    fn selects(&self, family: &[u8]) -> bool {
        family.starts_with(self.select.as_bytes())
    }
    fn presence(&self, family: &[u8]) -> Presence {
        let is = |names: &[&str]| names.iter().any(|n| n.as_bytes() == family);
        if is(self.mine) {
            Presence::Mine
        } else if is(self.elsewhere) {
            Presence::Elsewhere
        } else {
            Presence::New
        }
    }
}

const SCOPE: TestScope = TestScope {
    select: "a",
    mine: &["a", "a2"],
    elsewhere: &["h", "other", "q_count"],
};

fn check(text: &str) -> Result<Vec<String>, Violation> {
    let mut seen = Vec::new();
    Checker::default().check(text.as_bytes(), &SCOPE, |name, range| {
        seen.push(format!("{}:{}", &text[name], text[range].lines().count()))
    })?;
    Ok(seen)
}

#[test]
fn good_output() {
    let text = "# HELP a A.\n# TYPE a histogram\na_bucket{le=\"+Inf\"} 1\na_sum 2.5\na_count 1\n\
                # TYPE b gauge\nb{x=\"}\"} NaN 1712345678000\nc 1e3\n\
                # TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 1\ns_count 1\n";
    assert_eq!(check(text).unwrap(), ["a:5", "b:2", "c:1", "s:4"]);
    assert_eq!(check("").unwrap(), Vec::<String>::new());
    // A comment and a blank line belong to the family they follow.
    assert_eq!(check("a 1\n# note\n\nb 1\n").unwrap(), ["a:3", "b:1"]);
}

#[test]
fn the_issues_examples_are_refused() {
    use LineError::*;
    let table: &[(&str, Violation)] = &[
        ("a 1", Violation::NoFinalNewline),
        ("a 1\nb 2", Violation::NoFinalNewline),
        (
            "a{x=\"1} 1\n",
            Violation::Malformed {
                line: 1,
                error: UnterminatedValue,
            },
        ),
        (
            "a{x=\"\\q\"} 1\n",
            Violation::Malformed {
                line: 1,
                error: BadEscape,
            },
        ),
        (
            "a 1\n\u{0}garbage\n",
            Violation::Malformed {
                line: 2,
                error: BadName,
            },
        ),
        (
            "a one\n",
            Violation::Malformed {
                line: 1,
                error: BadValue,
            },
        ),
        (
            "a 1 2 3\n",
            Violation::Malformed {
                line: 1,
                error: BadTimestamp,
            },
        ),
        ("a 1\nb 1\na 2\n", Violation::Repeated("a".into())),
        (
            "# TYPE a gauge\n# TYPE a gauge\na 1\n",
            Violation::LateMetadata {
                line: 2,
                family: "a".into(),
            },
        ),
        (
            "a 1\n# HELP a late\n",
            Violation::LateMetadata {
                line: 2,
                family: "a".into(),
            },
        ),
        ("a 1\nother 2\n", Violation::Foreign("other".into())),
        (
            "matrixinfer_runtime_filter_enabled{filter=\"x\"} 1\n",
            Violation::Reserved("matrixinfer_runtime_filter_enabled".into()),
        ),
        (
            "# TYPE matrixinfer_runtime_up gauge\n",
            Violation::Reserved("matrixinfer_runtime_up".into()),
        ),
        // Samples another family (of the scrape, or of this output) claims.
        (
            "# TYPE h_count gauge\nh_count 3\n",
            Violation::Collides {
                family: "h_count".into(),
                other: "h".into(),
            },
        ),
        (
            "# TYPE q summary\nq_sum 1\n",
            Violation::Collides {
                family: "q".into(),
                other: "q_count".into(),
            },
        ),
        (
            "# TYPE a histogram\na_count 1\n# TYPE a_sum gauge\na_sum 1\n",
            Violation::Collides {
                family: "a_sum".into(),
                other: "a".into(),
            },
        ),
        (
            "# TYPE n_count gauge\nn_count 1\n# TYPE n summary\nn_sum 1\n",
            Violation::Collides {
                family: "n".into(),
                other: "n_count".into(),
            },
        ),
        (
            "a{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 2\n",
            Violation::DuplicateSeries { line: 2 },
        ),
        ("a 1\na 1\n", Violation::DuplicateSeries { line: 2 }),
        (
            "# TYPE a histogram\na_bucket{le=\"high\"} 1\n",
            Violation::BadBound { line: 2 },
        ),
        (
            "# TYPE a summary\na{quantile=\"x\"} 1\n",
            Violation::BadBound { line: 2 },
        ),
    ];
    for (text, want) in table {
        assert_eq!(check(text).as_ref(), Err(want), "{text:?}");
    }
    assert_eq!(
        Checker::default().check(b"a{x=\"\xff\"} 1\n", &SCOPE, |_, _| {}),
        Err(Violation::NotUtf8)
    );
}

#[test]
fn what_a_filter_may_write() {
    // Its own families, changed; a new family; a selected name that is
    // new to the scrape; the same series in two families.
    check("a{x=\"1\"} 2\na2 1\nnew_gauge 3\nanything 1\nab 1\n").unwrap();
    // prometheus_client's own layout: a histogram, then its `_created`
    // gauge; a counter `x_total`, then `x_created`.
    check(
        "# TYPE h2 histogram\nh2_count 1\n# TYPE h2_created gauge\nh2_created 1\n\
         # TYPE x_total counter\nx_total 1\n# TYPE x_created gauge\nx_created 1\n",
    )
    .unwrap();
    // A family the scrape has elsewhere, when the filter selects it (a
    // rename onto an existing name is the filter's choice).
    let scope = TestScope {
        select: "o",
        mine: &[],
        elsewhere: &["other"],
    };
    Checker::default()
        .check(b"other 1\n", &scope, |_, _| {})
        .unwrap();
    // A histogram sample named like its family starts a family of that
    // name, which repeats the histogram's.
    assert_eq!(
        check("# TYPE a histogram\na_count 1\na 1\n"),
        Err(Violation::Repeated("a".into()))
    );
}
