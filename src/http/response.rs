//! Writing responses: whole ones, JSON errors, and streamed bodies.
//!
//! A [`Responder`] is handed to the service for each request and sends
//! exactly one response on the connection. Small answers are written in
//! one go; `/metrics` opens a [`BodyStream`], appends to its buffer and
//! flushes as the engine's bytes arrive: chunked framing for HTTP/1.1 (the
//! size line is reserved in front of the payload, so nothing is copied),
//! gzip when the client asked for it, and a close-delimited body for
//! HTTP/1.0 clients.

use std::io;
use std::time::Duration;

use http::StatusCode;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use serde::Serialize;

use super::chunked::{self, LAST_CHUNK};
use super::gzip::GzipEncoder;

/// Sends one response on a connection.
pub struct Responder<'c> {
    stream: &'c mut TcpStream,
    buf: &'c mut Vec<u8>,
    write_timeout: Duration,
    http10: bool,
    /// Whether the connection may carry another request afterwards.
    keep_alive: bool,
    sent: bool,
}

impl<'c> Responder<'c> {
    pub(super) fn new(
        stream: &'c mut TcpStream,
        buf: &'c mut Vec<u8>,
        write_timeout: Duration,
        http10: bool,
        keep_alive: bool,
    ) -> Self {
        Responder {
            stream,
            buf,
            write_timeout,
            http10,
            keep_alive,
            sent: false,
        }
    }

    /// Whether a response has been sent.
    pub fn is_sent(&self) -> bool {
        self.sent
    }

    /// Whether the connection stays open after this response.
    pub fn is_keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Closes the connection after this response.
    pub fn close_after(&mut self) {
        self.keep_alive = false;
    }

    /// Sends a complete response.
    pub async fn send(
        &mut self,
        status: StatusCode,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        self.sent = true;
        let mut buf = std::mem::take(self.buf);
        buf.clear();
        self.write_head(&mut buf, status, headers);
        buf.extend_from_slice(b"content-length: ");
        buf.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        buf.extend_from_slice(b"\r\n\r\n");
        buf.extend_from_slice(body);
        let (result, buf) = write_all(self.stream, buf, self.write_timeout).await;
        *self.buf = buf;
        result
    }

    /// Sends a JSON body.
    pub async fn json(&mut self, status: StatusCode, value: &impl Serialize) -> io::Result<()> {
        let body = serde_json::to_vec(value).map_err(io::Error::other)?;
        self.send(status, &[("content-type", "application/json")], &body)
            .await
    }

    /// Sends `{"detail": "<detail>"}`, the error shape clients parse.
    pub async fn error(&mut self, status: StatusCode, detail: &str) -> io::Result<()> {
        self.json(status, &serde_json::json!({ "detail": detail }))
            .await
    }

    /// 405 with the `Allow` header.
    pub async fn method_not_allowed(&mut self, allow: &str) -> io::Result<()> {
        let body = br#"{"detail":"Method Not Allowed"}"#;
        let headers = [("content-type", "application/json"), ("allow", allow)];
        self.send(StatusCode::METHOD_NOT_ALLOWED, &headers, body)
            .await
    }

