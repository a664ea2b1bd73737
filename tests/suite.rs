//! The suite itself: patience that scales with the machine, and no
//! process it starts outliving it, however a test ends.

use std::process::{Command, Stdio};

use crate::util::*;

#[test]
fn patience_scales_with_the_machine() {
    let slowness = slowness();
    eprintln!("slowness {slowness:.2}, patience {:?}", patience());
    assert!((1.0..=20.0).contains(&slowness));
}

/// Run only by [`no_process_outlives_a_test_that_fails`]: starts a
/// simulated engine, a `sleep` and a sidecar under faketime (which forks
/// it), writes their PIDs to
/// `$MATRIXINFER_TEST_PIDS`, then ends as `$MATRIXINFER_TEST_END` says:
/// `panic` unwinds through their owners, `abort` runs no destructor at all
/// (as a panic while panicking, or a SIGKILL from a CI timeout).
#[test]
#[ignore = "run by no_process_outlives_a_test_that_fails"]
fn starts_processes_then_fails() {
    let (Ok(pids), Ok(end)) = (
        std::env::var("MATRIXINFER_TEST_PIDS"),
        std::env::var("MATRIXINFER_TEST_END"),
    ) else {
        return;
    };
    let engine = Engine::flavor("vllm-v1").size("4k").start();
    let sleeper = Command::new("sleep").arg("600").spawn_tied();
    // Through a launcher that forks the binary, as the clock-skew test runs it.
    let launched = Sidecar::new("vllm", engine.addr)
        .workers(1)
        .arg("--no-kv-events")
        .launcher(&["faketime", "-f", "-1h", "setpriv", "--pdeathsig", "KILL"])
        .start();
    let forked =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", launched.child.id()))
            .unwrap();
    let forked = forked.trim();
    assert!(!forked.is_empty(), "faketime forks the binary");
    std::fs::write(
        pids,
        format!("{} {} {forked}", engine.child.id(), sleeper.id()),
    )
    .unwrap();
    match end.as_str() {
        "abort" => std::process::abort(),
        _ => panic!("a test that fails"),
    }
}

#[test]
fn no_process_outlives_a_test_that_fails() {
    let dir = temp_dir("suite-ends");
    for end in ["panic", "abort"] {
        let pids = dir.join(end);
        // Not captured: a process left behind would hold the pipes open.
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "suite::starts_processes_then_fails"])
            .env("MATRIXINFER_TEST_PIDS", &pids)
            .env("MATRIXINFER_TEST_END", end)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn_tied()
            .wait()
            .unwrap();
        assert!(!status.success(), "{end}: the test failed");
        let pids = std::fs::read_to_string(&pids)
            .unwrap_or_else(|e| panic!("{end}: no PIDs ({e}), {status}"));
        for pid in pids.split_whitespace() {
            eventually(&format!("{end}: process {pid} ends with its test"), || {
                !running(pid)
            });
        }
    }
}

/// Whether a process exists and is not a zombie waiting for its reaper.
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}
