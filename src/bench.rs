//! The scrape-overhead harness (`matrixinfer-runtime bench`): what the
//! sidecar adds to a scrape, measured the way a platform team would.
//!
//! One run, one machine: it starts the simulated engine (or uses the
//! engine at `--engine-url`), measures scraping it directly, then through
//! the sidecar started with each I/O driver (and with a WASM filter, and
//! any other sidecar at `--target-url`). Per path:
//!
//! 1. idle RSS, after a few scrapes;
//! 2. latency at a fixed rate, open loop ([`load::open_loop`]), with the
//!    sidecar's CPU time per scrape and its RSS over the phase;
//! 3. throughput, closed loop at the same concurrency;
//!
//! and prints a table ([`report`]), optionally JSON and an SVG picture
//! ([`plot`]) too. Sidecars are
//! separate processes, so their CPU and memory are theirs alone; the load
//! generator shares the machine with them, as Prometheus would not, which
//! makes the figures conservative.

mod cli;
mod engine;
pub(crate) mod forward;
mod load;
mod plot;
mod procstat;
mod report;
mod startup;

use std::error::Error;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

pub(crate) use cli::BenchArgs;
use cli::Encoding;
use load::Target;
use matrixinfer_runtime::net::{HttpClient, Url};
use matrixinfer_runtime::runtime::DriverChoice;
use report::{PathReport, Report};

pub(crate) type BoxError = Box<dyn Error + Send + Sync>;

/// Runs the harness and prints its table.
pub fn run(args: BenchArgs) -> Result<(), BoxError> {
    let report = measure_all(&args)?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        if path.as_os_str() == "-" {
            println!("{json}");
        } else {
            std::fs::write(path, json + "\n")?;
        }
    }
    if let Some(path) = &args.plot {
        plot::write_svg(&report, path)?;
        eprintln!("bench: plot written to {}", path.display());
    }
    Ok(())
}

/// Measures every path, each with every encoding.
pub fn measure_all(args: &BenchArgs) -> Result<Report, BoxError> {
    let engine_kind = match (&args.engine, args.flavor.starts_with("sglang")) {
        (Some(engine), _) => engine.clone(),
        (None, true) => "sglang".into(),
        (None, false) => "vllm".into(),
    };
    let engine = engine::start(args)?;
    let mut report = Report::new(args, &engine_kind, &engine.label);
    let target = |url: &Url, encoding: Encoding| Target {
        url: url.clone(),
        gzip: encoding == Encoding::Gzip,
    };
    for &encoding in &args.encodings {
        let path = Path {
            name: "direct",
            driver: None,
            encoding,
        };
        let direct = target(&engine.url, encoding);
        report
            .paths
            .push(measure(args, &path, &direct, engine.pid, None)?);
    }

    let base_url = format!(
        "http://{}:{}",
        engine.url.origin.host, engine.url.origin.port
    );
    let metrics_path = engine.url.target.clone();
    for &driver in &args.drivers {
        let mut variants = vec![("forward", Vec::new()), ("sidecar", Vec::new())];
        if let Some(filter) = &args.filter {
            let mut flags = vec!["--filter".to_owned(), filter.display().to_string()];
            if let Some(config) = &args.filter_config {
                flags.extend(["--filter-config".to_owned(), config.clone()]);
            }
            variants.push(("sidecar+filter", flags));
        }
        for (name, extra) in variants {
            let process = if name == "forward" {
                start_forward(&base_url, &metrics_path, driver)?
            } else {
                start_sidecar(args, &engine_kind, &base_url, &metrics_path, driver, &extra)?
            };
            let url = Url::parse(&format!("http://{}/metrics", process.addr))?;
            if name != "forward"
                && let Some(body) = &args.during_download
            {
                start_download(process.addr, body, report.paths.len())?;
            }
            for &encoding in &args.encodings {
                let path = Path {
                    name,
                    driver: Some(driver),
                    encoding,
                };
                let mut measured = measure(
                    args,
                    &path,
                    &target(&url, encoding),
                    Some(process.pid()),
                    engine.pid,
                )?;
                if name != "forward" && args.during_download.is_some() {
                    measured.download = Some(download_state(process.addr));
                }
                report.paths.push(measured);
            }
        }
    }
    if let Some(url) = &args.target_url {
        let url = Url::parse(url)?;
        for &encoding in &args.encodings {
            let path = Path {
                name: "target",
                driver: None,
                encoding,
            };
            report.paths.push(measure(
                args,
                &path,
                &target(&url, encoding),
                args.target_pid,
                engine.pid,
            )?);
        }
    }
    if args.startup_runs > 0 {
        let mut flags = vec![
            "-E",
            engine_kind.as_str(),
            "-I",
            "bench-pod.bench",
            "-N",
            "bench-model",
            "-B",
            base_url.as_str(),
            "-M",
            metrics_path.as_str(),
        ];
        let workers = args.workers.map(|w| w.to_string());
        if let Some(workers) = &workers {
            flags.extend(["--workers", workers.as_str()]);
        }
        eprintln!("bench: start-up, {} runs", args.startup_runs);
        report.startup = Some(startup::measure(args.startup_runs, &flags)?);
    }
    report.compare();
    Ok(report)
}

