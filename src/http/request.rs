//! Parsing a request head with httparse: incomplete is not invalid.
//!
//! [`parse_head`] answers `Ok(None)` while the head is still arriving, so
//! the connection reads more; a real fault is a [`RequestError`] that
//! knows its status code. Only the headers the runtime acts on are kept.

use http::{Method, StatusCode};

/// Most header fields a request may carry.
const MAX_HEADERS: usize = 64;

/// Size limits on what a client may send.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Request line plus header fields, in bytes (431 beyond).
    pub max_head: usize,
    /// Request body, in bytes (413 beyond).
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_body: 1024 * 1024,
        }
    }
}

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head (and, once read, its body).
#[derive(Debug)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The path, without the query string.
    pub path: String,
    /// The query string, without `?`.
    pub query: Option<String>,
    /// Whether the client spoke HTTP/1.0 (no chunked responses then).
    pub http10: bool,
    /// Whether the client allows the connection to stay open.
    pub keep_alive: bool,
    /// Whether `Accept-Encoding` allows gzip.
    pub accept_gzip: bool,
    /// Whether the client waits for `100 Continue` before its body.
    pub expect_continue: bool,
    /// `Authorization`, if sent.
    pub authorization: Option<String>,
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// The body, read by the connection before the request is served.
    pub body: Vec<u8>,
}

/// A request the server refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Request line and headers beyond the limit, or too many fields.
    #[error("request header fields too large (limit {0} bytes, {MAX_HEADERS} fields)")]
    HeadTooLarge(usize),
    /// The body is larger than allowed.
    #[error("request body too large (limit {0} bytes)")]
    BodyTooLarge(usize),
    /// Not HTTP/1.x as we read it.
    #[error("invalid HTTP request: {0}")]
    Invalid(String),
    /// The client stopped sending in the middle of a request.
    #[error("request not received within {0} seconds")]
    Timeout(u64),
}

impl RequestError {
    /// The status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::HeadTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RequestError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::Invalid(_) => StatusCode::BAD_REQUEST,
            RequestError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// Parses the request head at the start of `buf`. `Ok(None)`: incomplete.
/// On success also returns the head's length in bytes.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head => {
            return Err(RequestError::HeadTooLarge(limits.max_head));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(RequestError::HeadTooLarge(limits.max_head));
        }
        Err(e) => return Err(RequestError::Invalid(e.to_string())),
    };
    if head_len > limits.max_head {
        return Err(RequestError::HeadTooLarge(limits.max_head));
    }
    let invalid = |what: &str| RequestError::Invalid(what.to_owned());
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| invalid("bad method"))?;
    let target = parsed.path.unwrap_or_default();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    let http10 = parsed.version == Some(0);

    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut accept_gzip = false;
    let mut expect_continue = false;
    let mut authorization = None;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    for header in parsed.headers.iter() {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| invalid("bad Content-Length"))?;
            if content_length.is_some_and(|m| m != n) {
                return Err(invalid("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only `chunked` alone is understood; anything else could make
            // us read the body differently from a proxy in front of us.
            if !trimmed(value).eq_ignore_ascii_case(b"chunked") || chunked {
                return Err(invalid("unsupported Transfer-Encoding"));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',').map(trimmed) {
                connection_close |= token.eq_ignore_ascii_case(b"close");
                connection_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            accept_gzip |= accepts_gzip(value);
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = trimmed(value).eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = std::str::from_utf8(value).ok().map(str::to_owned);
        }
    }
    if chunked && content_length.is_some() {
        return Err(invalid("both Content-Length and Transfer-Encoding"));
    }
    if http10 && chunked {
        return Err(invalid("chunked body in an HTTP/1.0 request"));
    }
    let framing = match content_length {
        _ if chunked => BodyFraming::Chunked,
        Some(0) | None => BodyFraming::None,
        Some(n) if n > limits.max_body as u64 => {
            return Err(RequestError::BodyTooLarge(limits.max_body));
        }
        Some(n) => BodyFraming::Length(n),
    };
    let keep_alive = if http10 {
        connection_keep_alive
    } else {
        !connection_close
    };
    let request = Request {
        method,
        path: path.to_owned(),
        query,
        http10,
        keep_alive,
        accept_gzip,
        expect_continue,
        authorization,
        framing,
        body: Vec::new(),
    };
    Ok(Some((request, head_len)))
}

fn trimmed(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

/// Whether an `Accept-Encoding` value accepts gzip (`gzip` or `*`, with a
/// quality other than zero).
fn accepts_gzip(value: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|item| {
        let mut parts = item.split(|&b| b == b';').map(trimmed);
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

    fn parse(raw: &str) -> Result<Option<(Request, usize)>, RequestError> {
        parse_head(raw.as_bytes(), &Limits::default())
    }

    #[test]
    fn a_prometheus_scrape() {
        let raw = "GET /metrics?x=1 HTTP/1.1\r\nHost: pod:9000\r\nAccept-Encoding: gzip\r\n\
                   User-Agent: Prometheus/2.53\r\n\r\nNEXT";
        let (req, len) = parse(raw).unwrap().unwrap();
        assert_eq!(len, raw.len() - 4);
        assert_eq!(req.method, Method::GET);
        assert_eq!(req.path, "/metrics");
        assert_eq!(req.query.as_deref(), Some("x=1"));
        assert!(req.keep_alive && req.accept_gzip && !req.http10);
        assert_eq!(req.framing, BodyFraming::None);
    }

    #[test]
    fn incomplete_is_not_invalid() {
        assert!(
            parse("GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .unwrap()
                .is_none()
        );
        assert!(parse("GE").unwrap().is_none());
        assert!(parse("").unwrap().is_none());
    }

    #[test]
    fn connection_semantics() {
        let keep = |raw: &str| parse(raw).unwrap().unwrap().0.keep_alive;
        assert!(!keep("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
        assert!(keep("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(keep(
            "GET / HTTP/1.1\r\nConnection: upgrade, keep-alive\r\n\r\n"
        ));
    }

    #[test]
    fn bodies() {
        let framing = |raw: &str| parse(raw).unwrap().unwrap().0.framing;
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n"),
            BodyFraming::Length(12)
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            BodyFraming::Chunked
        );
        assert_eq!(
            framing("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            BodyFraming::None
        );
        let err = |raw: &str| parse(raw).unwrap_err().status();
        assert_eq!(
            err("POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n"),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            err("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            err("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            err("POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            err("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn limits() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        assert_eq!(
            parse(&big).unwrap_err().status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let partial = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(20_000));
        assert_eq!(
            parse(&partial).unwrap_err().status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            parse(&many).unwrap_err().status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn garbage_is_a_bad_request() {
        for raw in [
            "\x16\x03\x01\x02\x00\x01\x00\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET\0 / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                parse(raw).unwrap_err().status(),
                StatusCode::BAD_REQUEST,
                "{raw:?}"
            );
        }
    }

    #[test]
    fn gzip_acceptance() {
        assert!(accepts_gzip(b"gzip"));
        assert!(accepts_gzip(b"deflate, GZIP;q=0.5"));
        assert!(accepts_gzip(b"*"));
        assert!(!accepts_gzip(b"gzip;q=0"));
        assert!(!accepts_gzip(b"identity"));
        assert!(!accepts_gzip(b"x-gzip2"));
    }
}
