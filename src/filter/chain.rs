//! One worker's filter instances, and running them at the end of a scrape.
//!
//! The relabeler has diverted each selected family to the first filter that
//! selects it ([`super::routes`]). At the end of the body every filter in turn gets its
//! families in one call; its output is checked and split by family, each
//! going on to the next filter that selects it or to the response. A
//! failing call counts its reason, drops the instance (a fresh one is built
//! for the next scrape) and does what `--filter-on-error` says; enough
//! consecutive failures switch the filter off for every worker until its
//! cool-down is over.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::Store;

use super::abi::{Answer, Exports, HostState};
use super::health::{OnError, Reason, Streak};
use super::host::{CompiledFilter, FilterHost, instantiate};
use super::routes::Routes;
use super::select::{FilterSet, Selector, selects};
use super::validate::{self, Checker, Presence, Scope};

/// A scrape that must fail because a filter did (`--filter-on-error fail`).
#[derive(Debug, Clone)]
pub struct FilterFailed {
    /// The filter.
    pub filter: Arc<str>,
    /// Why its call failed; `None` while it is switched off.
    pub reason: Option<Reason>,
}

impl std::fmt::Display for FilterFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reason {
            Some(reason) => write!(f, "filter {} failed ({reason})", self.filter),
            None => write!(
                f,
                "filter {} is switched off after consecutive failures",
                self.filter
            ),
        }
    }
}

impl std::error::Error for FilterFailed {}

/// A worker's instances of every filter.
pub struct FilterChain {
    host: Arc<FilterHost>,
    /// The set the instances belong to.
    set: Arc<FilterSet>,
    live: Vec<Option<(Store<HostState>, Exports)>>,
    checker: Checker,
    /// The families of the text being forwarded: name and line ranges.
    families: Vec<(Range<usize>, Range<usize>)>,
}

impl std::fmt::Debug for FilterChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterChain")
            .field("filters", &self.set.filters.len())
            .finish()
    }
}

impl FilterChain {
    /// A chain for one worker; instances are built on first use.
    pub fn new(host: Arc<FilterHost>) -> FilterChain {
        FilterChain {
            host,
            set: Arc::default(),
            live: Vec::new(),
            checker: Checker::default(),
            families: Vec::new(),
        }
    }

    /// The filters of the process.
    pub fn host(&self) -> &Arc<FilterHost> {
        &self.host
    }

    /// Whether there are filters at all.
    pub fn is_empty(&self) -> bool {
        self.host.is_empty()
    }

    /// The set a scrape starting now uses, from its first byte to its
    /// last (a reload meanwhile applies to the next scrape). Filters whose
    /// cool-down is over are put back on trial first.
    pub fn begin(&self) -> Arc<FilterSet> {
        let set = self.host.current();
        let recovery = &self.host.limits.recovery;
        for filter in &set.filters {
            if filter.health.retry_if_due(recovery) {
                tracing::info!(filter = %filter.name, "filter back on trial after its cool-down");
            }
        }
        set
    }

    /// Runs every filter of the scrape's set over what was diverted to
    /// it, appending the results to `out`. Fails only under
    /// `--filter-on-error fail`.
    pub fn run(&mut self, routes: &mut Routes, out: &mut Vec<u8>) -> Result<(), FilterFailed> {
        let Some(set) = routes.set().cloned() else {
            return Ok(());
        };
        let set = &set;
        routes.end_of_body();
        if !Arc::ptr_eq(&self.set, set) {
            self.set = set.clone();
            self.live = (0..set.filters.len()).map(|_| None).collect();
        }
        let on_error = self.host.limits.on_error;
        // Held from the first call to the last, so that the scrape's calls
        // start the epoch clock once, and the last one ending stops it.
        let mut calls = None;
        for i in 0..set.filters.len() {
            let mut input = std::mem::take(routes.diverted(i));
            let mut result = Ok(());
            if !input.is_empty() {
                let filter = &set.filters[i];
                // A switched-off filter gets families only when the policy
                // is to drop them or fail.
                let off = !filter.health.is_on();
                let failed = match off {
                    false => {
                        calls.get_or_insert_with(|| filter.clock.run());
                        self.call(i, &mut input, routes, out).err()
                    }
                    true => None,
                };
                match (on_error, failed.is_some() || off) {
                    (_, false) => {}
                    (OnError::Unfiltered, true) => {
                        // Served as it came; its families still go on to
                        // later filters that select them.
                        self.families.clear();
                        if i + 1 < set.filters.len() {
                            let families = &mut self.families;
                            validate::families(&input, |name, lines| families.push((name, lines)));
                        }
                        forward_input(set, i, &mut input, &self.families, routes, out);
                    }
                    (OnError::Drop, true) => {}
                    (OnError::Fail, true) => {
                        result = Err(FilterFailed {
                            filter: filter.name.clone(),
                            reason: failed,
                        });
                    }
                }
            }
            input.clear();
            *routes.diverted(i) = input;
            result?;
        }
        Ok(())
    }