    /// Sends the head of a streamed response and returns its body writer.
    /// Its buffers are the caller's, so they outlive the response and are
    /// reused by the next one.
    pub async fn stream<'r>(
        &'r mut self,
        status: StatusCode,
        content_type: &str,
        buffers: StreamBuffers<'r>,
    ) -> io::Result<BodyStream<'r, 'c>> {
        self.sent = true;
        let chunked = !self.http10;
        if !chunked {
            // HTTP/1.0: the end of the body is the end of the connection.
            self.keep_alive = false;
        }
        let mut head = std::mem::take(self.buf);
        head.clear();
        let mut headers = vec![("content-type", content_type)];
        if buffers.gzip.is_some() {
            headers.push(("content-encoding", "gzip"));
        }
        headers.push(("vary", "accept-encoding"));
        if chunked {
            headers.push(("transfer-encoding", "chunked"));
        }
        self.write_head(&mut head, status, &headers);
        head.extend_from_slice(b"\r\n");
        // Until the last chunk is out, a broken stream must not be mistaken
        // for a complete one: the connection closes unless `finish` runs.
        let keep_alive = std::mem::replace(&mut self.keep_alive, false);
        let mut body = BodyStream {
            responder: self,
            plain: buffers.plain,
            wire: buffers.wire,
            gzip: buffers.gzip,
            chunked,
            keep_alive,
            bytes_sent: 0,
            frame_start: 0,
        };
        body.plain.clear();
        body.wire.clear();
        if let Some(gzip) = body.gzip.as_deref_mut() {
            gzip.reset();
        }
        // The head goes out with the first body bytes: one write, not two.
        body.out().extend_from_slice(&head);
        *body.responder.buf = head;
        body.begin_frame();
        Ok(body)
    }

    fn write_head(&self, buf: &mut Vec<u8>, status: StatusCode, headers: &[(&str, &str)]) {
        buf.extend_from_slice(b"HTTP/1.1 ");
        buf.extend_from_slice(status.as_str().as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        buf.extend_from_slice(b"\r\n");
        for (name, value) in headers {
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(b": ");
            buf.extend_from_slice(value.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        if !self.keep_alive {
            buf.extend_from_slice(b"connection: close\r\n");
        } else if self.http10 {
            buf.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
}

/// The buffers a streamed body works in.
pub struct StreamBuffers<'a> {
    /// Where the caller appends body bytes.
    pub plain: &'a mut Vec<u8>,
    /// Compressed, framed bytes (used with gzip).
    pub wire: &'a mut Vec<u8>,
    /// Compression state, when the client accepts gzip.
    pub gzip: Option<&'a mut GzipEncoder>,
}

/// The body of a streamed response. Dropping it without [`finish`] leaves
/// the body unterminated and closes the connection, which is how a client
/// learns that a stream broke.
///
/// [`finish`]: BodyStream::finish
pub struct BodyStream<'r, 'c> {
    responder: &'r mut Responder<'c>,
    plain: &'r mut Vec<u8>,
    wire: &'r mut Vec<u8>,
    gzip: Option<&'r mut GzipEncoder>,
    chunked: bool,
    keep_alive: bool,
    bytes_sent: u64,
    /// Where the open chunk's size line is, in the socket-bound buffer.
    frame_start: usize,
}

impl<'r, 'c> BodyStream<'r, 'c> {
    /// The buffer to append body bytes to; [`BodyStream::flush`] sends them.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        self.plain
    }

    /// Bytes written to the socket so far, framing included.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// Sends what has been appended so far (it may stay in the compressor).
    pub async fn flush(&mut self) -> io::Result<()> {
        self.send(false).await
    }

    /// Gives up on a body of which nothing has reached the client yet, so
    /// that an error can be answered instead. `None`, the stream dropped
    /// (and the connection closed), once bytes have gone out.
    pub fn abandon(self) -> Option<&'r mut Responder<'c>> {
        if self.bytes_sent > 0 {
            return None;
        }
        self.plain.clear();
        self.wire.clear();
        self.responder.sent = false;
        self.responder.keep_alive = self.keep_alive;
        Some(self.responder)
    }

    /// Sends the rest and ends the body; the connection may then be reused.
    pub async fn finish(mut self) -> io::Result<()> {
        self.send(true).await?;
        self.responder.keep_alive = self.keep_alive;
        Ok(())
    }

    async fn send(&mut self, last: bool) -> io::Result<()> {
        let out = match self.gzip.as_deref_mut() {
            Some(gzip) => {
                gzip.encode(&self.plain[..], self.wire)?;
                self.plain.clear();
                if last {
                    gzip.finish(self.wire)?;
                }
                &mut *self.wire
            }
            None => &mut *self.plain,
        };
        if self.chunked {
            chunked::frame_end(out, self.frame_start);
            if last {
                out.extend_from_slice(LAST_CHUNK);
            }
        }
        if !out.is_empty() {
            let buf = std::mem::take(out);
            let (result, mut buf) =
                write_all(self.responder.stream, buf, self.responder.write_timeout).await;
            self.bytes_sent += buf.len() as u64;
            buf.clear();
            *out = buf;
            result?;
        }
        if !last {
            self.begin_frame();
        }
        Ok(())
    }

    /// The buffer whose bytes go to the socket as they are.
    fn out(&mut self) -> &mut Vec<u8> {
        if self.gzip.is_some() {
            self.wire
        } else {
            self.plain
        }
    }

    /// Reserves the chunk size line in front of the next payload.
    fn begin_frame(&mut self) {
        if self.chunked {
            self.frame_start = chunked::frame_begin(self.out());
        }
    }
}

/// Writes all of `buf` within `timeout`; a client that stops reading
/// cannot hold a worker's buffer forever.
pub(super) async fn write_all(
    stream: &mut TcpStream,
    buf: Vec<u8>,
    timeout: Duration,
) -> (io::Result<()>, Vec<u8>) {
    match monoio::time::timeout(timeout, stream.write_all(buf)).await {
        Ok((Ok(_), buf)) => (Ok(()), buf),
        Ok((Err(e), buf)) => (Err(e), buf),
        // The kernel may still own the old buffer; start a new one.
        Err(_) => (
            Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
            Vec::new(),
        ),
    }
}
