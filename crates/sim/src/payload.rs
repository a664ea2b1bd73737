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

use std::io::Write as _;

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

// ---------------------------------------------------------------------------------------------
// Inventory
// ---------------------------------------------------------------------------------------------

/// One inventory row (one metric definition).
struct Row<'a> {
    /// Name as defined in the engine source.
    name: &'a str,
    /// `counter`, `gauge`, `histogram` or `summary`.
    kind: &'a str,
    /// Label names, with `[,optional]` groups and `<placeholders>`.
    labels: &'a str,
    /// Bucket expression (literal list or Python expression).
    buckets: &'a str,
    /// HELP text, verbatim.
    help: &'a str,
    /// Defining source file and line.
    file: &'a str,
}

/// Parses a tab-separated inventory, locating columns through its `# columns:` header.
fn parse_inventory(text: &str) -> Vec<Row<'_>> {
    // Column indices of name, type, labels, buckets, help, file (the documented layout).
    let mut cols = [0usize, 1, 3, 4, 5, 6];
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("# columns:") {
            for (i, col) in header.trim_start().split('\t').enumerate() {
                let slot = match col {
                    c if c.starts_with("defined_name") => 0,
                    c if c.starts_with("type") => 1,
                    c if c.starts_with("labels") => 2,
                    c if c.starts_with("buckets") => 3,
                    c if c.starts_with("help") => 4,
                    c if c.starts_with("file") => 5,
                    _ => continue,
                };
                cols[slot] = i;
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let get = |slot: usize| fields.get(cols[slot]).copied().unwrap_or("");
        let name = get(0).trim();
        if name.is_empty() {
            continue;
        }
        rows.push(Row {
            name,
            kind: get(1).trim(),
            labels: get(2).trim(),
            buckets: get(3).trim(),
            // HELP is kept verbatim, trailing spaces included.
            help: get(4).trim_end_matches(['\r', '\n']),
            file: get(5).trim(),
        });
    }
    rows
}

/// Turns the few f-string HELP texts of the inventory into the text the engine exposes.
fn resolve_help(raw: &str) -> String {
    let Some(inner) = raw.strip_prefix("f\"").and_then(|s| s.strip_suffix('"')) else {
        return raw.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut rest = inner;
    while let Some(open) = rest.find('{') {
        let Some(len) = rest[open..].find('}') else {
            break;
        };
        out.push_str(&rest[..open]);
        let expr = &rest[open + 1..open + len];
        if expr.contains("FORWARD_OVERLAP_CATEGORIES") {
            out.push_str("full, partial, none");
        }
        rest = &rest[open + len + 1..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// Family templates (independent of the replica count)
// ---------------------------------------------------------------------------------------------

/// Metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        match s {
            "counter" => Some(Kind::Counter),
            "gauge" => Some(Kind::Gauge),
            "histogram" => Some(Kind::Histogram),
            "summary" => Some(Kind::Summary),
            _ => None,
        }
    }

    fn type_name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }

    /// Multiprocess mode reads one mmap file kind after the other.
    fn mmap_file_rank(self) -> u8 {
        match self {
            Kind::Counter => 0,
            Kind::Gauge => 1,
            Kind::Histogram => 2,
            Kind::Summary => 3,
        }
    }
}

/// A label whose value follows the replica index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replica {
    /// vLLM V1 `engine`: the data-parallel engine index.
    Engine,
    /// `model_name` of flavors that scale by served-model aliases.
    ModelAlias,
    /// SGLang `tp_rank` / `moe_ep_rank`.
    Rank,
    /// SGLang `dp_rank`, always present.
    DpRank,
    /// SGLang's optional `dp_rank`: present only with more than one rank.
    DpRankOpt,
}

/// How a label gets its values.
#[derive(Clone, Debug)]
enum Dim {
    Replica(Replica),
    Const(String),
    Variants(Vec<String>),
}

/// A metric family before it is expanded to a replica count.
#[derive(Clone, Debug)]
struct Template {
    /// Name on the HELP/TYPE lines (counters end in `_total`).
    name: String,
    /// prometheus_client's metric name: without `_total` for counters (prefix of `_created`).
    base: String,
    kind: Kind,
    /// Unescaped HELP text.
    help: String,
    /// Label names in declared order.
    label_names: Vec<String>,
    /// Positions of replica-driven labels.
    replica: Vec<(usize, Replica)>,
    /// Values of the other labels, one row per label set of a replica.
    rows: Vec<Vec<String>>,
    /// Finite histogram bounds (`+Inf` is added when expanding).
    buckets: Vec<f64>,
    model: Model,
    /// Emits a `_created` family in single-process mode.
    created: bool,
    /// Gauge with `multiprocess_mode="all"`: one series per process, `pid` label.
    pid_all: bool,
    /// 0 = always present, 1 = core, 2 = optional feature.
    priority: u8,
    /// Adds label sets whose `model_name` is [`HOSTILE_ALIAS`].
    hostile_alias: bool,
}

/// One expanded label set.
struct SeriesLabels {
    /// Index into `Template::rows`.
    row: usize,
    pairs: Vec<(String, String)>,
}

impl Template {
    fn new(name: &str, kind: Kind, help: &str, dims: Vec<(String, Dim)>) -> Template {
        let base = match kind {
            Kind::Counter => name.strip_suffix("_total").unwrap_or(name).to_string(),
            _ => name.to_string(),
        };
        let full = match kind {
            Kind::Counter => format!("{base}_total"),
            _ => base.clone(),
        };
        let mut label_names = Vec::with_capacity(dims.len());
        let mut replica = Vec::new();
        let mut rows: Vec<Vec<String>> = vec![Vec::new()];
        for (i, (label, dim)) in dims.into_iter().enumerate() {
            label_names.push(label);
            match dim {
                Dim::Replica(r) => {
                    replica.push((i, r));
                    rows.iter_mut().for_each(|row| row.push(String::new()));
                }
                Dim::Const(v) => rows.iter_mut().for_each(|row| row.push(v.clone())),
                Dim::Variants(vs) => {
                    // Children are created label by label, the last one varying fastest.
                    rows = rows
                        .into_iter()
                        .flat_map(|row| {
                            vs.iter().map(move |v| {
                                let mut r = row.clone();
                                r.push(v.clone());
                                r
                            })
                        })
                        .collect();
                }
            }
        }
        Template {
            name: full,
            base,
            kind,
            help: help.to_string(),
            label_names,
            replica,
            rows,
            buckets: Vec::new(),
            model: Model::Fixed {
                lo: 0.0,
                hi: 0.0,
                integer: true,
            },
            created: kind != Kind::Gauge,
            pid_all: false,
            priority: 1,
            hostile_alias: false,
        }
    }

    /// Replaces the label sets by explicit ones, given as (label, value) pairs.
    fn set_rows(&mut self, rows: &[&[(&str, &str)]]) {
        self.rows = rows
            .iter()
            .map(|pairs| {
                self.label_names
                    .iter()
                    .map(|name| {
                        let found = pairs.iter().find(|(k, _)| k == name);
                        found.map(|(_, v)| v.to_string()).unwrap_or_default()
                    })
                    .collect()
            })
            .collect();
    }

    fn replicas(&self, n: usize) -> usize {
        if self.replica.is_empty() { 1 } else { n }
    }

    fn has_model_name(&self) -> bool {
        self.label_names.iter().any(|l| l == "model_name")
    }

    /// Number of series at `n` replicas (what [`Template::label_sets`] returns).
    fn series_count(&self, n: usize, mp: bool) -> usize {
        let mut count = self.replicas(n) * self.rows.len();
        if self.hostile_alias && self.has_model_name() {
            count += self.rows.len();
        }
        if mp && self.pid_all {
            count *= PID_COUNT;
        }
        count
    }

    /// Expands the label sets for `n` replicas: replica-major, the order in which engines
    /// create their labeled children.
    fn label_sets(&self, n: usize, ctx: &Ctx, mp: bool) -> Vec<SeriesLabels> {
        let mut sets = Vec::with_capacity(self.series_count(n, mp));
        for r in 0..self.replicas(n) {
            for (row, values) in self.rows.iter().enumerate() {
                sets.push(SeriesLabels {
                    row,
                    pairs: self.pairs(values, r, n, ctx, None),
                });
            }
        }
        if self.hostile_alias && self.has_model_name() {
            for (row, values) in self.rows.iter().enumerate() {
                let pairs = self.pairs(values, 0, n, ctx, Some(HOSTILE_ALIAS));
                sets.push(SeriesLabels { row, pairs });
            }
        }
        if mp && self.pid_all {
            sets = sets
                .into_iter()
                .flat_map(|set| {
                    ctx.pids.iter().map(move |pid| {
                        let mut pairs = set.pairs.clone();
                        pairs.push(("pid".to_string(), pid.clone()));
                        SeriesLabels {
                            row: set.row,
                            pairs,
                        }
                    })
                })
                .collect();
        }
        sets
    }

    fn pairs(
        &self,
        values: &[String],
        r: usize,
        n: usize,
        ctx: &Ctx,
        model_override: Option<&str>,
    ) -> Vec<(String, String)> {
        let mut pairs = Vec::with_capacity(self.label_names.len());
        for (i, label) in self.label_names.iter().enumerate() {
            let value = match self.replica.iter().find(|(pos, _)| *pos == i) {
                Some(&(_, rep)) => match ctx.replica_value(rep, r, n) {
                    Some(v) => v,
                    None => continue,
                },
                None => values.get(i).cloned().unwrap_or_default(),
            };
            let value = match model_override {
                Some(alias) if label == "model_name" => alias.to_string(),
                _ => value,
            };
            pairs.push((label.clone(), value));
        }
        pairs
    }
}

/// Everything derived from the spec that label values and initial values depend on.
struct Ctx {
    flavor: Flavor,
    model: String,
    seed: u64,
    /// Unix time the simulated process started its metrics (base of `_created`).
    base_ts: f64,
    /// API server processes, for `multiprocess_mode="all"` gauges.
    pids: [String; PID_COUNT],
}

impl Ctx {
    fn new(spec: &PayloadSpec) -> Ctx {
        let fraction = (mix(spec.seed, 1, 2) % 1_000_000) as f64 / 1e6;
        let base_ts = 1_745_300_000.0 + (spec.seed % 86_400) as f64 + fraction;
        let pid = 3000 + spec.seed % 60_000;
        Ctx {
            flavor: spec.flavor,
            model: spec.model.clone(),
            seed: spec.seed,
            base_ts,
            pids: [pid.to_string(), (pid + 8).to_string()],
        }
    }

