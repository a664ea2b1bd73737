//! Writing one answer on a connection: a whole body with
//! `Content-Length`, or a body in chunks (close-delimited for HTTP/1.0
//! clients), either gzipped when asked.
//!
//! The framing (heads, chunk sizes, gzip) is plain functions over
//! buffers, tested on their own; [`Responder`] adds the socket. Buffers
//! are owned and moved into each write, as monoio's I/O requires.

use std::io;
use std::time::Duration;

use flate2::{Compress, FlushCompress, Status};
use http::StatusCode;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

/// How long one write to a client may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Body bytes per chunk of a chunked answer.
pub(crate) const CHUNK: usize = 16 * 1024;

/// Sends one answer on a connection.
pub(crate) struct Responder<'c> {
    stream: &'c mut TcpStream,
    /// The connection's output buffer, reused across answers.
    out: &'c mut Vec<u8>,
    http10: bool,
    keep_alive: bool,
}

impl<'c> Responder<'c> {
    /// An answer to a request that spoke HTTP/1.0 or not, on a connection
    /// that may stay open afterwards or not.
    pub(crate) fn new(
        stream: &'c mut TcpStream,
        out: &'c mut Vec<u8>,
        http10: bool,
        keep_alive: bool,
    ) -> Self {
        Responder {
            stream,
            out,
            http10,
            keep_alive,
        }
    }

    /// Whether the connection may carry another request afterwards.
    pub(crate) fn is_keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Sends a whole body with `Content-Length`.
    pub(crate) async fn send(
        &mut self,
        status: StatusCode,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let mut out = std::mem::take(self.out);
        out.clear();
        write_head(&mut out, status, headers, self.http10, self.keep_alive);
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
        self.write(out).await
    }

    /// Sends a JSON body.
    pub(crate) async fn json(
        &mut self,
        status: StatusCode,
        value: &serde_json::Value,
    ) -> io::Result<()> {
        let body = value.to_string();
        self.send(
            status,
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await
    }

    /// Sends `{"detail": "<detail>"}`, the error shape of the engines'
    /// (FastAPI) servers.
    pub(crate) async fn error(&mut self, status: StatusCode, detail: &str) -> io::Result<()> {
        self.json(status, &serde_json::json!({ "detail": detail }))
            .await
    }

    /// 405 with the `Allow` header.
    pub(crate) async fn method_not_allowed(&mut self, allow: &str) -> io::Result<()> {
        let headers = [("content-type", "application/json"), ("allow", allow)];
        let body = br#"{"detail":"Method Not Allowed"}"#;
        self.send(StatusCode::METHOD_NOT_ALLOWED, &headers, body)
            .await
    }

    /// Sends `body` in chunks of [`CHUNK`] bytes, one write each (the head
    /// goes with the first), gzipped with `gzip` when given. HTTP/1.0
    /// clients get the same bytes unframed, ended by closing.
    pub(crate) async fn send_chunked(
        &mut self,
        status: StatusCode,
        content_type: &str,
        body: &[u8],
        mut gzip: Option<&mut Compress>,
    ) -> io::Result<()> {
        let chunked = !self.http10;
        self.keep_alive &= chunked;
        let mut headers = vec![("content-type", content_type)];
        if gzip.is_some() {
            headers.push(("content-encoding", "gzip"));
        }
        headers.push(("vary", "accept-encoding"));
        if chunked {
            headers.push(("transfer-encoding", "chunked"));
        }
        let mut out = std::mem::take(self.out);
        out.clear();
        write_head(&mut out, status, &headers, self.http10, self.keep_alive);
        out.extend_from_slice(b"\r\n");
        if let Some(gzip) = gzip.as_deref_mut() {
            gzip.reset();
        }
        let mut packed = Vec::new();
        let mut pieces = body.chunks(CHUNK).peekable();
        while let Some(piece) = pieces.next() {
            let last = pieces.peek().is_none();
            let data = match gzip.as_deref_mut() {
                Some(gzip) => {
                    packed.clear();
                    let flush = if last {
                        FlushCompress::Finish
                    } else {
                        FlushCompress::None
                    };
                    deflate(gzip, piece, &mut packed, flush)?;
                    &packed[..]
                }
                None => piece,
            };
            frame(&mut out, data, chunked);
            if last && chunked {
                out.extend_from_slice(b"0\r\n\r\n");
            }
            out = self.write_keep(out).await?;
            out.clear();
        }
        if body.is_empty() {
            // No piece went out: still a (gzip) stream and its end.
            if let Some(gzip) = gzip {
                deflate(gzip, b"", &mut packed, FlushCompress::Finish)?;
            }
            frame(&mut out, &packed, chunked);
            if chunked {
                out.extend_from_slice(b"0\r\n\r\n");
            }
            out = self.write_keep(out).await?;
        }
        *self.out = out;
        Ok(())
    }

    async fn write(&mut self, out: Vec<u8>) -> io::Result<()> {
        let out = self.write_keep(out).await?;
        *self.out = out;
        Ok(())
    }

    /// Writes `out` whole and hands it back for reuse.
    async fn write_keep(&mut self, out: Vec<u8>) -> io::Result<Vec<u8>> {
        match monoio::time::timeout(WRITE_TIMEOUT, self.stream.write_all(out)).await {
            Ok((Ok(_), out)) => Ok(out),
            Ok((Err(e), _)) => Err(e),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        }
    }
}

/// Writes a status line and headers, without the blank line that ends
/// the head (a `content-length` may follow).
pub(crate) fn write_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &[(&str, &str)],
    http10: bool,
    keep_alive: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
}

