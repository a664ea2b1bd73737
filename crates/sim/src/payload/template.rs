//! Family templates: what each family looks like independent of how many label
//! sets it gets (kind, HELP, label dimensions, buckets, value model), built
//! from the inventory rows per flavor.

use super::*;

/// Metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    pub(super) fn parse(s: &str) -> Option<Kind> {
        match s {
            "counter" => Some(Kind::Counter),
            "gauge" => Some(Kind::Gauge),
            "histogram" => Some(Kind::Histogram),
            "summary" => Some(Kind::Summary),
            _ => None,
        }
    }

    pub(super) fn type_name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }

    /// Multiprocess mode reads one mmap file kind after the other.
    pub(super) fn mmap_file_rank(self) -> u8 {
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
pub(super) enum Replica {
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
pub(super) enum Dim {
    Replica(Replica),
    Const(String),
    Variants(Vec<String>),
}

/// A metric family before it is expanded to a replica count.
#[derive(Clone, Debug)]
pub(super) struct Template {
    /// Name on the HELP/TYPE lines (counters end in `_total`).
    pub(super) name: String,
    /// prometheus_client's metric name: without `_total` for counters (prefix of `_created`).
    pub(super) base: String,
    pub(super) kind: Kind,
    /// Unescaped HELP text.
    pub(super) help: String,
    /// Label names in declared order.
    pub(super) label_names: Vec<String>,
    /// Positions of replica-driven labels.
    pub(super) replica: Vec<(usize, Replica)>,
    /// Values of the other labels, one row per label set of a replica.
    pub(super) rows: Vec<Vec<String>>,
    /// Finite histogram bounds (`+Inf` is added when expanding).
    pub(super) buckets: Vec<f64>,
    pub(super) model: Model,
    /// Emits a `_created` family in single-process mode.
    pub(super) created: bool,
    /// Gauge with `multiprocess_mode="all"`: one series per process, `pid` label.
    pub(super) pid_all: bool,
    /// 0 = always present, 1 = core, 2 = optional feature.
    pub(super) priority: u8,
    /// Adds label sets whose `model_name` is [`HOSTILE_ALIAS`].
    pub(super) hostile_alias: bool,
}

/// One expanded label set.
pub(super) struct SeriesLabels {
    /// Index into `Template::rows`.
    pub(super) row: usize,
    pub(super) pairs: Vec<(String, String)>,
}

impl Template {
    pub(super) fn new(name: &str, kind: Kind, help: &str, dims: Vec<(String, Dim)>) -> Template {
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
    pub(super) fn set_rows(&mut self, rows: &[&[(&str, &str)]]) {
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

    pub(super) fn replicas(&self, n: usize) -> usize {
        if self.replica.is_empty() { 1 } else { n }
    }

    pub(super) fn has_model_name(&self) -> bool {
        self.label_names.iter().any(|l| l == "model_name")
    }

    /// Number of series at `n` replicas (what [`Template::label_sets`] returns).
    pub(super) fn series_count(&self, n: usize, mp: bool) -> usize {
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
    pub(super) fn label_sets(&self, n: usize, ctx: &Ctx, mp: bool) -> Vec<SeriesLabels> {
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

    pub(super) fn pairs(
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
pub(super) struct Ctx {
    pub(super) flavor: Flavor,
    pub(super) model: String,
    pub(super) seed: u64,
    /// Unix time the simulated process started its metrics (base of `_created`).
    pub(super) base_ts: f64,
    /// API server processes, for `multiprocess_mode="all"` gauges.
    pub(super) pids: [String; PID_COUNT],
}

impl Ctx {
    pub(super) fn new(spec: &PayloadSpec) -> Ctx {
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
    pub(super) fn replica_value(&self, rep: Replica, r: usize, n: usize) -> Option<String> {
        match rep {
            Replica::Engine | Replica::Rank | Replica::DpRank => Some(r.to_string()),
            Replica::DpRankOpt => (n > 1).then(|| r.to_string()),
            Replica::ModelAlias if r == 0 => Some(self.model.clone()),
            Replica::ModelAlias => Some(format!("{}-alias-{r}", self.model)),
        }
    }
}

/// The families of a flavor, in exposition order.
pub(super) fn templates_for(ctx: &Ctx, mp: bool) -> Vec<Template> {
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
pub(super) fn mandatory_families(flavor: Flavor) -> &'static [&'static str] {
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
pub(super) fn from_row(row: &Row<'_>, ctx: &Ctx) -> Option<Template> {
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
pub(super) fn finish(t: &mut Template, ctx: &Ctx) {
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
pub(super) fn is_core(row: &Row<'_>, flavor: Flavor) -> bool {
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