    /// Value of a replica-driven label; `None` leaves the label out.
    fn replica_value(&self, rep: Replica, r: usize, n: usize) -> Option<String> {
        match rep {
            Replica::Engine | Replica::Rank | Replica::DpRank => Some(r.to_string()),
            Replica::DpRankOpt => (n > 1).then(|| r.to_string()),
            Replica::ModelAlias if r == 0 => Some(self.model.clone()),
            Replica::ModelAlias => Some(format!("{}-alias-{r}", self.model)),
        }
    }
}

/// The families of a flavor, in exposition order.
fn templates_for(ctx: &Ctx, mp: bool) -> Vec<Template> {
    let mut out = Vec::new();
    if !mp {
        out.extend(default_collectors(ctx));
    }
    match ctx.flavor {
        Flavor::VllmV1 => {
            let v010 = parse_inventory(VLLM_0102_INVENTORY);
            for row in parse_inventory(VLLM_033_INVENTORY) {
                if row.name == "vllm:spec_decode_num_accepted_tokens_per_pos" {
                    // The inventory lists the three spec-decode counters built in a loop
                    // separately; their definitions are unchanged since vLLM 0.10.
                    let looped = v010
                        .iter()
                        .filter(|r| r.file.contains("spec_decode") && r.name != row.name);
                    out.extend(looped.filter_map(|r| from_row(r, ctx)));
                }
                out.extend(from_row(&row, ctx));
                if row.name == "vllm:lora_requests_info" {
                    // Registered by `log_metrics_info` under a computed name the AST
                    // extraction cannot see.
                    out.push(cache_config_info(ctx));
                }
            }
        }
        Flavor::Vllm010 => {
            for row in parse_inventory(VLLM_0102_INVENTORY) {
                if !row.file.starts_with("vllm/v1/") {
                    continue;
                }
                out.extend(from_row(&row, ctx));
                if row.name == "vllm:lora_requests_info" {
                    out.push(cache_config_info(ctx));
                }
            }
        }
        Flavor::VllmV0 => {
            let rows = parse_inventory(VLLM_0102_INVENTORY);
            let v0 = rows
                .iter()
                .filter(|r| r.file.starts_with("vllm/engine/metrics.py"));
            out.extend(v0.filter_map(|r| from_row(r, ctx)));
        }
        Flavor::Sglang05 => {
            let rows = parse_inventory(SGLANG_0523_INVENTORY);
            out.extend(rows.iter().filter_map(|r| from_row(r, ctx)));
        }
        Flavor::Sglang04 => out.extend(sglang04_templates(ctx)),
    }
    out.push(fixture(ctx));
    let mandatory = mandatory_families(ctx.flavor);
    for t in &mut out {
        if mandatory.contains(&t.name.as_str()) {
            t.priority = 0;
        }
    }
    out
}

/// Families present at every size: the five the sidecar standardizes per engine, plus the
/// carriers of the hostile details.
fn mandatory_families(flavor: Flavor) -> &'static [&'static str] {
    match flavor {
        Flavor::VllmV0 => &[
            "vllm:generation_tokens_total",
            "vllm:num_requests_waiting",
            "vllm:time_to_first_token_seconds",
            "vllm:e2e_request_latency_seconds",
            "vllm:time_per_output_token_seconds",
            "vllm:lora_requests_info",
            "vllm:cache_config_info",
            FIXTURE_NAME,
        ],
        Flavor::Vllm010 => &[
            "vllm:generation_tokens_total",
            "vllm:num_requests_waiting",
            "vllm:time_to_first_token_seconds",
            "vllm:e2e_request_latency_seconds",
            "vllm:time_per_output_token_seconds",
            "vllm:inter_token_latency_seconds",
            "vllm:lora_requests_info",
            "vllm:cache_config_info",
            FIXTURE_NAME,
        ],
        Flavor::VllmV1 => &[
            "vllm:generation_tokens_total",
            "vllm:num_requests_waiting",
            "vllm:time_to_first_token_seconds",
            "vllm:e2e_request_latency_seconds",
            "vllm:inter_token_latency_seconds",
            "vllm:lora_requests_info",
            "vllm:cache_config_info",
            FIXTURE_NAME,
        ],
        Flavor::Sglang04 => &[
            "sglang:generation_tokens_total",
            "sglang:num_queue_reqs",
            "sglang:time_to_first_token_seconds",
            "sglang:e2e_request_latency_seconds",
            "sglang:time_per_output_token_seconds",
            FIXTURE_NAME,
        ],
        Flavor::Sglang05 => &[
            "sglang:generation_tokens_total",
            "sglang:num_queue_reqs",
            "sglang:time_to_first_token_seconds",
            "sglang:e2e_request_latency_seconds",
            "sglang:inter_token_latency_seconds",
            FIXTURE_NAME,
        ],
    }
}

/// Builds a template from an inventory row; `None` for rows that cannot be rendered (unknown
/// type, unfillable label placeholder).
fn from_row(row: &Row<'_>, ctx: &Ctx) -> Option<Template> {
    let kind = Kind::parse(row.kind)?;
    let dims = label_dims(row.labels, row.name, ctx)?;
    let mut t = Template::new(row.name, kind, &resolve_help(row.help), dims);
    if kind == Kind::Histogram {
        t.buckets = resolve_buckets(row.buckets, row.name);
    }
    t.priority = if is_core(row, ctx.flavor) { 1 } else { 2 };
    if t.name == "vllm:lora_requests_info" {
        // prometheus_client keeps a child per label combination ever set: the idle state,
        // the current adapters, and an older state with a hostile adapter name waiting.
        t.set_rows(&[
            &[
                ("max_lora", "4"),
                ("waiting_lora_adapters", ""),
                ("running_lora_adapters", ""),
            ],
            &[
                ("max_lora", "4"),
                ("waiting_lora_adapters", ""),
                ("running_lora_adapters", "sql-lora,math-lora"),
            ],
            &[
                ("max_lora", "4"),
                ("waiting_lora_adapters", HOSTILE_ADAPTER),
                ("running_lora_adapters", "math-lora"),
            ],
        ]);
    }
    finish(&mut t, ctx);
    Some(t)
}

/// Sets the value model and the per-name flags of a template.
fn finish(t: &mut Template, ctx: &Ctx) {
    t.model = model_for(&t.name, t.kind, &t.buckets);
    t.pid_all = t.kind == Kind::Gauge
        && matches!(
            t.name.as_str(),
            "vllm:sleep_mode_operations_in_flight"
                | "vllm:rl_weight_update_operations_in_flight"
                | "vllm:websocket_connections_active"
                | "sglang:http_requests_active"
                | "sglang:routing_keys_active"
        );
    t.hostile_alias = ctx.flavor.is_sglang()
        && matches!(
            t.name.as_str(),
            "sglang:generation_tokens_total"
                | "sglang:prompt_tokens_total"
                | "sglang:num_requests_total"
        );
}

/// Core families are always-on engine metrics; the rest belong to optional features.
fn is_core(row: &Row<'_>, flavor: Flavor) -> bool {
    if !flavor.is_sglang() {
        return row.file.starts_with("vllm/v1/metrics/loggers.py")
            || row.file.starts_with("vllm/engine/metrics.py")
            || row.file.contains("spec_decode");
    }
    const OPTIONAL: [&str; 30] = [
        "hicache",
        "encoder",
        "storage",
        "prefetch",
        "backup",
        "load_back",
        "evict",
        "eplb",
        "dp_cooperation",
        "dp_attention",
        "kv_transfer",
        "prefill_delayer",
        "grammar",
        "lora_pool",
        "mamba",
        "swa",
        "routing",
        "streaming",
        "prealloc",
        "bootstrap",
        "decode_deferred",
        "decode_host",
        "decode_transfer",
        "prefill_inflight",
        "prefill_retries",
        "transfer_failed",
        "spec_cap",
        "spec_block",
        "paused",
        "retracted",
    ];
    row.file.contains("metrics_collector.py") && !OPTIONAL.iter().any(|k| row.name.contains(k))
}

/// Resolves an inventory label column to label dimensions; `None` if a placeholder cannot be
/// filled.
fn label_dims(spec: &str, family: &str, ctx: &Ctx) -> Option<Vec<(String, Dim)>> {
    let mut dims: Vec<(String, Dim)> = Vec::new();
    if spec.is_empty() || spec == "(none)" {
        return Some(dims);
    }
    // `a,b[,opt1][,opt2],c` -> tokens `a`, `b`, `[opt1]`, `[opt2]`, `c`.
    let normalized = spec.replace("[,", ",[");
    for token in normalized
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let optional = token.starts_with('[');
        let name = token.trim_start_matches('[').trim_end_matches(']').trim();
        if optional {
            // SGLang's optional labels: only `dp_rank` (when scaling by ranks) is rendered;
            // `priority`, `custom` and `extra` need server options the simulation leaves off.
            if name == "dp_rank" && ctx.flavor == Flavor::Sglang05 {
                push_dim(&mut dims, "dp_rank", Dim::Replica(Replica::DpRankOpt));
            }
            continue;
        }
        match name {
            "<collector labels>" => {
                for (label, dim) in sglang_collector_dims(ctx) {
                    push_dim(&mut dims, &label, dim);
                }
            }
            "<every CacheConfig field>" => {
                for (label, dim) in cache_config_dims(ctx.flavor) {
                    push_dim(&mut dims, &label, dim);
                }
            }
            "Metrics.labelname_finish_reason" => {
                let reasons = variant_values(family, "finished_reason");
                push_dim(&mut dims, "finished_reason", Dim::Variants(reasons));
            }
            n if n.starts_with('<')
                || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                return None;
            }
            n => push_dim(&mut dims, n, label_dim(n, family, ctx)),
        }
    }
    Some(dims)
}

/// Adds a label once; an explicit `dp_rank` replaces the optional one.
fn push_dim(dims: &mut Vec<(String, Dim)>, name: &str, dim: Dim) {
    match dims.iter_mut().find(|(n, _)| n == name) {
        Some(existing) => {
            if matches!(existing.1, Dim::Replica(Replica::DpRankOpt)) {
                existing.1 = dim;
            }
        }
        None => dims.push((name.to_string(), dim)),
    }
}

fn label_dim(name: &str, family: &str, ctx: &Ctx) -> Dim {
    match name {
        "model_name" if matches!(ctx.flavor, Flavor::VllmV0 | Flavor::Sglang04) => {
            Dim::Replica(Replica::ModelAlias)
        }
        "model_name" => Dim::Const(ctx.model.clone()),
        "engine" => Dim::Replica(Replica::Engine),
        "tp_rank" | "moe_ep_rank" => Dim::Replica(Replica::Rank),
        "dp_rank" => Dim::Replica(Replica::DpRank),
        "pp_rank" => Dim::Const("0".to_string()),
        "engine_type" => Dim::Const("unified".to_string()),
        _ => Dim::Variants(variant_values(family, name)),
    }
}

