use super::*;

#[test]
fn ownership_by_type() {
    use MetricType::*;
    let table: &[(MetricType, &str, &str, bool)] = &[
        (Counter, "x", "x_total", true),
        (Counter, "x_total", "x_total", true),
        (Counter, "x", "x_created", true),
        (Counter, "x", "x_bucket", false),
        (Histogram, "h", "h_bucket", true),
        (Histogram, "h", "h_sum", true),
        (Histogram, "h", "h_count", true),
        // The case the host and the SDK once disagreed on.
        (Histogram, "h", "h", false),
        (Histogram, "t_total", "t_total_bucket", true),
        (Summary, "s", "s", true),
        (Gauge, "g", "g", true),
        (Gauge, "g", "g_total", false),
        (Gauge, "g", "gx", false),
        (Untyped, "u", "u", true),
        (GaugeHistogram, "gh", "gh_gsum", true),
        (Info, "i", "i_info", true),
    ];
    for &(kind, family, name, want) in table {
        assert_eq!(
            kind.owns(family.as_bytes(), name.as_bytes()),
            want,
            "{kind:?} {family} {name}"
        );
        let suffix = &name[family.len().min(name.len())..];
        if name.starts_with(family) && !suffix.is_empty() {
            assert_eq!(kind.suffixes().contains(&suffix), want, "{kind:?} {name}");
            if kind.claims().contains(&suffix) {
                assert!(want && CLAIMED_SUFFIXES.contains(&suffix));
            }
        }
    }
}

#[test]
fn claims_follow_the_classic_parser() {
    assert_eq!(
        MetricType::Histogram.claims(),
        ["_bucket", "_sum", "_count"]
    );
    assert_eq!(MetricType::Summary.claims(), ["_sum", "_count"]);
    assert!(MetricType::Counter.claims().is_empty());
    assert!(MetricType::Gauge.claims().is_empty());
}

#[test]
fn names() {
    for good in ["up", "_x", "vllm:num_requests", "a9", ":"] {
        assert!(is_metric_name(good.as_bytes()), "{good}");
    }
    for bad in ["", "9a", "a-b", "é", "a b", "a{"] {
        assert!(!is_metric_name(bad.as_bytes()), "{bad}");
    }
    assert!(is_label_name(b"le"));
    assert!(is_label_name(b"_x9"));
    assert!(!is_label_name(b"a:b"));
    assert!(!is_label_name(b"9"));
    assert!(is_reserved(b"matrixinfer_runtime_up"));
    assert!(!is_reserved(b"matrixinfer:num_requests_waiting"));
}

/// The word-at-a-time name scan ends where a byte-by-byte reading of the
/// grammar does: every byte value, at every place in and across the
/// eight-byte words, after names of every length up to three words.
#[test]
fn name_scan_stops_at_the_first_byte_outside_the_grammar() {
    let is_name_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let names = b"vllm:Num_requests_9_waiting_ZZ:x";
    for stop in 0..=255u8 {
        for len in 0..names.len() {
            let mut line = names[..len].to_vec();
            line.push(stop);
            line.extend_from_slice(b"_trailing:name9");
            let expected = if is_name_byte(stop) { line.len() } else { len };
            for from in 0..=len {
                assert_eq!(
                    name_continue(&line, from),
                    expected,
                    "byte {stop:#04x} after {len} name bytes, scanned from {from}"
                );
            }
        }
    }
}

#[test]
fn values() {
    for good in [
        "1",
        "-1",
        "+1.5",
        "1.",
        ".5",
        "0.0",
        "8.128902e+06",
        "1E-3",
        "1.e5",
        "NaN",
        "nan",
        "+Inf",
        "-Inf",
        "Inf",
        "inf",
        "+infinity",
        "-Infinity",
        "1e308",
        "000",
    ] {
        assert!(is_value(good.as_bytes()), "{good}");
    }
    for bad in [
        "", "+", ".", "e5", "1e", "1e+", "1.2.3", "--1", "0x10", "0x1p3", "1_000", "1,5", "+NaN",
        "-nan", "infinit", "1e309", "-1e400", "one", "1 ", "\u{0}",
    ] {
        assert!(!is_value(bad.as_bytes()), "{bad:?}");
    }
    assert!(is_timestamp(b"1712345678000"));
    assert!(is_timestamp(b"9223372036854775807"));
    for bad in [
        "",
        "-1",
        "+1",
        "1.5",
        "9223372036854775808",
        "12345678901234567890",
    ] {
        assert!(!is_timestamp(bad.as_bytes()), "{bad}");
    }
}

