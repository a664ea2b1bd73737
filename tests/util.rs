//! Test harness: the real binary as sidecar and as simulated engine, raw
//! TCP servers for engines that misbehave, a small HTTP client that shows
//! exactly what came over the wire, and independent checks of exposition
//! text (promtool, duplicate series).

#![allow(dead_code, reason = "each test module uses a different part")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_matrixinfer-runtime");

/// How long to wait for what should happen quickly: 10 s on a quiet
/// machine like the one the suite is tuned on, times [`slowness`];
/// `RUST_TEST_PATIENCE_MS` sets it outright. Waiting costs nothing when
/// things go well: every wait ends at its event.
pub fn patience() -> Duration {
    if let Some(ms) = std::env::var("RUST_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Duration::from_millis(ms);
    }
    Duration::from_secs(10).mul_f64(slowness())
}

/// How many times slower than the reference machine (a quiet 2-vCPU AMD
/// EPYC VM) this one is now, between 1 and 20: the larger of a fixed
/// piece of work timed once per run against the reference's time, and the
/// run queue per CPU now (the 1-minute load average over the CPUs this
/// process may use), which catches a load that starts later.
pub fn slowness() -> f64 {
    static AT_START: OnceLock<f64> = OnceLock::new();
    let at_start = *AT_START.get_or_init(|| {
        // The median of three, each ~40 ms on the reference machine.
        let mut runs = [0.0; 3].map(|_| {
            let started = Instant::now();
            std::hint::black_box(reference_work());
            started.elapsed().as_secs_f64() / REFERENCE_WORK.as_secs_f64()
        });
        runs.sort_by(f64::total_cmp);
        runs[1]
    });
    let cpus = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    at_start.max(load / cpus).clamp(1.0, 20.0)
}

/// [`reference_work`]'s time on the reference machine, quiet (the fastest
/// of 10 runs of this debug build: 41 ms).
const REFERENCE_WORK: Duration = Duration::from_millis(40);

/// A fixed piece of CPU and memory work: xorshift over a 1 MiB table.
fn reference_work() -> u64 {
    let mut table = vec![0u64; 1 << 17];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..2_000_000usize {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let slot = (state as usize ^ i) & (table.len() - 1);
        table[slot] = table[slot].wrapping_add(state);
    }
    table.iter().fold(0, |a, b| a ^ b)
}

/// Retries `check` until it holds or patience runs out.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience();
    while Instant::now() < deadline {
        if check() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "timed out waiting for: {what} (patience {:?}, slowness {:.1})",
        patience(),
        slowness()
    );
}

// === Processes ===

/// Starting processes that cannot outlive the suite.
pub trait Tie {
    /// Spawns the process, tied to the suite: see [`Tied`].
    fn spawn_tied(&mut self) -> Tied;
    /// Runs it to its end, tied to the suite, and returns what it wrote
    /// (stdin empty, stdout and stderr captured, as `output` does).
    fn output_tied(&mut self) -> std::process::Output;
}

impl Tie for Command {
    fn spawn_tied(&mut self) -> Tied {
        // The spawner thread needs the command itself; the caller's is
        // left empty (it is built for this one spawn anyway).
        let mut command = std::mem::replace(self, Command::new("/nonexistent"));
        die_with_the_suite(&mut command);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let (answer, spawned) = mpsc::channel();
        spawner()
            .send((command, answer))
            .expect("the spawner thread lives as long as the suite");
        let child = spawned.recv().unwrap().expect("spawn a test process");
        Tied(Some(child))
    }

    fn output_tied(&mut self) -> std::process::Output {
        self.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.spawn_tied().wait_with_output()
    }
}

/// A process the suite started: killed with its process group when
/// dropped (a test that fails unwinds through it), and killed by the
/// kernel when the suite's process ends in any way (a panic that aborts, a
/// SIGKILL, a timeout), through `PR_SET_PDEATHSIG`. A launcher that forks
/// (faketime) must pass that on: `setpriv --pdeathsig KILL` before the
/// binary; one that changes the user ID clears it and must set it again.
#[derive(Debug)]
pub struct Tied(Option<Child>);

impl Tied {
    /// Waits for the end and collects the captured output.
    pub fn wait_with_output(mut self) -> std::process::Output {
        let child = self.0.take().unwrap();
        child.wait_with_output().expect("wait for a test process")
    }
}

impl std::ops::Deref for Tied {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().unwrap()
    }
}

impl std::ops::DerefMut for Tied {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
}

