//! Writing exposition text: the sidecar's own `matrixinfer_runtime_*`
//! metrics, and error-free escaping for whoever else needs it.

use std::fmt::Write as _;

/// Writes `# HELP` and `# TYPE` for a family.
pub fn header(out: &mut Vec<u8>, name: &str, kind: &str, help: &str) {
    out.extend_from_slice(b"# HELP ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    for &b in help.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
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
            let mut s = String::new();
            let _ = write!(s, "{self}");
            out.extend_from_slice(s.as_bytes());
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

/// Escapes a label value: `\` → `\\`, `"` → `\"`, newline → `\n`.
pub fn escape_label_value(out: &mut Vec<u8>, value: &str) {
    for &b in value.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}

/// Writes the samples of one histogram series. `counts[i]` is the number
/// of observations in bucket `i` alone (not cumulative); the last count is
/// the `+Inf` bucket, so `counts.len() == bounds.len() + 1`.
pub fn histogram(
    out: &mut Vec<u8>,
    name: &str,
    labels: &[(&str, &str)],
    bounds: &[f64],
    counts: &[u64],
    sum: f64,
) {
    debug_assert_eq!(counts.len(), bounds.len() + 1);
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    for (i, count) in counts.iter().enumerate() {
        cumulative += count;
        let le = match bounds.get(i) {
            Some(bound) => {
                let mut le = String::new();
                let _ = write!(le, "{bound}");
                le
            }
            None => "+Inf".to_owned(),
        };
        let mut with_le: Vec<(&str, &str)> = labels.to_vec();
        with_le.push(("le", &le));
        sample(out, &bucket, &with_le, cumulative);
    }
    sample(out, &format!("{name}_sum"), labels, sum);
    sample(out, &format!("{name}_count"), labels, cumulative);
}

#[cfg(test)]
mod tests {
    use super::*;

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