/// SGLang's standard scheduler label set (`<collector labels>`).
fn sglang_collector_dims(ctx: &Ctx) -> Vec<(String, Dim)> {
    let mut dims = vec![
        ("model_name".to_string(), label_dim("model_name", "", ctx)),
        ("engine_type".to_string(), Dim::Const("unified".to_string())),
        ("tp_rank".to_string(), Dim::Replica(Replica::Rank)),
        ("pp_rank".to_string(), Dim::Const("0".to_string())),
        ("moe_ep_rank".to_string(), Dim::Replica(Replica::Rank)),
    ];
    if ctx.flavor == Flavor::Sglang05 {
        dims.push(("dp_rank".to_string(), Dim::Replica(Replica::DpRankOpt)));
    }
    dims
}

/// `CacheConfig.metrics_info()`: every field as `str(value)`, in declaration order.
fn cache_config_dims(flavor: Flavor) -> Vec<(String, Dim)> {
    let current = flavor == Flavor::VllmV1;
    let mut fields: Vec<(&str, &str)> = vec![
        ("block_size", "16"),
        ("gpu_memory_utilization", "0.9"),
        ("swap_space", "4"),
        ("cache_dtype", "auto"),
        ("is_attention_free", "False"),
        ("num_gpu_blocks_override", "None"),
        ("sliding_window", "None"),
        ("enable_prefix_caching", "True"),
        (
            "prefix_caching_hash_algo",
            if current { "sha256" } else { "builtin" },
        ),
        ("cpu_offload_gb", "0"),
        ("calculate_kv_scales", "False"),
        ("kv_sharing_fast_prefill", "False"),
        ("mamba_cache_dtype", "auto"),
        ("mamba_ssm_cache_dtype", "auto"),
    ];
    if current {
        fields.extend([
            ("mamba_block_size", "None"),
            ("kv_cache_memory_bytes", "None"),
            ("kv_offloading_size", "None"),
            ("kv_offloading_backend", "None"),
        ]);
    } else {
        fields.push(("mamba_page_size_padded", "None"));
    }
    fields.extend([
        ("num_gpu_blocks", "27306"),
        ("num_cpu_blocks", "None"),
        ("swap_space_bytes", "4294967296"),
    ]);
    fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), Dim::Const(v.to_string())))
        .collect()
}

/// The V1 `vllm:cache_config_info` gauge: CacheConfig fields plus the engine index.
fn cache_config_info(ctx: &Ctx) -> Template {
    let mut dims = cache_config_dims(ctx.flavor);
    dims.push(("engine".to_string(), Dim::Replica(Replica::Engine)));
    let help = "Information of the LLMEngine CacheConfig";
    let mut t = Template::new("vllm:cache_config_info", Kind::Gauge, help, dims);
    finish(&mut t, ctx);
    t
}

/// SGLang 0.4: the core families of that release, labeled by `model_name` only, with
/// `time_per_output_token` where 0.5 has `inter_token_latency`.
fn sglang04_templates(ctx: &Ctx) -> Vec<Template> {
    const FAMILIES: [&str; 14] = [
        "sglang:num_running_reqs",
        "sglang:num_used_tokens",
        "sglang:token_usage",
        "sglang:gen_throughput",
        "sglang:num_queue_reqs",
        "sglang:cache_hit_rate",
        "sglang:spec_accept_length",
        "sglang:prompt_tokens_total",
        "sglang:generation_tokens_total",
        "sglang:cached_tokens_total",
        "sglang:num_requests_total",
        "sglang:time_to_first_token_seconds",
        "sglang:time_per_output_token_seconds",
        "sglang:e2e_request_latency_seconds",
    ];
    /// SGLang 0.4's `bucket_time_per_output_token`.
    const TPOT_BUCKETS: [f64; 20] = [
        0.002, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.15, 0.2, 0.3,
        0.4, 0.6, 0.8, 1.0, 2.0,
    ];
    let rows = parse_inventory(SGLANG_0523_INVENTORY);
    let model_dim = || vec![("model_name".to_string(), Dim::Replica(Replica::ModelAlias))];
    let mut out = Vec::new();
    for name in FAMILIES {
        let mut t = if name == "sglang:time_per_output_token_seconds" {
            let help = "Histogram of time per output token in seconds.";
            let mut t = Template::new(name, Kind::Histogram, help, model_dim());
            t.buckets = TPOT_BUCKETS.to_vec();
            t
        } else {
            let Some(row) = rows.iter().find(|r| r.name == name) else {
                continue;
            };
            let Some(kind) = Kind::parse(row.kind) else {
                continue;
            };
            let mut t = Template::new(name, kind, &resolve_help(row.help), model_dim());
            if kind == Kind::Histogram {
                t.buckets = resolve_buckets(row.buckets, name);
            }
            t
        };
        finish(&mut t, ctx);
        out.push(t);
    }
    out
}

/// prometheus_client's default registry collectors (single-process mode only: multiprocess
/// registries hold nothing but the `MultiProcessCollector`). Their counters have no `_created`.
fn default_collectors(ctx: &Ctx) -> Vec<Template> {
    let generation = || {
        let values = ["0", "1", "2"].iter().map(|s| s.to_string()).collect();
        vec![("generation".to_string(), Dim::Variants(values))]
    };
    let konst = |v: &str| Dim::Const(v.to_string());
    let mut out = vec![
        Template::new(
            "python_gc_objects_collected_total",
            Kind::Counter,
            "Objects collected during gc",
            generation(),
        ),
        Template::new(
            "python_gc_objects_uncollectable_total",
            Kind::Counter,
            "Uncollectable objects found during GC",
            generation(),
        ),
        Template::new(
            "python_gc_collections_total",
            Kind::Counter,
            "Number of times this generation was collected",
            generation(),
        ),
        Template::new(
            "python_info",
            Kind::Gauge,
            "Python platform information",
            vec![
                ("implementation".to_string(), konst("CPython")),
                ("major".to_string(), konst("3")),
                ("minor".to_string(), konst("12")),
                ("patchlevel".to_string(), konst("11")),
                ("version".to_string(), konst("3.12.11")),
            ],
        ),
        Template::new(
            "process_virtual_memory_bytes",
            Kind::Gauge,
            "Virtual memory size in bytes.",
            vec![],
        ),
        Template::new(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
            vec![],
        ),
        Template::new(
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since unix epoch in seconds.",
            vec![],
        ),
        Template::new(
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
            vec![],
        ),
        Template::new(
            "process_open_fds",
            Kind::Gauge,
            "Number of open file descriptors.",
            vec![],
        ),
        Template::new(
            "process_max_fds",
            Kind::Gauge,
            "Maximum number of open file descriptors.",
            vec![],
        ),
    ];
    let start = (ctx.base_ts * 100.0).round() / 100.0 - 900.0;
    for t in &mut out {
        t.created = false;
        t.priority = 0;
        t.model = match t.name.as_str() {
            "python_gc_objects_collected_total" => Model::Counter {
                init: (1e4, 1e6),
                inc: (0.0, 300.0),
                p: 1.0,
                integer: true,
            },
            "python_gc_objects_uncollectable_total" => Model::Fixed {
                lo: 0.0,
                hi: 0.0,
                integer: true,
            },
            "python_gc_collections_total" => Model::Counter {
                init: (100.0, 5000.0),
                inc: (0.0, 3.0),
                p: 1.0,
                integer: true,
            },
            "process_virtual_memory_bytes" => Model::Jitter {
                base: 62_093_029_376.0,
                quantum: 4096.0,
                amp: 512,
            },
            "process_resident_memory_bytes" => Model::Jitter {
                base: 1_678_237_696.0,
                quantum: 4096.0,
                amp: 2048,
            },
            "process_start_time_seconds" => Model::Fixed {
                lo: start,
                hi: start,
                integer: false,
            },
            "process_cpu_seconds_total" => Model::Counter {
                init: (300.0, 3000.0),
                inc: (0.0, 1.5),
                p: 1.0,
                integer: false,
            },
            "process_open_fds" => Model::Jitter {
                base: 74.0,
                quantum: 1.0,
                amp: 3,
            },
            "process_max_fds" => Model::Fixed {
                lo: 1_048_576.0,
                hi: 1_048_576.0,
                integer: true,
            },
            _ => Model::Fixed {
                lo: 1.0,
                hi: 1.0,
                integer: true,
            },
        };
    }
    out
}

/// The simulator-only family carrying the hostile label values and a `NaN` sample.
fn fixture(ctx: &Ctx) -> Template {
    let dims = vec![
        (
            "case".to_string(),
            Dim::Variants(vec!["escapes".to_string(), "empty".to_string()]),
        ),
        ("model_name".to_string(), Dim::Const(ctx.model.clone())),
        ("text".to_string(), Dim::Const(String::new())),
    ];
    let mut t = Template::new(FIXTURE_NAME, Kind::Gauge, FIXTURE_HELP, dims);
    t.set_rows(&[
        &[
            ("case", "escapes"),
            ("model_name", &ctx.model),
            ("text", HOSTILE_TEXT),
        ],
        &[("case", "empty"), ("model_name", &ctx.model), ("text", "")],
    ]);
    t.model = Model::Fixture;
    t
}

