//! Start-up: exec to the first `/health` 200, with the sidecar's defaults
//! (the KV bridge on), measured from outside; and where the time went,
//! from the phases the sidecar logs with its "listening" line
//! ([`matrixinfer_runtime::startup`]). Exec to `main` is the difference.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::BoxError;
use super::load::quantile;

/// What the start-up runs measured; milliseconds.
#[derive(Debug, Serialize)]
pub struct StartupReport {
    /// Sidecars started.
    pub runs: usize,
    /// Exec to the first `/health` 200: median.
    pub p50_ms: f64,
    /// Fastest.
    pub min_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// `main` to "listening", as the sidecar measured it: median.
    pub in_main_p50_ms: f64,
    /// Each phase's median, in the order logged.
    pub phases_p50_ms: Vec<(String, f64)>,
}

impl StartupReport {
    /// Lines for the table.
    pub fn table(&self) -> String {
        let phases: Vec<String> = self
            .phases_p50_ms
            .iter()
            .map(|(name, ms)| format!("{name} {ms:.2}"))
            .collect();
        format!(
            "start-up, exec to /health 200 ({} runs, KV bridge on): p50 {:.1} ms (min {:.1}, max {:.1}); \
             main to listening p50 {:.1} ms: {}; the rest is exec to main and the first request\n",
            self.runs,
            self.p50_ms,
            self.min_ms,
            self.max_ms,
            self.in_main_p50_ms,
            phases.join(", ")
        )
    }
}

/// Starts the sidecar `runs` times with `flags` (no `-P`: a free port is
/// added) and measures each start.
pub fn measure(runs: usize, flags: &[&str]) -> Result<StartupReport, BoxError> {
    let exe = std::env::current_exe()?;
    let mut totals = Vec::with_capacity(runs);
    let mut phases: Vec<Vec<(String, f64)>> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let began = Instant::now();
        let mut child = Command::new(&exe)
            .args(flags)
            .args(["-H", "127.0.0.1", "-P", &port.to_string()])
            .env("MATRIXINFER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let answered = wait_for_health(addr, Duration::from_secs(10));
        let elapsed = began.elapsed();
        // The port may answer before the line is written: read up to it.
        let mut log = String::new();
        if let Some(stderr) = child.stderr.take() {
            let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
            if answered {
                for line in lines.by_ref() {
                    log.push_str(&line);
                    log.push('\n');
                    if line.contains("listening on") {
                        break;
                    }
                }
            }
            let _ = child.kill();
            log.extend(lines.take(50).map(|l| l + "\n"));
        }
        let _ = child.kill();
        let _ = child.wait();
        if !answered {
            return Err(format!("the sidecar did not answer /health within 10 s:\n{log}").into());
        }
        totals.push(elapsed.as_nanos() as u64);
        phases.push(parse_phases(&log).ok_or_else(|| format!("no startup_ms in the log:\n{log}"))?);
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    totals.sort_unstable();
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let names: Vec<String> = phases[0].iter().map(|(n, _)| n.clone()).collect();
    let phases_p50_ms = names
        .iter()
        .map(|name| {
            let mut values: Vec<f64> = phases
                .iter()
                .filter_map(|run| run.iter().find(|(n, _)| n == name).map(|(_, v)| *v))
                .collect();
            (name.clone(), median(&mut values))
        })
        .filter(|(name, _)| name != "total")
        .collect();
    let mut in_main: Vec<f64> = phases
        .iter()
        .filter_map(|run| run.iter().find(|(n, _)| n == "total").map(|(_, v)| *v))
        .collect();
    Ok(StartupReport {
        runs,
        p50_ms: ms(quantile(&totals, 0.5)),
        min_ms: ms(totals[0]),
        max_ms: ms(totals[totals.len() - 1]),
        in_main_p50_ms: median(&mut in_main),
        phases_p50_ms,
    })
}

/// Asks for `/health` until it answers 200, trying again every 100 µs
/// while nothing listens.
fn wait_for_health(addr: SocketAddr, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(addr) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let request = b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
            let mut head = [0u8; 12];
            if stream.write_all(request).is_ok()
                && stream.read_exact(&mut head).is_ok()
                && &head[9..12] == b"200"
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    false
}

/// The phases of the `startup_ms="name=ms …"` field of the "listening" line.
fn parse_phases(log: &str) -> Option<Vec<(String, f64)>> {
    let line = BufReader::new(log.as_bytes())
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("listening on"))?;
    let field = line.split("startup_ms=\"").nth(1)?.split('"').next()?;
    field
        .split_whitespace()
        .map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn phases_are_read_from_the_listening_line() {
        let log = "INFO I/O driver\nINFO listening on http://127.0.0.1:1 engine=vllm workers=1 startup_ms=\"arguments=0.31 logging=0.05 total=0.36\"\n";
        let phases = super::parse_phases(log).unwrap();
        assert_eq!(
            phases,
            [
                ("arguments".to_owned(), 0.31),
                ("logging".to_owned(), 0.05),
                ("total".to_owned(), 0.36)
            ]
        );
    }
}
