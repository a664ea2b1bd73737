//! `write` never emits what the runtime refuses, and says what it left out.
//!
//! Hostile models (built by hand, then generated) go through `write`; the
//! output is held to the runtime's own checker (`expo::check`, which the
//! host runs on every filter output): every line as Prometheus reads it, a
//! final newline, HELP and TYPE once and first, no family twice, no series
//! twice, numeric `le` and `quantile`, nothing reserved, no collision by
//! suffix. Every sample is either written or named by a refusal.

use std::collections::HashSet;

use expo::MetricType;
use expo::check::{Checker, Presence, Scope};
use matrixinfer_filter::{Family, Refusal, RefusalReason, Sample, parse, write};

// === the runtime's checks ===

/// The filter's output as the runtime sees it, where the output alone
/// decides: every family is the filter's own.
struct OwnOutput;

impl Scope for OwnOutput {
    fn selects(&self, _: &[u8]) -> bool {
        true
    }
    fn presence(&self, _: &[u8]) -> Presence {
        Presence::Mine
    }
}

/// What the runtime checks of a filter's output that the output alone
/// decides (not what else is in the scrape): its own checker.
fn host_check(text: &str) -> Result<(), String> {
    Checker::default()
        .check(text.as_bytes(), &OwnOutput, |_, _| {})
        .map_err(|violation| violation.to_string())
}

/// Writes `families`, checks the output as the runtime would, and checks
/// every sample is written or named by a refusal.
fn write_checked(families: &[Family]) -> (String, Vec<Refusal>) {
    let mut out = String::new();
    let refusals = write(families, &mut out);
    if let Err(e) = host_check(&out) {
        panic!("the runtime would refuse: {e}\n--- output ---\n{out}--- from ---\n{families:#?}");
    }
    assert!(out.is_empty() || out.ends_with('\n'));
    let written = out.lines().filter(|l| !l.starts_with('#')).count();
    let refused_families: HashSet<&str> = refusals
        .iter()
        .filter(|r| r.sample.is_none() && !matches!(r.reason, RefusalReason::TypeConflict(_)))
        .map(|r| r.family.as_str())
        .collect();
    let refused = refusals.iter().filter(|r| r.sample.is_some()).count()
        + families
            .iter()
            .filter(|f| refused_families.contains(f.name.as_str()))
            .map(|f| f.samples.len())
            .sum::<usize>();
    let total: usize = families.iter().map(|f| f.samples.len()).sum();
    assert_eq!(written + refused, total, "{out}\n{refusals:#?}");
    (out, refusals)
}

#[test]
fn the_runtime_checks_refuse_what_they_should() {
    for text in [
        "x 1",
        "x 1\nx 1\n",
        "x 1\ny 1\nx 2\n",
        "x 1\n# TYPE x gauge\n",
        "# TYPE x gauge\n# TYPE x gauge\n",
        "# TYPE x info\n",
        "x{a=\"1\",a=\"2\"} 1\n",
        "x 0x10\n",
        "matrixinfer_runtime_up 1\n",
        "# TYPE h histogram\nh_bucket{le=\"a\"} 1\n",
        "# TYPE s summary\ns{quantile=\"a\"} 1\n",
        "# TYPE h histogram\nh_sum 1\n# TYPE h_count gauge\n",
        "h_count 1\n# TYPE h histogram\n",
        "# TYPE h histogram\nh_sum 1\nh 1\n# TYPE h_x gauge\nh 2\n",
    ] {
        assert!(host_check(text).is_err(), "{text:?}");
    }
    assert_eq!(
        host_check("# TYPE c counter\nc_total 1\nc_created 1\nd 1\n"),
        Ok(())
    );
}

// === hand-built hostile models ===

fn family(name: &str, kind: Option<&str>, samples: &[Sample]) -> Family {
    Family {
        name: name.to_owned(),
        help: None,
        kind: kind.map(str::to_owned),
        samples: samples.to_vec(),
    }
}

fn sample(name: &str, labels: &[(&str, &str)], value: &str) -> Sample {
    Sample {
        name: name.to_owned(),
        labels: labels
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        value: value.to_owned(),
        timestamp: None,
    }
}

/// (family, sample name or none for the whole family, reason) of each
/// refusal.
fn shape(refusals: &[Refusal]) -> Vec<(&str, Option<&str>, RefusalReason)> {
    refusals
        .iter()
        .map(|r| {
            let sample = r.sample.as_ref().map(|s| s.name.as_str());
            (r.family.as_str(), sample, r.reason.clone())
        })
        .collect()
}