/// Which path, driver and encoding a measurement is of.
struct Path {
    name: &'static str,
    driver: Option<DriverChoice>,
    encoding: Encoding,
}

/// Measures one path; `pid` is the process whose CPU and memory count,
/// `engine_pid` the engine's when it is another process (for the Pod's
/// CPU per scrape).
fn measure(
    args: &BenchArgs,
    path: &Path,
    target: &Target,
    pid: Option<u32>,
    engine_pid: Option<u32>,
) -> Result<PathReport, BoxError> {
    eprintln!(
        "bench: {}{} {} at {}",
        path.name,
        path.driver
            .map(|d| format!(" ({})", d.as_str()))
            .unwrap_or_default(),
        path.encoding.as_str(),
        target.url.display_without_query()
    );
    // A few scrapes, then idle.
    let mut client = load::Client::new(target);
    for _ in 0..10 {
        client
            .get()
            .map_err(|e| format!("{}: {e}", target.url.display_without_query()))?;
    }
    drop(client);
    thread::sleep(Duration::from_millis(300));
    let idle = pid.and_then(|pid| procstat::memory(pid).ok());

    load::open_loop(target, args.rate, args.connections.into(), args.warmup);

    let sampler = pid.map(RssSampler::start);
    let cpu = |pid: Option<u32>| pid.and_then(|pid| procstat::cpu_nanos(pid).ok());
    let (cpu_before, engine_before) = (cpu(pid), cpu(engine_pid));
    let latency = load::open_loop(target, args.rate, args.connections.into(), args.duration);
    let (cpu_after, engine_after) = (cpu(pid), cpu(engine_pid));
    let steady = sampler.map(RssSampler::median);

    let throughput = if args.throughput_duration.is_zero() {
        None
    } else {
        Some(load::closed_loop(
            target,
            args.connections.into(),
            args.throughput_duration,
        ))
    };
    let peak = pid
        .and_then(|pid| procstat::memory(pid).ok())
        .map(|m| m.peak);

    let per_scrape = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(before), Some(after)) if !latency.latencies.is_empty() => {
            Some(after.saturating_sub(before) as f64 / latency.latencies.len() as f64 / 1e3)
        }
        _ => None,
    };
    let mut report = PathReport::new(
        path.name,
        path.driver,
        path.encoding,
        &latency,
        throughput.as_ref(),
        per_scrape(cpu_before, cpu_after),
        [
            idle.map(|m| m.rss),
            idle.map(|m| m.anon),
            steady.flatten(),
            peak,
        ],
    );
    report.engine_cpu_us_per_scrape = match path.name {
        "direct" => report.cpu_us_per_scrape,
        _ => per_scrape(engine_before, engine_after),
    };
    Ok(report)
}

