//! A handler that panics, served by the real accept and connection loops
//! on a worker of the real runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::*;
use crate::http::{Request, Responder, StreamBuffers};
use crate::runtime::{self, DriverChoice};

/// Answers `ok`, except on the paths that panic: before answering, and
/// after part of a streamed body went out.
struct Buggy;

impl Service for Buggy {
    async fn call(&self, req: Request, res: &mut Responder<'_>) -> io::Result<()> {
        match req.path.as_str() {
            "/panic" => panic!("a handler bug"),
            "/panic-midway" => {
                let (mut plain, mut wire) = (Vec::new(), Vec::new());
                let buffers = StreamBuffers {
                    plain: &mut plain,
                    wire: &mut wire,
                    gzip: None,
                };
                let mut body = res.stream(StatusCode::OK, "text/plain", buffers).await?;
                body.buf().extend_from_slice(b"first part\n");
                body.flush().await?;
                panic!("a handler bug, midway")
            }
            _ => res.send(StatusCode::OK, &[], b"ok").await,
        }
    }
}

/// Sends `requests` on a new connection and reads until the server
/// closes it.
fn exchange(addr: SocketAddr, requests: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(requests.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("the connection to end with a close, not an error or a stall");
    String::from_utf8_lossy(&answer).into_owned()
}

fn get(path: &str, close: bool) -> String {
    let connection = if close { "connection: close\r\n" } else { "" };
    format!("GET {path} HTTP/1.1\r\nhost: test\r\n{connection}\r\n")
}

#[test]
fn a_panicking_handler_costs_its_request_and_connection_not_the_worker() {
    let config = ServerConfig::default();
    let panics = config.panics.clone();
    let shutdown = Arc::new(Shutdown::default());
    let listeners = runtime::bind(([127, 0, 0, 1], 0).into(), 1).unwrap();
    let addr = listeners[0].local_addr().unwrap();
    // One worker, the sidecar's default: its end would silence the port.
    let workers = runtime::start("buggy", DriverChoice::Auto, listeners, &shutdown, {
        let shutdown = shutdown.clone();
        move |start| {
            serve(
                start.listener,
                Rc::new(Buggy),
                Rc::new(config.clone()),
                shutdown.clone(),
            )
        }
    })
    .unwrap();

    // A keep-alive connection: the request before is answered, the
    // panicking one gets a 500, the one pipelined after it nothing, and
    // the connection closes.
    let requests = [get("/ok", false), get("/panic", false), get("/ok", false)];
    let answer = exchange(addr, &requests.concat());
    let (first, second) = answer
        .split_once("HTTP/1.1 500")
        .unwrap_or_else(|| panic!("no 500 after the panic: {answer:?}"));
    assert!(
        first.starts_with("HTTP/1.1 200") && first.ends_with("\r\n\r\nok"),
        "{answer:?}"
    );
    assert!(second.contains("connection: close"), "{answer:?}");
    assert!(
        second.ends_with(r#"{"detail":"Internal error"}"#),
        "{answer:?}"
    );

    // A panic after the head and part of a chunked body went out: the
    // body stops without its last chunk, so the client sees it cut short.
    let answer = exchange(addr, &get("/panic-midway", false));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.contains("transfer-encoding: chunked"), "{answer:?}");
    assert!(answer.ends_with("first part\n\r\n"), "{answer:?}");

    // The worker still serves, and counted both.
    let answer = exchange(addr, &get("/ok", true));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("\r\n\r\nok"), "{answer:?}");
    assert_eq!(panics.count(), 2);
    let mut rendered = Vec::new();
    panics.render(&mut rendered);
    let rendered = String::from_utf8(rendered).unwrap();
    assert!(
        rendered.contains("\nmatrixinfer_runtime_handler_panics_total 2\n"),
        "{rendered}"
    );

    shutdown.trigger();
    workers.join().expect("no worker ended by a panic");
}
