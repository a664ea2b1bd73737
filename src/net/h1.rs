//! HTTP/1.1 responses, sans-IO: the head parsed into what it says about
//! the body and the connection, and the body's framing removed as bytes
//! arrive. Both clients (the engine's on monoio, the blocking one for
//! downloads and LoRA calls) feed it whatever their socket delivered, so
//! they cannot disagree on the protocol.
//!
//! Framing follows RFC 9112 section 6.3: no body after `HEAD`, 1xx, 204
//! and 304; `Transfer-Encoding` overrides `Content-Length` (and the
//! connection is not reused after such a message); `chunked` is the only
//! transfer coding decoded, so any other is refused rather than passed on
//! still encoded; conflicting lengths are refused; without either header
//! the body runs to the end of the connection. A connection is kept for
//! the next request unless `Connection: close`, or HTTP/1.0 without
//! `Connection: keep-alive`.

use crate::http::chunked::{ChunkError, ChunkedDecoder};

/// Headers parsed per response head at most.
const MAX_HEADERS: usize = 64;

/// A response head that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not an HTTP/1.x response head.
    #[error("invalid response head: {0}")]
    Syntax(httparse::Error),
    /// The head is larger than the caller accepts.
    #[error("response head larger than {0} bytes")]
    TooLarge(usize),
    /// `Content-Length` is not a number, or two differ.
    #[error("invalid content-length")]
    ContentLength,
    /// A transfer coding other than `chunked`.
    #[error("unsupported transfer-encoding")]
    TransferEncoding,
}

/// The body is broken or cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The chunked framing is broken.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// The connection ended before the framing said the body did.
    #[error("the connection closed before the body was complete")]
    Truncated,
}

/// How the body's end is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// A body's content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// None (absent, empty or `identity`).
    Identity,
    /// `gzip` or `x-gzip`.
    Gzip,
    /// Anything else (`br`, `zstd`, a list …).
    Other,
}

/// What a response head says.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// Bytes of the buffer the head took, interim 1xx heads included.
    pub len: usize,
    /// The status code.
    pub status: u16,
    /// How the body ends.
    pub framing: Framing,
    /// What `Content-Encoding` says; the caller decides what it accepts
    /// (the engine client inflates gzip; downloads keep bytes as stored).
    pub coding: Coding,
    /// Whether the connection may carry another request after this body.
    pub keep_alive: bool,
    /// Header names (lowercased) and values (trimmed), when asked for.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// Parses the response head at the start of `buf`, skipping interim
    /// 1xx heads. `Ok(None)`: incomplete, read more (unless `buf` already
    /// holds `max_len` bytes, which is an error). `head_request`: the
    /// request was `HEAD`, so no body follows whatever the head says.
    /// `keep_headers`: copy the headers out (the engine client needs none).
    pub fn parse(
        buf: &[u8],
        max_len: usize,
        head_request: bool,
        keep_headers: bool,
    ) -> Result<Option<ResponseHead>, HeadError> {
        let mut start = 0;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&buf[start..]).map_err(HeadError::Syntax)? {
                httparse::Status::Partial if buf.len() >= max_len => {
                    return Err(HeadError::TooLarge(max_len));
                }
                httparse::Status::Partial => return Ok(None),
                httparse::Status::Complete(len) => {
                    let status = response.code.unwrap_or(0);
                    if (100..200).contains(&status) && status != 101 {
                        start += len;
                        continue;
                    }
                    let mut head = ResponseHead::read(&response, head_request, keep_headers)?;
                    head.len = start + len;
                    return Ok(Some(head));
                }
            }
        }
    }

    fn read(
        response: &httparse::Response<'_, '_>,
        head_request: bool,
        keep_headers: bool,
    ) -> Result<ResponseHead, HeadError> {
        let http10 = response.version == Some(0);
        let status = response.code.unwrap_or(0);
        let mut length: Option<u64> = None;
        let mut transfer_codings = 0usize;
        let mut chunked_last = false;
        let mut coding = Coding::Identity;
        let mut close = false;
        let mut keep_alive_token = false;
        let mut kept = Vec::new();
        for header in response.headers.iter() {
            let value = header.value.trim_ascii();
            if keep_headers {
                kept.push((
                    header.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(value).into_owned(),
                ));
            }
            if header.name.eq_ignore_ascii_case("content-length") {
                // A list of identical values is one length (RFC 9110 8.6).
                for item in value.split(|&b| b == b',') {
                    let n = parse_length(item.trim_ascii()).ok_or(HeadError::ContentLength)?;
                    if length.is_some_and(|seen| seen != n) {
                        return Err(HeadError::ContentLength);
                    }
                    length = Some(n);
                }
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                for coding in value.split(|&b| b == b',') {
                    let coding = coding.trim_ascii();
                    if coding.is_empty() {
                        continue;
                    }
                    // Chunked only once, and last; nothing else decoded.
                    if !coding.eq_ignore_ascii_case(b"chunked") || chunked_last {
                        return Err(HeadError::TransferEncoding);
                    }
                    transfer_codings += 1;
                    chunked_last = true;
                }
            } else if header.name.eq_ignore_ascii_case("content-encoding") {
                coding = if value.eq_ignore_ascii_case(b"gzip")
                    || value.eq_ignore_ascii_case(b"x-gzip")
                {
                    Coding::Gzip
                } else if value.is_empty() || value.eq_ignore_ascii_case(b"identity") {
                    Coding::Identity
                } else {
                    Coding::Other
                };
            } else if header.name.eq_ignore_ascii_case("connection") {
                for token in value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
        }
        let bodiless = head_request || status == 204 || status == 304;
        let framing = if bodiless {
            Framing::Empty
        } else if transfer_codings > 0 {
            Framing::Chunked
        } else {
            match length {
                Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            }
        };
        // Both length headers: a message framed two ways is not trusted
        // to leave the connection in step.
        let ambiguous = transfer_codings > 0 && length.is_some();
        let persistent = if http10 {
            keep_alive_token && !close
        } else {
            !close
        };
        Ok(ResponseHead {
            len: 0,
            status,
            framing,
            coding,
            keep_alive: persistent && !ambiguous && framing != Framing::UntilClose,
            headers: kept,
        })
    }

    /// A header's value (names matched case-insensitively), when the head
    /// was parsed with `keep_headers`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Removes a body's framing as bytes arrive.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: BodyState,
}

