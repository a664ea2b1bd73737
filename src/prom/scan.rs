//! Splitting a byte stream into lines, whatever its chunking.
//!
//! The engine's body arrives in chunks that end anywhere: in the middle of a
//! line, a label value or a UTF-8 sequence. [`LineScanner`] hands its visitor
//! whole lines straight out of each chunk (no copy) and carries only the
//! unfinished tail of a chunk over to the next one.
//!
//! Memory stays bounded whatever the engine sends: a line longer than the
//! scanner's window is not collected. The visitor gets its first `window`
//! bytes as a [`Piece::Head`], enough to classify it, and the rest as
//! [`Piece::Tail`]s as they arrive. A chunk boundary mid-line is the normal
//! case, not an error, so there is no error type here.

use memchr::{memchr, memchr_iter};

/// Default window: no sane metric line is longer, and a 1 MB line costs
/// no more memory than this.
pub const DEFAULT_WINDOW: usize = 64 * 1024;

/// A piece of the stream, in stream order. Every byte of the input is in
/// exactly one piece, so writing the pieces out reproduces the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A complete line, its `\n` included (absent only on the last line of
    /// a stream that does not end with one).
    Line(&'a [u8]),
    /// The first bytes (at least the window) of a line longer than the
    /// window. More of it follows as [`Piece::Tail`]s.
    Head(&'a [u8]),
    /// More bytes of a long line; `end` is set on its last piece, which
    /// holds the `\n` if the line had one.
    Tail {
        /// The bytes.
        bytes: &'a [u8],
        /// Whether the line ends here.
        end: bool,
    },
}

/// A rolling line splitter (a small relative of ripgrep's `LineBuffer`).
#[derive(Debug)]
pub struct LineScanner {
    /// The start of the current line, carried over from earlier chunks.
    /// INVARIANT: holds no `\n`, is empty while `in_long_line`, and is not
    /// longer than `window` between calls.
    partial: Vec<u8>,
    /// Whether the current line's head has been delivered and its tail is
    /// still streaming.
    in_long_line: bool,
    window: usize,
}

impl Default for LineScanner {
    fn default() -> Self {
        LineScanner::new(DEFAULT_WINDOW)
    }
}

impl LineScanner {
    /// A scanner that collects lines of up to `window` bytes.
    pub fn new(window: usize) -> LineScanner {
        LineScanner {
            partial: Vec::new(),
            in_long_line: false,
            window: window.max(1),
        }
    }

    /// Forgets any unfinished line, keeping the allocation.
    pub fn reset(&mut self) {
        self.partial.clear();
        self.in_long_line = false;
    }

    /// Feeds the next chunk of the stream; `visit` sees every piece that
    /// this chunk completes, in order.
    pub fn feed(&mut self, chunk: &[u8], mut visit: impl FnMut(Piece<'_>)) {
        debug_assert!(self.partial.len() <= self.window && !self.partial.contains(&b'\n'));
        let mut rest = chunk;
        if self.in_long_line {
            match memchr(b'\n', rest) {
                Some(i) => {
                    visit(Piece::Tail {
                        bytes: &rest[..=i],
                        end: true,
                    });
                    self.in_long_line = false;
                    rest = &rest[i + 1..];
                }
                None => {
                    if !rest.is_empty() {
                        visit(Piece::Tail {
                            bytes: rest,
                            end: false,
                        });
                    }
                    return;
                }
            }
        } else if !self.partial.is_empty() {
            match memchr(b'\n', rest) {
                Some(i) => {
                    // Completing the line may take it past the window; it
                    // is still bounded by one chunk and delivered at once.
                    self.partial.extend_from_slice(&rest[..=i]);
                    visit(Piece::Line(&self.partial));
                    self.partial.clear();
                    rest = &rest[i + 1..];
                }
                None if self.partial.len() + rest.len() <= self.window => {
                    self.partial.extend_from_slice(rest);
                    return;
                }
                None => {
                    let fill = self.window - self.partial.len();
                    self.partial.extend_from_slice(&rest[..fill]);
                    visit(Piece::Head(&self.partial));
                    self.partial.clear();
                    self.in_long_line = true;
                    if fill < rest.len() {
                        visit(Piece::Tail {
                            bytes: &rest[fill..],
                            end: false,
                        });
                    }
                    return;
                }
            }
        }

        let mut start = 0;
        for_each_newline(rest, |end| {
            visit(Piece::Line(&rest[start..=end]));
            start = end + 1;
        });
        let tail = &rest[start..];
        if tail.len() > self.window {
            visit(Piece::Head(tail));
            self.in_long_line = true;
        } else {
            self.partial.extend_from_slice(tail);
        }
    }

    /// Ends the stream: delivers a last line that had no `\n`.
    pub fn finish(&mut self, mut visit: impl FnMut(Piece<'_>)) {
        if self.in_long_line {
            visit(Piece::Tail {
                bytes: &[],
                end: true,
            });
        } else if !self.partial.is_empty() {
            visit(Piece::Line(&self.partial));
        }
        self.reset();
    }
}

/// Calls `f` with the index of every `\n` in `haystack`, in order. Where
/// the CPU has AVX2, its searcher is called directly: `memchr_iter`'s own
/// dispatch, a call through a function pointer per line, drew a third as
/// many samples as the search itself (relabeling 2-6% faster, `relabel`
/// benchmark).
#[inline]
fn for_each_newline(haystack: &[u8], f: impl FnMut(usize)) {
    #[cfg(target_arch = "x86_64")]
    if let Some(finder) = memchr::arch::x86_64::avx2::memchr::One::new(b'\n') {
        return finder.iter(haystack).for_each(f);
    }
    memchr_iter(b'\n', haystack).for_each(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `input` split into `chunk`-sized pieces; returns what was seen,
    /// rendered as a readable trace.
    fn trace(input: &[u8], chunk: usize, window: usize) -> Vec<String> {
        let mut scanner = LineScanner::new(window);
        let mut seen = Vec::new();
        let mut record = |p: Piece<'_>| {
            seen.push(match p {
                Piece::Line(l) => format!("L:{}", String::from_utf8_lossy(l)),
                Piece::Head(h) => format!("H:{}", String::from_utf8_lossy(h)),
                Piece::Tail { bytes, end } => {
                    format!("T{}:{}", u8::from(end), String::from_utf8_lossy(bytes))
                }
            })
        };
        for c in input.chunks(chunk.max(1)) {
            scanner.feed(c, &mut record);
        }
        scanner.finish(&mut record);
        seen
    }

    /// The bytes the scanner handed over, in order, and how many lines
    /// it ended (a whole line, or a long one's last tail).
    fn reassembled(input: &[u8], chunk: usize, window: usize) -> (Vec<u8>, usize) {
        let mut scanner = LineScanner::new(window);
        let mut out = Vec::new();
        let mut lines = 0;
        let mut write = |p: Piece<'_>| match p {
            Piece::Line(l) => {
                assert!(!l[..l.len() - 1].contains(&b'\n'));
                lines += 1;
                out.extend_from_slice(l)
            }
            Piece::Tail { bytes, end } => {
                lines += usize::from(end);
                out.extend_from_slice(bytes)
            }
            Piece::Head(b) => out.extend_from_slice(b),
        };
        for c in input.chunks(chunk.max(1)) {
            scanner.feed(c, &mut write);
        }
        scanner.finish(&mut write);
        (out, lines)
    }

    #[test]
    fn whole_lines_in_one_chunk() {
        assert_eq!(trace(b"a 1\nb 2\n", 100, 64), ["L:a 1\n", "L:b 2\n"]);
        assert_eq!(trace(b"a 1\nb 2", 100, 64), ["L:a 1\n", "L:b 2"]);
        assert_eq!(trace(b"\n\n", 100, 64), ["L:\n", "L:\n"]);
        assert!(trace(b"", 100, 64).is_empty());
    }

    #[test]
    fn lines_across_chunks() {
        assert_eq!(trace(b"abc 1\nd 2\n", 1, 64), ["L:abc 1\n", "L:d 2\n"]);
        assert_eq!(trace(b"abc 1\nd 2\n", 4, 64), ["L:abc 1\n", "L:d 2\n"]);
    }

    #[test]
    fn long_lines_stream_with_bounded_memory() {
        assert_eq!(trace(b"abcdefgh\nx\n", 100, 4), ["L:abcdefgh\n", "L:x\n"]);
        // The unterminated tail of a chunk is longer than the window.
        assert_eq!(
            trace(b"abcdefgh\nx\n", 6, 4),
            ["H:abcdef", "T1:gh\n", "L:x\n"]
        );
        assert_eq!(
            trace(b"abcdefgh\nx\n", 3, 4),
            ["H:abcd", "T0:ef", "T1:gh\n", "L:x\n"]
        );
        assert_eq!(
            trace(b"abcdefgh", 3, 4),
            ["H:abcd", "T0:ef", "T0:gh", "T1:"]
        );
    }

    #[test]
    fn every_byte_survives_every_split() {
        let input =
            b"# HELP a x\n# TYPE a gauge\na{l=\"v\"} 1\n\nlong_line_here 12345678901234567890\nz 1";
        // Lines end at each newline, and once more after an unterminated last one.
        let lines =
            input.iter().filter(|&&b| b == b'\n').count() + usize::from(!input.ends_with(b"\n"));
        for window in [1, 3, 8, 64] {
            for chunk in 1..=input.len() {
                assert_eq!(
                    reassembled(input, chunk, window),
                    (input.to_vec(), lines),
                    "chunk {chunk} window {window}"
                );
            }
        }
    }
}
