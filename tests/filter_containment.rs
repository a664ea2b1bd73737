//! Filter containment with modules the runtime's authors did not shape:
//! raw WebAssembly (text format, compiled here with `wat`) that loops in
//! every entry point, returns whatever bytes break a scrape, keeps state,
//! or changes under a reload. Whatever they do, the process stays up, the
//! start fails or goes on with a clear message, and every scrape served is
//! exposition `promtool` accepts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::util::*;

/// What each export of a test module does.
#[derive(Clone)]
pub(crate) struct Module {
    selectors: String,
    /// The body of `mi_filter`, returning the packed (ptr, len); its
    /// parameters are `$ptr` and `$len`.
    filter: String,
    /// Bytes at [`OUTPUT_AT`], for `filter` to return.
    output: Vec<u8>,
    /// What `mi_abi_version` runs before answering [`Module::abi`].
    version: &'static str,
    /// The ABI version it claims.
    abi: i32,
    init: &'static str,
    selectors_prelude: &'static str,
    start: bool,
}

pub(crate) const OUTPUT_AT: usize = 8192;
const LOOP: &str = "(loop $forever (br $forever))";

impl Module {
    /// Selects `selectors` and answers every call with `output`.
    pub(crate) fn answering(selectors: &str, output: &[u8]) -> Module {
        Module {
            selectors: selectors.into(),
            filter: format!(
                "(call $pack (i32.const {OUTPUT_AT}) (i32.const {}))",
                output.len()
            ),
            output: output.to_vec(),
            version: "",
            abi: 1,
            init: "",
            selectors_prelude: "",
            start: false,
        }
    }

    /// Selects `selectors` and gives its input back unchanged.
    pub(crate) fn echo(selectors: &str) -> Module {
        Module {
            filter: "(call $pack (local.get $ptr) (local.get $len))".into(),
            ..Module::answering(selectors, b"")
        }
    }

    /// This module, claiming ABI version `abi`, its `mi_filter` body
    /// `filter` (its parameters are `$ptr` and `$len`).
    pub(crate) fn with(self, abi: i32, filter: &str) -> Module {
        Module {
            abi,
            filter: filter.into(),
            ..self
        }
    }

    fn wat(&self) -> String {
        let bytes = |b: &[u8]| b.iter().map(|b| format!("\\{b:02x}")).collect::<String>();
        let selectors = format!("{}\n", self.selectors);
        format!(
            r#"(module
  (memory (export "memory") 64)
  (global $calls (mut i32) (i32.const 0))
  (data (i32.const 1024) "{sel}")
  (data (i32.const {OUTPUT_AT}) "{out}")
  (func $pack (param $p i32) (param $l i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32)) (i64.extend_i32_u (local.get $l))))
  (func (export "mi_abi_version") (result i32) {version} (i32.const {abi}))
  (func (export "mi_alloc") (param i32) (result i32) (i32.const 65536))
  (func (export "mi_init") (param i32 i32) (result i32) {init} (i32.const 0))
  (func (export "mi_selectors") (result i64) {selectors_prelude} (call $pack (i32.const 1024) (i32.const {sel_len})))
  (func (export "mi_filter") (param $ptr i32) (param $len i32) (result i64)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    {filter})
  {start}
)"#,
            sel = bytes(selectors.as_bytes()),
            sel_len = selectors.len(),
            out = bytes(&self.output),
            version = self.version,
            abi = self.abi,
            init = self.init,
            selectors_prelude = self.selectors_prelude,
            filter = self.filter,
            start = if self.start {
                format!("(func $start {LOOP}) (start $start)")
            } else {
                String::new()
            },
        )
    }

    /// Compiles the module into `path`.
    fn write_to(&self, path: &Path) {
        let wasm = wat::parse_str(self.wat()).expect("the test module compiles");
        // Replaced whole (rename), as a ConfigMap update replaces a file.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, wasm).unwrap();
        std::fs::rename(&partial, path).unwrap();
    }

    /// Compiles the module into a fresh file named `name.wasm`.
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        let path = temp_dir(&format!("wat-{name}")).join(format!("{name}.wasm"));
        self.write_to(&path);
        path
    }
}

