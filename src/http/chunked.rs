//! `Transfer-Encoding: chunked`, both ways, without copying payload bytes.
//!
//! [`ChunkedDecoder`] is a byte-level state machine: it takes whatever
//! the socket delivered, hands the payload slices inside it to a callback
//! and remembers where it stopped, so a chunk header split across reads is
//! just the normal case. [`frame_begin`]/[`frame_end`] write a chunk around
//! bytes that are already in the output buffer.

/// The body's chunked framing is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A chunk size that is not hex, or too large.
    #[error("invalid chunk size")]
    Size,
    /// Missing CRLF after a chunk's data.
    #[error("missing CRLF after chunk data")]
    DataEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size {
        size: u64,
        digits: u8,
    },
    /// Skipping a chunk extension up to the end of the line.
    Extension {
        size: u64,
    },
    /// Expecting the `\n` of the size line.
    SizeLf {
        size: u64,
    },
    /// Inside chunk data.
    Data {
        remaining: u64,
    },
    /// Expecting the CRLF after chunk data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (after the last chunk).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// Expecting `\n` of the final empty line.
    EndLf,
    TrailerLf,
    Done,
}

/// Decodes a chunked body incrementally.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size { size: 0, digits: 0 },
        }
    }
}

impl ChunkedDecoder {
    /// Whether the final chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes `input`, calling `data` with each run of payload bytes.
    /// Returns how many bytes of `input` belong to this body: all of them,
    /// unless the body ended inside `input`.
    pub fn decode(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                State::Size { size, digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= 15 {
                            return Err(ChunkError::Size);
                        }
                        let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                        State::Size {
                            size: size * 16 + digit,
                            digits: digits + 1,
                        }
                    }
                    _ if digits == 0 => return Err(ChunkError::Size),
                    b';' | b' ' | b'\t' => State::Extension { size },
                    b'\r' => State::SizeLf { size },
                    b'\n' => Self::after_size(size),
                    _ => return Err(ChunkError::Size),
                },
                State::Extension { size } => match b {
                    b'\r' => State::SizeLf { size },
                    b'\n' => Self::after_size(size),
                    _ => State::Extension { size },
                },
                State::SizeLf { size } => match b {
                    b'\n' => Self::after_size(size),
                    _ => return Err(ChunkError::Size),
                },
                State::Data { remaining } => {
                    let available = (input.len() - i) as u64;
                    let take = remaining.min(available) as usize;
                    data(&input[i..i + take]);
                    i += take;
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining }
                    };
                    continue;
                }
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    b'\n' => State::Size { size: 0, digits: 0 },
                    _ => return Err(ChunkError::DataEnd),
                },
                State::DataLf => match b {
                    b'\n' => State::Size { size: 0, digits: 0 },
                    _ => return Err(ChunkError::DataEnd),
                },
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    b'\n' => State::Done,
                    _ => State::Trailer,
                },
                State::Trailer => match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => State::TrailerStart,
                    _ => State::Trailer,
                },
                State::TrailerLf => match b {
                    b'\n' => State::TrailerStart,
                    _ => State::Trailer,
                },
                State::EndLf => match b {
                    b'\n' => State::Done,
                    _ => return Err(ChunkError::DataEnd),
                },
                State::Done => return Ok(i),
            };
            i += 1;
            if self.state == State::Done {
                return Ok(i);
            }
        }
        Ok(i)
    }

    fn after_size(size: u64) -> State {
        if size == 0 {
            State::TrailerStart
        } else {
            State::Data { remaining: size }
        }
    }
}

/// Bytes reserved in front of a chunk for its size line.
pub const FRAME_HEADER: usize = 10;

/// Starts a chunk at the end of `buf`: reserves room for the size line.
/// The payload is then appended to `buf` directly.
pub fn frame_begin(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[b'0'; FRAME_HEADER]);
    start
}

/// Closes the chunk begun at `start`. Returns false, leaving nothing of
/// it in `buf`, when it is empty (an empty chunk would end the body).
pub fn frame_end(buf: &mut Vec<u8>, start: usize) -> bool {
    let len = buf.len() - start - FRAME_HEADER;
    if len == 0 {
        buf.truncate(start);
        return false;
    }
    // Leading zeros are valid chunk-size digits (RFC 9112 section 7.1).
    let header = format!("{len:08x}\r\n");
    debug_assert_eq!(header.len(), FRAME_HEADER);
    buf[start..start + FRAME_HEADER].copy_from_slice(header.as_bytes());
    buf.extend_from_slice(b"\r\n");
    true
}

/// The last chunk, ending a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut out = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step.max(1)) {
            let n = decoder.decode(piece, |d| out.extend_from_slice(d))?;
            used += n;
            if decoder.is_done() {
                break;
            }
        }
        Ok((out, used, decoder.is_done()))
    }

    #[test]
    fn decodes_at_every_split() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: y\r\n\r\nNEXT";
        for step in 1..=body.len() {
            let (out, used, done) = decode_all(body, step).unwrap();
            assert_eq!(out, b"hello world", "step {step}");
            assert!(done);
            assert_eq!(used, body.len() - 4, "step {step}");
        }
    }

    #[test]
    fn tolerates_bare_lf() {
        let (out, _, done) = decode_all(b"3\nabc\n0\n\n", 100).unwrap();
        assert_eq!(out, b"abc");
        assert!(done);
    }

    #[test]
    fn incomplete_is_not_done() {
        let (out, _, done) = decode_all(b"a\r\n01234", 100).unwrap();
        assert_eq!(out, b"01234");
        assert!(!done);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(decode_all(b"zz\r\n", 100), Err(ChunkError::Size));
        assert_eq!(decode_all(b"\r\n", 100), Err(ChunkError::Size));
        assert_eq!(decode_all(b"3\r\nabcX", 100), Err(ChunkError::DataEnd));
        assert_eq!(
            decode_all(b"1000000000000000\r\n", 100),
            Err(ChunkError::Size)
        );
    }

    #[test]
    fn frames_round_trip() {
        let mut buf = b"HEAD".to_vec();
        let start = frame_begin(&mut buf);
        buf.extend_from_slice(b"payload");
        assert!(frame_end(&mut buf, start));
        let start = frame_begin(&mut buf);
        assert!(!frame_end(&mut buf, start));
        buf.extend_from_slice(LAST_CHUNK);
        let (out, _, done) = decode_all(&buf[4..], 3).unwrap();
        assert_eq!(out, b"payload");
        assert!(done);
    }
}
