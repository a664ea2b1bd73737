//! Compiling filters, and what every worker shares about them: the engine
//! and its epoch clock, the current set of compiled filters (swapped whole
//! on a reload), each filter's counters.
//!
//! Every entry into a guest (its start function, `mi_abi_version`,
//! `mi_init`, `mi_selectors`, `mi_filter`) runs under a deadline, at start
//! as on every scrape: the epoch clock starts before the first module is
//! instantiated, so a filter that loops while loading fails the start with
//! its name instead of hanging it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use wasmtime::{Engine, InstancePre, Linker, Store};

use super::abi::{self, CallError, Exports, HostState};
use super::compiler_memory;
use super::epoch::{EpochClock, ticks};
use super::health::{Health, OnError, Reason, Recovery};
use super::module;
use super::select::{FilterSet, Selector};
use crate::offload::Offload;
use crate::prom::expo;
use crate::stats::{Histogram, MetricsSection};

/// A filter as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterSpec {
    /// The `.wasm` file.
    pub path: PathBuf,
    /// The config string handed to `mi_init`.
    pub config: String,
}

/// Limits every filter call and instance runs under, and what happens
/// when a call fails.
#[derive(Clone, Copy, Debug)]
pub struct FilterLimits {
    /// Per call into the guest (loading included).
    pub deadline: Duration,
    /// Per instance.
    pub memory: usize,
    /// Per call's output.
    pub max_output: usize,
    /// When a failing filter is switched off, and back on.
    pub recovery: Recovery,
    /// What a failed call does to the scrape.
    pub on_error: OnError,
}

impl Default for FilterLimits {
    fn default() -> Self {
        FilterLimits {
            deadline: Duration::from_millis(50),
            memory: 64 * 1024 * 1024,
            max_output: 32 * 1024 * 1024,
            recovery: Recovery::default(),
            on_error: OnError::default(),
        }
    }
}

/// A filter that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("filter {}: {reason}", path.display())]
pub struct LoadError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

const DURATION_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// Counters of one filter; they outlive reloads (kept by the filter's
/// name), so they only ever grow.
#[derive(Debug)]
pub struct FilterStats {
    runs: AtomicU64,
    errors: [AtomicU64; Reason::ALL.len()],
    switched_off: AtomicU64,
    duration: Histogram,
}

impl Default for FilterStats {
    fn default() -> FilterStats {
        FilterStats {
            runs: AtomicU64::new(0),
            errors: Default::default(),
            switched_off: AtomicU64::new(0),
            duration: Histogram::new(&DURATION_BUCKETS),
        }
    }
}

impl FilterStats {
    /// Records a call.
    pub fn run(&self, took: Duration) {
        self.runs.fetch_add(1, Relaxed);
        self.duration.observe(took);
    }

    /// Records a failure.
    pub fn error(&self, reason: Reason) {
        self.errors[reason as usize].fetch_add(1, Relaxed);
    }

    /// Records a switch-off.
    pub fn switched_off(&self) {
        self.switched_off.fetch_add(1, Relaxed);
    }

    /// Failed calls for `reason`.
    pub fn errors(&self, reason: Reason) -> u64 {
        self.errors[reason as usize].load(Relaxed)
    }
}

/// One compiled filter, shared by every worker.
pub struct CompiledFilter {
    /// Its name (the file name without `.wasm`), for logs and metrics.
    pub name: Arc<str>,
    /// Its config.
    pub config: String,
    /// Imports resolved and checked, ready to instantiate.
    pub pre: InstancePre<HostState>,
    /// The families it selected.
    pub selectors: Vec<Selector>,
    /// Its failure streak and switch.
    pub health: Health,
    /// Its counters.
    pub stats: Arc<FilterStats>,
    /// The clock its engine's deadlines run on.
    pub clock: Arc<EpochClock>,
}

impl std::fmt::Debug for CompiledFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledFilter")
            .field("name", &self.name)
            .field("selectors", &self.selectors)
            .finish()
    }
}