/// Appends `data` as one chunk (nothing for no data: an empty chunk would
/// end the body), or as is when not chunked.
pub(crate) fn frame(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if !chunked {
        out.extend_from_slice(data);
        return;
    }
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Compresses `input` onto `out`; `Finish` also ends the gzip member.
pub(crate) fn deflate(
    gzip: &mut Compress,
    input: &[u8],
    out: &mut Vec<u8>,
    flush: FlushCompress,
) -> io::Result<()> {
    let mut consumed = 0;
    loop {
        out.reserve(32 * 1024);
        let before = gzip.total_in();
        let status = gzip
            .compress_vec(&input[consumed..], out, flush)
            .map_err(io::Error::other)?;
        consumed += (gzip.total_in() - before) as usize;
        let done = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            // Everything taken, and room was left: nothing more pending.
            _ => consumed == input.len() && out.len() < out.capacity(),
        };
        if done {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use flate2::Compression;

    use super::*;

    #[test]
    fn heads_say_whether_the_connection_stays() {
        let head = |http10, keep_alive| {
            let mut out = Vec::new();
            write_head(&mut out, StatusCode::OK, &[("a", "b")], http10, keep_alive);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(head(false, true), "HTTP/1.1 200 OK\r\na: b\r\n");
        assert_eq!(
            head(false, false),
            "HTTP/1.1 200 OK\r\na: b\r\nconnection: close\r\n"
        );
        assert_eq!(
            head(true, true),
            "HTTP/1.1 200 OK\r\na: b\r\nconnection: keep-alive\r\n"
        );
    }

    #[test]
    fn chunk_framing() {
        let mut out = Vec::new();
        frame(&mut out, b"0123456789abcdefX", true);
        frame(&mut out, b"", true);
        assert_eq!(out, b"11\r\n0123456789abcdefX\r\n");
        out.clear();
        frame(&mut out, b"raw", false);
        assert_eq!(out, b"raw");
    }

    #[test]
    fn gzip_in_pieces_inflates_to_the_input() {
        let body: Vec<u8> = (0..100_000u32)
            .flat_map(|i| format!("x{{i=\"{i}\"}} {}\n", i % 7).into_bytes())
            .collect();
        let mut gzip = Compress::new_gzip(Compression::fast(), 15);
        for _ in 0..2 {
            // Twice: the state is reused across answers.
            gzip.reset();
            let mut packed = Vec::new();
            let mut pieces = body.chunks(CHUNK).peekable();
            while let Some(piece) = pieces.next() {
                let flush = if pieces.peek().is_none() {
                    FlushCompress::Finish
                } else {
                    FlushCompress::None
                };
                deflate(&mut gzip, piece, &mut packed, flush).unwrap();
            }
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&packed[..])
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(plain, body);
            assert!(packed.len() < body.len() / 2);
        }
    }
}
