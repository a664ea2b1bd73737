//! Realistic engine `/metrics` payloads, synthesized from the engines' metric inventories.
//!
//! The simulated engines serve what this module renders: the Prometheus classic text format
//! (0.0.4) exactly as Python's `prometheus_client` writes it, for five engine flavors. Families,
//! types, HELP texts, label names and histogram buckets come from the inventories in
//! `inventory/` (AST-extracted from the engine wheels and embedded at compile time); label values
//! and sample values are simulated, deterministically for a given seed.
//!
//! # Fidelity to `prometheus_client`
//! - Every sample line lists its labels sorted by name: `generate_latest` formats
//!   `sorted(sample.labels.items())`, in single-process and multiprocess mode alike, so a
//!   histogram's `le` sits between the other labels (`{engine="0",le="0.1",model_name="m"}`).
//! - Values, bucket bounds included, go through a port of `floatToGoString`: Python `repr`, then
//!   a Go-style exponent for positive values with more than six integer digits, including the
//!   library's `e+010` quirk for ten or more digits (`6.2093029376e+010`).
//! - HELP escapes `\` and newline only; label values also escape `"`.
//! - Counters are typed `# TYPE x_total counter`, whether the engine's defined name carries
//!   `_total` or not.
//! - Single-process mode: prometheus_client's default collectors (`python_gc_*`, `python_info`,
//!   `process_*`) lead the payload, and every counter, histogram and summary family is followed
//!   by its `<base>_created` gauge family. Histograms list, per label set, the buckets, `_count`
//!   and `_sum`.
//! - Multiprocess mode (`MultiProcessCollector`): no `_created`, no default collectors, families
//!   grouped by the kind of mmap file they are read from (counters, gauges, histograms,
//!   summaries), and a histogram family lists all its `_sum` lines first, then each label set's
//!   buckets followed by its `_count` (the merge order of prometheus_client up to 0.23). Gauges
//!   keep a `pid` label only when their `multiprocess_mode` is `all`; the engines use
//!   `mostrecent`/`livemostrecent`/`sum` for theirs, so only a few API-server gauges carry one.
//!
//! # Scaling
//! A payload is sized by the number of label sets, the way real deployments grow:
//! - vLLM V1 flavors: data-parallel engines (`engine="0"`, `"1"`, ...).
//! - SGLang 0.5: DP-attention ranks; one rank has no `dp_rank` label, several ranks carry
//!   `dp_rank` = `tp_rank` = `moe_ep_rank` = the rank index.
//! - vLLM V0 and SGLang 0.4 only have a `model_name` label, so they grow by served-model aliases
//!   (`<model>`, `<model>-alias-1`, ...), as when a model is registered under several names.
//!
//! Families behind optional features (KV connectors, HiCache, encoders, ...) are included in
//! priority order as the byte budget allows, as in engines with those features enabled; the
//! families the sidecar standardizes are always present.
//!
//! # Hostile-but-valid details
//! Every flavor carries an `engine_sim_edge_cases` gauge family (a simulator fixture, not an
//! engine metric) whose HELP holds `:`, `"` and `\`, with a label value holding `"`, `\` and a
//! newline, an empty label value and a `NaN` sample. vLLM flavors also name a LoRA adapter with
//! those characters in `vllm:lora_requests_info` (adapter names are user supplied) next to empty
//! adapter lists; SGLang flavors add a served-model alias with them to the request counters.

mod buckets;
mod built;
mod extra;
mod inventory;
mod labels;
mod model;
mod rng;
mod template;
#[cfg(test)]
mod tests;
mod text;

// The parts were one file and still share one namespace: each marks what
// the others use `pub(super)`, and takes them back with `use super::*`.
use buckets::*;
use built::*;
use extra::*;
use inventory::*;
use labels::*;
use model::*;
use rng::*;
use template::*;
use text::*;

/// vLLM 0.33.0 (current V1 engine) metric inventory.
const VLLM_033_INVENTORY: &str = include_str!("inventory/vllm-0.33.0-metrics.tsv");
/// vLLM 0.10.2 inventory: V1 rows (`vllm/v1/...`) and legacy V0 rows (`vllm/engine/metrics.py`).
const VLLM_0102_INVENTORY: &str = include_str!("inventory/vllm-0.10.2-metrics.tsv");
/// SGLang 0.5.23 metric inventory.
const SGLANG_0523_INVENTORY: &str = include_str!("inventory/sglang-0.5.23-metrics.tsv");

/// Largest target honored; bigger requests are clamped (2 GiB of text is not a test payload).
const MAX_TARGET_BYTES: usize = 1 << 31;
/// Upper bound for the replica dimension (engines, ranks or aliases).
const MAX_REPLICAS: usize = 1024;
/// API server processes reporting `multiprocess_mode="all"` gauges in multiprocess mode.
const PID_COUNT: usize = 2;

/// Name of the simulator-only fixture family carrying the hostile details.
const FIXTURE_NAME: &str = "engine_sim_edge_cases";
/// HELP of the fixture family: a colon, double quotes and a backslash.
const FIXTURE_HELP: &str = "Simulator fixture, not an engine metric: label values exercise \
                            \"quotes\", back\\slashes, newlines and empty strings.";
/// A label value needing every escape: quote, backslash and newline.
const HOSTILE_TEXT: &str = "say \"hi\" from C:\\models\\llama\nsecond line";
/// A LoRA adapter name needing every escape.
const HOSTILE_ADAPTER: &str = "team \"beta\" lora\\v2\nrc1";
/// A served-model alias needing every escape (SGLang request counters).
const HOSTILE_ALIAS: &str = "acme/\"support-bot\" C:\\serving\\v2\nrc1";

