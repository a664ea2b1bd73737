//! The HTTP/1.1 server: routes, keep-alive, pipelining, limits, timeouts,
//! both I/O drivers, and a graceful SIGTERM.

use std::time::{Duration, Instant};

use crate::util::*;

fn sidecar_with(args: &[&str]) -> (Proc, Proc) {
    let upstream = Engine::flavor("vllm-v1").size("50k").start();
    let mut sidecar = Sidecar::new("vllm", upstream.addr);
    for arg in args {
        sidecar = sidecar.arg(arg);
    }
    (upstream, sidecar.start())
}

#[test]
fn routes_and_their_bodies() {
    let (_engine, sidecar) = sidecar_with(&[]);
    let health = get(sidecar.addr, "/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.text(), r#"{"status":"healthy","service":"runtime"}"#);
    let ready = get(sidecar.addr, "/ready");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");

    let missing = get(sidecar.addr, "/nope");
    assert_eq!(
        (missing.status, missing.detail().as_str()),
        (404, "Not Found")
    );
    let mut client = Client::connect(sidecar.addr);
    client.send(b"DELETE /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let wrong = client.response().unwrap();
    assert_eq!(
        (wrong.status, wrong.detail().as_str()),
        (405, "Method Not Allowed")
    );
    assert_eq!(wrong.header("allow"), Some("GET"));
    // Query strings do not change the route.
    assert_eq!(get(sidecar.addr, "/health?verbose=1").status, 200);
}

/// Whether io_uring works where the tests run (Docker's default seccomp
/// profile blocks it): what `--io-driver auto` picks.
fn io_uring_available() -> bool {
    let (_engine, sidecar) = sidecar_with(&[]);
    sidecar.log().contains("driver=\"io_uring\"")
}

#[test]
fn io_uring_and_epoll_both_serve() {
    let mut drivers = vec!["epoll"];
    if io_uring_available() {
        drivers.push("io-uring");
    } else {
        // Asked for explicitly where it cannot work: a clear failure.
        let engine = Engine::flavor("vllm-v1").size("50k").start();
        let output = std::process::Command::new(BIN)
            .args(vllm_sidecar_args(&[
                "-P",
                "0",
                "--io-driver",
                "io-uring",
                "-B",
            ]))
            .arg(format!("http://{}", engine.addr))
            .output_tied();
        assert_eq!(output.status.code(), Some(1));
        eprintln!("io_uring is unavailable here; tested epoll and the explicit io_uring refusal");
    }
    for driver in drivers {
        let (_engine, sidecar) = sidecar_with(&["--io-driver", driver]);
        let scrape = get(sidecar.addr, "/metrics");
        assert_eq!(scrape.status, 200);
        assert!(scrape.complete);
        let want = format!(
            "matrixinfer_runtime_io_driver{{driver=\"{}\"}} 2",
            driver.replace('-', "_")
        );
        assert!(scrape.text().contains(&want), "{driver}: {want} missing");
        assert!(
            sidecar
                .log()
                .contains(&format!("driver=\"{}\"", driver.replace('-', "_"))),
            "{}",
            sidecar.log()
        );
    }
}

#[test]
fn keep_alive_and_pipelining_answer_in_order() {
    let (_engine, sidecar) = sidecar_with(&[]);
    let mut client = Client::connect(sidecar.addr);
    client.send(
        b"GET /health HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /metrics HTTP/1.1\r\nHost: t\r\n\r\nGET /ready HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let statuses: Vec<u16> = (0..4).map(|_| client.response().unwrap().status).collect();
    assert_eq!(statuses, [200, 404, 200, 200]);
    // Still open for more.
    assert_eq!(client.get("/health").status, 200);
    // Connection: close is honoured.
    client.send(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let last = client.response().unwrap();
    assert_eq!(last.header("connection"), Some("close"));
    assert!(client.is_closed(patience()));
}

#[test]
fn http_1_0_gets_a_close_delimited_stream() {
    let (_engine, sidecar) = sidecar_with(&[]);
    let mut client = Client::connect(sidecar.addr);
    client.send(b"GET /metrics HTTP/1.0\r\n\r\n");
    let response = client.response().unwrap();
    assert_eq!(response.status, 200);
    assert!(response.header("transfer-encoding").is_none());
    assert!(
        response
            .text()
            .contains("# TYPE matrixinfer:num_requests_waiting gauge")
    );
}

#[test]
fn limits_answer_431_413_and_400() {
    let (_engine, sidecar) =
        sidecar_with(&["--max-header-bytes", "4096", "--max-body-bytes", "1000"]);
    let mut client = Client::connect(sidecar.addr);
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(5000)
    );
    client.send(big.as_bytes());
    let response = client.response().unwrap();
    assert_eq!(response.status, 431);
    assert!(response.detail().contains("too large"));

    let mut client = Client::connect(sidecar.addr);
    client.send(b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n");
    let response = client.response().unwrap();
    assert_eq!(response.status, 413);

    for garbage in [
        &b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\n\r\n",
    ] {
        let mut client = Client::connect(sidecar.addr);
        client.send(garbage);
        let response = client.response().unwrap();
        assert_eq!(response.status, 400, "{garbage:?}");
        assert!(response.detail().starts_with("invalid HTTP request"));
    }
    // And the server is still fine.
    assert_eq!(get(sidecar.addr, "/health").status, 200);
}

#[test]
fn chunked_and_continue_request_bodies_are_read() {
    let (_engine, sidecar) = sidecar_with(&[]);
    let mut client = Client::connect(sidecar.addr);
    client.send(b"POST /health HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n");
    assert_eq!(client.response().unwrap().status, 405);
    client.send(
        b"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    );
    let interim = client.response().unwrap();
    assert_eq!(interim.status, 100);
    client.send(b"xyz");
    assert_eq!(client.response().unwrap().status, 405);
    // The connection stayed in step.
    assert_eq!(client.get("/health").status, 200);
}

#[test]
fn slow_requests_get_408_and_idle_connections_close() {
    let (_engine, sidecar) = sidecar_with(&["--read-timeout", "0.3", "--idle-timeout", "0.5"]);
    // A request that starts and never finishes.
    let mut slow = Client::connect(sidecar.addr);
    slow.send(b"GET /health HTTP/1.1\r\nHost: t\r\n");
    let started = Instant::now();
    let response = slow.response().unwrap();
    assert_eq!(response.status, 408);
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(slow.is_closed(patience()));
    // A keep-alive connection that says nothing more.
    let mut idle = Client::connect(sidecar.addr);
    assert_eq!(idle.get("/health").status, 200);
    assert!(idle.is_closed(patience()));
}

#[test]
fn sigterm_finishes_in_flight_scrapes_then_exits_zero() {
    // An engine that holds its answer (50 KB) until the test has sent
    // SIGTERM: the scrape is in flight for certain.
    let (arrived, scrape_at_engine) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    let upstream = RawServer::start(move |mut stream| {
        use std::io::Write;
        read_request_head(&mut stream);
        let _ = arrived.send(());
        let _ = released.lock().unwrap().recv();
        let mut body = String::from("# TYPE vllm:num_requests_running gauge\n");
        for i in 0..1000 {
            body.push_str(&format!(
                "vllm:num_requests_running{{model_name=\"llama\",replica=\"{i}\"}} 1\n"
            ));
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body.as_bytes());
    });
    let mut sidecar = Sidecar::new("vllm", upstream.addr).start();
    let addr = sidecar.addr;
    let mut idle = Client::connect(addr);
    assert_eq!(idle.get("/health").status, 200);
    let in_flight = std::thread::spawn(move || get(addr, "/metrics"));
    scrape_at_engine
        .recv_timeout(patience())
        .expect("the scrape reaches the engine");
    sidecar.terminate();
    // The SIGTERM is in: the process says so before the answer is let go.
    eventually("the sidecar has begun to shut down", || {
        sidecar.log().contains("shutting down")
    });
    release.send(()).unwrap();
    let response = in_flight.join().unwrap();
    assert_eq!(response.status, 200);
    assert!(response.complete, "the in-flight scrape must finish");
    assert!(
        idle.is_closed(patience()),
        "idle connections close on shutdown"
    );
    let status = sidecar.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", sidecar.log());
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer accepting"
    );
}

/// A log nobody reads any more (the pipe's reader is gone) costs the log
/// lines and nothing else: scrapes are served, and SIGTERM still stops the
/// process cleanly (it used to kill the thread that logged, and with the
/// signal thread gone SIGTERM went unheard).
#[test]
fn a_closed_stderr_loses_log_lines_not_the_process() {
    use std::io::BufRead;
    let engine = Engine::flavor("vllm-v1").size("4k").start();
    let upstream = format!("http://{}", engine.addr);
    let mut sidecar = std::process::Command::new(BIN)
        .args(vllm_sidecar_args(&[
            "-H",
            "127.0.0.1",
            "-P",
            "0",
            "-B",
            &upstream,
        ]))
        .args(["--workers", "1", "--no-kv-events"])
        .env("MATRIXINFER_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn_tied();
    // Read up to the "listening" line, then close the pipe's read end.
    let stderr = sidecar.stderr.take().unwrap();
    let (listening, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr: std::net::SocketAddr =
                    rest.split_whitespace().next().unwrap().parse().unwrap();
                let _ = listening.send(addr);
                return; // Dropping the reader closes the pipe.
            }
        }
    });
    let addr = started
        .recv_timeout(patience())
        .expect("the sidecar listens");
    assert_eq!(get(addr, "/metrics").status, 200);
    // The engine gone: the failed scrapes log warnings nobody can read.
    drop(engine);
    for _ in 0..3 {
        assert_eq!(get(addr, "/metrics").status, 502);
    }
    assert_eq!(get(addr, "/health").status, 200);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &sidecar.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + patience();
    let status = loop {
        if let Some(status) = sidecar.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "SIGTERM went unheard");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}