impl Drop for Tied {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            // Its whole group: a launcher (faketime) may have forked it.
            if let Some(group) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Linux sends the parent-death signal when the *thread* that forked
/// ends, not the process; so every test process is forked by this one
/// thread, which lives until the suite's process ends.
fn spawner() -> &'static mpsc::Sender<(Command, mpsc::Sender<std::io::Result<Child>>)> {
    static SPAWNER: OnceLock<mpsc::Sender<(Command, mpsc::Sender<std::io::Result<Child>>)>> =
        OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (requests, incoming) =
            mpsc::channel::<(Command, mpsc::Sender<std::io::Result<Child>>)>();
        thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                for (mut command, answer) in incoming {
                    let _ = answer.send(command.spawn());
                }
            })
            .unwrap();
        requests
    })
}

/// Has the kernel kill the child when the suite's process ends.
#[allow(
    unsafe_code,
    reason = "pre_exec runs between fork and exec; the hook makes only async-signal-safe system calls"
)]
fn die_with_the_suite(command: &mut Command) {
    use rustix::process::{Signal, getpid, getppid, set_parent_process_death_signal};
    use std::os::unix::process::CommandExt;
    let suite = getpid();
    // SAFETY: the hook allocates nothing and only calls prctl and getppid.
    unsafe {
        command.pre_exec(move || {
            set_parent_process_death_signal(Some(Signal::KILL))?;
            // The suite may have ended between the fork and the prctl.
            if getppid() != Some(suite) {
                return Err(std::io::Error::other("the suite has ended"));
            }
            Ok(())
        });
    }
}

/// A child process of the binary, tied to the suite (see [`Tied`]).
pub struct Proc {
    pub child: Tied,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Proc {
    /// Starts the binary with `args` and `env`, and waits for its
    /// "listening on http://ADDR" log line.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::start_via(&[], args, env)
    }

    /// The same, run through `launcher` (a command that ends by exec'ing
    /// its last argument, the binary: `faketime`, `unshare`, …).
    pub fn start_via(launcher: &[&str], args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::start_binary(Path::new(BIN), launcher, args, env)
    }

    /// The same, with another build of the binary (`binary`).
    pub fn start_binary(
        binary: &Path,
        launcher: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let mut command = match launcher {
            [] => Command::new(binary),
            [program, rest @ ..] => {
                let mut command = Command::new(program);
                command.args(rest).arg(binary);
                command
            }
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command.env("MATRIXINFER_LOG", "info");
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn_tied();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let sink = log.clone();
        thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match addr_rx.recv_timeout(patience()) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                thread::sleep(Duration::from_millis(50));
                panic!(
                    "{args:?} did not start ({status:?}):\n{}",
                    log.lock().unwrap()
                );
            }
        };
        let mut addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|_| panic!("bad address {addr:?}"));
        if addr.ip().is_unspecified() {
            addr.set_ip([127, 0, 0, 1].into());
        }
        Proc { child, addr, log }
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, up to patience.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + patience();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Options of a simulated engine.
#[derive(Clone, Debug)]
pub struct Engine {
    args: Vec<String>,
}

impl Engine {
    pub fn flavor(flavor: &str) -> Engine {
        Engine {
            args: vec!["--flavor".into(), flavor.into()],
        }
    }
    pub fn file(path: &Path) -> Engine {
        Engine {
            args: vec!["--payload-file".into(), path.display().to_string()],
        }
    }
    pub fn arg(mut self, arg: &str) -> Engine {
        self.args.push(arg.into());
        self
    }
    pub fn size(self, size: &str) -> Engine {
        self.arg("--size").arg(size)
    }
    pub fn start(&self) -> Proc {
        let mut args = vec!["simulate", "--port", "0"];
        args.extend(self.args.iter().map(String::as_str));
        Proc::start(&args, &[])
    }
}

/// The required flags of a vLLM sidecar, then `extra`.
pub fn vllm_sidecar_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["-E", "vllm", "-I", "p", "-N", "m"];
    args.extend_from_slice(extra);
    args
}

/// Options of a sidecar under test.
#[derive(Clone, Debug)]
pub struct Sidecar {
    engine: String,
    upstream: String,
    workers: u16,
    args: Vec<String>,
    env: Vec<(String, String)>,
    launcher: Vec<String>,
    binary: PathBuf,
}

