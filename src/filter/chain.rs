//! One worker's filter instances, and running them at the end of a scrape.
//!
//! The relabeler has diverted each selected family to the first filter that
//! selects it. At the end of the body every filter in turn gets its
//! families in one call; its output is checked and split by family, each
//! going on to the next filter that selects it or to the response. A
//! failing call serves its input unfiltered, counts the reason, drops the
//! instance (a fresh one is built for the next scrape), and after enough
//! consecutive failures switches the filter off for every worker.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use wasmtime::Store;

use super::abi::{CallError, Exports, HostState};
use super::host::{CompiledFilter, FilterHost, FilterLimits, instantiate, ticks};
use super::select::{FilterRouter, selects};
use super::validate;
use crate::prom::Relabeler;

/// A worker's instances of every filter.
pub struct FilterChain {
    engine: wasmtime::Engine,
    limits: FilterLimits,
    router: Arc<FilterRouter>,
    slots: Vec<Slot>,
    /// The families of the text being forwarded: name and line ranges.
    families: Vec<(Range<usize>, Range<usize>)>,
}

struct Slot {
    filter: Arc<CompiledFilter>,
    live: Option<(Store<HostState>, Exports)>,
}

impl std::fmt::Debug for FilterChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterChain")
            .field("filters", &self.slots.len())
            .finish()
    }
}

impl FilterChain {
    /// A chain for one worker; instances are built on first use.
    pub fn new(host: &FilterHost) -> FilterChain {
        FilterChain {
            engine: host.engine.clone(),
            limits: host.limits,
            router: host.router(),
            slots: host
                .filters
                .iter()
                .map(|f| Slot {
                    filter: f.clone(),
                    live: None,
                })
                .collect(),
            families: Vec::new(),
        }
    }

    /// Whether there are filters at all.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The router the relabeler diverts families with.
    pub fn router(&self) -> Arc<FilterRouter> {
        self.router.clone()
    }

    /// Runs every filter over what `relabeler` diverted to it, appending
    /// the results to `out`.
    pub fn run(&mut self, relabeler: &mut Relabeler, out: &mut Vec<u8>) {
        for i in 0..self.slots.len() {
            let mut input = std::mem::take(relabeler.diverted(i));
            if !input.is_empty() {
                let filtered = !self.slots[i].filter.disabled.load(Relaxed)
                    && self.filter(i, &input, relabeler, out);
                if !filtered {
                    // Served as it came; its families still go on to later
                    // filters that select them.
                    self.families.clear();
                    let families = &mut self.families;
                    let parsed = validate::families(
                        &input,
                        |_| true,
                        |name, lines| families.push((name, lines)),
                    );
                    if parsed.is_ok() {
                        forward(
                            &self.router,
                            i,
                            self.slots.len(),
                            &input,
                            &self.families,
                            relabeler,
                            out,
                        );
                    } else {
                        out.extend_from_slice(&input);
                    }
                }
            }
            input.clear();
            *relabeler.diverted(i) = input;
        }
    }

    /// Calls filter `i` and, when its output passes the checks, forwards
    /// it (straight from guest memory). False when the families must be
    /// served unfiltered.
    fn filter(
        &mut self,
        i: usize,
        input: &[u8],
        relabeler: &mut Relabeler,
        out: &mut Vec<u8>,
    ) -> bool {
        let limits = self.limits;
        let count = self.slots.len();
        let slot = &mut self.slots[i];
        let filter = slot.filter.clone();
        let started = Instant::now();
        let families = &mut self.families;
        families.clear();
        let result = (|| -> Result<(), String> {
            if slot.live.is_none() {
                slot.live = Some(
                    instantiate(&self.engine, &filter, &limits)
                        .map_err(|e| e.reason().to_owned())?,
                );
            }
            let (store, exports) = slot.live.as_mut().expect("just built");
            store.set_epoch_deadline(ticks(limits.deadline));
            let output = exports.filter(store, input, limits.max_output, limits.deadline).map_err(|e: CallError| {
                tracing::warn!(filter = %filter.name, error = %e, "filter call failed; serving its families unfiltered");
                e.reason().to_owned()
            })?;
            // A filter may write what it selected, and new families; not a
            // family that went elsewhere in this scrape.
            let allowed = |name: &[u8]| {
                selects(&filter.selectors, name)
                    || match relabeler.seen_route(name) {
                        None => true,
                        Some(route) => route == Some(i),
                    }
            };
            validate::families(output, allowed, |name, lines| families.push((name, lines))).map_err(|v| {
                tracing::warn!(filter = %filter.name, violation = %v, "filter output refused; serving its families unfiltered");
                v.reason().to_owned()
            })?;
            forward(&self.router, i, count, output, families, relabeler, out);
            Ok(())
        })();
        filter.stats.run(started.elapsed());
        match result {
            Ok(()) => {
                filter.failures.store(0, Relaxed);
                true
            }
            Err(reason) => {
                filter.stats.error(&reason);
                slot.live = None;
                let failures = filter.failures.fetch_add(1, Relaxed) + 1;
                if failures >= limits.max_failures && !filter.disabled.swap(true, Relaxed) {
                    tracing::error!(
                        filter = %filter.name,
                        failures,
                        last = %reason,
                        "filter switched off after consecutive failures; its families are served unfiltered"
                    );
                }
                false
            }
        }
    }
}

/// Sends each family of `text` (as `families` lists them) to the next
/// filter after `i` that selects it, or to `out`.
fn forward(
    router: &FilterRouter,
    i: usize,
    count: usize,
    text: &[u8],
    families: &[(Range<usize>, Range<usize>)],
    relabeler: &mut Relabeler,
    out: &mut Vec<u8>,
) {
    if i + 1 == count {
        for (name, _) in families {
            relabeler.note_route(&text[name.clone()], None);
        }
        out.extend_from_slice(text);
        return;
    }
    for (name, lines) in families {
        let name = &text[name.clone()];
        let next = router.route_from(Some(i), name);
        relabeler.note_route(name, next);
        match next {
            Some(j) => relabeler
                .diverted(j)
                .extend_from_slice(&text[lines.clone()]),
            None => out.extend_from_slice(&text[lines.clone()]),
        }
    }
}
