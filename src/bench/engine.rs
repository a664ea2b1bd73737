//! The engine the harness measures against: the simulated engine (which
//! gzips when asked, as `prometheus_client` does), the real
//! `prometheus_client` library serving the simulated payload
//! (`--prometheus-client`), or an engine already running (`--engine-url`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use matrixinfer_runtime::net::Url;

use super::{BenchArgs, BoxError, Process};

/// The Python stand-in, embedded so that the binary runs it anywhere.
const PROMETHEUS_CLIENT_ENGINE: &str = include_str!("../../benches/prometheus_client_engine.py");

/// An engine being measured.
pub struct Engine {
    /// Its metrics URL.
    pub url: Url,
    /// Its process, for its CPU per scrape.
    pub pid: Option<u32>,
    /// What it is, for the table.
    pub label: String,
    _simulated: Option<Process>,
    _python: Option<Killed>,
}

/// A child killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts (or names) the engine `args` asks for.
pub fn start(args: &BenchArgs) -> Result<Engine, BoxError> {
    if let Some(url) = &args.engine_url {
        return Ok(Engine {
            url: Url::parse(url)?,
            pid: args.engine_pid,
            label: url.clone(),
            _simulated: None,
            _python: None,
        });
    }
    let size = args.size.to_string();
    let cpu = args.engine_cpu_us.to_string();
    let simulated = Process::start(&[
        "simulate",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--flavor",
        &args.flavor,
        "--size",
        &size,
        "--render-cpu-us",
        &cpu,
        "--gzip",
        "--workers",
        "1",
    ])?;
    let url = Url::parse(&format!("http://{}/metrics", simulated.addr))?;
    if !args.prometheus_client {
        return Ok(Engine {
            url,
            pid: Some(simulated.pid()),
            label: format!("simulated {}", args.flavor),
            _simulated: Some(simulated),
            _python: None,
        });
    }
    let payload = fetch_plain(&simulated.addr.to_string())?;
    let dir = std::env::temp_dir().join(format!("mi-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (script, payload_file) = (dir.join("engine.py"), dir.join("payload.prom"));
    std::fs::write(&script, PROMETHEUS_CLIENT_ENGINE)?;
    std::fs::write(&payload_file, payload)?;
    let python = std::env::var("MATRIXINFER_BENCH_PYTHON")
        .or_else(|_| std::env::var("MATRIXINFER_TEST_PYTHON"))
        .unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(&python)
        .arg(&script)
        .arg(&payload_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {python} (set MATRIXINFER_BENCH_PYTHON): {e}"))?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    BufReader::new(stdout).read_line(&mut line)?;
    let child = Killed(child);
    // Read at start (the script and the payload): nothing to leave behind.
    let _ = std::fs::remove_dir_all(&dir);
    let port: u16 = line
        .strip_prefix("listening ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| {
            format!("the prometheus_client engine did not start ({line:?}); is prometheus_client installed for {python}?")
        })?;
    Ok(Engine {
        url: Url::parse(&format!("http://127.0.0.1:{port}/metrics"))?,
        pid: Some(child.0.id()),
        label: format!("prometheus_client serving simulated {}", args.flavor),
        _simulated: Some(simulated),
        _python: Some(child),
    })
}

/// The simulated engine's payload, uncompressed.
fn fetch_plain(addr: &str) -> Result<Vec<u8>, BoxError> {
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let start = memchr::memmem::find(&answer, b"\r\n\r\n").ok_or("no end of head")? + 4;
    let head = String::from_utf8_lossy(&answer[..start]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") || head.contains("transfer-encoding") {
        return Err(format!("unexpected answer from the simulated engine: {head}").into());
    }
    Ok(answer.split_off(start))
}