impl Sidecar {
    pub fn new(engine: &str, upstream: SocketAddr) -> Sidecar {
        Sidecar {
            engine: engine.into(),
            upstream: format!("http://{upstream}"),
            workers: 2,
            args: Vec::new(),
            env: Vec::new(),
            launcher: Vec::new(),
            binary: PathBuf::from(BIN),
        }
    }
    pub fn workers(mut self, n: u16) -> Sidecar {
        self.workers = n;
        self
    }
    pub fn arg(mut self, arg: &str) -> Sidecar {
        self.args.push(arg.into());
        self
    }
    pub fn env(mut self, key: &str, value: &str) -> Sidecar {
        self.env.push((key.into(), value.into()));
        self
    }
    /// Runs the binary through `launcher`; see [`Proc::start_via`].
    pub fn launcher(mut self, launcher: &[&str]) -> Sidecar {
        self.launcher = launcher.iter().map(|s| (*s).to_owned()).collect();
        self
    }
    /// Runs another build of the binary (a release build, say).
    pub fn binary(mut self, binary: &Path) -> Sidecar {
        self.binary = binary.to_owned();
        self
    }
    pub fn start(&self) -> Proc {
        let workers = self.workers.to_string();
        let mut args: Vec<&str> = vec![
            "-E",
            &self.engine,
            "-I",
            "pod-0.default",
            "-N",
            "llama",
            "-H",
            "127.0.0.1",
            "-P",
            "0",
            "-B",
            &self.upstream,
            "--workers",
            &workers,
        ];
        args.extend(self.args.iter().map(String::as_str));
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let launcher: Vec<&str> = self.launcher.iter().map(String::as_str).collect();
        Proc::start_binary(&self.binary, &launcher, &args, &env)
    }
}

/// An address nothing listens on.
pub fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

// === Raw servers ===

/// A TCP server whose every connection is handled by `handler` on its own
/// thread: for engines that misbehave in ways no real server would.
pub struct RawServer {
    pub addr: SocketAddr,
}

impl RawServer {
    pub fn start(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(handler);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let handler = handler.clone();
                thread::spawn(move || handler(stream));
            }
        });
        RawServer { addr }
    }

    /// Answers every request with `response` (raw bytes), then closes.
    pub fn answering(response: Vec<u8>) -> RawServer {
        RawServer::start(move |mut stream| {
            read_request_head(&mut stream);
            let _ = stream.write_all(&response);
        })
    }
}

/// Reads up to the end of a request head.
pub fn read_request_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    head
}

// === A client that shows what came over the wire ===

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked and gunzipped.
    pub body: Vec<u8>,
    /// Whether the body ended properly (last chunk, full length).
    pub complete: bool,
    /// Whether the body came gzipped.
    pub gzipped: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn detail(&self) -> String {
        self.json()["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("no detail in {:?}", self.json()))
            .to_owned()
    }
}

/// A client connection.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(patience())).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).unwrap();
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.response().expect("a response")
    }

    /// Reads one response; `None` if the connection closed first.
    pub fn response(&mut self) -> Option<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill() {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let bodiless = (100..200).contains(&status) || status == 204 || status == 304;
        let (mut body, complete) = if bodiless {
            (Vec::new(), true)
        } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            self.read_chunked()
        } else if let Some(len) = get("content-length") {
            let len: usize = len.parse().unwrap();
            while self.buf.len() < len && self.fill() {}
            let n = len.min(self.buf.len());
            (self.buf.drain(..n).collect(), n == len)
        } else {
            while self.fill() {}
            (std::mem::take(&mut self.buf), true)
        };
        let gzipped = get("content-encoding").is_some_and(|v| v == "gzip");
        if gzipped && complete {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut plain)
                .expect("valid gzip");
            body = plain;
        }
        Some(Response {
            status,
            headers,
            body,
            complete,
            gzipped,
        })
    }

    /// De-chunks with a parser of its own, independent of the runtime's.
    fn read_chunked(&mut self) -> (Vec<u8>, bool) {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if !self.fill() {
                    return (body, false);
                }
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
            self.buf.drain(..line_end + 2);
            while self.buf.len() < size + 2 {
                if !self.fill() {
                    return (body, false);
                }
            }
            if size == 0 {
                assert_eq!(&self.buf[..2], b"\r\n", "trailers are not expected");
                self.buf.drain(..2);
                return (body, true);
            }
            body.extend_from_slice(&self.buf[..size]);
            assert_eq!(&self.buf[size..size + 2], b"\r\n");
            self.buf.drain(..size + 2);
        }
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Whether the server has closed the connection (waits up to `wait`).
    pub fn is_closed(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut byte = [0u8; 1];
        let closed = matches!(self.stream.read(&mut byte), Ok(0));
        self.stream.set_read_timeout(Some(patience())).unwrap();
        closed
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// GET on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    Client::connect(addr).get(path)
}

