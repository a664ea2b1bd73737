//! The engine over a real socket: keep-alive, pipelining, HTTP/1.0, a
//! body in pieces, `connection: close`, and stopping.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use clap::Parser;
use sim::SimulateArgs;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: SimulateArgs,
}

fn start(extra: &[&str]) -> sim::Running {
    let argv = ["simulate", "--port", "0", "--size", "20k"];
    let cli = Cli::parse_from(argv.iter().chain(extra));
    sim::start(&cli.args).unwrap()
}

fn connect(engine: &sim::Running) -> TcpStream {
    let stream = TcpStream::connect(engine.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Reads until the server closes.
fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn pipelined_requests_on_one_connection_then_close() {
    let engine = start(&[]);
    let mut stream = connect(&engine);
    stream
        .write_all(
            b"GET /health HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n\
              POST /metrics HTTP/1.1\r\ncontent-length: 0\r\n\r\n\
              GET /health HTTP/1.1\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
    let text = read_to_close(&mut stream);
    let statuses: Vec<_> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "404", "405", "200"], "{text}");
    assert!(text.contains("allow: GET\r\n"));
    assert!(text.ends_with("connection: close\r\ncontent-length: 0\r\n\r\n"));
    engine.stop();
    engine.join();
}

#[test]
fn a_lora_body_in_pieces_and_http10() {
    let engine = start(&["--flavor", "sglang-0.5", "--chunked"]);
    let mut stream = connect(&engine);
    let body = br#"{"lora_name":"a"}"#;
    let head = format!(
        "POST /unload_lora_adapter HTTP/1.1\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    for piece in body.chunks(5) {
        std::thread::sleep(Duration::from_millis(20));
        stream.write_all(piece).unwrap();
    }
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let text = read_to_close(&mut stream);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(text.contains(r#""error_message":"LoRA adapter a is not loaded.""#));
    // HTTP/1.0: no chunked framing, the body ends with the connection.
    let second = &text[text.find("HTTP/1.1 200").unwrap()..];
    assert!(!second.contains("transfer-encoding"), "{second}");
    assert!(second.contains("connection: close\r\n"));
    assert!(second.trim_end().ends_with("NaN"), "the whole payload");
    engine.stop();
    engine.join();
}

#[test]
fn stop_closes_idle_connections_on_epoll() {
    let engine = start(&["--io-driver", "epoll", "--workers", "2"]);
    let mut stream = connect(&engine);
    stream.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));
    engine.stop();
    engine.join();
    // Idle and kept alive until the stop: now closed.
    assert_eq!(stream.read(&mut head).unwrap_or(0), 0);
    let _ = stream.shutdown(Shutdown::Both);
}