#[test]
fn hostile_models_are_written_without_what_the_runtime_refuses() {
    use RefusalReason as R;
    let mut stamped = sample("ok", &[], "1");
    stamped.timestamp = Some("-1".to_owned());
    let mut escaped = Family::new_gauge("esc", "back\\slash\nnew \"line\"");
    escaped.push_sample([("v", "q\"q\\b\nn"), ("w", "}{,=")], 1.0);
    let families = vec![
        Family::new_gauge("matrixinfer_runtime_up", "Reserved."),
        {
            let mut f = Family::new_gauge("matrixinfer_runtime_filter_enabled", "Reserved.");
            f.push_sample([("filter", "x")], 1.0);
            f
        },
        family(
            "matrixinfer_runtime",
            Some("counter"),
            &[sample("matrixinfer_runtime_total", &[], "1")],
        ),
        family(
            "h",
            Some("histogram"),
            &[
                sample("h_bucket", &[("le", "+Inf")], "1"),
                sample("h", &[], "3"),
                sample("h_bucket", &[("le", "fast")], "1"),
                sample("h_count", &[], "1"),
            ],
        ),
        family(
            "ok",
            Some("gauge"),
            &[
                sample("ok", &[("a", "1"), ("b", "2")], "1"),
                sample("ok", &[("b", "2"), ("a", "1")], "2"),
                sample("ok", &[("a-b", "1")], "1"),
                sample("ok", &[("__name__", "ok")], "1"),
                sample("ok", &[("a", "1"), ("a", "2")], "1"),
                sample("ok", &[("v", "hex")], "0x10"),
                sample("ok", &[("v", "big")], "1e400"),
                sample("ok", &[("v", "under")], "1_000"),
                sample("ok", &[("v", "signed")], "+NaN"),
                sample("ok", &[("v", "line")], "1\n# HELP"),
                sample("other", &[], "1"),
                stamped,
            ],
        ),
        family(
            "split",
            Some("gauge"),
            &[sample("split", &[("p", "1")], "1")],
        ),
        family("between", None, &[sample("between", &[], "1")]),
        family(
            "split",
            Some("counter"),
            &[
                sample("split", &[("p", "1")], "1"),
                sample("split", &[("p", "2")], "1"),
            ],
        ),
        family("i", Some("info"), &[sample("i_info", &[], "1")]),
        family("u", Some("unknown"), &[sample("u", &[], "1")]),
        family("g", Some("Gauge"), &[sample("g", &[], "1")]),
        family("1x", None, &[sample("1x", &[], "1")]),
        family("a b", None, &[sample("a b", &[], "1")]),
        family(
            "s",
            Some("summary"),
            &[
                sample("s", &[("quantile", "p50")], "1"),
                sample("s_sum", &[], "1"),
            ],
        ),
        family(
            "s_sum",
            Some("gauge"),
            &[sample("s_sum", &[("x", "1")], "1")],
        ),
        family("h_count", None, &[sample("h_count", &[], "9")]),
        escaped,
    ];
    let (out, refusals) = write_checked(&families);
    assert_eq!(
        out,
        "\
# TYPE matrixinfer_runtime counter
# TYPE h histogram
h_bucket{le=\"+Inf\"} 1
h_count 1
# TYPE ok gauge
ok{a=\"1\",b=\"2\"} 1
# TYPE split gauge
split{p=\"1\"} 1
split{p=\"2\"} 1
between 1
# TYPE s summary
s_sum 1
# HELP esc back\\\\slash\\nnew \"line\"
# TYPE esc gauge
esc{v=\"q\\\"q\\\\b\\nn\",w=\"}{,=\"} 1
"
    );
    assert_eq!(
        shape(&refusals),
        [
            ("matrixinfer_runtime_up", None, R::Reserved),
            ("matrixinfer_runtime_filter_enabled", None, R::Reserved),
            (
                "matrixinfer_runtime",
                Some("matrixinfer_runtime_total"),
                R::Reserved
            ),
            ("h", Some("h"), R::NotOwned),
            ("h", Some("h_bucket"), R::BadBound("le")),
            ("ok", Some("ok"), R::DuplicateSeries),
            ("ok", Some("ok"), R::BadLabelName("a-b".into())),
            ("ok", Some("ok"), R::ReservedLabel),
            ("ok", Some("ok"), R::DuplicateLabel("a".into())),
            ("ok", Some("ok"), R::BadValue),
            ("ok", Some("ok"), R::BadValue),
            ("ok", Some("ok"), R::BadValue),
            ("ok", Some("ok"), R::BadValue),
            ("ok", Some("ok"), R::BadValue),
            ("ok", Some("other"), R::NotOwned),
            ("ok", Some("ok"), R::BadTimestamp),
            ("split", None, R::TypeConflict("counter".into())),
            ("split", Some("split"), R::DuplicateSeries),
            ("i", None, R::BadType("info".into())),
            ("u", None, R::BadType("unknown".into())),
            ("g", None, R::BadType("Gauge".into())),
            ("1x", None, R::BadName),
            ("a b", None, R::BadName),
            ("s", Some("s"), R::BadBound("quantile")),
            ("s_sum", None, R::Collides("s".into())),
            ("h_count", None, R::Collides("h".into())),
        ]
    );
    // Each names what was dropped, and why.
    let text: Vec<String> = refusals.iter().map(ToString::to_string).collect();
    assert_eq!(
        text[0],
        "family matrixinfer_runtime_up: in the runtime's own namespace (matrixinfer_runtime_)"
    );
    assert_eq!(
        text[4],
        "family h, sample h_bucket{le=\"fast\"} 1: the le label is not a number"
    );
    assert_eq!(
        text[9],
        "family ok, sample ok{v=\"hex\"} 0x10: the value is not a number"
    );
    assert_eq!(text[21], "family \"1x\": not a metric name");
    // What is written reads back as written.
    let back = parse(&out).unwrap();
    assert_eq!(
        back.last().unwrap().samples[0].label("v"),
        Some("q\"q\\b\nn")
    );
}

#[test]
fn a_family_without_metadata_joins_the_one_before_it() {
    // `c_total` right after counter `c` is, to the runtime, more samples of
    // `c`: a series `c` already has is refused there.
    let families = [
        family(
            "c",
            Some("counter"),
            &[sample("c_total", &[("a", "1")], "1")],
        ),
        family(
            "c_total",
            None,
            &[
                sample("c_total", &[("a", "1")], "2"),
                sample("c_total", &[("a", "2")], "2"),
            ],
        ),
    ];
    let (out, refusals) = write_checked(&families);
    assert_eq!(
        out,
        "# TYPE c counter\nc_total{a=\"1\"} 1\nc_total{a=\"2\"} 2\n"
    );
    assert_eq!(
        shape(&refusals),
        [("c_total", Some("c_total"), RefusalReason::DuplicateSeries)]
    );
}

#[test]
fn a_family_left_empty_does_not_interrupt_the_one_before() {
    // Nothing of `bad` is written, so `h_sum` still follows histogram `h`.
    let families = [
        family("h", Some("histogram"), &[sample("h_sum", &[], "1")]),
        family("bad", None, &[sample("bad", &[], "x")]),
        family("h_sum", None, &[sample("h_sum", &[], "2")]),
    ];
    let (out, refusals) = write_checked(&families);
    assert_eq!(out, "# TYPE h histogram\nh_sum 1\n");
    assert_eq!(
        shape(&refusals),
        [
            ("bad", Some("bad"), RefusalReason::BadValue),
            ("h_sum", Some("h_sum"), RefusalReason::DuplicateSeries),
        ]
    );
}

// === generated hostile models ===

/// xorshift64*: deterministic, no dependencies.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    fn pick<'a>(&mut self, pool: &'a str) -> &'a str {
        let n = pool.split('|').count();
        pool.split('|').nth(self.below(n)).unwrap_or_default()
    }
}

/// What models are drawn from: `|`-separated, `-` for none.
struct Pools {
    /// Family names, and bases of sample names from elsewhere.
    names: &'static str,
    kinds: &'static str,
    helps: &'static str,
    /// Suffixes of sample names beyond those the family's type allows.
    suffixes: &'static str,
    labels: &'static str,
    label_values: &'static str,
    values: &'static str,
    timestamps: &'static str,
}

/// Everything, mixing what the runtime accepts with what it refuses.
const HOSTILE: Pools = Pools {
    names: "x|h|h|c|c_total|h_count|h_bucket|s|s_sum|x_created|matrixinfer_runtime_filter_enabled|\
            matrixinfer_runtime|1x|a b||x\n|ünï",
    kinds: "-|-|-|counter|gauge|histogram|histogram|summary|untyped|info|unknown|Gauge|gauge x|\
            gauge\n|gaugehistogram",
    helps: "-|-|-||Help.|line\nbreak|back\\slash \"q\"|\\n",
    suffixes: "|||_bucket|_bucket|_sum|_count|_total|_created|_info|_gsum| |\n",
    labels: "a|a|b|le|le|quantile|quantile|__name__|1a|a-b||_x|a:b",
    label_values: "1|2||0.5|+Inf|NaN|fast|q\"q|n\nn|b\\s|ünï|1e400",
    values: "1|0|-0.0|NaN|+Inf|-Inf|1e400|0x10|1_000|+NaN|| 1|1 2|8.128902e+06|.5|inf|1\n|\
             Infinity|-nan",
    timestamps: "-|-|-|0|1712345678000|-1|1.5|9223372036854775807|9223372036854775808||1 2",
};

/// Few names that claim each other's samples (`h` and `h_count`, `c` and
/// `c_total`), few series, and good values: so families meet often, split,
/// join the one before, collide, and repeat series.
const TANGLED: Pools = Pools {
    names: "h|h|c|c|h_count|h_sum|c_total|s|s_count",
    kinds: "-|-|-|counter|gauge|histogram|summary|untyped",
    helps: "-|-|Help.",
    suffixes: "|_total|_count|_bucket",
    labels: "a|le|quantile",
    label_values: "1|fast",
    values: "1",
    timestamps: "-",
};

fn some(text: &str) -> Option<String> {
    (text != "-").then(|| text.to_owned())
}

fn generate(rng: &mut Rng, pools: &Pools) -> Vec<Family> {
    (0..rng.below(7))
        .map(|_| {
            let name = rng.pick(pools.names);
            let kind = some(rng.pick(pools.kinds));
            // Half the samples carry a suffix the family's type allows.
            let allowed = MetricType::parse(kind.as_deref().unwrap_or("").as_bytes()).suffixes();
            let samples = (0..rng.below(6))
                .map(|_| {
                    let base = if rng.below(8) == 0 {
                        rng.pick(pools.names)
                    } else {
                        name
                    };
                    let suffix = match rng.below(2 * (allowed.len() + 1)) {
                        i if i < allowed.len() => allowed[i],
                        _ => rng.pick(pools.suffixes),
                    };
                    let labels = (0..rng.below(4).saturating_sub(1))
                        .map(|_| {
                            let label = rng.pick(pools.labels).to_owned();
                            (label, rng.pick(pools.label_values).to_owned())
                        })
                        .collect();
                    Sample {
                        name: format!("{base}{suffix}"),
                        labels,
                        value: rng.pick(pools.values).to_owned(),
                        timestamp: some(rng.pick(pools.timestamps)),
                    }
                })
                .collect();
            Family {
                name: name.to_owned(),
                help: some(rng.pick(pools.helps)),
                kind,
                samples,
            }
        })
        .collect()
}

#[test]
fn generated_hostile_models() {
    let mut rng = Rng(0x6d69_7274_0001);
    for pools in [&HOSTILE, &TANGLED] {
        let (mut written, mut refused) = (0, 0);
        let mut reasons = HashSet::new();
        for _ in 0..20_000 {
            let families = generate(&mut rng, pools);
            let (out, refusals) = write_checked(&families);
            written += out.lines().count();
            refused += refusals.len();
            reasons.extend(refusals.iter().map(|r| std::mem::discriminant(&r.reason)));
        }
        // Both happen often: the models are neither all bad nor all good.
        assert!(written > 20_000 && refused > 20_000, "{written} {refused}");
        if std::ptr::eq(pools, &HOSTILE) {
            assert_eq!(reasons.len(), 13, "every reason comes up");
        }
    }
}

#[test]
fn parsed_then_written_is_accepted_too() {
    // Whatever the lenient parser reads, written back, the runtime accepts.
    let text = "\
# TYPE h histogram
h 1
h_bucket{le=\"x\"} 1
h_bucket{le=\"1\"} 1
# TYPE h histogram
h_bucket{le=\"1\"} 2
h_count 1 -5
# TYPE x info
x_info 1
y 1e400
y 2
h_count 3
matrixinfer_runtime_up 1
";
    let families = parse(text).unwrap();
    let (out, refusals) = write_checked(&families);
    assert_eq!(out, "# TYPE h histogram\nh_bucket{le=\"1\"} 2\ny 2\n");
    let reasons: Vec<_> = refusals.into_iter().map(|r| r.reason).collect();
    assert_eq!(
        reasons,
        [
            RefusalReason::NotOwned,
            RefusalReason::BadTimestamp,
            RefusalReason::BadBound("le"),
            RefusalReason::DuplicateSeries,
            RefusalReason::BadType("info".into()),
            RefusalReason::BadValue,
            RefusalReason::Collides("h".into()),
            RefusalReason::Reserved,
        ]
    );
}
