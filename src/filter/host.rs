//! Compiling filters once at start, and what every worker shares about
//! them: the engine, each module's pre-linked instance, its selectors, its
//! switch, its counters.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use wasmtime::{Config, Engine, InstancePre, Linker, Module, Store};

use super::abi::{self, ABI_VERSION, Exports, HostState};
use super::select::{FilterRouter, Selector};
use crate::prom::expo;
use crate::stats::MetricsSection;

/// How often the epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// A filter as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterSpec {
    /// The `.wasm` file.
    pub path: PathBuf,
    /// The config string handed to `mi_init`.
    pub config: String,
}

/// Limits every filter call and instance runs under.
#[derive(Clone, Copy, Debug)]
pub struct FilterLimits {
    /// Per call.
    pub deadline: Duration,
    /// Per instance.
    pub memory: usize,
    /// Per call's output.
    pub max_output: usize,
    /// Consecutive failures before a filter is switched off.
    pub max_failures: u32,
}

impl Default for FilterLimits {
    fn default() -> Self {
        FilterLimits {
            deadline: Duration::from_millis(50),
            memory: 64 * 1024 * 1024,
            max_output: 32 * 1024 * 1024,
            max_failures: 5,
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

/// Reasons a filter call fails, as metric labels.
pub const ERROR_REASONS: [&str; 7] = [
    "trap",
    "deadline",
    "memory",
    "output_too_large",
    "abi",
    "invalid_output",
    "foreign_family",
];
const DURATION_BUCKETS: [f64; 10] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

/// Counters of one filter.
#[derive(Debug, Default)]
pub struct FilterStats {
    runs: AtomicU64,
    errors: [AtomicU64; ERROR_REASONS.len()],
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    nanos: AtomicU64,
}

impl FilterStats {
    /// Records a call.
    pub fn run(&self, took: Duration) {
        self.runs.fetch_add(1, Relaxed);
        let seconds = took.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.nanos.fetch_add(took.as_nanos() as u64, Relaxed);
    }

    /// Records a failure.
    pub fn error(&self, reason: &str) {
        if let Some(i) = ERROR_REASONS.iter().position(|r| *r == reason) {
            self.errors[i].fetch_add(1, Relaxed);
        }
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
    /// Switched off after too many consecutive failures.
    pub disabled: Arc<AtomicBool>,
    /// Consecutive failures, across workers.
    pub failures: AtomicU32,
    /// Its counters.
    pub stats: FilterStats,
}

impl std::fmt::Debug for CompiledFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledFilter")
            .field("name", &self.name)
            .field("selectors", &self.selectors)
            .finish()
    }
}

/// The filters of the process.
#[derive(Debug)]
pub struct FilterHost {
    /// The engine every instance runs in.
    pub engine: Engine,
    /// The filters, in order.
    pub filters: Vec<Arc<CompiledFilter>>,
    /// The limits.
    pub limits: FilterLimits,
}

impl FilterHost {
    /// Compiles every filter, checks its ABI version and config, reads its
    /// selectors, and starts the epoch clock that enforces deadlines.
    pub fn load(specs: &[FilterSpec], limits: FilterLimits) -> Result<FilterHost, LoadError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).map_err(|e| LoadError {
            path: PathBuf::new(),
            reason: e.to_string(),
        })?;
        let mut linker = Linker::new(&engine);
        abi::link(&mut linker).map_err(|e| LoadError {
            path: PathBuf::new(),
            reason: e.to_string(),
        })?;
        let mut filters = Vec::new();
        for spec in specs {
            filters.push(Arc::new(compile(&engine, &linker, spec, &limits)?));
        }
        if !filters.is_empty() {
            release_compiler_memory();
            let ticker = engine.clone();
            std::thread::Builder::new()
                .name("filter-epoch".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(EPOCH_TICK);
                        ticker.increment_epoch();
                    }
                })
                .map_err(|e| LoadError {
                    path: PathBuf::new(),
                    reason: format!("cannot start the epoch clock: {e}"),
                })?;
        }
        Ok(FilterHost {
            engine,
            filters,
            limits,
        })
    }

    /// Routes families to the filters that select them.
    pub fn router(&self) -> Arc<FilterRouter> {
        Arc::new(FilterRouter {
            selectors: self.filters.iter().map(|f| f.selectors.clone()).collect(),
            disabled: self.filters.iter().map(|f| f.disabled.clone()).collect(),
        })
    }
}

