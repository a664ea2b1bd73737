//! Engines that fail. The sidecar answers each with the right status and a
//! clear detail, or cuts a stream it cannot finish, and keeps serving.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::util::*;

/// After a fault, the sidecar is healthy and can scrape a good engine.
fn still_serving(sidecar: &Proc) {
    assert_eq!(get(sidecar.addr, "/health").status, 200);
}

fn http_response(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!("HTTP/1.1 {status}\r\n{headers}\r\n").into_bytes();
    raw.extend_from_slice(body);
    raw
}

#[test]
fn engine_down_is_502() {
    let sidecar = Sidecar::new("vllm", closed_port()).start();
    let response = get(sidecar.addr, "/metrics");
    assert_eq!(response.status, 502);
    let detail = response.detail();
    assert!(
        detail.starts_with(
            "Failed to fetch metrics from engine: cannot connect to http://127.0.0.1:"
        ),
        "{detail}"
    );
    assert!(detail.contains("refused"), "{detail}");
    let ready = get(sidecar.addr, "/ready");
    assert_eq!(ready.status, 503);
    assert!(
        ready
            .detail()
            .starts_with("Engine not ready: cannot connect"),
        "{}",
        ready.detail()
    );
    still_serving(&sidecar);
    let own = get(sidecar.addr, "/metrics");
    assert_eq!(own.status, 502);
}

#[test]
fn engine_too_slow_is_504() {
    let upstream = Engine::flavor("vllm-v1")
        .size("50k")
        .arg("--delay-ms")
        .arg("3000")
        .start();
    let sidecar = Sidecar::new("vllm", upstream.addr)
        .env("REQUEST_TIMEOUT", "0.5")
        .start();
    let started = Instant::now();
    let response = get(sidecar.addr, "/metrics");
    assert_eq!(response.status, 504);
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert!(
        response.detail().contains("within 500ms"),
        "{}",
        response.detail()
    );
    still_serving(&sidecar);
}

#[test]
fn engine_silent_after_accepting_is_504() {
    let silent = RawServer::start(|mut stream| {
        read_request_head(&mut stream);
        std::thread::sleep(Duration::from_secs(5));
    });
    let sidecar = Sidecar::new("vllm", silent.addr)
        .arg("--request-timeout")
        .arg("0.3")
        .start();
    assert_eq!(get(sidecar.addr, "/metrics").status, 504);
    still_serving(&sidecar);
}