/// Plausible values of an enumerated label.
fn variant_values(family: &str, label: &str) -> Vec<String> {
    let f = family;
    let values: &[&str] = match label {
        "finished_reason" => &["stop", "length", "abort"],
        "reason" if f.contains("waiting_by_reason") => &["capacity", "deferred"],
        "reason" if f.contains("admission_rejections") => {
            &["max_waiting_requests", "max_waiting_tokens"]
        }
        "reason" if f.contains("unfulfilled") => &[
            "anchor_lost",
            "aux_window_trim",
            "device_overlap",
            "cache_admission_shortfall",
            "deadline",
        ],
        "reason" if f.contains("dropped") => &["host_pressure", "write_through_unbacked_eviction"],
        "reason" => &["host_pool_full", "pending_backup"],
        "sleep_state" => &["awake", "weights_offloaded", "discard_all"],
        "source" if f.contains("cached_by_source") => {
            &["device", "host", "disk", "p2p", "external_unspecified"]
        }
        "source" if f.contains("weight_load") => &["disk", "distributed", "tensor", "ipc"],
        "source" => &["local_compute", "local_cache_hit", "external_kv_transfer"],
        "stage" if f.contains("kv_fetch") => {
            &["waiting_to_start", "in_progress", "completed_waiting"]
        }
        "stage" => &[
            "tokenize",
            "prefill_waiting",
            "prefill_forward",
            "decode_forward",
        ],
        "status" if f.contains("watermark") => &["watermarked", "unwatermarked"],
        "status" => &["success", "error"],
        "position" => &["0", "1", "2"],
        "outcome" => &["released", "timeout"],
        "mode" if f.contains("cuda_graph") => &["cuda_graph", "eager"],
        "mode" if f.contains("prefill_effective") => {
            &["device_hit", "host_hit", "storage_hit", "input"]
        }
        "mode" => &["prefill_compute", "prefill_cache", "decode"],
        "category" if f.contains("scheduler_stage") => &["recv", "schedule", "forward", "output"],
        "category" => &["extend", "decode", "idle"],
        "forward_overlap" => &["full", "partial", "none"],
        "num_prefill_ranks" => &["0", "1"],
        "kind" => &["scheduled", "imbalance"],
        "rank_state" => &["busy", "idle"],
        "phase" if f.contains("graph_memory") => &["decode", "prefill"],
        "phase" if f.contains("cuda_graph") => &["capture", "warmup"],
        "phase" => &[
            "load_weights",
            "init_memory_pool",
            "capture_cuda_graph",
            "warmup",
        ],
        "is_streaming" => &["True", "False"],
        "cache_source" => &["device", "host", "storage"],
        "pool" if f.contains("dropped") => &["kv"],
        "pool" => &["kv", "swa"],
        "modality" => &["image", "video", "audio"],
        "backend" => &["zmq", "mooncake"],
        "forward_mode" => &["decode", "extend"],
        "endpoint" => &["/generate", "/v1/chat/completions", "/health"],
        "method" => &["POST", "GET"],
        "status_code" => &["200", "400"],
        "component" => &["tokenizer_manager", "scheduler", "detokenizer"],
        "name" => &["recv_requests", "run_batch", "process_batch_result"],
        "context" => &["load_model", "init_memory_pool", "capture_cuda_graph"],
        "layer" => &["0", "1", "2", "3"],
        "input_estimation" => &["fits"],
        "output_allow" => &["True", "False"],
        "output_reason" => &["budget", "max_delay"],
        "actual_execution" => &["prefill"],
        _ => &["default"],
    };
    values.iter().map(|v| v.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Buckets
// ---------------------------------------------------------------------------------------------

/// vLLM's `request_latency_buckets`.
const REQUEST_LATENCY: [f64; 21] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
/// vLLM's time-to-first-token buckets (literal in vLLM 0.10.2).
const VLLM_TTFT: [f64; 22] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's inter-token latency / TPOT buckets (literal in vLLM 0.10.2).
const VLLM_ITL: [f64; 19] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// vLLM's iteration token buckets (literal in vLLM 0.10.2).
const VLLM_ITERATION_TOKENS: [f64; 13] = [
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];
/// SGLang's default `bucket_time_to_first_token`.
const SGLANG_TTFT: [f64; 18] = [
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 200.0,
    400.0,
];
/// SGLang's default `bucket_inter_token_latency`.
const SGLANG_ITL: [f64; 23] = [
    0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.06, 0.08, 0.1, 0.2,
    0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0,
];
/// SGLang's default `bucket_e2e_request_latency`.
const SGLANG_E2E: [f64; 22] = [
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 200.0,
    400.0, 600.0, 1200.0, 1800.0, 2400.0,
];
/// SGLang's `default_bucket_prompt_tokens`.
const SGLANG_PROMPT_TOKENS: [f64; 30] = [
    100.0, 300.0, 500.0, 700.0, 1000.0, 1500.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0, 7000.0,
    8000.0, 9000.0, 10000.0, 12000.0, 15000.0, 20000.0, 22000.0, 25000.0, 30000.0, 35000.0,
    40000.0, 66000.0, 99000.0, 132000.0, 300000.0, 600000.0, 900000.0, 1100000.0,
];
/// KV block residency (lifetime, idle, reuse gap) in seconds.
const RESIDENCY: [f64; 15] = [
    0.001, 0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Short I/O operations in seconds.
const FAST_IO_SECONDS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 5.0,
];
/// Generic latencies in seconds.
const GENERIC_SECONDS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Transfer sizes in bytes.
const BYTE_SIZES: [f64; 11] = [
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
];
/// Generic counts.
const COUNTS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// Resolves an inventory bucket expression to finite, sorted bounds.
fn resolve_buckets(expr: &str, family: &str) -> Vec<f64> {
    let expr = expr.trim();
    let mut bounds = parse_literal_list(expr)
        .or_else(|| named_buckets(expr, family))
        .or_else(|| exponential_buckets(expr))
        .unwrap_or_else(|| fallback_buckets(family));
    bounds.retain(|b| b.is_finite());
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    if bounds.is_empty() {
        bounds = fallback_buckets(family);
    }
    bounds
}

/// `[1, 2.5]` or `(1, 2.5)`.
fn parse_literal_list(expr: &str) -> Option<Vec<f64>> {
    let inner = expr
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .or_else(|| expr.strip_prefix('(').and_then(|s| s.strip_suffix(')')))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect()
}

/// Bucket variables and builder calls of the engines, evaluated with default settings
/// (`max_model_len` 32768, prefill delayer `max_delay` 100).
fn named_buckets(expr: &str, family: &str) -> Option<Vec<f64>> {
    let list: Vec<f64> = match expr {
        "request_latency_buckets" => REQUEST_LATENCY.to_vec(),
        "request_tokens_buckets" | "build_1_2_5_buckets(max_model_len)" => build_1_2_5(32768.0),
        "iteration_tokens_buckets" => VLLM_ITERATION_TOKENS.to_vec(),
        "request_params_n_buckets" => vec![1.0, 2.0, 5.0, 10.0, 20.0],
        "time_to_first_token_buckets" => VLLM_TTFT.to_vec(),
        "inter_token_latency_buckets" => VLLM_ITL.to_vec(),
        "request_num_preemptions_buckets" => vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 50.0],
        "kv_cache_residency_buckets" | "residency_buckets" => RESIDENCY.to_vec(),
        "bucket_time_to_first_token" => SGLANG_TTFT.to_vec(),
        "bucket_inter_token_latency" => SGLANG_ITL.to_vec(),
        "bucket_e2e_request_latency" => SGLANG_E2E.to_vec(),
        "bucket_io" => vec![
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
        ],
        "bucket_bandwidth" => vec![0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0],
        "bucket_eviction_duration" | "bucket_load_back_duration" | "bucket_backup_duration" => {
            FAST_IO_SECONDS.to_vec()
        }
        "tree_traversal_time_buckets" => {
            vec![
                0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1,
            ]
        }
        "ep_size_buckets" => vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
        e if e.starts_with("generate_buckets(") => SGLANG_PROMPT_TOKENS.to_vec(),
        _ if family.ends_with("prefill_delayer_wait_forward_passes") => {
            vec![0.0, 5.0, 20.0, 50.0, 99.0]
        }
        _ if family.ends_with("prefill_delayer_wait_seconds") => {
            vec![0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]
        }
        _ => return None,
    };
    Some(list)
}

/// vLLM's `build_1_2_5_buckets(max_value)`: 1, 2, 5, 10, 20, 50, ... up to `max_value`.
fn build_1_2_5(max_value: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut scale = 1.0;
    loop {
        for m in [1.0, 2.0, 5.0] {
            let v = m * scale;
            if v > max_value {
                return out;
            }
            out.push(v);
        }
        scale *= 10.0;
    }
}

/// SGLang's `exponential_buckets(start=…, width=…, length=…)`: `start * width ** i`.
fn exponential_buckets(expr: &str) -> Option<Vec<f64>> {
    let args = expr
        .strip_prefix("exponential_buckets(")?
        .strip_suffix(')')?;
    let mut start = None;
    let mut width = None;
    let mut length = None;
    for arg in args.split(',') {
        let (key, value) = arg.split_once('=')?;
        let value: f64 = value.trim().parse().ok()?;
        match key.trim() {
            "start" => start = Some(value),
            "width" => width = Some(value),
            "length" => length = Some(value),
            _ => return None,
        }
    }
    let (start, width, length) = (start?, width?, length?);
    let length = length.clamp(1.0, 64.0) as i32;
    Some(
        (0..length)
            .map(|i| start * width.powf(f64::from(i)))
            .collect(),
    )
}

/// Buckets for expressions the inventory could not resolve, by what the family measures.
fn fallback_buckets(family: &str) -> Vec<f64> {
    if family.contains("bytes") {
        BYTE_SIZES.to_vec()
    } else if ["seconds", "time", "duration", "latency"]
        .iter()
        .any(|k| family.contains(k))
    {
        GENERIC_SECONDS.to_vec()
    } else {
        COUNTS.to_vec()
    }
}

// ---------------------------------------------------------------------------------------------
// Value models
// ---------------------------------------------------------------------------------------------

/// How a series' value starts and moves.
#[derive(Clone, Copy, Debug)]
enum Model {
    /// Counter starting in `init`, gaining an amount in `inc` with probability `p` per step.
    Counter {
        init: (f64, f64),
        inc: (f64, f64),
        p: f64,
        integer: bool,
    },
    /// Gauge random walk within `[lo, hi]`.
    Walk {
        lo: f64,
        hi: f64,
        step: f64,
        integer: bool,
    },
    /// Gauge drawn afresh each step.
    Uniform { lo: f64, hi: f64 },
    /// Drawn once in `[lo, hi]`, then constant (configuration, startup timings).
    Fixed { lo: f64, hi: f64, integer: bool },
    /// `base` plus a few `quantum`s of noise (memory sizes, descriptors).
    Jitter { base: f64, quantum: f64, amp: u32 },
    /// `vllm:lora_requests_info`: the unix time its label set was last set; only the current
    /// state (row 1) is refreshed.
    LoraTimestamp,
    /// 1 for the first label variant, 0 for the others (sleep state).
    Indicator,
    /// 0 or 1.
    Flag,
    /// Like `Uniform`, but `NaN` now and then (spec-decode acceptance with nothing drafted).
    MaybeNan { lo: f64, hi: f64 },
    /// Fixture family: 1 for the first label set, `NaN` for the second.
    Fixture,
    /// Histogram or summary observations: log-normal around `median`, up to `per_step` a step.
    Obs {
        median: f64,
        sigma: f64,
        integer: bool,
        per_step: u32,
    },
}

fn has_any(name: &str, keys: &[&str]) -> bool {
    keys.iter().any(|k| name.contains(k))
}

/// Picks a value model from what the family name says it measures.
fn model_for(name: &str, kind: Kind, buckets: &[f64]) -> Model {
    match kind {
        Kind::Counter => counter_model(name),
        Kind::Gauge => gauge_model(name),
        Kind::Histogram | Kind::Summary => observation_model(name, kind, buckets),
    }
}

fn counter_model(name: &str) -> Model {
    let counter = |init, inc, p, integer| Model::Counter {
        init,
        inc,
        p,
        integer,
    };
    if name.contains("flops") {
        // Large enough for Python's exponent notation (`1.2345678901234567e+17`).
        counter((1e16, 1e18), (1e13, 1e15), 1.0, false)
    } else if name.contains("bytes") {
        counter((1e9, 1e12), (1e6, 1e9), 1.0, true)
    } else if name.contains("seconds") {
        counter((100.0, 5e4), (0.01, 2.0), 1.0, false)
    } else if has_any(
        name,
        &[
            "fail",
            "error",
            "abort",
            "corrupt",
            "preempt",
            "expired",
            "retract",
            "timeout",
            "rejection",
            "dropped",
            "after_expiry",
        ],
    ) {
        counter((0.0, 30.0), (1.0, 2.0), 0.03, true)
    } else if has_any(
        name,
        &["token", "pairs", "queries", "hits", "misses", "keys"],
    ) {
        // Millions of tokens: `8.128902e+06` style values.
        counter((1e6, 5e7), (0.0, 4000.0), 1.0, true)
    } else {
        counter((1e3, 5e4), (0.0, 7.0), 1.0, true)
    }
}

fn gauge_model(name: &str) -> Model {
    if name == "vllm:lora_requests_info" {
        return Model::LoraTimestamp;
    }
    if name.ends_with("_info") {
        return Model::Fixed {
            lo: 1.0,
            hi: 1.0,
            integer: true,
        };
    }
    if name.contains("sleep_state") {
        return Model::Indicator;
    }
    if name.ends_with("spec_accept_rate") {
        return Model::MaybeNan { lo: 0.3, hi: 0.95 };
    }
    if name.ends_with("spec_accept_length") {
        return Model::MaybeNan { lo: 1.5, hi: 3.8 };
    }
    if let Some(model) = config_gauge(name) {
        return model;
    }
    if has_any(
        name,
        &["usage", "perc", "utilization", "ratio", "rate", "occupancy"],
    ) {
        Model::Walk {
            lo: 0.0,
            hi: 1.0,
            step: 0.05,
            integer: false,
        }
    } else if name.contains("throughput") {
        Model::Uniform {
            lo: 200.0,
            hi: 5000.0,
        }
    } else if name.contains("is_cuda_graph") {
        Model::Flag
    } else if has_any(name, &["token", "seq_lens", "states"]) {
        Model::Walk {
            lo: 0.0,
            hi: 500_000.0,
            step: 5000.0,
            integer: true,
        }
    } else if has_any(name, &["spec_cap_length", "block_accept_length", "size_mb"]) {
        Model::Walk {
            lo: 1.0,
            hi: 4.0,
            step: 0.2,
            integer: false,
        }
    } else {
        Model::Walk {
            lo: 0.0,
            hi: 64.0,
            step: 3.0,
            integer: true,
        }
    }
}

/// Gauges reporting configuration or startup facts: constant after start.
fn config_gauge(name: &str) -> Option<Model> {
    let exact = |v: f64| {
        Some(Model::Fixed {
            lo: v,
            hi: v,
            integer: v.fract() == 0.0,
        })
    };
    let drawn = |lo: f64, hi: f64| {
        Some(Model::Fixed {
            lo,
            hi,
            integer: false,
        })
    };
    if name.ends_with("context_len") {
        exact(32768.0)
    } else if name.ends_with("page_size") {
        exact(1.0)
    } else if name.ends_with("max_total_num_tokens_swa") {
        exact(295_856.0)
    } else if name.ends_with("max_total_num_tokens") || name.ends_with("num_pages") {
        exact(1_183_424.0)
    } else if name.ends_with("weight_memory_usage_gb") {
        exact(15.02)
    } else if name.ends_with("kv_cache_memory_usage_gb") {
        exact(54.17)
    } else if name.ends_with("graph_memory_usage_gb") {
        drawn(0.3, 1.5)
    } else if name.ends_with("startup_available_gpu_memory_gb") {
        exact(78.35)
    } else if name.contains("startup_") || name.ends_with("weight_load_duration_seconds") {
        drawn(0.5, 60.0)
    } else if name.ends_with("slots_total") {
        exact(8.0)
    } else if name.ends_with("host_total_tokens") {
        exact(4_733_696.0)
    } else if name.ends_with("total_states") {
        exact(512.0)
    } else if name.ends_with("spec_num_steps") {
        exact(3.0)
    } else if name.ends_with("spec_num_draft_tokens") {
        exact(4.0)
    } else if name.ends_with("under_SLO") {
        exact(48.0)
    } else {
        None
    }
}

fn observation_model(name: &str, kind: Kind, buckets: &[f64]) -> Model {
    let integer = !name.contains("seconds")
        && has_any(
            name,
            &[
                "tokens",
                "params_n",
                "num_preemptions",
                "count",
                "pgs",
                "items",
                "descriptors",
                "bytes_transferred",
                "schema",
                "ebnf_size",
                "forward_passes",
            ],
        );
    let special: &[(&str, f64, f64)] = &[
        ("time_to_first_token", 0.35, 1.0),
        ("inter_token_latency", 0.028, 0.6),
        ("time_per_output_token", 0.028, 0.6),
        ("e2e_request_latency", 9.0, 0.9),
        ("queue_time", 0.04, 1.2),
        ("inference_time", 8.5, 0.9),
        ("prefill_time", 0.3, 1.0),
        ("decode_time", 8.0, 0.9),
        ("prompt_tokens", 900.0, 1.0),
        ("generation_tokens", 300.0, 1.0),
        ("max_tokens", 1024.0, 0.7),
        ("iteration_tokens", 180.0, 1.2),
        ("params_n", 1.0, 0.3),
        ("num_preemptions", 0.3, 1.0),
        ("balancedness", 0.82, 0.08),
    ];
    let (median, sigma) = special
        .iter()
        .find(|(key, _, _)| name.contains(key))
        .map(|&(_, m, s)| (m, s))
        .unwrap_or_else(|| {
            // Aim at the lower middle of the bucket range.
            let positive: Vec<f64> = buckets.iter().copied().filter(|b| *b > 0.0).collect();
            (
                positive.get(positive.len() * 2 / 5).copied().unwrap_or(1.0),
                1.0,
            )
        });
    let per_step = if name.contains("iteration_tokens") {
        12
    } else if kind == Kind::Summary {
        6
    } else {
        3
    };
    Model::Obs {
        median,
        sigma,
        integer,
        per_step,
    }
}

impl Model {
    /// Initial state of a series.
    fn init(&self, s: &mut Series, bounds: &[f64], kind: Kind, rng: &mut Rng, base_ts: f64) {
        match *self {
            Model::Counter { init, integer, .. } => {
                let v = rng.range(init.0, init.1);
                s.value = if integer { v.floor() } else { v };
            }
            Model::Fixed { lo, hi, integer } => {
                let v = rng.range(lo, hi);
                s.value = if integer { v.round() } else { v };
            }
            Model::Walk {
                lo, hi, integer, ..
            } => {
                let v = rng.range(lo, hi);
                s.value = if integer { v.round() } else { v };
            }
            Model::Uniform { lo, hi } | Model::MaybeNan { lo, hi } => s.value = rng.range(lo, hi),
            Model::Jitter { base, .. } => s.value = base,
            Model::LoraTimestamp => {
                s.value = base_ts + 12.5 * s.row as f64 + rng.range(0.0, 1.0);
            }
            Model::Indicator => s.value = if s.row == 0 { 1.0 } else { 0.0 },
            Model::Flag => s.value = 1.0,
            Model::Fixture => s.value = if s.row == 0 { 1.0 } else { f64::NAN },
            Model::Obs { .. } => {
                // A short history, scaled up: large realistic counts without simulating
                // thousands of observations.
                for _ in 0..48 {
                    self.observe(s, bounds, kind, rng);
                }
                let scale = 5 + rng.below(300);
                s.buckets.iter_mut().for_each(|b| *b *= scale);
                s.count *= scale;
                s.value *= scale as f64;
            }
        }
    }

    /// One step of simulated activity.
    fn advance(&self, s: &mut Series, bounds: &[f64], kind: Kind, rng: &mut Rng) {
        match *self {
            Model::Counter {
                inc, p, integer, ..
            } => {
                if p >= 1.0 || rng.f64() < p {
                    let d = rng.range(inc.0, inc.1);
                    s.value += if integer { d.floor() } else { d };
                }
            }
            Model::Walk {
                lo,
                hi,
                step,
                integer,
            } => {
                let v = (s.value + rng.range(-step, step)).clamp(lo, hi);
                s.value = if integer { v.round() } else { v };
            }
            Model::Uniform { lo, hi } => s.value = rng.range(lo, hi),
            Model::MaybeNan { lo, hi } => {
                s.value = if rng.f64() < 0.25 {
                    f64::NAN
                } else {
                    rng.range(lo, hi)
                };
            }
            Model::Jitter { base, quantum, amp } => {
                let k = rng.below(2 * u64::from(amp) + 1) as f64 - f64::from(amp);
                s.value = base + quantum * k;
            }
            Model::LoraTimestamp => {
                if s.row == 1 {
                    s.value += 10.0 + rng.range(0.0, 0.01);
                }
            }
            Model::Flag => s.value = if rng.f64() < 0.8 { 1.0 } else { 0.0 },
            Model::Obs { per_step, .. } => {
                for _ in 0..rng.below(u64::from(per_step) + 1) {
                    self.observe(s, bounds, kind, rng);
                }
            }
            Model::Fixed { .. } | Model::Indicator | Model::Fixture => {}
        }
    }

    /// Records one observation in a histogram or summary series.
    fn observe(&self, s: &mut Series, bounds: &[f64], kind: Kind, rng: &mut Rng) {
        let Model::Obs {
            median,
            sigma,
            integer,
            ..
        } = *self
        else {
            return;
        };
        let mut v = median * (sigma * rng.normal()).exp();
        if integer {
            v = v.round().max(0.0);
        }
        if kind == Kind::Histogram && !s.buckets.is_empty() {
            let i = bounds.partition_point(|b| *b < v).min(s.buckets.len() - 1);
            s.buckets[i] += 1;
        }
        s.count += 1;
        s.value += v;
    }
}

// ---------------------------------------------------------------------------------------------
// Expanded families: static line prefixes and state
// ---------------------------------------------------------------------------------------------

/// Byte range in [`Built::text`].
type Span = (usize, usize);

/// One label set of a family.
struct Series {
    /// Index in [`Built::spans`] of the series' first line prefix.
    line: usize,
    /// Index of the label row in the template (models key on it).
    row: usize,
    /// Counter/gauge value, or the histogram/summary `_sum`.
    value: f64,
    /// `_created` timestamp.
    created: f64,
    /// Histogram/summary observation count.
    count: u64,
    /// Histogram per-bucket (non-cumulative) counts, `+Inf` last.
    buckets: Vec<u64>,
}

/// A family expanded for a replica count.
struct Family {
    /// Index of the template, for size estimates.
    template: usize,
    kind: Kind,
    model: Model,
    /// `# HELP` and `# TYPE` lines.
    header: Span,
    /// Header of the `_created` family (single-process counters, histograms, summaries).
    created_header: Option<Span>,
    /// Histogram bounds, `+Inf` last.
    bounds: Vec<f64>,
    series: Vec<Series>,
}

/// All families of a payload: every static byte prebuilt in one arena.
struct Built {
    multiprocess: bool,
    /// Headers and line prefixes (`name{labels} `).
    text: Vec<u8>,
    spans: Vec<Span>,
    families: Vec<Family>,
}

/// Expands the included templates for `n` replicas.
fn instantiate(templates: &[Template], include: &[bool], n: usize, ctx: &Ctx, mp: bool) -> Built {
    let mut b = Built {
        multiprocess: mp,
        text: Vec::new(),
        spans: Vec::new(),
        families: Vec::new(),
    };
    for (ti, t) in templates.iter().enumerate() {
        if !include.get(ti).copied().unwrap_or(false) {
            continue;
        }
        let header = b.push_header(&t.name, &t.help, t.kind.type_name());
        let with_created = t.created && !mp && t.kind != Kind::Gauge;
        let created_name = format!("{}_created", t.base);
        let created_header = with_created.then(|| b.push_header(&created_name, &t.help, "gauge"));
        let mut bounds = Vec::new();
        if t.kind == Kind::Histogram {
            bounds = t.buckets.clone();
            bounds.push(f64::INFINITY);
        }
        let le: Vec<String> = bounds.iter().map(|&v| go_float_string(v)).collect();
        let (bucket, count, sum) = (
            format!("{}_bucket", t.name),
            format!("{}_count", t.name),
            format!("{}_sum", t.name),
        );
        let mut series = Vec::new();
        for (si, set) in t.label_sets(n, ctx, mp).into_iter().enumerate() {
            let line = b.spans.len();
            let pairs = &set.pairs;
            match t.kind {
                Kind::Gauge => b.push_prefix(&t.name, pairs, None),
                Kind::Counter => b.push_prefix(&t.name, pairs, None),
                Kind::Histogram => {
                    for le in &le {
                        b.push_prefix(&bucket, pairs, Some(le));
                    }
                    b.push_prefix(&count, pairs, None);
                    b.push_prefix(&sum, pairs, None);
                }
                Kind::Summary => {
                    b.push_prefix(&count, pairs, None);
                    b.push_prefix(&sum, pairs, None);
                }
            }
            if with_created {
                b.push_prefix(&created_name, pairs, None);
            }
            // Children are created right after one another when the engine starts.
            let created = ctx.base_ts + ti as f64 * 0.000_731 + si as f64 * 0.000_013_7;
            let mut s = Series {
                line,
                row: set.row,
                value: 0.0,
                created,
                count: 0,
                buckets: vec![0; bounds.len()],
            };
            let mut rng = Rng::new(mix(ctx.seed, ti as u64, si as u64));
            t.model.init(&mut s, &bounds, t.kind, &mut rng, ctx.base_ts);
            series.push(s);
        }
        b.families.push(Family {
            template: ti,
            kind: t.kind,
            model: t.model,
            header,
            created_header,
            bounds,
            series,
        });
    }
    if mp {
        // MultiProcessCollector merges the mmap files one kind after the other.
        b.families.sort_by_key(|f| f.kind.mmap_file_rank());
    }
    b
}

impl Built {
    fn push_header(&mut self, name: &str, help: &str, type_name: &str) -> Span {
        let start = self.text.len();
        self.text.extend_from_slice(b"# HELP ");
        self.text.extend_from_slice(name.as_bytes());
        self.text.push(b' ');
        escape_help(&mut self.text, help);
        self.text.extend_from_slice(b"\n# TYPE ");
        self.text.extend_from_slice(name.as_bytes());
        self.text.push(b' ');
        self.text.extend_from_slice(type_name.as_bytes());
        self.text.push(b'\n');
        (start, self.text.len())
    }

    /// Stores `name{labels} ` with the labels sorted by name, as `generate_latest` writes them.
    fn push_prefix(&mut self, name: &str, pairs: &[(String, String)], le: Option<&str>) {
        let start = self.text.len();
        self.text.extend_from_slice(name.as_bytes());
        let mut labels: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Some(le) = le {
            labels.push(("le", le));
        }
        labels.sort_by(|a, b| a.0.cmp(b.0));
        if !labels.is_empty() {
            self.text.push(b'{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(b',');
                }
                self.text.extend_from_slice(k.as_bytes());
                self.text.extend_from_slice(b"=\"");
                escape_label_value(&mut self.text, v);
                self.text.push(b'"');
            }
            self.text.push(b'}');
        }
        self.text.push(b' ');
        self.spans.push((start, self.text.len()));
    }

    fn advance(&mut self, rng: &mut Rng) {
        for f in &mut self.families {
            for s in &mut f.series {
                f.model.advance(s, &f.bounds, f.kind, rng);
            }
        }
    }

    fn rendered_len(&self) -> usize {
        let mut out = Vec::new();
        self.write(&mut out);
        out.len()
    }

    fn write(&self, out: &mut Vec<u8>) {
        for f in &self.families {
            self.write_family(f, out);
        }
    }

    fn span(&self, (start, end): Span) -> &[u8] {
        &self.text[start..end]
    }

    fn line(&self, out: &mut Vec<u8>, index: usize, value: f64) {
        out.extend_from_slice(self.span(self.spans[index]));
        write_go_float(out, value);
        out.push(b'\n');
    }

    fn write_family(&self, f: &Family, out: &mut Vec<u8>) {
        out.extend_from_slice(self.span(f.header));
        let nb = f.bounds.len();
        // Index of the `_created` prefix within a series' lines.
        let created_at = match f.kind {
            Kind::Gauge | Kind::Counter => 1,
            Kind::Histogram => nb + 2,
            Kind::Summary => 2,
        };
        match f.kind {
            Kind::Gauge | Kind::Counter => {
                for s in &f.series {
                    self.line(out, s.line, s.value);
                }
            }
            Kind::Histogram if self.multiprocess => {
                // MultiProcessCollector: every `_sum` first (read from the mmap files), then
                // each label set's accumulated buckets and the `_count` derived from them.
                for s in &f.series {
                    self.line(out, s.line + nb + 1, s.value);
                }
                for s in &f.series {
                    self.write_buckets(out, s);
                }
            }
            Kind::Histogram => {
                for s in &f.series {
                    self.write_buckets(out, s);
                    self.line(out, s.line + nb + 1, s.value);
                }
            }
            Kind::Summary => {
                for s in &f.series {
                    self.line(out, s.line, s.count as f64);
                    self.line(out, s.line + 1, s.value);
                }
            }
        }
        if let Some(header) = f.created_header {
            out.extend_from_slice(self.span(header));
            for s in &f.series {
                self.line(out, s.line + created_at, s.created);
            }
        }
    }

    /// Cumulative `_bucket` lines, then `_count` (equal to the `+Inf` bucket).
    fn write_buckets(&self, out: &mut Vec<u8>, s: &Series) {
        let mut acc = 0u64;
        for (i, &c) in s.buckets.iter().enumerate() {
            acc += c;
            self.line(out, s.line + i, acc as f64);
        }
        self.line(out, s.line + s.buckets.len(), acc as f64);
    }
}

