//! The text format as prometheus_client writes it: HELP and label escaping,
//! `floatToGoString` (Python `repr` with Go-style exponents).

use std::io::Write as _;

/// HELP escaping of `generate_latest`: backslash and newline only.
pub(super) fn escape_help(out: &mut Vec<u8>, s: &str) {
    for &c in s.as_bytes() {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(c),
        }
    }
}

/// Label value escaping: backslash, newline and double quote.
pub(super) fn escape_label_value(out: &mut Vec<u8>, s: &str) {
    for &c in s.as_bytes() {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' => out.extend_from_slice(b"\\\""),
            _ => out.push(c),
        }
    }
}

/// `floatToGoString` as a `String` (bucket bounds).
pub(super) fn go_float_string(v: f64) -> String {
    let mut out = Vec::new();
    write_go_float(&mut out, v);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `v` as prometheus_client's `floatToGoString` renders it:
///
/// ```python
/// s = repr(d); dot = s.find('.')
/// if d > 0 and dot > 6:
///     mantissa = f'{s[0]}.{s[1:dot]}{s[dot + 1:]}'.rstrip('0.')
///     return f'{mantissa}e+0{dot - 1}'
/// return s
/// ```
pub(super) fn write_go_float(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
        return;
    }
    let mut repr = SmallBuf::new();
    python_repr(v, &mut repr);
    let s = repr.as_bytes();
    if v > 0.0
        && let Some(dot) = s.iter().position(|&c| c == b'.').filter(|&dot| dot > 6)
    {
        let start = out.len();
        out.push(s[0]);
        out.push(b'.');
        out.extend_from_slice(&s[1..dot]);
        out.extend_from_slice(&s[dot + 1..]);
        while out.len() > start && matches!(out.last(), Some(b'0' | b'.')) {
            out.pop();
        }
        // Not a typo: the library pads with a literal "0", so ten digits give `e+010`.
        out.extend_from_slice(b"e+0");
        write_decimal(out, (dot - 1) as u64);
        return;
    }
    out.extend_from_slice(s);
}

/// A fixed-capacity byte buffer: float formatting without heap allocation.
pub(super) struct SmallBuf {
    pub(super) buf: [u8; 48],
    pub(super) len: usize,
}

impl SmallBuf {
    pub(super) fn new() -> SmallBuf {
        SmallBuf {
            buf: [0; 48],
            len: 0,
        }
    }

    pub(super) fn push(&mut self, c: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = c;
            self.len += 1;
        }
    }

    pub(super) fn extend(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|&c| self.push(c));
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Python's `repr(float)` for finite values: shortest round-trip digits, positional notation
/// for decimal exponents -4..=15, otherwise `d.ddde±XX`.
pub(super) fn python_repr(v: f64, out: &mut SmallBuf) {
    if v.is_sign_negative() {
        out.push(b'-');
    }
    let a = v.abs();
    if a == 0.0 {
        out.extend(b"0.0");
        return;
    }
    if a < 1e16 && a.fract() == 0.0 {
        // Integral values below 1e16 are exact in repr: "<digits>.0".
        let mut digits = [0u8; 20];
        let n = decimal_digits(a as u64, &mut digits);
        out.extend(&digits[..n]);
        out.extend(b".0");
        return;
    }
    // Rust's `{:e}` yields the shortest round-trip digits, as Python's repr does.
    let mut digits = [0u8; 24];
    let (mut nd, mut exp) = scientific_digits(a, None, &mut digits);
    if nd >= 16 {
        // With 16-17 digits several strings of that length can round-trip, and on an exact
        // tie Python picks the even digit; Rust's exact-precision mode rounds the same way.
        let mut exact = [0u8; 24];
        let (exact_nd, exact_exp) = scientific_digits(a, Some(nd - 1), &mut exact);
        if parses_back(&exact[..exact_nd], exact_exp, a) {
            (digits, nd, exp) = (exact, exact_nd, exact_exp);
        }
    }
    if nd == 0 {
        out.extend(b"0.0");
        return;
    }
    let digits = &digits[..nd];
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if nd <= int_len {
                out.extend(digits);
                (nd..int_len).for_each(|_| out.push(b'0'));
                out.extend(b".0");
            } else {
                out.extend(&digits[..int_len]);
                out.push(b'.');
                out.extend(&digits[int_len..]);
            }
        } else {
            out.extend(b"0.");
            (0..(-exp - 1)).for_each(|_| out.push(b'0'));
            out.extend(digits);
        }
    } else {
        out.push(digits[0]);
        if nd > 1 {
            out.push(b'.');
            out.extend(&digits[1..]);
        }
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        let abs = exp.unsigned_abs();
        if abs < 10 {
            out.push(b'0');
        }
        let mut buf = [0u8; 20];
        let n = decimal_digits(u64::from(abs), &mut buf);
        out.extend(&buf[..n]);
    }
}

/// Significant digits (trailing zeros dropped) and decimal exponent of `a` in scientific
/// notation: shortest round-trip, or rounded to `precision` fractional digits.
pub(super) fn scientific_digits(
    a: f64,
    precision: Option<usize>,
    digits: &mut [u8; 24],
) -> (usize, i32) {
    let mut sci = [0u8; 48];
    let len = {
        let mut w: &mut [u8] = &mut sci;
        let _ = match precision {
            Some(p) => write!(w, "{a:.p$e}"),
            None => write!(w, "{a:e}"),
        };
        48 - w.len()
    };
    let sci = &sci[..len];
    let e_pos = sci.iter().position(|&c| c == b'e').unwrap_or(len);
    let mut nd = 0;
    for &c in sci[..e_pos].iter().filter(|c| c.is_ascii_digit()) {
        if nd < digits.len() {
            digits[nd] = c;
            nd += 1;
        }
    }
    while nd > 1 && digits[nd - 1] == b'0' {
        nd -= 1;
    }
    let exp = std::str::from_utf8(sci.get(e_pos + 1..).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (nd, exp)
}

/// Whether the scientific notation `d.ddd e exp` reads back as exactly `a`.
pub(super) fn parses_back(digits: &[u8], exp: i32, a: f64) -> bool {
    let Some((first, rest)) = digits.split_first() else {
        return false;
    };
    let mut text = SmallBuf::new();
    text.push(*first);
    if !rest.is_empty() {
        text.push(b'.');
        text.extend(rest);
    }
    text.push(b'e');
    if exp < 0 {
        text.push(b'-');
    }
    let mut buf = [0u8; 20];
    let n = decimal_digits(u64::from(exp.unsigned_abs()), &mut buf);
    text.extend(&buf[..n]);
    std::str::from_utf8(text.as_bytes())
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        == Some(a)
}

/// Writes the decimal digits of `n` into `buf`, returning how many.
pub(super) fn decimal_digits(mut n: u64, buf: &mut [u8; 20]) -> usize {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = tmp.len() - i;
    buf[..len].copy_from_slice(&tmp[i..]);
    len
}

pub(super) fn write_decimal(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let len = decimal_digits(n, &mut buf);
    out.extend_from_slice(&buf[..len]);
}