pub(crate) fn sidecar_with(engine: &Proc, filters: &[&Path], extra: &[&str]) -> Proc {
    let mut sidecar = Sidecar::new("vllm", engine.addr);
    for path in filters {
        sidecar = sidecar.arg("--filter").arg(path.to_str().unwrap());
    }
    for arg in extra {
        sidecar = sidecar.arg(arg);
    }
    sidecar.start()
}

fn engine() -> Proc {
    Engine::flavor("vllm-v1").size("50k").start()
}

/// A scrape that must be whole and valid for promtool.
pub(crate) fn valid_scrape(sidecar: &Proc) -> String {
    let response = get(sidecar.addr, "/metrics");
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.complete);
    let text = response.text();
    promtool(text.as_bytes());
    assert_unique_series(&text);
    text
}

pub(crate) fn errors(sidecar: &Proc, filter: &str, reason: &str) -> f64 {
    metric(
        sidecar,
        &format!(
            "matrixinfer_runtime_filter_errors_total{{filter=\"{filter}\",reason=\"{reason}\"}}"
        ),
    )
}

// === Loading ===

/// Runs the sidecar with `filter` and returns its exit code and stderr;
/// it must exit by itself.
fn start_fails(filter: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let engine = engine();
    let url = format!("http://{}", engine.addr);
    let mut args = vec!["-P", "0", "-B", &url, "--filter", filter.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut child = Command::new(BIN)
        .args(vllm_sidecar_args(&args))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn_tied();
    let deadline = Instant::now() + patience();
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the start hung with {}", filter.display());
        }
        thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_filter_that_loops_while_loading_fails_the_start_naming_it() {
    let looping = |m: Module| m;
    let base = Module::echo("vllm:*");
    let cases = [
        (
            "start-loops",
            Module {
                start: true,
                ..base.clone()
            },
        ),
        (
            "version-loops",
            Module {
                version: LOOP,
                ..base.clone()
            },
        ),
        (
            "init-loops",
            Module {
                init: LOOP,
                ..base.clone()
            },
        ),
        (
            "selectors-loop",
            Module {
                selectors_prelude: LOOP,
                ..base.clone()
            },
        ),
    ];
    for (name, module) in cases {
        let path = looping(module).file(name);
        let (code, stderr) = start_fails(&path, &["--filter-deadline-ms", "100"]);
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("filter {}", path.display()))
                && stderr.contains("ran past its deadline"),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn sigterm_while_a_filter_loads_ends_the_process() {
    // A deadline long enough that loading is still under way.
    let path = Module {
        start: true,
        ..Module::echo("vllm:*")
    }
    .file("slow-start");
    let engine = engine();
    let url = format!("http://{}", engine.addr);
    for signal in ["-TERM", "-INT"] {
        let mut child = Command::new(BIN)
            .args(vllm_sidecar_args(&[
                "-P",
                "0",
                "-B",
                &url,
                "--filter",
                path.to_str().unwrap(),
                "--filter-deadline-ms",
                "10000",
            ]))
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn_tied();
        // Its log says when the filter's start function begins (and loops).
        let stderr = child.stderr.take().unwrap();
        let (initializing, in_init) = std::sync::mpsc::channel();
        let log = thread::spawn(move || {
            let mut log = String::new();
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
                let Ok(line) = line else { break };
                if line.contains("filter code loaded; initializing it") {
                    let _ = initializing.send(());
                }
                log.push_str(&line);
                log.push('\n');
            }
            log
        });
        in_init
            .recv_timeout(patience())
            .expect("the filter's initialization begins");
        assert!(child.try_wait().unwrap().is_none(), "still loading");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        // Well before the 10 s deadline would have ended the load.
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "{signal} was ignored while loading"
            );
            thread::sleep(Duration::from_millis(20));
        }
        let status = child.wait().unwrap();
        assert_ne!(status.code(), Some(0));
        let log = log.join().unwrap();
        assert!(log.contains("signal while starting"), "{log}");
    }
}

