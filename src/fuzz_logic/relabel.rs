//! The `relabel` target's property: originals pass through the
//! relabeler unchanged and in order, wherever the input is split.

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
