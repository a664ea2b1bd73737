//! Streaming gzip, both ways, on reusable state.
//!
//! Prometheus asks for gzip, so responses are compressed as they stream;
//! an engine may gzip its body, so that is inflated as it streams. Both
//! sides keep their state between scrapes ([`GzipEncoder::reset`]), which
//! matters: a deflate state is about a hundred kilobytes.
//!
//! Compression is ISA-L's igzip at its level 1 (`isal-rs`): on vLLM
//! payloads of 114 KB and 1 MB it takes 0.36-0.39x the CPU of zlib-rs at
//! level 1, the fastest zlib level, and its output is 18-22% smaller
//! (`cargo bench --bench gzip`, docs/benchmarks.md). Inflating stays with
//! zlib-rs.

use std::io::{self, Write as _};

use flate2::{Decompress, FlushDecompress, Status};
use isal::write::Encoder;
use isal::{Codec, CompressionLevel};

/// Output space reserved per inflate step.
const STEP: usize = 32 * 1024;

/// Compresses a stream into gzip members.
pub struct GzipEncoder {
    /// igzip's stream; what it writes collects in its `Vec` until handed
    /// over to the caller's buffer. Boxed: igzip's state (its history
    /// buffer and hash table) lies inside the stream, 85 KB, and a
    /// scrape's buffers move in and out of the worker's pool by value.
    deflate: Box<Encoder<Vec<u8>>>,
    /// Input went in since the last member ended: a reset has to close
    /// that member (a scrape whose client went away) before the next.
    open: bool,
}

impl std::fmt::Debug for GzipEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipEncoder")
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl Default for GzipEncoder {
    fn default() -> Self {
        GzipEncoder {
            deflate: Box::new(Encoder::new(Vec::new(), CompressionLevel::One, Codec::Gzip)),
            open: false,
        }
    }
}

impl GzipEncoder {
    /// Starts a new stream.
    pub fn reset(&mut self) {
        if self.open {
            // The abandoned member is ended and its bytes dropped; should
            // igzip refuse even that, a new state starts clean.
            if self.deflate.flush().is_err() {
                *self = GzipEncoder::default();
            }
            self.open = false;
        }
        self.deflate.get_ref_mut().clear();
    }

    /// Compresses `input`, appending whatever output is ready to `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if input.is_empty() {
            return Ok(());
        }
        self.open = true;
        self.deflate.write_all(input)?;
        out.append(self.deflate.get_ref_mut());
        Ok(())
    }

    /// Ends the stream: flushes the rest and the gzip trailer into `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        // igzip's flush ends the member and readies the state for the next.
        self.deflate.flush()?;
        self.open = false;
        out.append(self.deflate.get_ref_mut());
        Ok(())
    }
}

/// Inflates a gzip stream.
pub struct GzipDecoder {
    inflate: Decompress,
    done: bool,
}

impl std::fmt::Debug for GzipDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipDecoder")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Default for GzipDecoder {
    fn default() -> Self {
        GzipDecoder {
            inflate: Decompress::new_gzip(15),
            done: false,
        }
    }
}

impl GzipDecoder {
    /// Whether the gzip trailer has been read (and its CRC checked).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Inflates `input`, handing each run of output to `sink`; `scratch`
    /// is the output buffer to reuse.
    pub fn decode(
        &mut self,
        input: &[u8],
        scratch: &mut Vec<u8>,
        mut sink: impl FnMut(&[u8]),
    ) -> io::Result<()> {
        let mut consumed = 0;
        while !self.done {
            scratch.clear();
            scratch.reserve(STEP);
            let before = self.inflate.total_in();
            let status = self
                .inflate
                .decompress_vec(&input[consumed..], scratch, FlushDecompress::None)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            consumed += (self.inflate.total_in() - before) as usize;
            if !scratch.is_empty() {
                sink(scratch);
            }
            self.done = status == Status::StreamEnd;
            let output_full = scratch.len() == scratch.capacity();
            if consumed == input.len() && !output_full {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_pieces() {
        let text: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("metric{{i=\"{i}\"}} {i}\n").into_bytes())
            .collect();
        let mut encoder = GzipEncoder::default();
        for _ in 0..2 {
            encoder.reset();
            let mut compressed = Vec::new();
            for piece in text.chunks(7_000) {
                encoder.encode(piece, &mut compressed).unwrap();
            }
            encoder.finish(&mut compressed).unwrap();
            assert!(
                compressed.len() < text.len() / 2,
                "{} of {}",
                compressed.len(),
                text.len()
            );

            let mut decoder = GzipDecoder::default();
            let mut scratch = Vec::new();
            let mut plain = Vec::new();
            for piece in compressed.chunks(1_000) {
                decoder
                    .decode(piece, &mut scratch, |d| plain.extend_from_slice(d))
                    .unwrap();
            }
            assert!(decoder.is_done());
            assert_eq!(plain, text);
        }
    }

    fn inflate(compressed: &[u8]) -> Vec<u8> {
        let mut decoder = GzipDecoder::default();
        let mut plain = Vec::new();
        decoder
            .decode(compressed, &mut Vec::new(), |d| plain.extend_from_slice(d))
            .unwrap();
        assert!(decoder.is_done(), "no gzip trailer");
        plain
    }

    /// A scrape whose client went away leaves a member open; the next
    /// scrape's stream must not carry any of it.
    #[test]
    fn a_reset_mid_stream_starts_a_clean_member() {
        let mut encoder = GzipEncoder::default();
        encoder.reset();
        let mut abandoned = Vec::new();
        encoder
            .encode(&b"abandoned 1\n".repeat(5_000), &mut abandoned)
            .unwrap();

        encoder.reset();
        let mut compressed = Vec::new();
        encoder.encode(b"next 2\n", &mut compressed).unwrap();
        encoder.finish(&mut compressed).unwrap();
        assert_eq!(inflate(&compressed), b"next 2\n");
    }

    #[test]
    fn an_empty_body_is_an_empty_member() {
        let mut encoder = GzipEncoder::default();
        encoder.reset();
        let mut compressed = Vec::new();
        encoder.encode(b"", &mut compressed).unwrap();
        encoder.finish(&mut compressed).unwrap();
        assert!(inflate(&compressed).is_empty());
    }

    /// A scrape's buffers, this state among them, move by value between
    /// the worker's pool and the scrape: igzip's state must stay behind a
    /// pointer, or every scrape copies it (`perf` saw 5% of a gzip
    /// scrape in those moves).
    #[test]
    fn the_encoder_is_cheap_to_move() {
        assert!(
            size_of::<GzipEncoder>() <= 64,
            "{} bytes",
            size_of::<GzipEncoder>()
        );
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let mut decoder = GzipDecoder::default();
        let err = decoder
            .decode(b"not gzip at all", &mut Vec::new(), |_| {})
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