// === Output that would break the scrape ===

/// Each output is refused as `invalid_output` (or `foreign_family`); the
/// scrape stays valid and serves the families unfiltered.
#[test]
fn output_prometheus_would_reject_is_refused() {
    let waiting = "vllm:num_requests_waiting";
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "no-final-newline",
            b"vllm:num_requests_waiting{engine=\"0\"} 1",
            "invalid_output",
        ),
        (
            "unterminated-quote",
            b"vllm:num_requests_waiting{engine=\"0} 1\n",
            "invalid_output",
        ),
        (
            "label-not-utf8",
            b"vllm:num_requests_waiting{engine=\"\xff\"} 1\n",
            "invalid_output",
        ),
        (
            "own-health-gauge",
            b"# TYPE matrixinfer_runtime_filter_enabled gauge\nmatrixinfer_runtime_filter_enabled{filter=\"x\"} 1\n",
            "invalid_output",
        ),
        (
            "count-shadows-histogram",
            b"vllm:e2e_request_latency_seconds_count{engine=\"9\"} 5\n",
            "invalid_output",
        ),
        (
            "duplicate-series",
            b"vllm:num_requests_waiting{engine=\"0\"} 1\nvllm:num_requests_waiting{engine=\"0\"} 2\n",
            "invalid_output",
        ),
        (
            "type-after-samples",
            b"vllm:num_requests_waiting 1\n# TYPE vllm:num_requests_waiting gauge\n",
            "invalid_output",
        ),
        (
            "foreign",
            b"vllm:num_requests_running 1\n",
            "foreign_family",
        ),
    ];
    let engine = engine();
    // The family's lines, values left out (the simulated engine's change).
    let shape = |text: &str| -> Vec<String> {
        family_lines(text, waiting)
            .iter()
            .map(|l| series_key(l).unwrap_or_else(|| l.clone()))
            .collect()
    };
    let unfiltered = {
        let plain = Sidecar::new("vllm", engine.addr).start();
        shape(&valid_scrape(&plain))
    };
    assert!(unfiltered.len() >= 3);
    for (name, output, reason) in cases {
        let path = Module::answering(waiting, output).file(name);
        let sidecar = sidecar_with(&engine, &[&path], &[]);
        for _ in 0..3 {
            let text = valid_scrape(&sidecar);
            assert_eq!(shape(&text), unfiltered, "{name}");
        }
        // Three scrapes, and the one that reads the counter.
        assert_eq!(errors(&sidecar, name, reason), 4.0, "{name}");
        // One warning for the streak, not one per scrape.
        assert_eq!(
            sidecar.log().matches("filter call failed").count(),
            1,
            "{name}: {}",
            sidecar.log()
        );
    }
}

#[test]
fn on_error_drop_leaves_the_families_out_and_fail_answers_502() {
    let waiting = "vllm:num_requests_waiting";
    let engine = engine();
    let path = Module::answering(waiting, b"garbage").file("garbage-out");
    let dropping = sidecar_with(&engine, &[&path], &["--filter-on-error", "drop"]);
    for _ in 0..7 {
        let text = valid_scrape(&dropping);
        assert!(family_lines(&text, waiting).is_empty(), "{text}");
        assert!(text.contains("\n# TYPE vllm:num_requests_running gauge\n"));
    }
    // Switched off after five, and still left out (not leaked) while off.
    assert_eq!(
        metric(
            &dropping,
            "matrixinfer_runtime_filter_enabled{filter=\"garbage-out\"}"
        ),
        0.0
    );
    let failing = Sidecar::new("vllm", engine.addr)
        .arg("--filter")
        .arg(path.to_str().unwrap())
        .env("MATRIXINFER_FILTER_ON_ERROR", "fail")
        .start();
    for n in 1..=7 {
        let response = get(failing.addr, "/metrics");
        assert_eq!(response.status, 502);
        let detail = response.detail();
        assert!(detail.contains("garbage-out"), "{detail}");
        // Five failed calls, then switched off: still refused, not leaked.
        let why = if n <= 5 {
            "(invalid_output)"
        } else {
            "switched off"
        };
        assert!(detail.contains(why), "scrape {n}: {detail}");
        assert!(!response.text().contains(waiting));
    }
    assert_eq!(get(failing.addr, "/health").status, 200);
}