// ---------------------------------------------------------------------------------------------
// Sizing
// ---------------------------------------------------------------------------------------------

/// Measured cost of a template.
#[derive(Clone, Copy, Default)]
struct Est {
    /// HELP/TYPE bytes (with the `_created` header).
    header: f64,
    /// Average bytes per series (all its lines).
    per_series: f64,
}

/// Measures each template's header and per-series cost in a probe expansion.
fn estimate(templates: &[Template], probe: &Built) -> Vec<Est> {
    let mut ests = vec![Est::default(); templates.len()];
    let mut out = Vec::new();
    for f in &probe.families {
        out.clear();
        probe.write_family(f, &mut out);
        let header =
            (f.header.1 - f.header.0) + f.created_header.map_or(0, |(start, end)| end - start);
        let body = out.len().saturating_sub(header);
        ests[f.template] = Est {
            header: header as f64,
            per_series: body as f64 / f.series.len().max(1) as f64,
        };
    }
    ests
}

/// Picks the replica count and the families to include so the estimated size is closest to
/// `goal`: the smallest replica count whose full family set reaches the goal, trimmed of
/// optional families (by priority) to fit, or one replica fewer with everything.
fn plan(templates: &[Template], ests: &[Est], goal: f64, mp: bool) -> (usize, Vec<bool>) {
    let est = |i: usize, n: usize| {
        ests[i].header + ests[i].per_series * templates[i].series_count(n, mp) as f64
    };
    let total_all = |n: usize| (0..templates.len()).map(|i| est(i, n)).sum::<f64>();
    let mut n = 1;
    while n < MAX_REPLICAS && total_all(n) < goal {
        n += 1;
    }
    let mut order: Vec<usize> = (0..templates.len()).collect();
    order.sort_by_key(|&i| (templates[i].priority, i));
    let greedy = |n: usize| {
        let mut include = vec![false; templates.len()];
        let mut total = 0.0;
        for &i in &order {
            let cost = est(i, n);
            if templates[i].priority == 0 || total + cost <= goal {
                include[i] = true;
                total += cost;
            }
        }
        (include, total)
    };
    let (include, total) = greedy(n);
    if n > 1 {
        let (fewer, fewer_total) = greedy(n - 1);
        if (fewer_total - goal).abs() < (total - goal).abs() {
            return (n - 1, fewer);
        }
    }
    (n, include)
}