/// The value of one of the runtime's own series, from a scrape.
pub fn metric(sidecar: &Proc, series: &str) -> f64 {
    let text = get(sidecar.addr, "/metrics").text();
    let line = text
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '));
    line.unwrap_or_else(|| panic!("no {series} in the scrape"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// POST with a JSON body on a fresh connection; the answer may take a
/// while (a synchronous download).
pub fn post_json(addr: SocketAddr, path: &str, body: &str) -> Response {
    let mut client = Client::connect(addr);
    client
        .stream
        .set_read_timeout(Some(patience() * 12))
        .unwrap();
    client.send(
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    client.response().expect("a response")
}

/// POSTs a JSON body with an `Authorization` header of `authorization`
/// (none when `None`).
pub fn post_json_authorized(
    addr: SocketAddr,
    path: &str,
    body: &str,
    authorization: Option<&str>,
) -> Response {
    let mut client = Client::connect(addr);
    let auth = authorization
        .map(|value| format!("Authorization: {value}\r\n"))
        .unwrap_or_default();
    client.send(
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    client.response().expect("an answer")
}

/// Polls `/v1/downloads/{id}` until the job is no longer queued or running (up to
/// `limit`); returns its last status document.
pub fn wait_for_job(sidecar: &Proc, id: &str, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let status = get(sidecar.addr, &format!("/v1/downloads/{id}")).json();
        if status["state"] != "running" && status["state"] != "queued" {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} still running: {status}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Deterministic bytes that do not compress (xorshift).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A fresh, empty directory under the target directory.
pub fn temp_dir(name: &str) -> PathBuf {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(remove_dirs_of_finished_runs);
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Tests keep their directories (`<name>-<pid>`) for a look after a
/// failure; the next run removes those of runs that have ended, so that a
/// build cache reused by CI does not fill the disk.
fn remove_dirs_of_finished_runs() {
    let Ok(entries) = std::fs::read_dir(env!("CARGO_TARGET_TMPDIR")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.rsplit('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Every regular file below `dir`, as relative paths, sorted.
pub fn files_below(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// GET asking for gzip.
pub fn get_gzip(addr: SocketAddr, path: &str) -> Response {
    let mut client = Client::connect(addr);
    client.send(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n").as_bytes(),
    );
    client.response().unwrap()
}

// === Checks of exposition text ===

/// Validates `text` with Prometheus's own parser (`promtool check
/// metrics`). Lint complaints (`:` in names, missing HELP) are fine;
/// parse errors are not.
pub fn promtool(text: &[u8]) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    let mut stdin = child.stdin.take().unwrap();
    let input = text.to_vec();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let code = output.status.code();
    let parse_error = report.contains("error while linting") || report.contains("parsing error");
    assert!(
        !parse_error && matches!(code, Some(0) | Some(3)),
        "promtool rejected the exposition (exit {code:?}):\n{}",
        report
            .lines()
            .filter(|l| !l.contains("should not contain ':'"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A sample's identity: its name and its label set, labels sorted.
pub fn series_key(line: &str) -> Option<String> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut labels = Vec::new();
    if line[name_end..].starts_with('{') {
        let rest = &line[name_end + 1..];
        let mut i = 0;
        let bytes = rest.as_bytes();
        let mut current = String::new();
        let mut in_value = false;
        while i < bytes.len() {
            let c = bytes[i] as char;
            match c {
                '\\' if in_value => {
                    current.push(c);
                    current.push(bytes[i + 1] as char);
                    i += 1;
                }
                '"' => {
                    in_value = !in_value;
                    current.push(c);
                }
                ',' if !in_value => labels.push(std::mem::take(&mut current).trim().to_owned()),
                '}' if !in_value => break,
                _ => current.push(c),
            }
            i += 1;
        }
        if !current.trim().is_empty() {
            labels.push(current.trim().to_owned());
        }
    }
    labels.sort();
    Some(format!("{name}{{{}}}", labels.join(",")))
}

/// Asserts that no series appears twice and no family is declared twice.
pub fn assert_unique_series(text: &str) {
    let mut seen = std::collections::HashSet::new();
    let mut declared = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            let name = rest.split_whitespace().next().unwrap_or_default();
            let key = format!("{}{name}", &line[..6]);
            assert!(declared.insert(key), "family {name} declared twice: {line}");
            continue;
        }
        if let Some(key) = series_key(line) {
            assert!(seen.insert(key.clone()), "duplicate series {key}");
        }
    }
}

/// The lines of family `name` (HELP, TYPE and samples) in `text`.
pub fn family_lines(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .filter(|line| {
            let l = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
                .unwrap_or(line);
            l.starts_with(name) && {
                let rest = &l[name.len()..];
                rest.starts_with(['{', ' '])
                    || ["_total", "_bucket", "_sum", "_count", "_created"]
                        .iter()
                        .any(|s| rest.starts_with(s) && rest[s.len()..].starts_with(['{', ' ']))
            }
        })
        .map(str::to_owned)
        .collect()
}

/// Writes `bytes` to a fresh file under the target directory.
pub fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("t-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}