    /// Calls filter `i` and, when its output passes the checks, forwards
    /// it (straight from guest memory, or `input` itself when unchanged).
    fn call(
        &mut self,
        i: usize,
        input: &mut Vec<u8>,
        routes: &mut Routes,
        out: &mut Vec<u8>,
    ) -> Result<(), Reason> {
        let limits = self.host.limits;
        let set = self.set.clone();
        let filter = &set.filters[i];
        let started = Instant::now();
        let families = &mut self.families;
        families.clear();
        let checker = &mut self.checker;
        let slot = &mut self.live[i];
        let engine = self.host.engine();
        let result = (|| -> Result<(), (Reason, String)> {
            if slot.is_none() {
                let live = instantiate(engine, filter, &limits)
                    .map_err(|e| (e.reason(), e.to_string()))?;
                *slot = Some(live);
            }
            let (store, exports) = slot.as_mut().expect("just built");
            let answer = exports
                .filter(store, input, limits.max_output, limits.deadline)
                .map_err(|e| (e.reason(), e.to_string()))?;
            let output = match answer {
                // Served from the host's own copy of the input, which the
                // guest could not touch: no copy out, no compare.
                Answer::Unchanged => None,
                Answer::Output(output) if output == &input[..] => None,
                Answer::Output(output) => Some(output),
            };
            let Some(output) = output else {
                // Nothing changed: it adds nothing the engine did not send,
                // and the relabeler's split is already known to be sound.
                if i + 1 < set.filters.len() {
                    validate::families(input, |name, lines| families.push((name, lines)));
                }
                forward_input(&set, i, input, families, routes, out);
                return Ok(());
            };
            let scope = CallScope {
                selectors: &filter.selectors,
                routes,
                me: i,
            };
            checker
                .check(output, &scope, |name, lines| families.push((name, lines)))
                .map_err(|v| (validate::reason(&v), v.to_string()))?;
            forward(&set, i, output, families, routes, out);
            Ok(())
        })();
        filter.stats.run(started.elapsed());
        match result {
            Ok(()) => {
                filter.health.success();
                Ok(())
            }
            Err((reason, error)) => {
                self.live[i] = None;
                count_failure(filter, reason, &error, &limits);
                Err(reason)
            }
        }
    }
}

/// Counts and logs a failed call: once per streak, and loudly when it
/// switches the filter off.
fn count_failure(
    filter: &CompiledFilter,
    reason: Reason,
    error: &str,
    limits: &super::FilterLimits,
) {
    filter.stats.error(reason);
    let policy = limits.on_error.as_str();
    match filter.health.failure(&limits.recovery) {
        Streak::Started => tracing::warn!(
            filter = %filter.name, %reason, %error, on_error = policy,
            "filter call failed (further failures in this streak are logged at debug level)"
        ),
        Streak::Continued => {
            tracing::debug!(filter = %filter.name, %reason, %error, "filter call failed")
        }
        Streak::SwitchedOff(cooldown) => {
            filter.stats.switched_off();
            tracing::error!(
                filter = %filter.name, last = %reason, %error, on_error = policy,
                retry_in = ?cooldown,
                "filter switched off after consecutive failures"
            );
        }
    }
}

/// What filter `me`'s output may touch in this scrape.
struct CallScope<'a> {
    selectors: &'a [Selector],
    routes: &'a Routes,
    me: usize,
}

impl Scope for CallScope<'_> {
    fn selects(&self, family: &[u8]) -> bool {
        selects(self.selectors, family)
    }

    fn presence(&self, family: &[u8]) -> Presence {
        match self.routes.seen(family) {
            None => Presence::New,
            Some(Some(route)) if route == self.me => Presence::Mine,
            Some(_) => Presence::Elsewhere,
        }
    }
}