#[test]
fn a_switched_off_filter_is_tried_again_after_a_doubling_cooldown() {
    let path = Module::answering("vllm:num_requests_waiting", b"x 1").file("always-bad");
    let engine = engine();
    // Long enough that a loaded machine reads the state within it.
    let sidecar = sidecar_with(
        &engine,
        &[&path],
        &["--filter-max-failures", "2", "--filter-cooldown-ms", "3000"],
    );
    let read = |text: &str, name: &str| -> f64 {
        let series = format!("matrixinfer_runtime_filter_{name}{{filter=\"always-bad\"}} ");
        let line = text
            .lines()
            .find(|l| l.starts_with(&series))
            .unwrap_or_else(|| panic!("no {series}"));
        line[series.len()..].parse().unwrap()
    };
    let errors = |text: &str| {
        let series = "matrixinfer_runtime_filter_errors_total{filter=\"always-bad\",reason=\"invalid_output\"} ";
        let line = text.lines().find(|l| l.starts_with(series)).unwrap();
        line[series.len()..].parse::<f64>().unwrap()
    };
    valid_scrape(&sidecar);
    // The second failure switches it off; this scrape's own metrics say so.
    let switched_off = Instant::now();
    let text = valid_scrape(&sidecar);
    assert_eq!(read(&text, "switched_off_total"), 1.0);
    assert_eq!(read(&text, "enabled"), 0.0);
    let retry = read(&text, "retry_seconds");
    assert!(retry > 0.0 && retry <= 3.0, "{retry}");
    // While cooling down it is not called.
    let text = valid_scrape(&sidecar);
    assert_eq!(errors(&text), 2.0);
    // After it: on trial, one failure switches it off again, for twice as
    // long. Until then every scrape finds it cooling down, not called.
    let mut text = String::new();
    eventually("the filter is back on trial after its cool-down", || {
        text = valid_scrape(&sidecar);
        errors(&text) != 2.0
    });
    assert!(
        switched_off.elapsed().as_secs_f64() >= retry - 0.05,
        "tried again {:?} after it was switched off for {retry} s",
        switched_off.elapsed()
    );
    assert_eq!(errors(&text), 3.0);
    assert_eq!(read(&text, "switched_off_total"), 2.0);
    let retry = read(&text, "retry_seconds");
    assert!(retry > 3.0 && retry <= 6.0, "{retry}");
    assert!(
        sidecar
            .log()
            .contains("filter back on trial after its cool-down")
    );
}

// === State and reloads ===

/// Answers `vllm:num_requests_waiting` with a gauge whose label is
/// `version` and whose value counts the calls this instance has had, in
/// two digits (`07`: Prometheus reads leading zeros).
fn counting(version: u8) -> Module {
    let output = format!(
        "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{version=\"{}\"}} 00\n",
        char::from(version)
    );
    let tens = OUTPUT_AT + output.len() - 3;
    let units = tens + 1;
    let digit = |at: usize, divisor: u32| {
        format!(
            "(i32.store8 (i32.const {at}) (i32.add (i32.const 48) \
             (i32.rem_u (i32.div_u (global.get $calls) (i32.const {divisor})) (i32.const 10))))"
        )
    };
    Module {
        filter: format!(
            "{} {} (call $pack (i32.const {OUTPUT_AT}) (i32.const {}))",
            digit(tens, 10),
            digit(units, 1),
            output.len()
        ),
        ..Module::answering("vllm:num_requests_waiting", output.as_bytes())
    }
}

