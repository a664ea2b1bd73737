//! One request/response with the engine: the body read as it arrives,
//! its framing removed by [`crate::net::h1::BodyDecoder`], inflated when
//! the engine gzipped it, handed on one socket read at a time.

use monoio::net::TcpStream;
use monoio::time::Instant;

use super::{EngineClient, Prepared, Started, UpstreamError, read_more};
use crate::http::gzip::GzipDecoder;
use crate::net::h1::{BodyDecoder, Coding};

/// One request/response with the engine, its body still to be read.
pub struct Exchange<'a> {
    client: &'a EngineClient,
    prepared: &'a Prepared,
    stream: Option<TcpStream>,
    /// Read buffer; `buf[pos..]` is body not yet handed out.
    buf: &'a mut Vec<u8>,
    pos: usize,
    body: BodyDecoder,
    gzip: Option<Box<(GzipDecoder, Vec<u8>)>>,
    keep_alive: bool,
    status: u16,
    deadline: Instant,
    done: bool,
    /// Body bytes received, as sent on the wire (before inflating).
    wire_bytes: u64,
}

impl<'a> Exchange<'a> {
    pub(super) fn new(
        client: &'a EngineClient,
        prepared: &'a Prepared,
        started: Started,
        buf: &'a mut Vec<u8>,
        deadline: Instant,
    ) -> Self {
        let Started { stream, head } = started;
        let body = BodyDecoder::new(head.framing);
        let done = body.is_done();
        // No body (`/health`'s empty 200, a 204): the connection is free now.
        let stream = match done && head.keep_alive && head.len == buf.len() {
            true => {
                client.recycle(stream);
                None
            }
            false => Some(stream),
        };
        Exchange {
            client,
            prepared,
            stream,
            buf,
            pos: head.len,
            body,
            gzip: (head.coding == Coding::Gzip)
                .then(|| Box::new((GzipDecoder::default(), Vec::new()))),
            keep_alive: head.keep_alive,
            status: head.status,
            deadline,
            done,
            wire_bytes: 0,
        }
    }

    /// The engine's status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Body bytes received so far, as they came over the wire.
    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes
    }

    /// Reads the next piece of the body and hands it, decoded, to `sink`
    /// (possibly in several calls). Returns false once the body is complete.
    pub async fn read(&mut self, mut sink: impl FnMut(&[u8])) -> Result<bool, UpstreamError> {
        if self.done {
            return Ok(false);
        }
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            let stream = self.stream.as_mut().expect("stream present until done");
            let read = monoio::time::timeout_at(self.deadline, read_more(stream, self.buf)).await;
            let n = match read {
                Err(_) => return Err(self.timeout()),
                Ok(Err(source)) => {
                    return Err(UpstreamError::Io {
                        url: self.prepared.url.clone(),
                        source,
                    });
                }
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                if self.body.end_of_stream().is_err() {
                    return Err(UpstreamError::Truncated {
                        url: self.prepared.url.clone(),
                    });
                }
                self.finish_body()?;
                return Ok(false);
            }
        }
        let data_start = self.pos;
        let available = &self.buf[data_start..];
        let mut gzip_error = None;
        let mut deliver = |data: &[u8]| match &mut self.gzip {
            Some(gz) => {
                let (decoder, scratch) = &mut **gz;
                if gzip_error.is_none()
                    && let Err(e) = decoder.decode(data, scratch, &mut sink)
                {
                    gzip_error = Some(e);
                }
            }
            None => sink(data),
        };
        let used =
            self.body
                .decode(available, &mut deliver)
                .map_err(|e| UpstreamError::Protocol {
                    url: self.prepared.url.clone(),
                    reason: e.to_string(),
                })?;
        let body_done = self.body.is_done();
        self.wire_bytes += used as u64;
        self.pos += used;
        if let Some(e) = gzip_error {
            return Err(UpstreamError::Protocol {
                url: self.prepared.url.clone(),
                reason: format!("bad gzip body: {e}"),
            });
        }
        if body_done {
            if self.pos < self.buf.len() {
                // Bytes after the body: the connection is out of step.
                self.keep_alive = false;
            }
            self.finish_body()?;
            return Ok(false);
        }
        Ok(true)
    }

    fn finish_body(&mut self) -> Result<(), UpstreamError> {
        self.done = true;
        if let Some(gz) = &self.gzip
            && !gz.0.is_done()
        {
            return Err(UpstreamError::Protocol {
                url: self.prepared.url.clone(),
                reason: "gzip body ended early".into(),
            });
        }
        if let Some(stream) = self.stream.take()
            && self.keep_alive
        {
            self.client.recycle(stream);
        }
        Ok(())
    }

    fn timeout(&self) -> UpstreamError {
        UpstreamError::Timeout {
            url: self.prepared.url.clone(),
            timeout: self.client.timeout,
        }
    }

    /// Turns a non-2xx answer into an error carrying the start of its body.
    pub async fn into_status_error(mut self) -> UpstreamError {
        const KEEP: usize = 512;
        let mut body = Vec::new();
        while body.len() < KEEP {
            match self
                .read(|d| body.extend_from_slice(&d[..d.len().min(KEEP - body.len().min(KEEP))]))
                .await
            {
                Ok(true) => {}
                Ok(false) | Err(_) => break,
            }
        }
        body.truncate(KEEP);
        let text = String::from_utf8_lossy(&body);
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        UpstreamError::Status {
            url: self.prepared.url.clone(),
            status: self.status,
            body: text,
        }
    }
}