// ---------------------------------------------------------------------------------------------
// Text format helpers
// ---------------------------------------------------------------------------------------------

/// HELP escaping of `generate_latest`: backslash and newline only.
fn escape_help(out: &mut Vec<u8>, s: &str) {
    for &c in s.as_bytes() {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(c),
        }
    }
}

/// Label value escaping: backslash, newline and double quote.
fn escape_label_value(out: &mut Vec<u8>, s: &str) {
    for &c in s.as_bytes() {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' => out.extend_from_slice(b"\\\""),
            _ => out.push(c),
        }
    }
}

/// `floatToGoString` as a `String` (bucket bounds).
fn go_float_string(v: f64) -> String {
    let mut out = Vec::new();
    write_go_float(&mut out, v);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `v` as prometheus_client's `floatToGoString` renders it:
///
/// ```python
/// s = repr(d); dot = s.find('.')
/// if d > 0 and dot > 6:
///     mantissa = f'{s[0]}.{s[1:dot]}{s[dot + 1:]}'.rstrip('0.')
///     return f'{mantissa}e+0{dot - 1}'
/// return s
/// ```
fn write_go_float(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
        return;
    }
    let mut repr = SmallBuf::new();
    python_repr(v, &mut repr);
    let s = repr.as_bytes();
    if v > 0.0
        && let Some(dot) = s.iter().position(|&c| c == b'.').filter(|&dot| dot > 6)
    {
        let start = out.len();
        out.push(s[0]);
        out.push(b'.');
        out.extend_from_slice(&s[1..dot]);
        out.extend_from_slice(&s[dot + 1..]);
        while out.len() > start && matches!(out.last(), Some(b'0' | b'.')) {
            out.pop();
        }
        // Not a typo: the library pads with a literal "0", so ten digits give `e+010`.
        out.extend_from_slice(b"e+0");
        write_decimal(out, (dot - 1) as u64);
        return;
    }
    out.extend_from_slice(s);
}