fn waiting_line(text: &str) -> String {
    family_lines(text, "vllm:num_requests_waiting")
        .into_iter()
        .find(|l| !l.starts_with('#'))
        .unwrap()
}

#[test]
fn instance_state_is_per_worker_and_starts_over_on_a_reload() {
    let path = counting(b'1').file("counting");
    let engine = engine();
    let sidecar = Sidecar::new("vllm", engine.addr)
        .workers(1)
        .arg("--filter")
        .arg(path.to_str().unwrap())
        .start();
    for n in 1..=3 {
        assert_eq!(
            waiting_line(&valid_scrape(&sidecar)),
            format!("vllm:num_requests_waiting{{version=\"1\"}} {n:02}")
        );
    }
    counting(b'2').write_to(&path);
    let response = post_json(sidecar.addr, "/v1/filters/reload", "");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["filters"], serde_json::json!(["counting"]));
    assert_eq!(
        waiting_line(&valid_scrape(&sidecar)),
        "vllm:num_requests_waiting{version=\"2\"} 01"
    );
    // Counters outlive the reload (four scrapes, and this one).
    assert_eq!(
        metric(
            &sidecar,
            "matrixinfer_runtime_filter_runs_total{filter=\"counting\"}"
        ),
        5.0
    );
    // Two workers: each has its own instance, counting its own calls. The
    // counts seen are then 1..=k from one and 1..=n-k from the other; one
    // instance shared by the process would show 1..=n. (Sixteen fresh
    // connections all land on one worker once in 30,000 runs.)
    let two = Sidecar::new("vllm", engine.addr)
        .workers(2)
        .arg("--filter")
        .arg(path.to_str().unwrap())
        .start();
    let n = 16;
    let mut seen: Vec<u32> = (0..n)
        .map(|_| {
            let line = waiting_line(&valid_scrape(&two));
            line.rsplit(' ').next().unwrap().parse::<u32>().unwrap()
        })
        .collect();
    seen.sort();
    let ones = seen.iter().filter(|&&c| c == 1).count();
    assert_eq!(ones, 2, "two instances, each starting at 1: {seen:?}");
    let mut expected: Vec<u32> = Vec::new();
    let longest = seen[n - 1];
    expected.extend(1..=longest);
    expected.extend(1..=(n as u32 - longest));
    expected.sort();
    assert_eq!(seen, expected, "per-worker counts");
}