#[derive(Debug, Clone)]
enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`.
    pub fn new(framing: Framing) -> BodyDecoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(ChunkedDecoder::default()),
            Framing::UntilClose => BodyState::UntilClose,
        };
        BodyDecoder { state }
    }

    /// Whether the whole body has been seen.
    pub fn is_done(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    /// Hands the payload bytes in `input` to `sink` (possibly in several
    /// calls) and returns how many bytes of `input` belong to the body:
    /// fewer than `input.len()` only when the body ended inside it. The
    /// payload handed out is never longer than the input consumed.
    pub fn decode(
        &mut self,
        input: &[u8],
        mut sink: impl FnMut(&[u8]),
    ) -> Result<usize, BodyError> {
        let used = match &mut self.state {
            BodyState::Done => 0,
            BodyState::Length(remaining) => {
                let take = (*remaining).min(input.len() as u64) as usize;
                if take > 0 {
                    sink(&input[..take]);
                }
                *remaining -= take as u64;
                if *remaining == 0 {
                    self.state = BodyState::Done;
                }
                take
            }
            BodyState::Chunked(decoder) => {
                let used = decoder.decode(input, &mut sink)?;
                if decoder.is_done() {
                    self.state = BodyState::Done;
                }
                used
            }
            BodyState::UntilClose => {
                if !input.is_empty() {
                    sink(input);
                }
                input.len()
            }
        };
        Ok(used)
    }

    /// How many bytes may go from the connection straight to the reader,
    /// no framing to remove: the rest of a body framed by its length, or
    /// any number of a body that ends with the connection (`u64::MAX`).
    /// `None` for a chunked body, and for one that is complete.
    pub fn passthrough(&self) -> Option<u64> {
        match self.state {
            BodyState::Length(remaining) => Some(remaining),
            BodyState::UntilClose => Some(u64::MAX),
            BodyState::Chunked(_) | BodyState::Done => None,
        }
    }

    /// Counts `n` bytes read straight from the connection, at most what
    /// [`BodyDecoder::passthrough`] allowed.
    pub fn passed(&mut self, n: usize) {
        if let BodyState::Length(remaining) = &mut self.state {
            debug_assert!(n as u64 <= *remaining, "read past the body");
            *remaining = remaining.saturating_sub(n as u64);
            if *remaining == 0 {
                self.state = BodyState::Done;
            }
        }
    }

    /// The connection ended: fine for a close-delimited body (which is
    /// then complete), a truncation for any other unfinished one.
    pub fn end_of_stream(&mut self) -> Result<(), BodyError> {
        match self.state {
            BodyState::Done => Ok(()),
            BodyState::UntilClose => {
                self.state = BodyState::Done;
                Ok(())
            }
            _ => Err(BodyError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<ResponseHead>, HeadError> {
        ResponseHead::parse(text.as_bytes(), 64 * 1024, false, true)
    }

    fn complete(text: &str) -> ResponseHead {
        head(text).unwrap().unwrap()
    }

    #[test]
    fn framing_per_rfc_9112() {
        let h = complete("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello");
        assert_eq!(
            (h.framing, h.keep_alive, h.len),
            (Framing::Length(5), true, 38)
        );
        let h = complete("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
        // Transfer-Encoding overrides Content-Length; the connection is not reused.
        let h =
            complete("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        let h = complete("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        for bodiless in ["204 No Content", "304 Not Modified"] {
            let h = complete(&format!("HTTP/1.1 {bodiless}\r\ncontent-length: 9\r\n\r\n"));
            assert_eq!(h.framing, Framing::Empty);
        }
        let h = ResponseHead::parse(
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n",
            1024,
            true,
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true));
        assert_eq!(
            complete("HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n").framing,
            Framing::Length(7)
        );
        assert_eq!(
            complete("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").framing,
            Framing::Empty
        );
    }

    #[test]
    fn refuses_what_it_cannot_decode() {
        for bad in [
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(head(bad).unwrap_err(), HeadError::TransferEncoding, "{bad}");
        }
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
        ] {
            assert_eq!(head(bad).unwrap_err(), HeadError::ContentLength, "{bad}");
        }
        for (value, coding) in [
            ("br", Coding::Other),
            ("x-gzip", Coding::Gzip),
            ("identity", Coding::Identity),
        ] {
            let text = format!("HTTP/1.1 200 OK\r\ncontent-encoding: {value}\r\n\r\n");
            assert_eq!(complete(&text).coding, coding, "{value}");
        }
        assert!(matches!(
            head("SSH-2.0-OpenSSH\r\n\r\n"),
            Err(HeadError::Syntax(_))
        ));
        assert!(head("HTTP/1.1 200 OK\r\ncontent-le").unwrap().is_none());
        assert_eq!(
            ResponseHead::parse(b"HTTP/1.1 200 OK\r\nx: 1234567", 16, false, false).unwrap_err(),
            HeadError::TooLarge(16)
        );
    }

    #[test]
    fn connection_persistence() {
        assert!(
            !complete("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n")
                .keep_alive
        );
        assert!(
            !complete(
                "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\ncontent-length: 1\r\n\r\n"
            )
            .keep_alive
        );
        assert!(!complete("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n").keep_alive);
        assert!(
            complete("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n")
                .keep_alive
        );
        assert!(!complete("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn interim_heads_are_skipped() {
        let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: x\r\n\r\nHTTP/1.1 404 Not Found\r\ncontent-length: 2\r\nETag: \"e\"\r\n\r\nno";
        let h = complete(text);
        assert_eq!(
            (h.status, h.len, h.header("etag")),
            (404, text.len() - 2, Some("\"e\""))
        );
        assert!(
            head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")
                .unwrap()
                .is_none()
        );
    }

    fn decode_all(framing: Framing, wire: &[u8], piece: usize) -> (Vec<u8>, usize, bool) {
        let mut decoder = BodyDecoder::new(framing);
        let (mut out, mut used) = (Vec::new(), 0);
        for chunk in wire.chunks(piece.max(1)) {
            let n = decoder.decode(chunk, |d| out.extend_from_slice(d)).unwrap();
            used += n;
            if n < chunk.len() {
                break;
            }
        }
        (out, used, decoder.is_done())
    }

    #[test]
    fn bodies_in_any_pieces() {
        for piece in [1, 2, 3, 7, 1000] {
            assert_eq!(
                decode_all(Framing::Length(5), b"helloNEXT", piece),
                (b"hello".to_vec(), 5, true)
            );
            let wire = b"3\r\nhel\r\n2;ext=1\r\nlo\r\n0\r\ntrailer: x\r\n\r\nNEXT";
            assert_eq!(
                decode_all(Framing::Chunked, wire, piece),
                (b"hello".to_vec(), wire.len() - 4, true)
            );
            let (out, used, done) = decode_all(Framing::UntilClose, b"all of it", piece);
            assert_eq!((out.as_slice(), used, done), (&b"all of it"[..], 9, false));
        }
    }

    #[test]
    fn passthrough() {
        let mut body = BodyDecoder::new(Framing::Length(5));
        assert_eq!(body.passthrough(), Some(5));
        body.passed(3);
        assert_eq!((body.passthrough(), body.is_done()), (Some(2), false));
        body.passed(2);
        assert_eq!((body.passthrough(), body.is_done()), (None, true));
        let mut body = BodyDecoder::new(Framing::UntilClose);
        body.passed(1000);
        assert_eq!(
            (body.passthrough(), body.is_done()),
            (Some(u64::MAX), false)
        );
        assert_eq!(BodyDecoder::new(Framing::Chunked).passthrough(), None);
        assert_eq!(BodyDecoder::new(Framing::Empty).passthrough(), None);
    }

    #[test]
    fn end_of_stream() {
        let mut body = BodyDecoder::new(Framing::UntilClose);
        body.decode(b"x", |_| {}).unwrap();
        assert!(body.end_of_stream().is_ok() && body.is_done());
        let mut body = BodyDecoder::new(Framing::Length(2));
        body.decode(b"x", |_| {}).unwrap();
        assert_eq!(body.end_of_stream(), Err(BodyError::Truncated));
        let mut body = BodyDecoder::new(Framing::Chunked);
        body.decode(b"2\r\nx", |_| {}).unwrap();
        assert_eq!(body.end_of_stream(), Err(BodyError::Truncated));
        assert!(BodyDecoder::new(Framing::Empty).end_of_stream().is_ok());
        assert!(matches!(
            BodyDecoder::new(Framing::Chunked).decode(b"zz\r\n", |_| {}),
            Err(BodyError::Chunk(_))
        ));
    }
}