/// A store and instance of `filter`, initialized with its config.
pub fn instantiate(
    engine: &Engine,
    filter: &CompiledFilter,
    limits: &FilterLimits,
) -> Result<(Store<HostState>, Exports), abi::CallError> {
    let mut store = Store::new(engine, HostState::new(filter.name.clone(), limits.memory));
    store.limiter(|state| state);
    store.epoch_deadline_trap();
    store.set_epoch_deadline(ticks(limits.deadline * 4));
    let instance = filter
        .pre
        .instantiate(&mut store)
        .map_err(|e| abi::CallError::Abi(format!("cannot instantiate: {e}")))?;
    let exports = Exports::bind(&mut store, &instance)?;
    let version = exports.version(&mut store, limits.deadline)?;
    if version != ABI_VERSION {
        return Err(abi::CallError::Abi(format!(
            "built for filter ABI version {version}; this runtime speaks version {ABI_VERSION}"
        )));
    }
    if !exports.init(&mut store, filter.config.as_bytes(), limits.deadline)? {
        return Err(abi::CallError::Abi(
            "refused its config (see its log line above)".into(),
        ));
    }
    Ok((store, exports))
}

/// Hands the compiler's freed heap back to the system. Cranelift
/// allocates megabytes on its worker threads, and glibc keeps what each
/// thread's arena freed: without this, idle RSS carries it for good.
#[allow(unsafe_code, reason = "one FFI call into the C allocator")]
fn release_compiler_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Epoch ticks for a duration (at least one).
pub fn ticks(duration: Duration) -> u64 {
    (duration.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64
}

fn compile(
    engine: &Engine,
    linker: &Linker<HostState>,
    spec: &FilterSpec,
    limits: &FilterLimits,
) -> Result<CompiledFilter, LoadError> {
    let fail = |reason: String| LoadError {
        path: spec.path.clone(),
        reason,
    };
    let module =
        Module::from_file(engine, &spec.path).map_err(|e| fail(format!("cannot compile: {e}")))?;
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| fail(format!("imports something other than matrixinfer.log: {e}")))?;
    let mut filter = CompiledFilter {
        name: name_of(&spec.path).into(),
        config: spec.config.clone(),
        pre,
        selectors: Vec::new(),
        disabled: Arc::new(AtomicBool::new(false)),
        failures: AtomicU32::new(0),
        stats: FilterStats::default(),
    };
    // A probe instance: the version, the config and the selectors are
    // checked once here, so that a broken filter stops the start.
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
        if self.filters.is_empty() {
            return;
        }
        let name = "matrixinfer_runtime_filter_runs_total";
        expo::header(out, name, "counter", "WASM filter calls.");
        for f in &self.filters {
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
            "WASM filter calls that failed, by reason; the scrape then served the families unfiltered.",
        );
        for f in &self.filters {
            for (i, reason) in ERROR_REASONS.iter().enumerate() {
                expo::sample(
                    out,
                    name,
                    &[("filter", &f.name), ("reason", reason)],
                    f.stats.errors[i].load(Relaxed),
                );
            }
        }
        let name = "matrixinfer_runtime_filter_enabled";
        expo::header(
            out,
            name,
            "gauge",
            "1 while a filter runs, 0 once switched off after consecutive failures.",
        );
        for f in &self.filters {
            expo::sample(
                out,
                name,
                &[("filter", &f.name)],
                u64::from(!f.disabled.load(Relaxed)),
            );
        }
        let name = "matrixinfer_runtime_filter_duration_seconds";
        expo::header(out, name, "histogram", "Time of one WASM filter call.");
        for f in &self.filters {
            let counts: Vec<u64> = f.stats.buckets.iter().map(|b| b.load(Relaxed)).collect();
            let seconds = f.stats.nanos.load(Relaxed) as f64 / 1e9;
            expo::histogram(
                out,
                name,
                &[("filter", &f.name)],
                &DURATION_BUCKETS,
                &counts,
                seconds,
            );
        }
    }
}
