//! Load against one URL: open-loop at a fixed rate (latency), closed-loop
//! as fast as it goes (throughput), over keep-alive connections.
//!
//! Open loop follows wrk2: each connection has its own schedule (rate /
//! connections, staggered), and a request's latency is measured from when
//! it was *due*, not from when it was sent. A response that comes late
//! delays the requests after it on that connection, and their latency
//! includes the wait: so tail latency is not hidden by coordinated
//! omission.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use matrixinfer_runtime::http::chunked::ChunkedDecoder;
use matrixinfer_runtime::net::Url;

/// What a load phase measured.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Latency of each completed request, in nanoseconds (unsorted).
    pub latencies: Vec<u64>,
    /// Requests that failed (connection, status, framing, timeout).
    pub errors: u64,
    /// Response body bytes received.
    pub bytes: u64,
    /// How long the phase ran.
    pub elapsed: Duration,
}

impl Sample {
    /// Completed requests per second.
    pub fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latencies, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        quantile(&self.latencies, q) as f64 / 1e6
    }

    fn merge(&mut self, other: Sample) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.bytes += other.bytes;
    }
}

/// The nearest-rank quantile of unsorted `values`.
pub fn quantile(values: &[u64], q: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The `Accept` header Prometheus 3 sends with its default scrape
/// protocols (OpenMetrics first, the classic text format last).
pub const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,\
text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

/// How to request the URL: with the headers Prometheus sends.
#[derive(Clone, Debug)]
pub struct Target {
    /// The URL (plain HTTP).
    pub url: Url,
    /// Send `Accept-Encoding: gzip`, as Prometheus does.
    pub gzip: bool,
}

impl Target {
    fn request(&self) -> Vec<u8> {
        let encoding = if self.gzip {
            "Accept-Encoding: gzip\r\n"
        } else {
            ""
        };
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Prometheus/3.5.0\r\nAccept: {PROMETHEUS_ACCEPT}\r\n\
             {encoding}X-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n",
            self.url.target,
            self.url.host_header()
        )
        .into_bytes()
    }
}

/// `rate` requests per second over `connections` connections for
/// `duration`, latency measured from each request's due time.
pub fn open_loop(target: &Target, rate: f64, connections: usize, duration: Duration) -> Sample {
    let connections = connections.max(1);
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    // A common start a little ahead, so that every connection is open.
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + duration;
    let threads: Vec<_> = (0..connections)
        .map(|i| {
            let target = target.clone();
            let offset = interval.mul_f64(i as f64 / connections as f64);
            thread::spawn(move || {
                let mut client = Client::new(&target);
                let mut sample = Sample::default();
                let mut due = start + offset;
                while due < end {
                    wait_until(due);
                    match client.get() {
                        Ok(bytes) => {
                            sample.latencies.push(due.elapsed().as_nanos() as u64);
                            sample.bytes += bytes;
                        }
                        Err(_) => sample.errors += 1,
                    }
                    due += interval;
                }
                sample
            })
        })
        .collect();
    collect(threads, start)
}

/// `connections` connections sending back to back for `duration`.
pub fn closed_loop(target: &Target, connections: usize, duration: Duration) -> Sample {
    let start = Instant::now();
    let end = start + duration;
    let threads: Vec<_> = (0..connections.max(1))
        .map(|_| {
            let target = target.clone();
            thread::spawn(move || {
                let mut client = Client::new(&target);
                let mut sample = Sample::default();
                while Instant::now() < end {
                    let sent = Instant::now();
                    match client.get() {
                        Ok(bytes) => {
                            sample.latencies.push(sent.elapsed().as_nanos() as u64);
                            sample.bytes += bytes;
                        }
                        Err(_) => {
                            sample.errors += 1;
                            // Do not spin on a target that is down.
                            thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                sample
            })
        })
        .collect();
    collect(threads, start)
}

fn collect(threads: Vec<thread::JoinHandle<Sample>>, start: Instant) -> Sample {
    let mut total = Sample::default();
    for thread in threads {
        if let Ok(sample) = thread.join() {
            total.merge(sample);
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// Sleeps to just before `due`, then spins: a sleep alone overshoots by
/// tens of microseconds, which would be counted as latency.
fn wait_until(due: Instant) {
    const SPIN: Duration = Duration::from_micros(150);
    let now = Instant::now();
    if due > now + SPIN {
        thread::sleep(due - now - SPIN);
    }
    while Instant::now() < due {
        std::hint::spin_loop();
    }
}

/// One keep-alive connection, reopened after a failure.
pub struct Client {
    target: Target,
    request: Vec<u8>,
    stream: Option<TcpStream>,
    buf: Box<[u8]>,
}

impl Client {
    /// A client for `target`; it connects on the first request.
    pub fn new(target: &Target) -> Client {
        Client {
            target: target.clone(),
            request: target.request(),
            stream: None,
            buf: vec![0; 64 * 1024].into_boxed_slice(),
        }
    }

    /// One GET; the body's size on a 200.
    pub fn get(&mut self) -> io::Result<u64> {
        let result = self.exchange();
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn exchange(&mut self) -> io::Result<u64> {
        if self.stream.is_none() {
            let origin = &self.target.url.origin;
            let addr = (origin.host.as_str(), origin.port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| io::Error::other("the host does not resolve"))?;
            let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(&self.request)?;
        read_response(stream, &mut self.buf)
    }
}

/// Reads one response into `buf` (reused, never grown); errors unless it
/// is a complete 200.
fn read_response(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<u64> {
    let mut len = 0;
    let (status, head_len, framing) = loop {
        if len == buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response head too large",
            ));
        }
        len += read_some(stream, &mut buf[len..])?;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(head_len)) => {
                let framing = framing(response.headers)?;
                break (response.code.unwrap_or(0), head_len, framing);
            }
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    };
    let body = match framing {
        Framing::Length(body) => {
            let mut have = (len - head_len) as u64;
            while have < body {
                have += read_some(stream, buf)? as u64;
            }
            body
        }
        Framing::Chunked => {
            let mut body = 0u64;
            let mut decoder = ChunkedDecoder::default();
            let mut data = head_len..len;
            loop {
                decoder
                    .decode(&buf[data], |chunk| body += chunk.len() as u64)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
                if decoder.is_done() {
                    break body;
                }
                data = 0..read_some(stream, buf)?;
            }
        }
    };
    if status != 200 {
        return Err(io::Error::other(format!("status {status}")));
    }
    Ok(body)
}

enum Framing {
    Length(u64),
    Chunked,
}

fn framing(headers: &[httparse::Header<'_>]) -> io::Result<Framing> {
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding")
            && header.value.eq_ignore_ascii_case(b"chunked")
        {
            return Ok(Framing::Chunked);
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            let len = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "Content-Length"))?;
            return Ok(Framing::Length(len));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "a response without Content-Length or chunked framing",
    ))
}

/// Reads what the socket has; an error at end of stream.
fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    match stream.read(buf)? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let values: Vec<u64> = (1..=1000).rev().collect();
        assert_eq!(quantile(&values, 0.5), 500);
        assert_eq!(quantile(&values, 0.99), 990);
        assert_eq!(quantile(&values, 0.999), 999);
        assert_eq!(quantile(&values, 1.0), 1000);
        assert_eq!(quantile(&[7], 0.5), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }
}
