//! The pass-through filter's cost over the relabel alone, as a ratio
//! measured in turns.
//!
//! criterion times one row for seconds, then the next; on the 2-vCPU VMs
//! measured the machine drifts between rows by more than the difference
//! asked about (the same `filter` bench has put the pass-through at 0.92×
//! to 1.33× of relabel alone in three runs of one hour). Here every round
//! times each case in turn, and the ratio to relabel alone is taken within
//! the round, so that drift hits both sides alike; printed: the median
//! time of each case and the quartiles of its per-round ratio, hot (each
//! case run several times a round, its caches warm) and cold (every cache
//! emptied before each run, as a scrape finds them; [`common`]). Besides
//! the pass-through, three cases time what any filter costs before it does
//! anything: the routing of the families to it, one call into a guest, and
//! starting the epoch clock that every call starts when it finds it idle.
//!
//! Needs the filters built, as `benches/filter.rs` says.
//!
//! Run: `cargo bench --bench filter_interleaved` (without `--bench`, as
//! under `cargo test --benches`, or with `-- --test`, one round checks
//! that every case runs).

mod common;
#[path = "common/filter_setup.rs"]
mod filter_setup;

use std::hint::black_box;
use std::time::Instant;

use common::{Evictor, payload};
use filter_setup::{filters_dir, scrape, setup};
use matrixinfer_runtime::filter::{Routes, host};
use matrixinfer_runtime::prom::Relabeler;
use matrixinfer_runtime::prom::standard::VLLM;
use sim::payload::Flavor;

/// One case: its name, and one scrape's work returning the bytes made.
type Case<'a> = (&'static str, Box<dyn FnMut() -> usize + 'a>);

/// The cases over `body`: relabel alone first (the baseline); then the
/// parts of a filter's cost that no filter avoids: relabel with the
/// families routed to a filter that is never called, relabel followed by
/// one call into a guest that does nothing (`mi_abi_version`), and relabel
/// followed by only the start of the epoch clock that call begins with;
/// then the pass-through answering "unchanged" over five families and over
/// all.
fn cases(body: &[u8]) -> Vec<Case<'_>> {
    let mut plain = Relabeler::new(VLLM);
    let mut plain_routes = Routes::default();
    let mut plain_out = Vec::with_capacity(body.len() * 2);
    let mut cases: Vec<Case> = vec![(
        "relabel_only",
        Box::new(move || scrape(&mut plain, &mut plain_routes, None, body, &mut plain_out)),
    )];
    let five = filter_setup::FIVE.join("\n");
    let passthrough = |config: &str| {
        setup(&filters_dir(), "passthrough", config).expect("passthrough.wasm built")
    };

    let (host, _, mut relabeler) = passthrough(&five);
    let set = host.current();
    let mut routes = Routes::default();
    let mut out = Vec::with_capacity(body.len() * 2);
    cases.push((
        "routed_5_families_no_call",
        Box::new(move || {
            routes.begin(Some(set.clone()));
            relabeler.reset();
            out.clear();
            for chunk in body.chunks(64 * 1024) {
                relabeler.feed(chunk, &mut routes.sink(&mut out));
            }
            relabeler.finish_body(&mut routes.sink(&mut out));
            relabeler.close(&mut out);
            out.len()
        }),
    ));

    let (host, _, mut relabeler) = passthrough("*");
    let set = host.current();
    let (mut store, mut exports) =
        host::instantiate(host.engine(), &set.filters[0], &host.limits).expect("instantiates");
    let deadline = host.limits.deadline;
    let mut routes = Routes::default();
    let mut out = Vec::with_capacity(body.len() * 2);
    cases.push((
        "relabel_then_empty_call",
        Box::new(move || {
            let made = scrape(&mut relabeler, &mut routes, None, body, &mut out);
            exports.negotiate(&mut store, deadline).expect("answers");
            made
        }),
    ));

    let (host, _, mut relabeler) = passthrough("*");
    let clock = host.current().filters[0].clock.clone();
    let mut routes = Routes::default();
    let mut out = Vec::with_capacity(body.len() * 2);
    cases.push((
        "relabel_then_epoch_clock",
        Box::new(move || {
            let made = scrape(&mut relabeler, &mut routes, None, body, &mut out);
            drop(black_box(clock.run()));
            made
        }),
    ));

    for (name, config) in [
        ("passthrough_5_families", five.as_str()),
        ("passthrough_everything", "*"),
    ] {
        let (host, mut chain, mut relabeler) = passthrough(config);
        let set = host.current();
        let mut routes = Routes::default();
        let mut out = Vec::with_capacity(body.len() * 2);
        cases.push((
            name,
            Box::new(move || {
                let chain = Some((&mut chain, &set));
                scrape(&mut relabeler, &mut routes, chain, body, &mut out)
            }),
        ));
    }
    cases
}

/// Runs `rounds` rounds of every case, `runs` runs each (cold: one, after
/// emptying the caches), and prints what the module doc says.
fn measure(label: &str, cases: &mut [Case<'_>], rounds: usize, runs: usize, cold: bool) {
    let mut evictor = cold.then(Evictor::new);
    let mut micros = vec![Vec::with_capacity(rounds); cases.len()];
    for _ in 0..rounds {
        for (i, (_, run)) in cases.iter_mut().enumerate() {
            let mut took = 0.0;
            for _ in 0..runs {
                if let Some(evictor) = &mut evictor {
                    evictor.evict();
                }
                let started = Instant::now();
                black_box(run());
                took += started.elapsed().as_secs_f64() * 1e6;
            }
            micros[i].push(took / runs as f64);
        }
    }
    let heat = if cold { "cold" } else { "hot" };
    for (i, (name, _)) in cases.iter().enumerate() {
        let mut ratios: Vec<f64> = micros[i]
            .iter()
            .zip(&micros[0])
            .map(|(t, b)| t / b)
            .collect();
        let time = quartiles(&mut micros[i].clone())[1];
        let [low, mid, high] = quartiles(&mut ratios);
        println!(
            "{label} {heat:4} {name:26} {time:9.1} µs   over relabel_only {mid:.3}x (quartiles {low:.3}-{high:.3})"
        );
    }
}

/// The first quartile, the median and the third quartile.
fn quartiles(values: &mut [f64]) -> [f64; 3] {
    values.sort_by(f64::total_cmp);
    let at = |q: usize| values[(values.len() - 1) * q / 4];
    [at(1), at(2), at(3)]
}

fn main() {
    // `cargo bench` passes `--bench`; criterion's `--test` (as in `cargo
    // bench -- --test`) asks for one quick round, as without `--bench`.
    let args: Vec<String> = std::env::args().collect();
    let benching = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    if !filters_dir().join("passthrough.wasm").is_file() {
        eprintln!("filters not built; see benches/filter.rs");
        return;
    }
    for (label, size) in [("100KB", 100 * 1024), ("1MB", 1024 * 1024)] {
        let body = payload(Flavor::VllmV1, size);
        let mut cases = cases(&body);
        // Hot: about 2 ms per case a round; cold: one run after emptying.
        let runs = if size > 500 * 1024 { 8 } else { 60 };
        let (hot_rounds, cold_rounds) = if benching { (200, 100) } else { (1, 1) };
        measure(label, &mut cases, hot_rounds, runs, false);
        measure(label, &mut cases, cold_rounds, 1, true);
    }
}