fn checked(line: &str) -> Result<Checked, LineError> {
    check_line(line.as_bytes())
}

#[test]
fn good_lines() {
    for line in [
        "",
        "   ",
        "# a comment",
        "#",
        "# HELPER is a comment",
        "# HELP x",
        "# HELP x ",
        "# HELP vllm:x Help: with \"quotes\" and \\\\ and \\n ",
        "# TYPE x counter",
        "# TYPE x\thistogram",
        "# TYPE x untyped",
        "x 1",
        "x\t1",
        "  x 1",
        "x 1 1712345678000",
        "x  1\t1712345678000",
        "x{} 1",
        "x{a=\"b\"} 1",
        "x{a=\"b\",} 1",
        "x { a = \"b\" , c=\"\" } 1",
        "x{a=\"b\"}1",
        "x{a=\"\\\"}\\\\\\n\"} NaN",
        "x{a=\"é\"} +Inf",
    ] {
        assert!(checked(line).is_ok(), "{line:?}: {:?}", checked(line));
    }
    assert_eq!(
        checked("# TYPE vllm:x histogram"),
        Ok(Checked::Type {
            name: 7..13,
            kind: MetricType::Histogram
        })
    );
    assert_eq!(
        checked("x{a=\"b\"} 2 3"),
        Ok(Checked::Sample {
            name: 0..1,
            labels: 2..7,
            value: 9..10
        })
    );
}

#[test]
fn bad_lines() {
    use LineError::*;
    let table: &[(&str, LineError)] = &[
        ("x", BadValue),
        ("x ", BadValue),
        ("9x 1", BadName),
        ("x-y 1", BadName),
        ("{} 1", BadName),
        ("\"x\" 1", BadName),
        ("x{a=\"b} 1", UnterminatedValue),
        ("x{a=\"b\" 1", BadLabelSyntax),
        ("x{a=b} 1", BadLabelSyntax),
        ("x{a:b=\"c\"} 1", BadLabelSyntax),
        ("x{\"a\"=\"c\"} 1", BadLabelName),
        ("x{,} 1", BadLabelName),
        ("x{a=\"1\",,} 1", BadLabelName),
        ("x{a=\"1\" b=\"2\"} 1", BadLabelSyntax),
        ("x{a=\"1\",a=\"2\"} 1", DuplicateLabel),
        ("x{__name__=\"y\"} 1", ReservedLabel),
        ("x{a=\"\\t\"} 1", BadEscape),
        ("x{a=\"\\", BadEscape),
        ("x one", BadValue),
        ("x 1\r", BadValue),
        ("x 0x10", BadValue),
        ("x 1 2 3", BadTimestamp),
        ("x 1 -5", BadTimestamp),
        ("x 1 5 ", BadTimestamp),
        ("x 1 ", BadTimestamp),
        ("x{a=\"b\"} 1\t", BadTimestamp),
        ("x 1 1.5", BadTimestamp),
        ("# TYPE x", BadType),
        ("# TYPE x  counter", BadType),
        ("# TYPE x counter ", BadType),
        ("# TYPE x Counter", BadType),
        ("# TYPE x info", BadType),
        ("# TYPE 1x gauge", BadName),
        ("# HELP x{ y", BadName),
        ("# HELP", BadName),
        ("# HELP x bad \\t escape", BadEscape),
        ("# HELP x trailing \\", BadEscape),
        ("#HELP x y", AmbiguousComment),
        ("#TYPE x gauge", AmbiguousComment),
    ];
    for &(line, want) in table {
        assert_eq!(checked(line), Err(want), "{line:?}");
    }
}

#[test]
fn labels_are_handed_over_as_checked() {
    let line = "x{ a = \"1\" ,b=\"\\\"}\",} 1";
    let mut pairs = Vec::new();
    let checked = check_line_with_labels(line.as_bytes(), |n, v| {
        pairs.push((line[n].to_owned(), line[v].to_owned()))
    });
    assert!(matches!(checked, Ok(Checked::Sample { .. })));
    assert_eq!(
        pairs,
        [("a".into(), "1".into()), ("b".into(), "\\\"}".into())] as [(String, String); 2]
    );
}
