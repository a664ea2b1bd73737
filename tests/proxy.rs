//! Fault injection between the runtime and a server: a TCP proxy that
//! counts the bytes it relays, can throttle them, and can cut connections
//! midway; and HTTP-aware fronts for S3 stores that misbehave.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Cut every n-th connection (0: never)…
    pub cut_every: usize,
    /// …after relaying this many bytes back to the client.
    pub cut_after: u64,
    /// Relay at most this many bytes per second back (0: unlimited).
    pub bytes_per_second: u64,
}

pub struct Proxy {
    pub addr: SocketAddr,
    /// Bytes relayed from the server to the client.
    pub bytes: Arc<AtomicU64>,
    pub cuts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr, faults: Faults) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bytes = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let cuts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, c, k, s) = (
            bytes.clone(),
            connections.clone(),
            cuts.clone(),
            stop.clone(),
        );
        thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let n = c.fetch_add(1, SeqCst) + 1;
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let cut = faults.cut_every > 0 && n % faults.cut_every == 0;
                let (b, k) = (b.clone(), k.clone());
                thread::spawn(move || relay(client, server, cut, faults, b, k));
            }
        });
        Proxy {
            addr,
            bytes,
            cuts,
            stop,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn relay(
    client: TcpStream,
    server: TcpStream,
    cut: bool,
    faults: Faults,
    bytes: Arc<AtomicU64>,
    cuts: Arc<AtomicUsize>,
) {
    let (mut client_read, mut server_write) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    let upstream = thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = client_read.read(&mut buf) {
            if n == 0 || server_write.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = server_write.shutdown(Shutdown::Write);
    });
    let (mut server_read, mut client_write) = (server, client);
    let mut relayed = 0u64;
    let started = Instant::now();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match server_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut n = n;
        if cut && relayed + n as u64 >= faults.cut_after {
            n = (faults.cut_after - relayed) as usize;
            let _ = client_write.write_all(&buf[..n]);
            bytes.fetch_add(n as u64, SeqCst);
            cuts.fetch_add(1, SeqCst);
            break;
        }
        if client_write.write_all(&buf[..n]).is_err() {
            break;
        }
        relayed += n as u64;
        bytes.fetch_add(n as u64, SeqCst);
        if faults.bytes_per_second > 0 {
            let due = Duration::from_secs_f64(relayed as f64 / faults.bytes_per_second as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                thread::sleep(wait);
            }
        }
    }
    let _ = client_write.shutdown(Shutdown::Both);
    let _ = server_read.shutdown(Shutdown::Both);
    let _ = upstream.join();
}

/// An older S3-compatible store in front of a real one: it refuses
/// ListObjectsV2 (`501 NotImplemented`) and answers every fourth request
/// with `503 SlowDown`; everything else passes through untouched (so
/// signatures are still checked by the real server).
pub struct OldS3 {
    pub addr: SocketAddr,
    pub refused_v2: Arc<AtomicUsize>,
    pub slowdowns: Arc<AtomicUsize>,
}

