//! One worker's filter instances, and running them at the end of a scrape.
//!
//! The relabeler has diverted each selected family to the first filter that
//! selects it. At the end of the body every filter in turn gets its
//! families in one call; its output is checked and split by family, each
//! going on to the next filter that selects it or to the response. A
//! failing call serves its input unfiltered, counts the reason, drops the
//! instance (a fresh one is built for the next scrape), and after enough
//! consecutive failures switches the filter off for every worker.

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
    /// Reused output buffer.
    output: Vec<u8>,
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
            output: Vec::new(),
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
            let input = std::mem::take(relabeler.diverted(i));
            if input.is_empty() {
                *relabeler.diverted(i) = input;
                continue;
            }
            let filtered = if self.slots[i].filter.disabled.load(Relaxed) {
                false
            } else {
                self.call(i, &input, relabeler)
            };
            let output = if filtered {
                std::mem::take(&mut self.output)
            } else {
                input.clone()
            };
            self.forward(i, &output, relabeler, out);
            if filtered {
                self.output = output;
            }
            let mut input = input;
            input.clear();
            *relabeler.diverted(i) = input;
        }
    }

    /// Calls filter `i`; true when `self.output` holds checked output.
    fn call(&mut self, i: usize, input: &[u8], relabeler: &Relabeler) -> bool {
        let limits = self.limits;
        let slot = &mut self.slots[i];
        let filter = slot.filter.clone();
        let started = Instant::now();
        let result = (|| -> Result<(), String> {
            if slot.live.is_none() {
                slot.live = Some(
                    instantiate(&self.engine, &filter, &limits)
                        .map_err(|e| e.reason().to_owned())?,
                );
            }
            let (store, exports) = slot.live.as_mut().expect("just built");
            store.set_epoch_deadline(ticks(limits.deadline));
            exports
                .filter(store, input, limits.max_output, limits.deadline, &mut self.output)
                .map_err(|e: CallError| {
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
            validate::families(&self.output, allowed, |_, _| {})
            .map_err(|v| {
                tracing::warn!(filter = %filter.name, violation = %v, "filter output refused; serving its families unfiltered");
                v.reason().to_owned()
            })
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

    /// Sends each family of `text` to the next filter after `i` that
    /// selects it, or to `out`.
    fn forward(&self, i: usize, text: &[u8], relabeler: &mut Relabeler, out: &mut Vec<u8>) {
        let mut routes = Vec::new();
        let parsed = validate::families(
            text,
            |_| true,
            |name, range| {
                routes.push((name.to_vec(), range));
            },
        );
        if parsed.is_err() || i + 1 == self.slots.len() {
            // Nothing after this filter (or text only served as is).
            if parsed.is_ok() {
                for (name, _) in &routes {
                    relabeler.note_route(name, None);
                }
            }
            out.extend_from_slice(text);
            return;
        }
        for (name, range) in routes {
            let next = self.router.route_from(Some(i), &name);
            relabeler.note_route(&name, next);
            match next {
                Some(j) => relabeler.diverted(j).extend_from_slice(&text[range]),
                None => out.extend_from_slice(&text[range]),
            }
        }
    }
}
