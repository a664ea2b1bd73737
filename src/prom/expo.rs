//! Writing exposition text: the sidecar's own `matrixinfer_runtime_*`
//! metrics, and error-free escaping for whoever else needs it.

use std::fmt::Write as _;

/// Writes `# HELP` and `# TYPE` for a family.
pub fn header(out: &mut Vec<u8>, name: &str, kind: &str, help: &str) {
    out.extend_from_slice(b"# HELP ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    let mut rest = help.as_bytes();
    while let Some(at) = memchr::memchr2(b'\\', b'\n', rest) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(if rest[at] == b'\\' { b"\\\\" } else { b"\\n" });
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(b"\n# TYPE ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(kind.as_bytes());
    out.push(b'\n');
}

/// A sample value.
pub trait Value {
    /// Appends the value as exposition text.
    fn write_to(&self, out: &mut Vec<u8>);
}

impl Value for u64 {
    fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
    }
}

impl Value for i64 {
    fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(itoa::Buffer::new().format(*self).as_bytes());
    }
}

impl Value for f64 {
    fn write_to(&self, out: &mut Vec<u8>) {
        if self.is_nan() {
            out.extend_from_slice(b"NaN");
        } else if self.is_infinite() {
            out.extend_from_slice(if *self > 0.0 { b"+Inf" } else { b"-Inf" });
        } else {
            write_f64(out, *self);
        }
    }
}

/// Writes one sample line: `name{k="v",...} value`.
pub fn sample(out: &mut Vec<u8>, name: &str, labels: &[(&str, &str)], value: impl Value) {
    out.extend_from_slice(name.as_bytes());
    write_labels(out, labels);
    out.push(b' ');
    value.write_to(out);
    out.push(b'\n');
}

/// Writes a label set (nothing when empty), escaping values.
pub fn write_labels(out: &mut Vec<u8>, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push(b'{');
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"=\"");
        escape_label_value(out, value);
        out.push(b'"');
    }
    out.push(b'}');
}

/// Escapes a label value: `\` → `\\`, `"` → `\"`, newline → `\n`. The
/// runs between them (all of almost every value) are copied whole: the
/// sidecar's own metrics are written on every scrape.
pub fn escape_label_value(out: &mut Vec<u8>, value: &str) {
    let mut rest = value.as_bytes();
    while let Some(at) = memchr::memchr3(b'\\', b'"', b'\n', rest) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(match rest[at] {
            b'\\' => b"\\\\",
            b'"' => b"\\\"",
            _ => b"\\n",
        });
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

/// Writes the samples of one histogram series. `counts[i]` is the number
/// of observations in bucket `i` alone (not cumulative); the last count is
/// the `+Inf` bucket, so `counts.len() == bounds.len() + 1`. Rendered on
/// every scrape, so written in place: no allocation per bucket.
pub fn histogram(
    out: &mut Vec<u8>,
    name: &str,
    labels: &[(&str, &str)],
    bounds: &[f64],
    counts: &[u64],
    sum: f64,
) {
    debug_assert_eq!(counts.len(), bounds.len() + 1);
    let mut cumulative = 0u64;
    for (i, count) in counts.iter().enumerate() {
        cumulative += count;
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"_bucket{");
        for (key, value) in labels {
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"=\"");
            escape_label_value(out, value);
            out.extend_from_slice(b"\",");
        }
        out.extend_from_slice(b"le=\"");
        match bounds.get(i) {
            Some(bound) => bound.write_to(out),
            None => out.extend_from_slice(b"+Inf"),
        }
        out.extend_from_slice(b"\"} ");
        cumulative.write_to(out);
        out.push(b'\n');
    }
    let tail = |out: &mut Vec<u8>, suffix: &[u8], value: &dyn Value| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(suffix);
        write_labels(out, labels);
        out.push(b' ');
        value.write_to(out);
        out.push(b'\n');
    };
    tail(out, b"_sum", &sum);
    tail(out, b"_count", &cumulative);
}

/// Writes `x` as Rust's `Display` would (the shortest text that reads
/// back as `x`), without its cost for the usual case: a number with at
/// most six decimals, as bucket bounds and most values are.
fn write_f64(out: &mut Vec<u8>, x: f64) {
    const SCALE: f64 = 1e6;
    let scaled = (x * SCALE).round();
    if x.abs() < 1e9 && scaled / SCALE == x && !(x == 0.0 && x.is_sign_negative()) {
        let scaled = scaled as i64;
        if scaled < 0 {
            out.push(b'-');
        }
        let magnitude = scaled.unsigned_abs();
        out.extend_from_slice(itoa::Buffer::new().format(magnitude / 1_000_000).as_bytes());
        let mut fraction = magnitude % 1_000_000;
        if fraction != 0 {
            let mut digits = 6;
            while fraction.is_multiple_of(10) {
                fraction /= 10;
                digits -= 1;
            }
            out.push(b'.');
            let mut buffer = itoa::Buffer::new();
            let text = buffer.format(fraction);
            out.extend(std::iter::repeat_n(b'0', digits - text.len()));
            out.extend_from_slice(text.as_bytes());
        }
        return;
    }
    let mut s = String::new();
    let _ = write!(s, "{x}");
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_written_as_display_writes_them() {
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.0005,
            0.001,
            0.0025,
            2.5,
            10.0,
            30.0,
            600.0,
            0.1,
            0.2,
            0.3,
            1e-7,
            123456.789,
            999_999_999.5,
            1e9,
            1e15,
            1e21,
            -3.25,
            5e-324,
            f64::MAX,
            0.1 + 0.2,
            1.7e9,
            89144.13842920135,
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = f64::from_bits(state);
            if x.is_finite() {
                values.push(x);
            }
            values.push((state % 10_000_000) as f64 / 1e4);
            values.push((state % 1_000_000_000) as f64 / 1e6 - 500.0);
        }
        for x in values {
            let mut out = Vec::new();
            x.write_to(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), x.to_string(), "{x:e}");
        }
    }

    #[test]
    fn writes_families() {
        let mut out = Vec::new();
        header(
            &mut out,
            "x_total",
            "counter",
            "A help\\ text\nwith a newline",
        );
        sample(&mut out, "x_total", &[("a", "q\"uo\\te\n")], 3u64);
        sample(&mut out, "y", &[], f64::NAN);
        sample(&mut out, "y", &[("b", "")], 0.25);
        histogram(&mut out, "h", &[("k", "v")], &[0.5, 1.0], &[1, 0, 2], 4.5);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# HELP x_total A help\\\\ text\\nwith a newline\n\
             # TYPE x_total counter\n\
             x_total{a=\"q\\\"uo\\\\te\\n\"} 3\n\
             y NaN\n\
             y{b=\"\"} 0.25\n\
             h_bucket{k=\"v\",le=\"0.5\"} 1\n\
             h_bucket{k=\"v\",le=\"1\"} 1\n\
             h_bucket{k=\"v\",le=\"+Inf\"} 3\n\
             h_sum{k=\"v\"} 4.5\n\
             h_count{k=\"v\"} 3\n"
        );
    }
}