/// A fixed-capacity byte buffer: float formatting without heap allocation.
struct SmallBuf {
    buf: [u8; 48],
    len: usize,
}

impl SmallBuf {
    fn new() -> SmallBuf {
        SmallBuf {
            buf: [0; 48],
            len: 0,
        }
    }

    fn push(&mut self, c: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = c;
            self.len += 1;
        }
    }

    fn extend(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|&c| self.push(c));
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Python's `repr(float)` for finite values: shortest round-trip digits, positional notation
/// for decimal exponents -4..=15, otherwise `d.ddde±XX`.
fn python_repr(v: f64, out: &mut SmallBuf) {
    if v.is_sign_negative() {
        out.push(b'-');
    }
    let a = v.abs();
    if a == 0.0 {
        out.extend(b"0.0");
        return;
    }
    if a < 1e16 && a.fract() == 0.0 {
        // Integral values below 1e16 are exact in repr: "<digits>.0".
        let mut digits = [0u8; 20];
        let n = decimal_digits(a as u64, &mut digits);
        out.extend(&digits[..n]);
        out.extend(b".0");
        return;
    }
    // Rust's `{:e}` yields the shortest round-trip digits, as Python's repr does.
    let mut digits = [0u8; 24];
    let (mut nd, mut exp) = scientific_digits(a, None, &mut digits);
    if nd >= 16 {
        // With 16-17 digits several strings of that length can round-trip, and on an exact
        // tie Python picks the even digit; Rust's exact-precision mode rounds the same way.
        let mut exact = [0u8; 24];
        let (exact_nd, exact_exp) = scientific_digits(a, Some(nd - 1), &mut exact);
        if parses_back(&exact[..exact_nd], exact_exp, a) {
            (digits, nd, exp) = (exact, exact_nd, exact_exp);
        }
    }
    if nd == 0 {
        out.extend(b"0.0");
        return;
    }
    let digits = &digits[..nd];
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if nd <= int_len {
                out.extend(digits);
                (nd..int_len).for_each(|_| out.push(b'0'));
                out.extend(b".0");
            } else {
                out.extend(&digits[..int_len]);
                out.push(b'.');
                out.extend(&digits[int_len..]);
            }
        } else {
            out.extend(b"0.");
            (0..(-exp - 1)).for_each(|_| out.push(b'0'));
            out.extend(digits);
        }
    } else {
        out.push(digits[0]);
        if nd > 1 {
            out.push(b'.');
            out.extend(&digits[1..]);
        }
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        let abs = exp.unsigned_abs();
        if abs < 10 {
            out.push(b'0');
        }
        let mut buf = [0u8; 20];
        let n = decimal_digits(u64::from(abs), &mut buf);
        out.extend(&buf[..n]);
    }
}

