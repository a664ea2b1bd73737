//! Workers on the real runtime.

use std::time::Duration;

use super::*;

#[test]
fn a_worker_that_panics_stops_the_process_and_is_reported() {
    let shutdown = Arc::new(Shutdown::default());
    let listeners = bind(([127, 0, 0, 1], 0).into(), 2).unwrap();
    let workers = start("panicky", DriverChoice::Auto, listeners, &shutdown, {
        let shutdown = shutdown.clone();
        move |start| {
            let shutdown = shutdown.clone();
            async move {
                if start.index == 0 {
                    panic!("a bug outside any request");
                }
                // The other worker serves until shutdown, as `serve` does.
                shutdown.wait().await;
            }
        }
    })
    .unwrap();

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
    let listeners = bind(([127, 0, 0, 1], 0).into(), 2).unwrap();
    let workers = start("calm", DriverChoice::Auto, listeners, &shutdown, {
        let shutdown = shutdown.clone();
        move |_| {
            let shutdown = shutdown.clone();
            async move { shutdown.wait().await }
        }
    })
    .unwrap();
    assert!(!shutdown.is_triggered());
    shutdown.trigger();
    workers.join().unwrap();
}