impl OldS3 {
    pub fn start(upstream: SocketAddr) -> OldS3 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let refused_v2 = Arc::new(AtomicUsize::new(0));
        let slowdowns = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (r, s) = (refused_v2.clone(), slowdowns.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let (r, s, n) = (r.clone(), s.clone(), requests.clone());
                thread::spawn(move || {
                    let Some(head) = read_head(&mut client) else {
                        return;
                    };
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let first = text.lines().next().unwrap_or_default().to_owned();
                    let reply = |client: &mut TcpStream, status: &str, body: &str| {
                        let raw = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = client.write_all(raw.as_bytes());
                    };
                    if first.contains("list-type=2") {
                        r.fetch_add(1, SeqCst);
                        return reply(
                            &mut client,
                            "501 Not Implemented",
                            "<Error><Code>NotImplemented</Code><Message>ListObjectsV2 is not supported</Message></Error>",
                        );
                    }
                    if n.fetch_add(1, SeqCst) % 4 == 3 {
                        s.fetch_add(1, SeqCst);
                        return reply(
                            &mut client,
                            "503 Slow Down",
                            "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
                        );
                    }
                    // One request per connection from here: close after it.
                    let head = text.replacen("\r\n\r\n", "\r\nconnection: close\r\n\r\n", 1);
                    let Ok(mut server) = TcpStream::connect(upstream) else {
                        return;
                    };
                    if server.write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    let mut buf = [0u8; 64 * 1024];
                    while let Ok(n) = server.read(&mut buf) {
                        if n == 0 || client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        OldS3 {
            addr,
            refused_v2,
            slowdowns,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A message head, byte by byte so that nothing after it is consumed.
fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(head)
}

/// A store that answers every other range request with fewer bytes than
/// asked for: a well-formed `206` whose `Content-Range` and
/// `Content-Length` cover only the first half of the range (HTTP allows
/// it; some gateways do it). Requests pass through untouched, so the real
/// server behind still checks their signatures.
pub struct ShortRanges {
    pub addr: SocketAddr,
    pub shortened: Arc<AtomicUsize>,
}

impl ShortRanges {
    pub fn start(upstream: SocketAddr) -> ShortRanges {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shortened = Arc::new(AtomicUsize::new(0));
        let ranges = Arc::new(AtomicUsize::new(0));
        let counter = shortened.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let (counter, ranges) = (counter.clone(), ranges.clone());
                thread::spawn(move || short_range(client, upstream, &ranges, &counter));
            }
        });
        ShortRanges { addr, shortened }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn short_range(
    mut client: TcpStream,
    upstream: SocketAddr,
    ranges: &AtomicUsize,
    shortened: &AtomicUsize,
) -> Option<()> {
    let head = String::from_utf8(read_head(&mut client)?).ok()?;
    // One request per connection: the body length below may be changed.
    let head = head.replacen("\r\n\r\n", "\r\nconnection: close\r\n\r\n", 1);
    let mut server = TcpStream::connect(upstream).ok()?;
    server.write_all(head.as_bytes()).ok()?;
    let mut answer = String::from_utf8(read_head(&mut server)?).ok()?;
    let header = |name: &str| {
        answer.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let mut length: u64 = header("content-length")?.parse().ok()?;
    if answer.starts_with("HTTP/1.1 206")
        && ranges.fetch_add(1, SeqCst).is_multiple_of(2)
        && length > 1
    {
        let range = header("content-range")?;
        let (first, total) = range.strip_prefix("bytes ")?.split_once('/')?;
        let (start, _) = first.split_once('-')?;
        let start: u64 = start.parse().ok()?;
        let short = length / 2;
        answer = answer
            .split("\r\n")
            .map(|line| match line.split_once(':') {
                Some((k, _)) if k.eq_ignore_ascii_case("content-length") => {
                    format!("{k}: {short}")
                }
                Some((k, _)) if k.eq_ignore_ascii_case("content-range") => {
                    format!("{k}: bytes {start}-{}/{total}", start + short - 1)
                }
                _ => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\r\n");
        length = short;
        shortened.fetch_add(1, SeqCst);
    }
    client.write_all(answer.as_bytes()).ok()?;
    let mut body = server.take(length);
    std::io::copy(&mut body, &mut client).ok()?;
    Some(())
}

/// An answer of the store, as an [`S3Front`] may rewrite it.
pub struct Answer {
    /// The status line and headers, without the blank line.
    pub head: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    /// Sets a header, replacing any of that name.
    pub fn set(&mut self, name: &str, value: &str) {
        let mut lines: Vec<String> = self
            .head
            .split("\r\n")
            .filter(|line| {
                line.split_once(':')
                    .is_none_or(|(k, _)| !k.trim().eq_ignore_ascii_case(name))
            })
            .map(str::to_owned)
            .collect();
        lines.push(format!("{name}: {value}"));
        self.head = lines.join("\r\n");
    }
}

/// A front to a real store that passes every request through untouched
/// (so the store still checks its signature) and hands each answer, with
/// the request's head, to `rewrite` before relaying it: headers and
/// bodies the store cannot produce itself, as AWS documents them. One
/// request per connection.
pub struct S3Front {
    pub addr: SocketAddr,
}

impl S3Front {
    pub fn start(
        upstream: SocketAddr,
        rewrite: impl Fn(&str, &mut Answer) + Send + Sync + 'static,
    ) -> S3Front {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let rewrite = Arc::new(rewrite);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let rewrite = rewrite.clone();
                thread::spawn(move || front(client, upstream, &*rewrite));
            }
        });
        S3Front { addr }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn front(
    mut client: TcpStream,
    upstream: SocketAddr,
    rewrite: &(dyn Fn(&str, &mut Answer) + Send + Sync),
) -> Option<()> {
    let request = String::from_utf8(read_head(&mut client)?).ok()?;
    let request = request.replacen("\r\n\r\n", "\r\nconnection: close\r\n\r\n", 1);
    let mut server = TcpStream::connect(upstream).ok()?;
    server.write_all(request.as_bytes()).ok()?;
    let head = String::from_utf8(read_head(&mut server)?).ok()?;
    let mut answer = Answer {
        head: head.trim_end().to_owned(),
        body: Vec::new(),
    };
    if !request.starts_with("HEAD ") {
        assert!(
            answer.header("transfer-encoding").is_none(),
            "the front reads bodies by length or to the end"
        );
        match answer.header("content-length") {
            Some(n) => {
                let n: u64 = n.parse().ok()?;
                server.take(n).read_to_end(&mut answer.body).ok()?;
            }
            None => {
                server.read_to_end(&mut answer.body).ok()?;
            }
        }
    }
    rewrite(&request, &mut answer);
    if !request.starts_with("HEAD ") {
        let length = answer.body.len().to_string();
        answer.set("content-length", &length);
    }
    client
        .write_all(format!("{}\r\n\r\n", answer.head).as_bytes())
        .ok()?;
    client.write_all(&answer.body).ok()?;
    Some(())
}

/// A bucket that lives in `home`, as AWS answers a request signed for
/// another region: `301 PermanentRedirect` with `x-amz-bucket-region`
/// (HEAD without a body). Requests signed for `home` pass through to the
/// real server, which checks their signatures; the front records whether
/// each carried `x-amz-request-payer: requester`.
pub struct RegionalS3 {
    pub addr: SocketAddr,
    pub redirected: Arc<AtomicUsize>,
    pub passed: Arc<AtomicUsize>,
    pub payer_requests: Arc<AtomicUsize>,
}

impl RegionalS3 {
    pub fn start(upstream: SocketAddr, home: &'static str) -> RegionalS3 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let redirected = Arc::new(AtomicUsize::new(0));
        let passed = Arc::new(AtomicUsize::new(0));
        let payer_requests = Arc::new(AtomicUsize::new(0));
        let (r, p, q) = (redirected.clone(), passed.clone(), payer_requests.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let (r, p, q) = (r.clone(), p.clone(), q.clone());
                thread::spawn(move || {
                    let Some(head) = read_head(&mut client) else {
                        return;
                    };
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let lower = text.to_ascii_lowercase();
                    if lower.contains("\r\nx-amz-request-payer: requester\r\n") {
                        q.fetch_add(1, SeqCst);
                    }
                    if !lower.contains(&format!("/{home}/s3/aws4_request")) {
                        r.fetch_add(1, SeqCst);
                        let body = if text.starts_with("HEAD ") {
                            String::new()
                        } else {
                            format!(
                                "<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint.</Message><Endpoint>s3.{home}.amazonaws.com</Endpoint></Error>"
                            )
                        };
                        let raw = format!(
                            "HTTP/1.1 301 Moved Permanently\r\nx-amz-bucket-region: {home}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = client.write_all(raw.as_bytes());
                        return;
                    }
                    p.fetch_add(1, SeqCst);
                    let head = text.replacen("\r\n\r\n", "\r\nconnection: close\r\n\r\n", 1);
                    let Ok(mut server) = TcpStream::connect(upstream) else {
                        return;
                    };
                    if server.write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    let _ = std::io::copy(&mut server, &mut client);
                });
            }
        });
        RegionalS3 {
            addr,
            redirected,
            passed,
            payer_requests,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}
