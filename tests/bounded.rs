//! Bounded work (issue 19): jobs beyond `--max-concurrent-jobs` queue up
//! to `--max-queued-jobs` and own no thread, later ones get 429 with
//! `Retry-After`; the engine's name is looked up off the workers, and
//! while it does not resolve `/health` answers and `/metrics` says why.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::download::download_body;
use crate::util::*;

/// The process's threads, from `/proc/<pid>/status`.
fn threads(sidecar: &Proc) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{}/status", sidecar.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .expect("a Threads line")
        .trim()
        .parse()
        .unwrap()
}

/// The names of the process's threads, from `/proc/<pid>/task/*/comm`.
fn thread_names(sidecar: &Proc) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", sidecar.child.id())).unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// A burst of 1,000 async downloads against sources that never answer:
/// every request is answered 202 (running or queued) or 429 with
/// `Retry-After`, none fails or goes unanswered, and the process's
/// threads never exceed its threads at rest plus `--max-concurrent-jobs`
/// × (2 + `max_workers`), the bound docs/reliability.md states: queued
/// jobs own no thread.
#[test]
fn a_burst_of_1000_async_downloads_stays_under_the_thread_bound() {
    const CAP: usize = 4;
    const QUEUE: usize = 32;
    const MAX_WORKERS: usize = 1;
    // A Hub that accepts and never answers: running jobs stay running.
    let silent = RawServer::start(|stream| {
        thread::sleep(Duration::from_secs(600));
        drop(stream);
    });
    let sidecar = Sidecar::new("vllm", closed_port())
        .workers(2)
        .arg("--no-kv-events")
        .arg("--max-concurrent-jobs")
        .arg(&CAP.to_string())
        .arg("--max-queued-jobs")
        .arg(&QUEUE.to_string())
        .start();
    let at_rest = threads(&sidecar);
    let bound = at_rest + CAP * (2 + MAX_WORKERS);
    let config =
        serde_json::json!({ "hf_endpoint": format!("http://{}", silent.addr) }).to_string();
    let dir = temp_dir("burst");
    let extra = format!(r#"{{"async_download": true, "max_workers": {MAX_WORKERS}}}"#);
    // Thread counts sampled for as long as the burst lasts.
    let most = Arc::new(Mutex::new(at_rest));
    let burst_over = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (most, over, pid) = (most.clone(), burst_over.clone(), sidecar.child.id());
        thread::spawn(move || {
            while !over.load(Ordering::SeqCst) {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
                let n: usize = status
                    .lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                let mut most = most.lock().unwrap();
                *most = (*most).max(n);
                drop(most);
                // A sampling pace, not a wait for an event.
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let answers: Vec<(u16, bool)> = thread::scope(|scope| {
        let senders: Vec<_> = (0..8)
            .map(|t| {
                let (sidecar, config, dir, extra) = (&sidecar, &config, &dir, &extra);
                scope.spawn(move || {
                    (0..125)
                        .map(|i| {
                            let body = download_body(
                                &format!("acme/burst-{t}-{i}"),
                                &dir.join(format!("{t}-{i}")),
                                config,
                                extra,
                            );
                            let answer = post_json(sidecar.addr, "/v1/download_model", &body);
                            (answer.status, answer.header("retry-after").is_some())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        senders
            .into_iter()
            .flat_map(|s| s.join().unwrap())
            .collect()
    });
    let after = threads(&sidecar);
    burst_over.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let mut by_status = BTreeMap::new();
    for (status, _) in &answers {
        *by_status.entry(*status).or_insert(0usize) += 1;
    }
    assert_eq!(answers.len(), 1000);
    assert!(
        by_status.keys().all(|s| *s == 202 || *s == 429),
        "{by_status:?}"
    );
    assert!(
        answers.iter().all(|(s, retry)| *s != 429 || *retry),
        "a 429 without Retry-After"
    );
    // The cap and the queue were filled (running jobs never end).
    assert!(
        by_status.get(&202).copied().unwrap_or(0) >= CAP + QUEUE,
        "{by_status:?}"
    );
    assert!(
        by_status.get(&429).copied().unwrap_or(0) > 0,
        "{by_status:?}"
    );
    let most = *most.lock().unwrap();
    assert!(
        most <= bound && after <= bound,
        "{most} threads at most, {after} after the burst; at rest {at_rest}, bound {bound}"
    );
    let listed = get(sidecar.addr, "/v1/downloads").json();
    let states: Vec<_> = listed["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["state"].as_str().unwrap().to_owned())
        .collect();
    let count = |state: &str| states.iter().filter(|s| *s == state).count();
    // Every 202 is listed; at most the cap runs, and the rest wait.
    assert_eq!(states.len(), by_status[&202], "{listed}");
    assert!(count("running") <= CAP, "{listed}");
    assert!(count("queued") > 0, "{listed}");
}

/// While the engine's host name does not resolve, `/health` answers and
/// `/metrics` is a 502 naming the host and the resolver's error; the one
/// lookup thread does the lookups.
#[test]
fn an_engine_name_that_does_not_resolve_answers_502_and_health_answers() {
    let sidecar = Proc::start(
        &vllm_sidecar_args(&[
            "-H",
            "127.0.0.1",
            "-P",
            "0",
            "-B",
            "http://engine.invalid:8000",
            "--workers",
            "1",
            "--no-kv-events",
        ]),
        &[],
    );
    for _ in 0..3 {
        let health = get(sidecar.addr, "/health");
        assert_eq!(health.status, 200, "{}", health.text());
        let metrics = get(sidecar.addr, "/metrics");
        assert_eq!(metrics.status, 502, "{}", metrics.text());
        let detail = metrics.detail();
        assert!(
            detail.contains("the engine host engine.invalid does not resolve: "),
            "{detail}"
        );
    }
    let names = thread_names(&sidecar);
    assert_eq!(
        names.iter().filter(|n| *n == "engine-dns").count(),
        1,
        "{names:?}"
    );
}

/// Compiling a filter leaves no thread behind: wasmtime compiles on a
/// rayon pool, which on the global pool would keep a thread per CPU idle
/// for the process's life. With a filter, compiled or precompiled, the
/// only thread added is the epoch clock's, and it sleeps between scrapes.
#[test]
fn a_filter_adds_one_thread_however_many_cpus_compiled_it() {
    let engine = Engine::flavor("vllm-v1").size("4k").start();
    let wasm = crate::filters::filter("passthrough");
    let cwasm = temp_dir("threads-cwasm").join("passthrough.cwasm");
    let compiled = std::process::Command::new(BIN)
        .args(["filter", "compile", &wasm, "-o"])
        .arg(&cwasm)
        .output_tied();
    assert!(compiled.status.success(), "{compiled:?}");
    let start = |filter: Option<&str>| {
        let mut sidecar = Sidecar::new("vllm", engine.addr).arg("--no-kv-events");
        if let Some(filter) = filter {
            sidecar = sidecar.arg("--filter").arg(filter);
        }
        sidecar.start()
    };
    let plain = start(None);
    let at_rest = threads(&plain);
    for filter in [wasm.as_str(), cwasm.to_str().unwrap()] {
        let sidecar = start(Some(filter));
        let mut names = Vec::new();
        eventually(&format!("{filter}: only the epoch clock added"), || {
            names = thread_names(&sidecar);
            threads(&sidecar) == at_rest + 1
        });
        assert!(names.iter().any(|n| n == "filter-epoch"), "{names:?}");
        assert!(
            !names.iter().any(|n| n.starts_with("filter-compile")),
            "{names:?}"
        );
        // The epoch clock runs only while a filter call may be running:
        // between scrapes its thread stays parked (no wake-ups at all).
        let wakeups = || epoch_clock_wakeups(&sidecar);
        eventually("the epoch clock parks after the filter loaded", || {
            let before = wakeups();
            for _ in 0..20 {
                assert_eq!(get(sidecar.addr, "/health").status, 200);
            }
            wakeups() == before
        });
        // A scrape's filter call starts the clock and, scrapes being far
        // apart, stops it as it ends, before the answer is finished: the
        // thread is never woken to stop it. A call preempted past a tick
        // may wake it once, so a few tries; a clock left for its thread to
        // stop is still running when the answer arrives, or has woken it.
        let mut runs = filter_runs(&get(sidecar.addr, "/metrics").text());
        eventually("a sparse scrape leaves the epoch clock parked", || {
            // Sparse: well over the clock's 4 ms after the last scrape.
            thread::sleep(Duration::from_millis(20));
            let before = wakeups();
            let scrape = get(sidecar.addr, "/metrics");
            assert!(
                !epoch_timer_running(&sidecar),
                "the scrape left the timer running"
            );
            assert_eq!(scrape.status, 200);
            let after_runs = filter_runs(&scrape.text());
            assert!(after_runs > runs, "a scrape ran no filter call");
            runs = after_runs;
            thread::sleep(Duration::from_millis(50));
            wakeups() == before
        });
    }
}

/// The sidecar's count of filter calls, from its own section of a scrape.
fn filter_runs(exposition: &str) -> u64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix("matrixinfer_runtime_filter_runs_total{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no filter runs counter in:\n{exposition}"))
}

/// Whether a timer of the sidecar ticks at the epoch clock's rate (2 ms),
/// from the kernel's view of its `timerfd`s.
fn epoch_timer_running(sidecar: &Proc) -> bool {
    let pid = sidecar.child.id();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    fds.flatten().any(|fd| {
        let is_timer = std::fs::read_link(fd.path())
            .is_ok_and(|target| target.to_string_lossy() == "anon_inode:[timerfd]");
        let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
        is_timer
            && std::fs::read_to_string(info)
                .is_ok_and(|info| info.lines().any(|l| l == "it_interval: (0, 2000000)"))
    })
}

/// Voluntary context switches of the sidecar's `filter-epoch` thread.
fn epoch_clock_wakeups(sidecar: &Proc) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", sidecar.child.id())).unwrap();
    let task = tasks
        .flatten()
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "filter-epoch")
        })
        .expect("a filter-epoch thread");
    let status = std::fs::read_to_string(task.path().join("status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// On a node the size of a GPU server (the sidecar told to assume 192
/// cores), an idle sidecar keeps within DESIGN's thread budget: at most 6
/// with the defaults (KV bridge on, the engine and the KV publisher named
/// by host name, neither publishing), at most 8 with a filter. One worker
/// serves, whatever the core count.
#[test]
fn idle_threads_stay_within_budget_on_a_192_core_node() {
    let engine = Engine::flavor("vllm-v1").size("4k").start();
    let url = format!("http://localhost:{}", engine.addr.port());
    let publisher = format!("tcp://localhost:{}", closed_port().port());
    let wasm = crate::filters::filter("passthrough");
    for (filter, budget) in [(None, 6), (Some(wasm.as_str()), 8)] {
        let mut args = vllm_sidecar_args(&[
            "-H",
            "127.0.0.1",
            "-P",
            "0",
            "-B",
            &url,
            "--kv-events-endpoint",
            &publisher,
        ]);
        if let Some(filter) = filter {
            args.extend(["--filter", filter]);
        }
        let sidecar = Proc::start(&args, &[("MATRIXINFER_TEST_ASSUME_CORES", "192")]);
        assert_eq!(get(sidecar.addr, "/metrics").status, 200);
        // A thread takes its name from inside itself, just after it starts:
        // until then it carries its parent's.
        let expected = ["engine-dns", "kv-subscriber", "kv-writer"];
        let mut names = Vec::new();
        eventually(
            &format!("{filter:?}: at most {budget} threads at rest, {expected:?} among them"),
            || {
                names = thread_names(&sidecar);
                names.len() <= budget && expected.iter().all(|e| names.iter().any(|n| n == e))
            },
        );
        let workers = names.iter().filter(|n| n.starts_with("worker-")).count();
        assert_eq!(workers, 1, "{names:?}");
        assert!(sidecar.log().contains("workers=1"), "{}", sidecar.log());
    }
}
