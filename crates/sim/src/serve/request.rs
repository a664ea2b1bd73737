//! Cutting whole requests out of the bytes a connection has received,
//! without touching a socket: the connection loop feeds it, and the tests
//! feed it a byte at a time.
//!
//! Only what the engine's clients send is understood: a head (httparse)
//! and an optional body framed by `Content-Length` (the LoRA POSTs). A
//! chunked request body is refused with 411, as some engines' servers do.

use http::{Method, StatusCode};

/// The largest request line plus headers (431 beyond).
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// The largest request body (413 beyond).
pub(crate) const MAX_BODY: usize = 1024 * 1024;
/// Headers parsed per request (431 beyond).
const MAX_HEADERS: usize = 32;

/// A whole request.
#[derive(Debug)]
pub(crate) struct Request {
    /// The method.
    pub method: Method,
    /// The path, without the query string.
    pub path: String,
    /// Whether the client spoke HTTP/1.0.
    pub http10: bool,
    /// Whether the client lets the connection carry another request.
    pub keep_alive: bool,
    /// Whether `Accept-Encoding` allows gzip.
    pub accept_gzip: bool,
    /// The body (empty without `Content-Length`).
    pub body: Vec<u8>,
}

/// What the bytes received so far make.
#[derive(Debug)]
pub(crate) enum Progress {
    /// A whole request, taken out of the input.
    Request(Request),
    /// Not a whole request yet: read more. `send_continue` asks for an
    /// interim `100 Continue` first (the client sent `Expect:
    /// 100-continue` and waits for it before its body).
    NeedMore {
        /// Send `100 Continue` before reading on.
        send_continue: bool,
    },
}

/// A request the engine will not serve; the connection closes after the
/// answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestError {
    /// Not HTTP/1.x as the engine reads it.
    Invalid(&'static str),
    /// The head is over [`MAX_HEAD`] or has too many headers.
    HeadTooLarge,
    /// `Content-Length` is over [`MAX_BODY`].
    BodyTooLarge,
    /// A chunked request body.
    LengthRequired,
}

impl RequestError {
    /// The answer's status.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            RequestError::Invalid(_) => StatusCode::BAD_REQUEST,
            RequestError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RequestError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::LengthRequired => StatusCode::LENGTH_REQUIRED,
        }
    }

    /// The answer's `detail`.
    pub(crate) fn detail(self) -> &'static str {
        match self {
            RequestError::Invalid(what) => what,
            RequestError::HeadTooLarge => "request head too large",
            RequestError::BodyTooLarge => "request body too large",
            RequestError::LengthRequired => "a request body needs Content-Length",
        }
    }
}

/// A parsed head whose body has not all arrived.
#[derive(Debug)]
struct Pending {
    request: Request,
    body_len: usize,
    expect_continue: bool,
}

/// Reads requests one after another from a connection's input.
#[derive(Debug, Default)]
pub(crate) struct RequestReader {
    /// The current request's head, once parsed and taken out of the input.
    pending: Option<Pending>,
}

impl RequestReader {
    /// Whether no request has begun: the connection is between requests.
    pub(crate) fn is_idle(&self, input: &[u8]) -> bool {
        self.pending.is_none() && input.is_empty()
    }

    /// Takes the next whole request out of `input`, if there is one;
    /// bytes after it (a pipelined request) stay for the next call.
    pub(crate) fn advance(&mut self, input: &mut Vec<u8>) -> Result<Progress, RequestError> {
        if self.pending.is_none() {
            let Some((pending, head_len)) = parse_head(input)? else {
                return Ok(Progress::NeedMore {
                    send_continue: false,
                });
            };
            input.drain(..head_len);
            self.pending = Some(pending);
        }
        let Some(pending) = self.pending.as_mut() else {
            unreachable!("set above");
        };
        if input.len() < pending.body_len {
            // Asked once, and only while the body has not started to come.
            let send_continue = std::mem::take(&mut pending.expect_continue) && input.is_empty();
            return Ok(Progress::NeedMore { send_continue });
        }
        let Some(mut pending) = self.pending.take() else {
            unreachable!("set above");
        };
        pending.request.body = input.drain(..pending.body_len).collect();
        Ok(Progress::Request(pending.request))
    }
}