/// The engine flavor (and release line) a payload imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// vLLM's legacy V0 engine: the `vllm/engine/metrics.py` rows of the vLLM 0.10.2 inventory.
    VllmV0,
    /// vLLM 0.10 V1 engine; emits both `vllm:time_per_output_token_seconds` and
    /// `vllm:inter_token_latency_seconds`.
    Vllm010,
    /// Current vLLM V1 engine (vLLM 0.33.0 inventory).
    VllmV1,
    /// SGLang 0.4.x: `model_name`-only labels and the core families of that release.
    Sglang04,
    /// Current SGLang (0.5.23 inventory).
    Sglang05,
}

impl Flavor {
    /// Every flavor, oldest vLLM first.
    pub const ALL: [Flavor; 5] = [
        Flavor::VllmV0,
        Flavor::Vllm010,
        Flavor::VllmV1,
        Flavor::Sglang04,
        Flavor::Sglang05,
    ];

    /// "vllm-v0", "vllm-0.10", "vllm-v1", "sglang-0.4", "sglang-0.5"
    pub fn name(self) -> &'static str {
        match self {
            Flavor::VllmV0 => "vllm-v0",
            Flavor::Vllm010 => "vllm-0.10",
            Flavor::VllmV1 => "vllm-v1",
            Flavor::Sglang04 => "sglang-0.4",
            Flavor::Sglang05 => "sglang-0.5",
        }
    }

    /// Parses a flavor name as returned by [`Flavor::name`], case-insensitively.
    pub fn parse(s: &str) -> Option<Flavor> {
        let s = s.trim();
        Flavor::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
    }

    /// Whether the flavor imitates SGLang (as opposed to vLLM).
    pub fn is_sglang(self) -> bool {
        matches!(self, Flavor::Sglang04 | Flavor::Sglang05)
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct PayloadSpec {
    /// Engine flavor to imitate.
    pub flavor: Flavor,
    /// Approximate size of one rendered payload; the generator scales the number of label sets
    /// (engines / dp ranks / models / label variants) to land within ±25% of it. Must work from
    /// 20_000 to 2_000_000.
    pub target_bytes: usize,
    /// prometheus_client multiprocess mode (`MultiProcessCollector`): no `_created` families and
    /// no default collectors; within each histogram family all `_sum` lines come first, then each
    /// label set's `_bucket` lines followed by its `_count`; gauges carry a `pid` label only when
    /// their `multiprocess_mode` is "all" (the engines use "mostrecent", "livemostrecent" or
    /// "sum", so only a few API-server gauges do). `false` renders the single-process registry.
    pub multiprocess: bool,
    /// Served model name (the `model_name` label).
    pub model: String,
    /// Seed of every simulated value; equal specs render equal payload sequences.
    pub seed: u64,
}

/// A simulated engine's metrics: static line prefixes built once, values advanced per render.
pub struct Payload {
    /// Families, their line prefixes and their state.
    built: Built,
    /// Drives the simulated activity between renders.
    rng: Rng,
    /// Size of the previous render, to reserve the output buffer up front.
    last_len: usize,
}

impl Payload {
    /// Builds a payload for `spec`, sized to land near `spec.target_bytes`.
    pub fn new(spec: PayloadSpec) -> Payload {
        let ctx = Ctx::new(&spec);
        let mp = spec.multiprocess;
        let templates = templates_for(&ctx, mp);
        let all = vec![true; templates.len()];
        // Measure what each family costs per label set, then plan and check the real size;
        // a few corrections absorb what the linear estimate misses (label widths grow with
        // the replica index, SGLang adds `dp_rank` beyond one rank).
        let probe = instantiate(&templates, &all, 2, &ctx, mp);
        let ests = estimate(&templates, &probe);
        drop(probe);
        let target = spec.target_bytes.clamp(1, MAX_TARGET_BYTES) as f64;
        let mut goal = target;
        let mut best: Option<(f64, usize, Built)> = None;
        for _ in 0..4 {
            let (n, include) = plan(&templates, &ests, goal, mp);
            let built = instantiate(&templates, &include, n, &ctx, mp);
            let size = built.rendered_len();
            let err = (size as f64 - target).abs() / target;
            let better = match &best {
                Some((best_err, ..)) => err < *best_err,
                None => true,
            };
            if better {
                best = Some((err, size, built));
            }
            if err <= 0.04 {
                break;
            }
            goal = (goal * target / size.max(1) as f64).max(1.0);
        }
        let (last_len, built) = match best {
            Some((_, size, built)) => (size, built),
            None => {
                let built = instantiate(&templates, &all, 1, &ctx, mp);
                (built.rendered_len(), built)
            }
        };
        Payload {
            built,
            rng: Rng::new(spec.seed ^ 0x5EED_CAFE_F00D_D00D),
            last_len,
        }
    }

    /// Advances simulated activity one step (counters only grow, histograms gain observations so
    /// bucket counts stay cumulative and monotone, _count == +Inf bucket, _sum consistent, gauges
    /// move) and renders the whole exposition into `out` (cleared first). Deterministic for a given
    /// seed and number of calls.
    pub fn render(&mut self, out: &mut Vec<u8>) {
        self.built.advance(&mut self.rng);
        out.clear();
        out.reserve(self.last_len + self.last_len / 16 + 1024);
        self.built.write(out);
        self.last_len = out.len();
    }
}