#[test]
fn a_reload_that_fails_keeps_the_running_filters() {
    let path = counting(b'1').file("kept");
    let engine = engine();
    let sidecar = Sidecar::new("vllm", engine.addr)
        .arg("--filter")
        .arg(path.to_str().unwrap())
        .arg("--api-token")
        .arg("reload-token")
        .start();
    valid_scrape(&sidecar);
    std::fs::write(&path, b"not wasm").unwrap();
    let refused = post_json(sidecar.addr, "/v1/filters/reload", "");
    assert_eq!(refused.status, 401);
    let response = post_json_authorized(
        sidecar.addr,
        "/v1/filters/reload",
        "",
        Some("Bearer reload-token"),
    );
    assert_eq!(response.status, 422, "{}", response.text());
    assert!(response.detail().contains("the running filters stay"));
    assert!(response.detail().contains("kept.wasm"));
    assert!(waiting_line(&valid_scrape(&sidecar)).contains("version=\"1\""));
    // A loading module that loops is refused the same way.
    Module {
        init: LOOP,
        ..counting(b'3')
    }
    .write_to(&path);
    let response = post_json_authorized(
        sidecar.addr,
        "/v1/filters/reload",
        "",
        Some("Bearer reload-token"),
    );
    assert_eq!(response.status, 422);
    assert!(
        response.detail().contains("deadline"),
        "{}",
        response.text()
    );
    assert!(waiting_line(&valid_scrape(&sidecar)).contains("version=\"1\""));
    assert_eq!(
        metric(
            &sidecar,
            "matrixinfer_runtime_filter_reloads_total{result=\"failed\"}"
        ),
        2.0
    );
    // SIGHUP reloads too.
    counting(b'4').write_to(&path);
    let status = Command::new("kill")
        .args(["-HUP", &sidecar.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("SIGHUP reloads the filters", || {
        waiting_line(&valid_scrape(&sidecar)).contains("version=\"4\"")
    });
    assert_eq!(get(sidecar.addr, "/health").status, 200);
}

#[test]
fn no_scrape_sees_part_of_an_old_and_part_of_a_new_chain() {
    let make = |family: &str, version: u8| {
        Module::answering(
            family,
            format!("{family}{{version=\"{}\"}} 1\n", char::from(version)).as_bytes(),
        )
    };
    let a = make("vllm:num_requests_waiting", b'1').file("chain-a");
    let b = make("vllm:num_requests_running", b'1').file("chain-b");
    let engine = engine();
    let sidecar = sidecar_with(&engine, &[&a, &b], &[]);
    let addr = sidecar.addr;
    let scraper = thread::spawn(move || {
        let mut mixed = Vec::new();
        for _ in 0..150 {
            let text = get(addr, "/metrics").text();
            let version = |family: &str| {
                text.lines()
                    .find(|l| l.starts_with(&format!("{family}{{")))
                    .map(|l| l.to_owned())
            };
            let (x, y) = (
                version("vllm:num_requests_waiting"),
                version("vllm:num_requests_running"),
            );
            let tag = |l: &Option<String>| {
                l.as_deref()
                    .and_then(|l| l.split('"').nth(1))
                    .map(str::to_owned)
            };
            if tag(&x) != tag(&y) {
                mixed.push((x, y));
            }
        }
        mixed
    });
    for round in 0..6u8 {
        let version = b'2' + round % 2;
        make("vllm:num_requests_waiting", version).write_to(&a);
        make("vllm:num_requests_running", version).write_to(&b);
        let response = post_json(addr, "/v1/filters/reload", "");
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let mixed = scraper.join().unwrap();
    assert!(mixed.is_empty(), "scrapes mixing two chains: {mixed:?}");
}

#[test]
fn sighup_without_filters_is_a_no_op() {
    let engine = engine();
    let sidecar = Sidecar::new("vllm", engine.addr).start();
    let status = Command::new("kill")
        .args(["-HUP", &sidecar.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("SIGHUP is logged", || {
        sidecar
            .log()
            .contains("no filter configured, nothing to reload")
    });
    assert_eq!(get(sidecar.addr, "/health").status, 200);
    let response = post_json(sidecar.addr, "/v1/filters/reload", "");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["filters"], serde_json::json!([]));
}

#[test]
fn one_reload_at_a_time() {
    let path = counting(b'1').file("slow-reload");
    let engine = engine();
    let sidecar = sidecar_with(&engine, &[&path], &["--filter-deadline-ms", "3000"]);
    // The new module's init loops: its reload runs into the 3 s deadline.
    Module {
        init: LOOP,
        ..counting(b'2')
    }
    .write_to(&path);
    let addr = sidecar.addr;
    let first = thread::spawn(move || post_json(addr, "/v1/filters/reload", ""));
    eventually("the first reload is under way", || {
        sidecar.log().contains("filter reload started")
    });
    let second = post_json(addr, "/v1/filters/reload", "");
    assert_eq!(second.status, 409, "{}", second.text());
    assert_eq!(second.header("retry-after"), Some("1"));
    assert!(second.detail().contains("in progress"));
    let first = first.join().unwrap();
    assert_eq!(first.status, 422, "{}", first.text());
    // Only the first one ran.
    assert_eq!(
        metric(
            &sidecar,
            "matrixinfer_runtime_filter_reloads_total{result=\"failed\"}"
        ),
        1.0
    );
    assert!(waiting_line(&valid_scrape(&sidecar)).contains("version=\"1\""));
}