/// Parses a request head at the start of `buf`: `None` while incomplete,
/// else the request (its body still to come) and the head's length.
fn parse_head(buf: &[u8]) -> Result<Option<(Pending, usize)>, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
            return Err(RequestError::HeadTooLarge);
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(RequestError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::HeadTooLarge),
        Err(_) => return Err(RequestError::Invalid("malformed request head")),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| RequestError::Invalid("bad method"))?;
    let target = parsed.path.unwrap_or_default();
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let http10 = parsed.version == Some(0);

    let (mut close, mut keep_alive, mut accept_gzip, mut expect_continue) =
        (false, false, false, false);
    let mut content_length: Option<usize> = None;
    for header in parsed.headers.iter() {
        let (name, value) = (header.name, header.value.trim_ascii());
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(RequestError::Invalid("bad Content-Length"))?;
            let n = usize::try_from(n)
                .ok()
                .filter(|&n| n <= MAX_BODY)
                .ok_or(RequestError::BodyTooLarge)?;
            if content_length.is_some_and(|m| m != n) {
                return Err(RequestError::Invalid("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(RequestError::LengthRequired);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            accept_gzip |= accepts_gzip(value);
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    let body_len = content_length.unwrap_or(0);
    let request = Request {
        method,
        path: path.to_owned(),
        http10,
        // HTTP/1.0 closes unless asked not to; HTTP/1.1 stays open unless
        // asked to close.
        keep_alive: if http10 { keep_alive } else { !close },
        accept_gzip,
        body: Vec::new(),
    };
    let pending = Pending {
        request,
        body_len,
        expect_continue: expect_continue && body_len > 0,
    };
    Ok(Some((pending, head_len)))
}

/// Whether an `Accept-Encoding` value accepts gzip (`gzip` or `*`, with a
/// quality other than zero).
fn accepts_gzip(value: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|item| {
        let mut parts = item.split(|&b| b == b';').map(<[u8]>::trim_ascii);
        let coding = parts.next().unwrap_or_default();
        if !coding.eq_ignore_ascii_case(b"gzip") && coding != b"*" {
            return false;
        }
        !parts.any(|p| {
            let p = p.to_ascii_lowercase();
            p.strip_prefix(b"q=")
                .and_then(|q| std::str::from_utf8(q).ok())
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `raw` in pieces of `step` bytes; returns the requests it
    /// makes, and whether a `100 Continue` was asked for.
    fn read_all(raw: &[u8], step: usize) -> Result<(Vec<Request>, bool), RequestError> {
        let (mut reader, mut input) = (RequestReader::default(), Vec::new());
        let (mut requests, mut continued) = (Vec::new(), false);
        for piece in raw.chunks(step) {
            input.extend_from_slice(piece);
            loop {
                match reader.advance(&mut input)? {
                    Progress::Request(request) => requests.push(request),
                    Progress::NeedMore { send_continue } => {
                        continued |= send_continue;
                        break;
                    }
                }
            }
        }
        assert!(reader.is_idle(&input), "bytes left over: {input:?}");
        Ok((requests, continued))
    }

    #[test]
    fn pipelined_requests_come_out_in_order_at_every_split() {
        let raw = b"GET /metrics HTTP/1.1\r\nhost: e\r\naccept-encoding: gzip\r\n\r\n\
                    POST /v1/load_lora_adapter HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello\
                    GET /health?x=1 HTTP/1.1\r\nconnection: close\r\n\r\n";
        for step in 1..=raw.len() {
            let (requests, _) = read_all(raw, step).unwrap();
            let paths: Vec<_> = requests.iter().map(|r| r.path.as_str()).collect();
            assert_eq!(
                paths,
                ["/metrics", "/v1/load_lora_adapter", "/health"],
                "{step}"
            );
            assert!(requests[0].accept_gzip && requests[0].keep_alive);
            assert_eq!(requests[1].method, Method::POST);
            assert_eq!(requests[1].body, b"hello");
            assert!(!requests[2].keep_alive);
        }
    }

    #[test]
    fn a_body_split_across_reads() {
        let mut reader = RequestReader::default();
        let mut input =
            b"POST /load_lora_adapter HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234".to_vec();
        assert!(matches!(
            reader.advance(&mut input),
            Ok(Progress::NeedMore { .. })
        ));
        assert!(!reader.is_idle(&input), "a request has begun");
        input.extend_from_slice(b"56789GET");
        let Ok(Progress::Request(request)) = reader.advance(&mut input) else {
            panic!("the body is whole");
        };
        assert_eq!(request.body, b"0123456789");
        assert_eq!(input, b"GET", "the next request's start stays");
    }

    #[test]
    fn keep_alive_by_version_and_connection_header() {
        let keep = |raw: &str| read_all(raw.as_bytes(), raw.len()).unwrap().0[0].keep_alive;
        assert!(keep("GET / HTTP/1.1\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.1\r\nconnection: TE, Close\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
        assert!(keep("GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n"));
        let (requests, _) = read_all(b"GET /metrics HTTP/1.0\r\n\r\n", 1).unwrap();
        assert!(requests[0].http10);
    }

    #[test]
    fn expect_continue_is_asked_once_before_the_body() {
        let head = b"POST /v1/load_lora_adapter HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n";
        let mut reader = RequestReader::default();
        let mut input = head.to_vec();
        assert!(matches!(
            reader.advance(&mut input),
            Ok(Progress::NeedMore {
                send_continue: true
            })
        ));
        assert!(matches!(
            reader.advance(&mut input),
            Ok(Progress::NeedMore {
                send_continue: false
            })
        ));
        input.extend_from_slice(b"{}");
        assert!(matches!(
            reader.advance(&mut input),
            Ok(Progress::Request(_))
        ));
        // The body already sent with the head: nothing to ask.
        let (_, continued) = read_all(&[&head[..], b"{}"].concat(), 200).unwrap();
        assert!(!continued);
    }

    #[test]
    fn refusals() {
        let error = |raw: &[u8]| read_all(raw, raw.len()).unwrap_err();
        assert_eq!(error(b"GET / HTTP/1.1\r\nbad header\r\n\r\n").status(), 400);
        assert_eq!(
            error(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"),
            RequestError::LengthRequired
        );
        assert_eq!(
            error(b"POST / HTTP/1.1\r\ncontent-length: 99999999\r\n\r\n"),
            RequestError::BodyTooLarge
        );
        assert_eq!(
            error(b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n").status(),
            400
        );
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(error(long.as_bytes()), RequestError::HeadTooLarge);
    }

    #[test]
    fn gzip_acceptance() {
        assert!(accepts_gzip(b"gzip"));
        assert!(accepts_gzip(b"identity, GZIP;q=0.5"));
        assert!(accepts_gzip(b"*"));
        assert!(!accepts_gzip(b"gzip;q=0"));
        assert!(!accepts_gzip(b"identity"));
    }
}
