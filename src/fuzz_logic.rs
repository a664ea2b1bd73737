//! The properties the fuzz targets check, kept in the library so that the
//! targets stay a few lines and the properties compile (and run in unit
//! tests) with everything else.

use crate::http::request::{Limits, parse_head};
use crate::prom::Relabeler;
use crate::prom::line::{Line, classify};
use crate::prom::standard::{SGLANG, VLLM};

/// Relabels arbitrary bytes, split where the first input byte says and
/// through a window the second one sets, and checks that nothing panics
/// and every original byte comes out first, in order (a trailing `# EOF`
/// excepted, which moves to the very end).
pub fn relabel(data: &[u8]) {
    let [split, window, input @ ..] = data else {
        return;
    };
    let split = usize::from(*split).min(input.len());
    // At least 8: a `# EOF` line must fit to be recognised.
    let window = (usize::from(*window) + 2) * 4;
    // Where the last line starts, and whether it is `# EOF`.
    let body = input.strip_suffix(b"\n").unwrap_or(input);
    let last_start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let ends_with_eof = classify(&body[last_start..]) == Line::Eof;
    for table in [VLLM, SGLANG] {
        let mut relabeler = Relabeler::with_window(table, window);
        let mut out = Vec::new();
        relabeler.feed(&input[..split], &mut out);
        relabeler.feed(&input[split..], &mut out);
        relabeler.finish(&mut out, |out| out.extend_from_slice(b"own 1\n"));
        if ends_with_eof {
            let mut eof = input[last_start..].to_vec();
            if eof.last() != Some(&b'\n') {
                eof.push(b'\n');
            }
            assert!(
                out.starts_with(&input[..last_start]),
                "originals before # EOF changed"
            );
            assert!(out[..out.len() - eof.len()].ends_with(b"own 1\n"));
            assert!(out.ends_with(&eof), "# EOF is not last");
        } else {
            assert!(out.starts_with(input), "originals changed");
            assert!(out.ends_with(b"own 1\n"));
        }
    }
}

/// Parses arbitrary bytes as a request head: never panics, never claims
/// more bytes than it was given, and agrees with itself on any prefix.
pub fn request(data: &[u8]) {
    let limits = Limits {
        max_head: 4096,
        max_body: 1 << 20,
    };
    match parse_head(data, &limits) {
        Ok(Some((request, len))) => {
            assert!(len <= data.len());
            assert!(request.path.len() < data.len());
            // The same head with anything after it parses the same way.
            let (again, len_again) = parse_head(&data[..len], &limits).unwrap().unwrap();
            assert_eq!((again.path, len_again), (request.path, len));
        }
        Ok(None) => assert!(data.len() <= limits.max_head),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn properties_hold_on_samples() {
        let samples: [&[u8]; 7] = [
            b"\x05\x10# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 1\n",
            b"\x00\x01# EOF\n",
            b"\x03\x02a 1\n# EOF",
            b"\xff\xff\xfe\xfd",
            b"",
            b"\x02\x00vllm:num_requests_waiting{a=\"\n",
            // Found by fuzzing: two terminators; the last one goes last.
            b"\x20\x40a 1\n# EOF\n# EOF\n",
        ];
        for sample in samples {
            super::relabel(sample);
        }
        for raw in [
            &b"GET / HTTP/1.1\r\n\r\nrest"[..],
            b"GET",
            b"\r\n\r\n",
            b"POST /x HTTP/1.0\r\nContent-Length: 3\r\n\r\n",
        ] {
            super::request(raw);
        }
    }
}
