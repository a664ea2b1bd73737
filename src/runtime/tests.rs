//! Workers on the real runtime.

use std::time::Duration;

use super::*;

/// Two workers named `name`: worker 0 panics when `panic` says so, the
/// others serve until shutdown, as `serve` does.
fn two_workers(name: &str, shutdown: &Arc<Shutdown>, panic: bool) -> Workers {
    let listeners = bind(([127, 0, 0, 1], 0).into(), 2).unwrap();
    let waiting = shutdown.clone();
    start(
        name,
        DriverChoice::Auto,
        listeners,
        shutdown,
        move |start| {
            let shutdown = waiting.clone();
            async move {
                if panic && start.index == 0 {
                    panic!("a bug outside any request");
                }
                shutdown.wait().await;
            }
        },
    )
    .unwrap()
}

#[test]
fn a_worker_that_panics_stops_the_process_and_is_reported() {
    let shutdown = Arc::new(Shutdown::default());
    let workers = two_workers("panicky", &shutdown, true);
    let stopped = shutdown.wait_timeout(Duration::from_secs(30));
    // Without the stop, the healthy worker would wait for ever: let it go.
    shutdown.trigger();
    assert!(stopped, "the panic did not trigger the shutdown");
    let panicked = workers.join().unwrap_err();
    assert_eq!(panicked.0, ["panicky-0"]);
    assert!(
        panicked
            .to_string()
            .starts_with("panicky-0 ended by a panic")
    );
}

#[test]
fn workers_that_end_at_shutdown_report_nothing() {
    let shutdown = Arc::new(Shutdown::default());
    let workers = two_workers("calm", &shutdown, false);
    assert!(!shutdown.is_triggered());
    shutdown.trigger();
    workers.join().unwrap();
}