/// Significant digits (trailing zeros dropped) and decimal exponent of `a` in scientific
/// notation: shortest round-trip, or rounded to `precision` fractional digits.
fn scientific_digits(a: f64, precision: Option<usize>, digits: &mut [u8; 24]) -> (usize, i32) {
    let mut sci = [0u8; 48];
    let len = {
        let mut w: &mut [u8] = &mut sci;
        let _ = match precision {
            Some(p) => write!(w, "{a:.p$e}"),
            None => write!(w, "{a:e}"),
        };
        48 - w.len()
    };
    let sci = &sci[..len];
    let e_pos = sci.iter().position(|&c| c == b'e').unwrap_or(len);
    let mut nd = 0;
    for &c in sci[..e_pos].iter().filter(|c| c.is_ascii_digit()) {
        if nd < digits.len() {
            digits[nd] = c;
            nd += 1;
        }
    }
    while nd > 1 && digits[nd - 1] == b'0' {
        nd -= 1;
    }
    let exp = std::str::from_utf8(sci.get(e_pos + 1..).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (nd, exp)
}

/// Whether the scientific notation `d.ddd e exp` reads back as exactly `a`.
fn parses_back(digits: &[u8], exp: i32, a: f64) -> bool {
    let Some((first, rest)) = digits.split_first() else {
        return false;
    };
    let mut text = SmallBuf::new();
    text.push(*first);
    if !rest.is_empty() {
        text.push(b'.');
        text.extend(rest);
    }
    text.push(b'e');
    if exp < 0 {
        text.push(b'-');
    }
    let mut buf = [0u8; 20];
    let n = decimal_digits(u64::from(exp.unsigned_abs()), &mut buf);
    text.extend(&buf[..n]);
    std::str::from_utf8(text.as_bytes())
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        == Some(a)
}

/// Writes the decimal digits of `n` into `buf`, returning how many.
fn decimal_digits(mut n: u64, buf: &mut [u8; 20]) -> usize {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = tmp.len() - i;
    buf[..len].copy_from_slice(&tmp[i..]);
    len
}

fn write_decimal(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let len = decimal_digits(n, &mut buf);
    out.extend_from_slice(&buf[..len]);
}

// ---------------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------------

/// SplitMix64: small, fast and reproducible across platforms.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(1e-12);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Derives an independent seed from three values.
fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut rng = Rng::new(a ^ b.rotate_left(21) ^ c.rotate_left(42));
    rng.next_u64()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

    fn payload(flavor: Flavor, target_bytes: usize, multiprocess: bool) -> Payload {
        Payload::new(PayloadSpec {
            flavor,
            target_bytes,
            multiprocess,
            model: MODEL.to_string(),
            seed: 42,
        })
    }

    fn render(p: &mut Payload) -> String {
        let mut out = Vec::new();
        p.render(&mut out);
        String::from_utf8(out).expect("payload is UTF-8")
    }

    /// A sample line, parsed.
    struct Sample {
        name: String,
        /// Raw text between the braces (canonical: labels are sorted).
        raw_labels: String,
        /// Unescaped pairs.
        labels: Vec<(String, String)>,
        value: f64,
    }

    struct Parsed {
        /// TYPE name -> type, in order of appearance.
        types: Vec<(String, String)>,
        helps: Vec<String>,
        samples: Vec<Sample>,
    }

    fn parse_value(s: &str) -> f64 {
        match s {
            "NaN" => f64::NAN,
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            _ => s.parse().unwrap_or_else(|_| panic!("bad value {s:?}")),
        }
    }

    /// Parses `{a="x",b="y\"z"}`; returns the pairs and the rest of the line.
    fn parse_labels(s: &str) -> (Vec<(String, String)>, String, &str) {
        let bytes = s.as_bytes();
        assert_eq!(bytes[0], b'{');
        let mut i = 1;
        let mut pairs = Vec::new();
        while bytes[i] != b'}' {
            let eq = i + s[i..].find('=').expect("label =");
            let key = s[i..eq].to_string();
            assert_eq!(bytes[eq + 1], b'"');
            let mut j = eq + 2;
            let mut value = String::new();
            loop {
                match bytes[j] {
                    b'\\' => {
                        value.push(match bytes[j + 1] {
                            b'\\' => '\\',
                            b'"' => '"',
                            b'n' => '\n',
                            other => panic!("bad escape {other}"),
                        });
                        j += 2;
                    }
                    b'"' => break,
                    _ => {
                        let ch = s[j..].chars().next().expect("char");
                        value.push(ch);
                        j += ch.len_utf8();
                    }
                }
            }
            pairs.push((key, value));
            i = j + 1;
            if bytes[i] == b',' {
                i += 1;
            }
        }
        (pairs, s[1..i].to_string(), &s[i + 1..])
    }

    fn parse(text: &str) -> Parsed {
        let mut parsed = Parsed {
            types: Vec::new(),
            helps: Vec::new(),
            samples: Vec::new(),
        };
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                parsed.types.push((name.to_string(), kind.to_string()));
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                parsed.helps.push(rest.to_string());
            } else {
                assert!(!line.starts_with('#'), "unexpected comment {line}");
                let name_end = line.find(['{', ' ']).expect("sample name");
                let name = line[..name_end].to_string();
                let (labels, raw_labels, rest) = if line.as_bytes()[name_end] == b'{' {
                    parse_labels(&line[name_end..])
                } else {
                    (Vec::new(), String::new(), &line[name_end..])
                };
                let value = parse_value(rest.strip_prefix(' ').expect("space before value"));
                parsed.samples.push(Sample {
                    name,
                    raw_labels,
                    labels,
                    value,
                });
            }
        }
        parsed
    }

    /// Bucket values in order, the `+Inf` bucket and `_count` of one histogram series.
    type HistogramSeries = (Vec<f64>, Option<f64>, Option<f64>);

    fn family_of<'a>(
        types: &'a HashMap<String, String>,
        sample: &str,
    ) -> Option<(&'a str, &'a str)> {
        if let Some((name, kind)) = types.get_key_value(sample) {
            return Some((name, kind));
        }
        for suffix in ["_bucket", "_count", "_sum"] {
            if let Some(base) = sample.strip_suffix(suffix)
                && let Some((name, kind)) = types.get_key_value(base)
            {
                return Some((name, kind));
            }
        }
        None
    }

    #[test]
    fn flavor_names_round_trip() {
        for f in Flavor::ALL {
            assert_eq!(Flavor::parse(f.name()), Some(f));
            assert_eq!(Flavor::parse(&f.name().to_uppercase()), Some(f));
        }
        assert_eq!(Flavor::parse("vllm"), None);
        assert!(Flavor::Sglang04.is_sglang() && !Flavor::VllmV1.is_sglang());
    }

    #[test]
    fn float_formatting_matches_prometheus_client() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (123.0, "123.0"),
            (999_999.0, "999999.0"),
            (1_000_000.0, "1e+06"),
            (8_128_902.0, "8.128902e+06"),
            (1_745_300_000.0, "1.7453e+09"),
            (1_745_312_345.678_9, "1.7453123456789e+09"),
            (62_093_029_376.0, "6.2093029376e+010"),
            (0.001, "0.001"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.000_25, "0.00025"),
            (2.5, "2.5"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e16, "1e+16"),
            // An exact tie in the 17th digit: Python rounds half to even.
            (1_214_194_577_980_150.2, "1.2141945779801502e+015"),
            (-201_562_347_225_087.62, "-201562347225087.62"),
            (1.234_567_8e17, "1.2345678e+17"),
            (-1_234_567.5, "-1234567.5"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for &(v, want) in cases {
            assert_eq!(go_float_string(v), want, "value {v:e}");
        }
    }

    #[test]
    fn buckets_resolve() {
        assert_eq!(build_1_2_5(32768.0).last(), Some(&20000.0));
        assert_eq!(build_1_2_5(32768.0).len(), 14);
        assert_eq!(resolve_buckets("request_latency_buckets", "x").len(), 21);
        assert_eq!(
            resolve_buckets("(0.01, 0.1, 1, 10)", "x"),
            vec![0.01, 0.1, 1.0, 10.0]
        );
        let exp = resolve_buckets("exponential_buckets(start=0.05, width=1.5, length=18)", "x");
        assert_eq!(exp.len(), 18);
        assert_eq!(exp[0], 0.05);
        assert!(resolve_buckets("_BYTES_BUCKETS", "vllm:nixl_bytes_transferred")[0] >= 1024.0);
    }

    #[test]
    fn sizes_within_tolerance() {
        for flavor in Flavor::ALL {
            for mp in [false, true] {
                for target in [20_000, 50_000, 114_000, 1_000_000, 2_000_000] {
                    let len = render(&mut payload(flavor, target, mp)).len();
                    let ratio = len as f64 / target as f64;
                    assert!(
                        (0.75..=1.25).contains(&ratio),
                        "{} mp={mp} target {target}: {len} bytes",
                        flavor.name()
                    );
                }
            }
        }
    }

    #[test]
    fn standard_families_present() {
        for flavor in Flavor::ALL {
            for mp in [false, true] {
                let text = render(&mut payload(flavor, 50_000, mp));
                let (prefix, tpot, absent) = match flavor {
                    Flavor::VllmV0 => ("vllm", "time_per_output_token_seconds", None),
                    Flavor::Vllm010 => ("vllm", "time_per_output_token_seconds", None),
                    Flavor::VllmV1 => (
                        "vllm",
                        "inter_token_latency_seconds",
                        Some("vllm:time_per_output_token_seconds"),
                    ),
                    Flavor::Sglang04 => (
                        "sglang",
                        "time_per_output_token_seconds",
                        Some("sglang:inter_token_latency_seconds"),
                    ),
                    Flavor::Sglang05 => ("sglang", "inter_token_latency_seconds", None),
                };
                let waiting = if flavor.is_sglang() {
                    "num_queue_reqs"
                } else {
                    "num_requests_waiting"
                };
                for line in [
                    format!("# TYPE {prefix}:generation_tokens_total counter\n"),
                    format!("# TYPE {prefix}:{waiting} gauge\n"),
                    format!("# TYPE {prefix}:time_to_first_token_seconds histogram\n"),
                    format!("# TYPE {prefix}:e2e_request_latency_seconds histogram\n"),
                    format!("# TYPE {prefix}:{tpot} histogram\n"),
                ] {
                    assert!(
                        text.contains(&line),
                        "{} mp={mp}: missing {line}",
                        flavor.name()
                    );
                }
                if let Some(absent) = absent {
                    assert!(!text.contains(absent), "{}: has {absent}", flavor.name());
                }
                if flavor == Flavor::Vllm010 {
                    assert!(text.contains("# TYPE vllm:inter_token_latency_seconds histogram\n"));
                }
                if flavor == Flavor::VllmV1 {
                    assert!(text.contains("# TYPE vllm:iteration_tokens_total histogram\n"));
                    assert!(text.contains("vllm:iteration_tokens_total_bucket{"));
                    assert!(text.contains("block_size=\"16\""));
                    assert!(text.contains("prefix_caching_hash_algo=\"sha256\""));
                    assert!(text.contains("running_lora_adapters=\"sql-lora,math-lora\""));
                }
                if flavor == Flavor::VllmV0 {
                    assert!(text.contains("# TYPE vllm:gpu_cache_usage_perc gauge\n"));
                    assert!(!text.contains("engine=\""), "V0 has no engine label");
                }
                if flavor == Flavor::Sglang05 {
                    assert!(text.contains("engine_type=\"unified\""));
                    assert!(text.contains("is_streaming=\"True\""));
                }
                assert_eq!(text.contains("_created"), !mp, "{} mp={mp}", flavor.name());
                assert_eq!(text.contains("python_gc_objects_collected_total"), !mp);
            }
        }
    }

    #[test]
    fn hostile_details_present() {
        for flavor in Flavor::ALL {
            for mp in [false, true] {
                let text = render(&mut payload(flavor, 50_000, mp));
                let parsed = parse(&text);
                let values: Vec<&str> = parsed
                    .samples
                    .iter()
                    .flat_map(|s| s.labels.iter().map(|(_, v)| v.as_str()))
                    .collect();
                assert!(
                    values
                        .iter()
                        .any(|v| v.contains('"') && v.contains('\\') && v.contains('\n'))
                );
                assert!(values.contains(&""));
                assert!(text.contains("\\\"") && text.contains("\\\\") && text.contains("\\n"));
                assert!(
                    parsed
                        .helps
                        .iter()
                        .any(|h| h.contains(':') && h.contains('"'))
                );
                assert!(parsed.samples.iter().any(|s| s.value.is_nan()));
                assert!(text.contains("le=\"+Inf\""));
                assert!(
                    text.contains("e+06"),
                    "{}: no exponent-style value",
                    flavor.name()
                );
            }
        }
    }

    #[test]
    fn labels_sorted_and_series_unique() {
        for flavor in Flavor::ALL {
            for mp in [false, true] {
                let parsed = parse(&render(&mut payload(flavor, 114_000, mp)));
                let mut seen = HashSet::new();
                for s in &parsed.samples {
                    assert!(
                        s.labels.windows(2).all(|w| w[0].0 < w[1].0),
                        "unsorted labels in {}{{{}}}",
                        s.name,
                        s.raw_labels
                    );
                    assert!(
                        seen.insert((s.name.clone(), s.raw_labels.clone())),
                        "duplicate series {}{{{}}}",
                        s.name,
                        s.raw_labels
                    );
                }
                let mut type_names = HashSet::new();
                for (name, _) in &parsed.types {
                    assert!(type_names.insert(name.clone()), "duplicate family {name}");
                }
            }
        }
    }

    #[test]
    fn counters_grow_and_histograms_stay_consistent() {
        for flavor in Flavor::ALL {
            for mp in [false, true] {
                let mut p = payload(flavor, 114_000, mp);
                let mut previous: HashMap<(String, String), f64> = HashMap::new();
                let mut changed = false;
                for _ in 0..4 {
                    let parsed = parse(&render(&mut p));
                    let types: HashMap<String, String> = parsed.types.iter().cloned().collect();
                    let mut hist: HashMap<(String, String), HistogramSeries> = HashMap::new();
                    let mut current = HashMap::new();
                    for s in &parsed.samples {
                        let Some((family, kind)) = family_of(&types, &s.name) else {
                            panic!("sample {} outside any family", s.name)
                        };
                        let monotone =
                            kind == "counter" || (kind == "histogram" && !s.name.ends_with("_sum"));
                        if monotone {
                            let key = (s.name.clone(), s.raw_labels.clone());
                            if let Some(&before) = previous.get(&key) {
                                assert!(s.value >= before, "{} decreased", s.name);
                                changed |= s.value > before;
                            }
                            current.insert(key, s.value);
                        }
                        if kind == "histogram" {
                            let rest: Vec<String> = s
                                .labels
                                .iter()
                                .filter(|(k, _)| k != "le")
                                .map(|(k, v)| format!("{k}={v:?}"))
                                .collect();
                            let entry = hist
                                .entry((family.to_string(), rest.join(",")))
                                .or_default();
                            if s.name.ends_with("_bucket") {
                                entry.0.push(s.value);
                                if s.labels.iter().any(|(k, v)| k == "le" && v == "+Inf") {
                                    entry.1 = Some(s.value);
                                }
                            } else if s.name.ends_with("_count") {
                                entry.2 = Some(s.value);
                            }
                        }
                    }
                    for ((family, labels), (buckets, inf, count)) in &hist {
                        assert!(
                            buckets.windows(2).all(|w| w[0] <= w[1]),
                            "{family}{{{labels}}}"
                        );
                        assert!(inf.is_some() && inf == count, "{family}{{{labels}}}");
                    }
                    previous = current;
                }
                assert!(changed, "{}: nothing moved", flavor.name());
            }
        }
    }

    #[test]
    fn multiprocess_lists_sums_first() {
        for flavor in Flavor::ALL {
            let text = render(&mut payload(flavor, 114_000, true));
            let mut family: Option<(String, bool)> = None; // (histogram name, saw a bucket)
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("# TYPE ") {
                    let (name, kind) = rest.split_once(' ').expect("TYPE");
                    family = (kind == "histogram").then(|| (name.to_string(), false));
                    continue;
                }
                let Some((name, saw_bucket)) = family.as_mut() else {
                    continue;
                };
                if line.starts_with(&format!("{name}_sum")) {
                    assert!(
                        !*saw_bucket,
                        "{}: _sum after buckets in {name}",
                        flavor.name()
                    );
                } else if line.starts_with(&format!("{name}_bucket")) {
                    *saw_bucket = true;
                }
            }
        }
    }

    #[test]
    fn deterministic_per_seed() {
        for flavor in Flavor::ALL {
            let mut a = payload(flavor, 50_000, false);
            let mut b = payload(flavor, 50_000, false);
            let first = render(&mut a);
            assert_eq!(first, render(&mut b));
            let second = render(&mut a);
            assert_eq!(second, render(&mut b));
            assert_ne!(first, second, "values change between renders");
        }
    }

    #[test]
    fn extreme_specs_do_not_panic() {
        for flavor in Flavor::ALL {
            for target in [0, 1, 5_000_000] {
                let mut p = Payload::new(PayloadSpec {
                    flavor,
                    target_bytes: target,
                    multiprocess: target == 1,
                    model: String::new(),
                    seed: u64::MAX,
                });
                assert!(!render(&mut p).is_empty());
            }
        }
    }
}