/// The filters of the process: the configured specs, and the set compiled
/// from them that scrapes use now.
#[derive(Debug)]
pub struct FilterHost {
    engine: Engine,
    /// The epoch clock; none without filters.
    clock: Option<Arc<EpochClock>>,
    linker: Linker<HostState>,
    specs: Vec<FilterSpec>,
    /// The limits.
    pub limits: FilterLimits,
    current: RwLock<Arc<FilterSet>>,
    /// The reload's thread: one at a time, and no queue of them.
    reloads: Offload,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

impl FilterHost {
    /// Compiles every filter, checks its ABI version and config, and reads
    /// its selectors, each entry into the guest under the deadline.
    pub fn load(specs: &[FilterSpec], limits: FilterLimits) -> Result<FilterHost, LoadError> {
        let fail = |reason: String| LoadError {
            path: PathBuf::new(),
            reason,
        };
        let engine = module::engine().map_err(|e| fail(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        abi::link(&mut linker).map_err(|e| fail(e.to_string()))?;
        // Before anything runs in a guest: a start function that loops
        // must meet its deadline too.
        let clock = if specs.is_empty() {
            None
        } else {
            Some(EpochClock::start(&engine).map_err(|e| fail(e.to_string()))?)
        };
        let filters = match &clock {
            Some(clock) => compile_all(&engine, clock, &linker, specs, &limits, &[])?,
            None => Vec::new(),
        };
        if !filters.is_empty() {
            compiler_memory::release();
        }
        Ok(FilterHost {
            engine,
            clock,
            linker,
            specs: specs.to_vec(),
            limits,
            current: RwLock::new(Arc::new(FilterSet {
                filters,
                route_off: limits.on_error != OnError::Unfiltered,
            })),
            reloads: Offload::new("filter reload", 1),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        })
    }

    /// The engine every instance runs in.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether any filter is configured.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// The set scrapes use now; a scrape keeps the one it started with.
    pub fn current(&self) -> Arc<FilterSet> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Compiles the configured filters again (their files may have
    /// changed) on a thread of its own, and swaps the new set in whole; if
    /// any fails to load, the running set stays. At most one reload runs:
    /// `None` while one does. The receiver gets the outcome (the names of
    /// the filters now running), which is logged either way.
    pub fn reload_in_background(self: &Arc<Self>) -> std::io::Result<Option<ReloadOutcome>> {
        let Ok(permit) = self.reloads.reserve() else {
            return Ok(None);
        };
        let host = self.clone();
        permit
            .spawn("filter-reload".into(), move || host.reload())
            .map(Some)
    }

    /// The reload itself, blocking while it compiles.
    fn reload(&self) -> Result<Vec<Arc<str>>, LoadError> {
        tracing::info!(filters = self.specs.len(), "filter reload started");
        let old = self.current();
        let Some(clock) = &self.clock else {
            return Ok(Vec::new());
        };
        let result = compile_all(
            &self.engine,
            clock,
            &self.linker,
            &self.specs,
            &self.limits,
            &old.filters,
        );
        match result {
            Ok(filters) => {
                compiler_memory::release();
                let names: Vec<Arc<str>> = filters.iter().map(|f| f.name.clone()).collect();
                *self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(FilterSet {
                    filters,
                    route_off: self.limits.on_error != OnError::Unfiltered,
                });
                self.reloads_ok.fetch_add(1, Relaxed);
                tracing::info!(filters = ?names, "filters reloaded");
                Ok(names)
            }
            Err(e) => {
                self.reloads_failed.fetch_add(1, Relaxed);
                tracing::error!(error = %e, "filter reload failed; the running filters stay");
                Err(e)
            }
        }
    }
}

/// What a reload started with [`FilterHost::reload_in_background`] ends with.
pub type ReloadOutcome = flume::Receiver<Result<Vec<Arc<str>>, LoadError>>;

/// Loads every filter. wasmtime compiles a module's functions in parallel
/// on rayon's current pool; run on the global one, that would leave a
/// thread per CPU idle for the life of the process (hundreds on a big
/// node), so the compile gets a pool of its own (at most 4 threads) that
/// ends with it.
fn compile_all(
    engine: &Engine,
    clock: &Arc<EpochClock>,
    linker: &Linker<HostState>,
    specs: &[FilterSpec],
    limits: &FilterLimits,
    previous: &[Arc<CompiledFilter>],
) -> Result<Vec<Arc<CompiledFilter>>, LoadError> {
    let load = || {
        specs
            .iter()
            .map(|spec| {
                let name: Arc<str> = name_of(&spec.path).into();
                let stats = previous
                    .iter()
                    .find(|f| f.name == name)
                    .map(|f| f.stats.clone())
                    .unwrap_or_default();
                compile(engine, clock, linker, spec, limits, name, stats).map(Arc::new)
            })
            .collect()
    };
    // A filter is small: more than a few compile threads buy nothing.
    match rayon::ThreadPoolBuilder::new()
        .num_threads(crate::runtime::available_cores().min(4))
        .thread_name(|i| format!("filter-compile-{i}"))
        .build()
    {
        Ok(pool) => pool.install(load),
        // Compiling on the global pool still works.
        Err(_) => load(),
    }
}

/// A store and instance of `filter`, initialized with its config: the
/// start function, `mi_abi_version` and `mi_init` each under the deadline.
pub fn instantiate(
    engine: &Engine,
    filter: &CompiledFilter,
    limits: &FilterLimits,
) -> Result<(Store<HostState>, Exports), CallError> {
    let state = HostState::new(filter.name.clone(), limits.memory, filter.clock.clone());
    let mut store = Store::new(engine, state);
    store.limiter(|state| state);
    store.epoch_deadline_trap();
    store.set_epoch_deadline(ticks(limits.deadline));
    let running = filter.clock.run();
    let instantiated = filter.pre.instantiate(&mut store);
    drop(running);
    let instance = match instantiated {
        Ok(instance) => instance,
        // A trap is the start function's; anything else is the module's.
        Err(e) if e.downcast_ref::<wasmtime::Trap>().is_some() => {
            return Err(CallError::from_wasm(e, store.data(), limits.deadline));
        }
        Err(e) => return Err(CallError::Abi(format!("cannot instantiate: {e}"))),
    };
    let mut exports = Exports::bind(&mut store, &instance)?;
    exports.negotiate(&mut store, limits.deadline)?;
    if !exports.init(&mut store, filter.config.as_bytes(), limits.deadline)? {
        return Err(CallError::Abi(
            "refused its config (see its log line above)".into(),
        ));
    }
    Ok((store, exports))
}

fn compile(
    engine: &Engine,
    clock: &Arc<EpochClock>,
    linker: &Linker<HostState>,
    spec: &FilterSpec,
    limits: &FilterLimits,
    name: Arc<str>,
    stats: Arc<FilterStats>,
) -> Result<CompiledFilter, LoadError> {
    let fail = |reason: String| LoadError {
        path: spec.path.clone(),
        reason,
    };
    let (module, origin) = module::load(engine, &spec.path).map_err(fail)?;
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| fail(format!("imports something other than matrixinfer.log: {e}")))?;
    let mut filter = CompiledFilter {
        name,
        config: spec.config.clone(),
        pre,
        selectors: Vec::new(),
        health: Health::default(),
        stats,
        clock: clock.clone(),
    };
    // A probe instance: the version, the config and the selectors are
    // checked once here, so that a broken filter stops the start.
    tracing::info!(filter = %filter.name, code = origin.as_str(), "filter code loaded; initializing it");
    let (mut store, exports) =
        instantiate(engine, &filter, limits).map_err(|e| fail(e.to_string()))?;
    let selectors = exports
        .selectors(&mut store, limits.deadline)
        .map_err(|e| fail(format!("mi_selectors: {e}")))?;
    filter.selectors = selectors.lines().filter_map(Selector::parse).collect();
    if filter.selectors.is_empty() {
        return Err(fail("selects no families".into()));
    }
    tracing::info!(
        filter = %filter.name,
        code = origin.as_str(),
        selectors = %selectors.lines().collect::<Vec<_>>().join(","),
        "filter loaded"
    );
    Ok(filter)
}

fn name_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

impl MetricsSection for FilterHost {
    fn render(&self, out: &mut Vec<u8>) {
        if self.is_empty() {
            return;
        }
        let set = self.current();
        let filters = &set.filters;
        let name = "matrixinfer_runtime_filter_runs_total";
        expo::header(out, name, "counter", "WASM filter calls.");
        for f in filters {
            expo::sample(
                out,
                name,
                &[("filter", &f.name)],
                f.stats.runs.load(Relaxed),
            );
        }
        let name = "matrixinfer_runtime_filter_errors_total";
        expo::header(
            out,
            name,
            "counter",
            "WASM filter calls that failed, by reason; --filter-on-error says what the scrape served instead.",
        );
        for f in filters {
            for reason in Reason::ALL {
                expo::sample(
                    out,
                    name,
                    &[("filter", &f.name), ("reason", reason.as_str())],
                    f.stats.errors(reason),
                );
            }
        }
        let name = "matrixinfer_runtime_filter_enabled";
        expo::header(
            out,
            name,
            "gauge",
            "1 while a filter runs, 0 while switched off after consecutive failures.",
        );
        for f in filters {
            expo::sample(
                out,
                name,
                &[("filter", &f.name)],
                u64::from(f.health.is_on()),
            );
        }
        let name = "matrixinfer_runtime_filter_switched_off_total";
        expo::header(
            out,
            name,
            "counter",
            "Times a filter was switched off after consecutive failures.",
        );
        for f in filters {
            expo::sample(
                out,
                name,
                &[("filter", &f.name)],
                f.stats.switched_off.load(Relaxed),
            );
        }
        let name = "matrixinfer_runtime_filter_retry_seconds";
        expo::header(
            out,
            name,
            "gauge",
            "Seconds until a switched-off filter is tried again; 0 while it runs.",
        );
        for f in filters {
            expo::sample(
                out,
                name,
                &[("filter", &f.name)],
                f.health.seconds_to_retry(),
            );
        }
        let name = "matrixinfer_runtime_filter_reloads_total";
        expo::header(
            out,
            name,
            "counter",
            "Filter reloads (SIGHUP, POST /v1/filters/reload), by result.",
        );
        expo::sample(
            out,
            name,
            &[("result", "ok")],
            self.reloads_ok.load(Relaxed),
        );
        expo::sample(
            out,
            name,
            &[("result", "failed")],
            self.reloads_failed.load(Relaxed),
        );
        let name = "matrixinfer_runtime_filter_duration_seconds";
        expo::header(out, name, "histogram", "Time of one WASM filter call.");
        for f in filters {
            f.stats.duration.render(out, name, &[("filter", &f.name)]);
        }
    }
}