/// [`forward`] for filter `i`'s own input, served as it came: when `i` is
/// the last filter and nothing is in `out` yet (a filter that selects
/// everything), the buffer changes hands instead of being copied, and
/// `input` gets `out`'s.
fn forward_input(
    set: &FilterSet,
    i: usize,
    input: &mut Vec<u8>,
    families: &[(Range<usize>, Range<usize>)],
    routes: &mut Routes,
    out: &mut Vec<u8>,
) {
    if i + 1 == set.filters.len() && out.is_empty() {
        std::mem::swap(input, out);
        return;
    }
    forward(set, i, input, families, routes, out);
}

/// Sends each family of `text` (as `families` lists them) to the next
/// filter after `i` that selects it, or to `out`.
fn forward(
    set: &FilterSet,
    i: usize,
    text: &[u8],
    families: &[(Range<usize>, Range<usize>)],
    routes: &mut Routes,
    out: &mut Vec<u8>,
) {
    if i + 1 == set.filters.len() {
        out.extend_from_slice(text);
        return;
    }
    for (name, lines) in families {
        routes.forward(i, &text[name.clone()], &text[lines.clone()], out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{FilterLimits, FilterSpec};
    use crate::prom::Relabeler;
    use crate::prom::standard::VLLM;

    const SCRAPE: &[u8] = b"# TYPE vllm:num_requests_running gauge\n\
        vllm:num_requests_running{engine=\"0\"} 1\n\
        # TYPE vllm:num_requests_waiting gauge\n\
        vllm:num_requests_waiting{engine=\"0\"} 3\n";

    /// A version 2 module selecting `selectors` that answers "unchanged".
    fn unchanged(selectors: &str) -> Arc<FilterHost> {
        let wat = format!(
            r#"(module
  (memory (export "memory") 2)
  (data (i32.const 1024) "{selectors}")
  (func (export "mi_abi_version") (result i32) (i32.const 2))
  (func (export "mi_alloc") (param i32) (result i32) (i32.const 65536))
  (func (export "mi_init") (param i32 i32) (result i32) (i32.const 0))
  (func (export "mi_selectors") (result i64) (i64.const {packed}))
  (func (export "mi_filter") (param i32 i32) (result i64) (i64.const -1)))"#,
            packed = (1024u64 << 32) | selectors.len() as u64,
        );
        let path = std::env::temp_dir().join(format!(
            "matrixinfer-chain-{}-{}.wasm",
            std::process::id(),
            selectors.len()
        ));
        std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
        let specs = [FilterSpec {
            path: path.clone(),
            config: String::new(),
        }];
        let host = FilterHost::load(&specs, FilterLimits::default()).unwrap();
        std::fs::remove_file(path).unwrap();
        Arc::new(host)
    }

    /// One scrape of [`SCRAPE`] through `host`'s filters: the body, and
    /// whether the output buffer is the one the last filter's families
    /// were diverted to.
    fn scrape(host: &Arc<FilterHost>) -> (Vec<u8>, bool) {
        let mut chain = FilterChain::new(host.clone());
        let mut relabeler = Relabeler::new(VLLM);
        let mut routes = Routes::default();
        let mut out = Vec::new();
        routes.begin(Some(host.current()));
        relabeler.feed(SCRAPE, &mut routes.sink(&mut out));
        relabeler.finish_body(&mut routes.sink(&mut out));
        let diverted = routes.diverted(0).as_ptr();
        chain.run(&mut routes, &mut out).unwrap();
        (out.clone(), out.as_ptr() == diverted)
    }

    #[test]
    fn an_unchanged_input_changes_hands_only_into_an_empty_output() {
        let mut plain = Vec::new();
        let mut relabeler = Relabeler::new(VLLM);
        relabeler.feed(SCRAPE, &mut plain);
        relabeler.finish_body(&mut plain);

        // Everything selected: nothing in the output before the filter's.
        let (body, moved) = scrape(&unchanged("*"));
        assert_eq!(body, plain);
        assert!(moved, "copied, not handed over");

        // One family: the others are already out, so a copy after them.
        let (body, moved) = scrape(&unchanged("vllm:num_requests_waiting"));
        let waiting = &SCRAPE[SCRAPE.len() / 2..];
        assert!(waiting.starts_with(b"# TYPE vllm:num_requests_waiting"));
        assert!(body.ends_with(waiting));
        let lines = |text: &[u8]| {
            let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            lines.sort();
            lines
        };
        assert_eq!(lines(&body), lines(&plain));
        assert!(!moved);
    }
}
