//! Streaming gzip, both ways, on reusable state.
//!
//! Prometheus asks for gzip, so responses are compressed as they stream;
//! an engine may gzip its body, so that is inflated as it streams. Both
//! sides keep their zlib state between scrapes ([`GzipEncoder::reset`]),
//! which matters: a deflate state is a few hundred kilobytes.

use std::io;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Output space reserved per compression step.
const STEP: usize = 32 * 1024;

/// Compresses a stream into gzip members.
pub struct GzipEncoder {
    deflate: Compress,
}

impl std::fmt::Debug for GzipEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GzipEncoder").finish_non_exhaustive()
    }
}

impl Default for GzipEncoder {
    fn default() -> Self {
        // Level 1: a scrape must cost little CPU; exposition text still
        // shrinks about tenfold.
        GzipEncoder {
            deflate: Compress::new_gzip(Compression::fast(), 15),
        }
    }
}

impl GzipEncoder {
    /// Starts a new stream.
    pub fn reset(&mut self) {
        self.deflate.reset();
    }

    /// Compresses `input`, appending whatever output is ready to `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let mut consumed = 0;
        while consumed < input.len() {
            out.reserve(STEP);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&input[consumed..], out, FlushCompress::None)
                .map_err(io::Error::other)?;
            consumed += (self.deflate.total_in() - before) as usize;
        }
        Ok(())
    }

    /// Ends the stream: flushes the rest and the gzip trailer into `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        loop {
            out.reserve(STEP);
            let status = self
                .deflate
                .compress_vec(&[], out, FlushCompress::Finish)
                .map_err(io::Error::other)?;
            if status == Status::StreamEnd {
                return Ok(());
            }
        }
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

    #[test]
    fn corrupt_input_is_an_error() {
        let mut decoder = GzipDecoder::default();
        let err = decoder
            .decode(b"not gzip at all", &mut Vec::new(), |_| {})
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