#[test]
fn engine_error_status_is_502_with_its_body() {
    let failing = RawServer::answering(http_response(
        "500 Internal Server Error",
        "Content-Type: application/json\r\nContent-Length: 33\r\n",
        br#"{"error":"CUDA out of memory"}   "#,
    ));
    let sidecar = Sidecar::new("sglang", failing.addr).start();
    let response = get(sidecar.addr, "/metrics");
    assert_eq!(response.status, 502);
    assert!(
        response
            .detail()
            .ends_with(r#"answered HTTP 500: {"error":"CUDA out of memory"}"#),
        "{}",
        response.detail()
    );
    still_serving(&sidecar);
}

#[test]
fn truncated_body_cuts_the_stream() {
    // Cut before anything went to the scraper: a clean 502.
    let body = b"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 1\n";
    let truncated =
        RawServer::answering(http_response("200 OK", "Content-Length: 100000\r\n", body));
    let sidecar = Sidecar::new("vllm", truncated.addr).start();
    let response = get(sidecar.addr, "/metrics");
    assert_eq!(response.status, 502, "{}", response.text());
    assert!(
        response
            .detail()
            .starts_with("Failed to fetch metrics from engine: "),
        "{}",
        response.detail()
    );
    still_serving(&sidecar);

    // Cut after the first bytes went out: too late for a 502, so the
    // stream stops short and must not look complete.
    let mut body = Vec::new();
    for i in 0..4000 {
        body.extend_from_slice(format!("vllm:some_gauge{{i=\"{i}\"}} 1\n").as_bytes());
    }
    let declared = format!("Content-Length: {}\r\n", body.len() * 2);
    let truncated = RawServer::answering(http_response("200 OK", &declared, &body));
    let sidecar = Sidecar::new("vllm", truncated.addr).start();
    let response = get(sidecar.addr, "/metrics");
    assert_eq!(
        response.status, 200,
        "the head went out before the engine failed"
    );
    assert!(!response.complete, "a cut stream must not look complete");
    still_serving(&sidecar);
}

#[test]
fn chunked_body_that_never_ends_is_502() {
    let broken = RawServer::answering(http_response(
        "200 OK",
        "Transfer-Encoding: chunked\r\n",
        b"5\r\nup 1\n\r\n",
    ));
    let sidecar = Sidecar::new("vllm", broken.addr).start();
    let response = get(sidecar.addr, "/metrics");
    assert_eq!(response.status, 502, "{}", response.text());
    still_serving(&sidecar);
}

#[test]
fn garbage_instead_of_http_is_502() {
    let garbage = RawServer::answering(b"\x00\x01\x02 this is not HTTP at all\r\n\r\n".to_vec());
    let sidecar = Sidecar::new("vllm", garbage.addr).start();
    let response = get(sidecar.addr, "/metrics");
    assert_eq!(response.status, 502);
    assert!(
        response.detail().contains("invalid response"),
        "{}",
        response.detail()
    );
    let closed = RawServer::start(|mut stream| {
        read_request_head(&mut stream);
    });
    let sidecar = Sidecar::new("vllm", closed.addr).start();
    let response = get(sidecar.addr, "/metrics");
    assert_eq!(response.status, 502);
    assert!(
        response.detail().contains("closed without a response"),
        "{}",
        response.detail()
    );
    still_serving(&sidecar);
}

#[test]
fn garbage_bytes_and_invalid_utf8_in_the_body_pass_through() {
    let mut body =
        b"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{m=\"\xff\xfe\"} 1\n"
            .to_vec();
    body.extend_from_slice(b"\x00\x01\x02\xc3\x28 garbage {{{ }}} \"\n");
    body.extend((0..=255u8).cycle().take(4096));
    body.extend_from_slice(b"\nvllm:num_requests_waiting 2\n");
    let file = temp_file("garbage.prom", &body);
    let upstream = Engine::file(&file).start();
    let sidecar = Sidecar::new("vllm", upstream.addr).start();
    let response = get(sidecar.addr, "/metrics");
    assert_eq!(response.status, 200);
    assert!(response.complete);
    assert!(response.body.starts_with(&body));
    let appended = String::from_utf8_lossy(&response.body[body.len()..]).into_owned();
    assert!(
        appended.starts_with("# TYPE matrixinfer:num_requests_waiting gauge\n"),
        "{appended}"
    );
    still_serving(&sidecar);
}

#[test]
fn fifty_megabytes_and_a_one_megabyte_line() {
    let mut body = Vec::new();
    body.extend_from_slice(b"# TYPE vllm:num_requests_waiting gauge\n");
    body.extend_from_slice(b"vllm:num_requests_waiting{huge=\"");
    body.extend(std::iter::repeat_n(b'x', 1024 * 1024));
    body.extend_from_slice(b"\"} 1\n");
    let mut i = 0;
    while body.len() < 50 * 1024 * 1024 {
        body.extend_from_slice(
            format!("filler_metric{{i=\"{i}\",engine=\"0\"}} {i}.0\n").as_bytes(),
        );
        i += 1;
    }
    let file = temp_file("huge.prom", &body);
    let upstream = Engine::file(&file).arg("--chunked").start();
    let sidecar = Sidecar::new("vllm", upstream.addr).start();
    for gzip in [false, true] {
        let response = if gzip {
            get_gzip(sidecar.addr, "/metrics")
        } else {
            get(sidecar.addr, "/metrics")
        };
        assert_eq!(response.status, 200);
        assert!(response.complete);
        assert_eq!(response.gzipped, gzip);
        assert!(response.body.starts_with(&body), "originals changed");
        let appended = String::from_utf8_lossy(&response.body[body.len()..]).into_owned();
        let copy = appended.lines().nth(1).unwrap();
        assert_eq!(
            copy.len(),
            "matrixinfer:num_requests_waiting{huge=\"\"} 1".len() + 1024 * 1024
        );
    }
    // Streamed, not gathered: at its peak the whole process held less
    // than the payload (and this debug build's code is a good part of it).
    let status = std::fs::read_to_string(format!("/proc/{}/status", sidecar.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(
        peak_kib * 1024 < body.len() as u64,
        "peak RSS {peak_kib} KiB for a {} byte payload",
        body.len()
    );
    still_serving(&sidecar);
}

#[test]
fn gzipping_engine_is_inflated() {
    let payload =
        b"# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs{model_name=\"m\"} 4.0\n";
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(payload).unwrap();
    let compressed = encoder.finish().unwrap();
    let headers = format!(
        "Content-Encoding: gzip\r\nContent-Length: {}\r\n",
        compressed.len()
    );
    let engine = RawServer::answering(http_response("200 OK", &headers, &compressed));
    let sidecar = Sidecar::new("sglang", engine.addr).start();
    let response = get(sidecar.addr, "/metrics");
    assert_eq!(response.status, 200);
    let text = response.text();
    assert!(text.starts_with(std::str::from_utf8(payload).unwrap()));
    assert!(text.contains("\nmatrixinfer:num_requests_waiting{model_name=\"m\"} 4.0\n"));

    let corrupt = RawServer::answering(http_response(
        "200 OK",
        "Content-Encoding: gzip\r\nContent-Length: 9\r\n",
        b"not gzip!",
    ));
    let sidecar = Sidecar::new("sglang", corrupt.addr).start();
    assert_eq!(get(sidecar.addr, "/metrics").status, 502);
    still_serving(&sidecar);
}

/// A keep-alive engine that counts the connections it accepts.
fn counting_engine(keep_alive: bool) -> (RawServer, Arc<AtomicUsize>) {
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let server = RawServer::start(move |mut stream: TcpStream| {
        counter.fetch_add(1, Ordering::SeqCst);
        loop {
            if read_request_head(&mut stream).is_empty() {
                return;
            }
            let body = b"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 1\n";
            let close = if keep_alive {
                ""
            } else {
                "Connection: close\r\n"
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{close}\r\n",
                body.len()
            );
            if stream
                .write_all(head.as_bytes())
                .and_then(|()| stream.write_all(body))
                .is_err()
                || !keep_alive
            {
                return;
            }
        }
    });
    (server, connections)
}

#[test]
fn engine_connections_are_reused() {
    let (engine, connections) = counting_engine(true);
    let sidecar = Sidecar::new("vllm", engine.addr).workers(1).start();
    for _ in 0..10 {
        assert_eq!(get(sidecar.addr, "/metrics").status, 200);
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    let (engine, connections) = counting_engine(false);
    let sidecar = Sidecar::new("vllm", engine.addr).workers(1).start();
    for _ in 0..3 {
        assert_eq!(get(sidecar.addr, "/metrics").status, 200);
    }
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}

#[test]
fn stale_pooled_connection_is_retried() {
    // The engine closes every idle connection after one answer without
    // saying so (as uvicorn does after its keep-alive timeout).
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let engine = RawServer::start(move |mut stream: TcpStream| {
        counter.fetch_add(1, Ordering::SeqCst);
        read_request_head(&mut stream);
        let body = b"vllm:num_requests_waiting 1\n";
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
    });
    let sidecar = Sidecar::new("vllm", engine.addr).workers(1).start();
    for _ in 0..5 {
        let response = get(sidecar.addr, "/metrics");
        assert_eq!(
            response.status,
            200,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(connections.load(Ordering::SeqCst), 5);
}

#[test]
fn upstream_errors_are_counted() {
    // Fails three times, then answers.
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let engine = RawServer::start(move |mut stream: TcpStream| {
        read_request_head(&mut stream);
        let body = b"vllm:num_requests_waiting 1\n";
        let raw = if counter.fetch_add(1, Ordering::SeqCst) < 3 {
            http_response(
                "503 Service Unavailable",
                "Content-Length: 7\r\nConnection: close\r\n",
                b"warming",
            )
        } else {
            http_response(
                "200 OK",
                &format!("Content-Length: {}\r\nConnection: close\r\n", body.len()),
                body,
            )
        };
        let _ = stream.write_all(&raw);
    });
    let sidecar = Sidecar::new("vllm", engine.addr).workers(1).start();
    for _ in 0..3 {
        let response = get(sidecar.addr, "/metrics");
        assert_eq!(response.status, 502);
        assert!(
            response.detail().ends_with("answered HTTP 503: warming"),
            "{}",
            response.detail()
        );
    }
    let text = get(sidecar.addr, "/metrics").text();
    for line in [
        "matrixinfer_runtime_upstream_errors_total{reason=\"status\"} 3",
        "matrixinfer_runtime_upstream_errors_total{reason=\"connect\"} 0",
        "matrixinfer_runtime_scrapes_total{outcome=\"engine_error\"} 3",
        "matrixinfer_runtime_scrapes_total{outcome=\"ok\"} 0",
        "matrixinfer_runtime_scrape_duration_seconds_count 3",
        // This scrape's body is counted before the counters are written.
        "matrixinfer_runtime_upstream_bytes_total 28",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let text = get(sidecar.addr, "/metrics").text();
    assert!(
        text.lines()
            .any(|l| l == "matrixinfer_runtime_upstream_bytes_total 56"),
        "{text}"
    );
    assert!(
        sidecar
            .log()
            .matches("Failed to fetch metrics from engine")
            .count()
            == 3
    );
}

#[test]
fn unresolvable_engine_host_does_not_stop_the_sidecar() {
    let sidecar = Proc::start(
        &vllm_sidecar_args(&[
            "-H",
            "127.0.0.1",
            "-P",
            "0",
            "-B",
            "http://no-such-host.invalid:8000",
        ]),
        &[],
    );
    assert!(
        sidecar.log().contains("does not resolve yet"),
        "{}",
        sidecar.log()
    );
    still_serving(&sidecar);
    let response = get(sidecar.addr, "/metrics");
    assert_eq!(response.status, 502);
    assert!(
        response.detail().starts_with("Failed to fetch metrics from engine: cannot connect to http://no-such-host.invalid:8000/metrics: "),
        "{}",
        response.detail()
    );
}

/// An engine that writes its answer's head at once and then its body one
/// byte at a time, `pause` apart (`forever`: never finishing).
fn trickling_engine(body: Vec<u8>, pause: Duration, forever: bool) -> RawServer {
    // Forever: far more bytes promised than will ever come.
    let length = body.len() + if forever { 1 << 30 } else { 0 };
    RawServer::start(move |mut stream| {
        read_request_head(&mut stream);
        let _ = stream.set_nodelay(true);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n");
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        for byte in &body {
            if stream.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(pause);
        }
        while forever && stream.write_all(b"#").is_ok() {
            std::thread::sleep(pause);
        }
    })
}

#[test]
fn engine_answering_byte_by_byte() {
    let body = b"# HELP vllm:num_requests_waiting Requests waiting.\n# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"m\"} 3.0\n".to_vec();
    // Slow but within the request timeout: served whole, and standardized.
    let slow = trickling_engine(body.clone(), Duration::from_millis(2), false);
    let sidecar = Sidecar::new("vllm", slow.addr).start();
    let response = get(sidecar.addr, "/metrics");
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.complete);
    assert!(response.body.starts_with(&body));
    assert!(
        response.text().contains("matrixinfer:num_requests_waiting"),
        "{}",
        response.text()
    );
    still_serving(&sidecar);

    // A body that never ends: the request timeout covers the whole
    // exchange, so the scrape ends rather than hang; as the first 32 KiB
    // never came, nothing had gone out yet, and the answer is a clean 504.
    // (A stream already under way is cut instead:
    // `truncated_body_cuts_the_stream`.)
    let endless = trickling_engine(body, Duration::from_millis(2), true);
    let sidecar = Sidecar::new("vllm", endless.addr)
        .arg("--request-timeout")
        .arg("1")
        .start();
    let response = get(sidecar.addr, "/metrics");
    assert_eq!(response.status, 504, "{}", response.text());
    assert!(
        response.detail().contains("within 1s"),
        "{}",
        response.detail()
    );
    still_serving(&sidecar);
}