/// Samples a process's RSS every 100 ms until asked for the median.
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Vec<u64>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(m) = procstat::memory(pid) {
                    samples.push(m.rss);
                }
                thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        RssSampler { stop, thread }
    }

    fn median(self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.join().ok()?;
        (!samples.is_empty()).then(|| load::quantile(&samples, 0.5))
    }
}

/// Starts the forwarding proxy (the floor) in front of the engine.
fn start_forward(
    base_url: &str,
    metrics_path: &str,
    driver: DriverChoice,
) -> Result<Process, BoxError> {
    Process::start(&[
        "bench-forward",
        "--upstream",
        base_url,
        "--metrics-path",
        metrics_path,
        "--io-driver",
        driver.as_str(),
    ])
}

fn start_sidecar(
    args: &BenchArgs,
    engine: &str,
    base_url: &str,
    metrics_path: &str,
    driver: DriverChoice,
    extra: &[String],
) -> Result<Process, BoxError> {
    let mut flags: Vec<String> = [
        "-E",
        engine,
        "-I",
        "bench-pod.bench",
        "-N",
        "bench-model",
        "-H",
        "127.0.0.1",
        "-P",
        "0",
        "-B",
        base_url,
        "-M",
        metrics_path,
        "--io-driver",
        driver.as_str(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Some(workers) = args.workers {
        flags.extend(["--workers".to_owned(), workers.to_string()]);
    }
    flags.extend(extra.iter().cloned());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Process::start(&flags)
}

/// Starts the download `body` (forced asynchronous) into a directory of
/// its own for this path, so that no path finds the files already there.
fn start_download(addr: SocketAddr, body: &str, run: usize) -> Result<(), BoxError> {
    let mut body: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("--during-download: {e}"))?;
    let dir = body["output_dir"]
        .as_str()
        .ok_or("--during-download needs an output_dir")?
        .to_owned();
    let dir = PathBuf::from(dir).join(format!("bench-run-{run}"));
    let _ = std::fs::remove_dir_all(&dir);
    body["output_dir"] = dir.display().to_string().into();
    body["async_download"] = true.into();
    let url = Url::parse(&format!("http://{addr}/v1/download_model"))?;
    // The sidecar under test, on this machine: never through a proxy.
    let client = HttpClient::direct(Duration::from_secs(30));
    let headers = [("content-type".to_owned(), "application/json".to_owned())];
    let mut response = client.send("POST", &url, &headers, body.to_string().as_bytes())?;
    let status = response.status;
    let text = response.text(64 * 1024)?;
    if status != 202 {
        return Err(format!("--during-download: the sidecar answered {status}: {text}").into());
    }
    Ok(())
}

/// The downloads' states once the path was measured.
fn download_state(addr: SocketAddr) -> String {
    let fetch = || -> Result<String, BoxError> {
        let url = Url::parse(&format!("http://{addr}/v1/downloads"))?;
        let client = HttpClient::direct(Duration::from_secs(10));
        let text = client.request("GET", &url, &[])?.text(1 << 20)?;
        let jobs: serde_json::Value = serde_json::from_str(&text)?;
        let states: Vec<String> = jobs["downloads"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|job| {
                format!(
                    "{} {}/{} bytes",
                    job["state"].as_str().unwrap_or("?"),
                    job["bytes_done"],
                    job["bytes_total"]
                )
            })
            .collect();
        Ok(states.join(", "))
    };
    fetch().unwrap_or_else(|e| format!("unknown ({e})"))
}

/// A child process of this binary, killed when dropped.
struct Process {
    child: Child,
    addr: SocketAddr,
}

impl Process {
    /// Starts the binary with `args` and waits for "listening on http://…".
    fn start(args: &[&str]) -> Result<Process, BoxError> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(args)
            .env("MATRIXINFER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    let addr = addr
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                // Kept for a failure message; the rest is drained.
                let mut lines = lines.lock().unwrap_or_else(|e| e.into_inner());
                if lines.len() < 50 {
                    lines.push(line);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = log.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
                return Err(format!("{args:?} did not start:\n{log}").into());
            }
        };
        let addr: SocketAddr = addr.parse()?;
        Ok(Process { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
