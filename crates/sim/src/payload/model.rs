//! Value models: how each family's samples move between scrapes (counters
//! grow, gauges wander, histograms gain observations).

use super::*;

/// How a series' value starts and moves.
#[derive(Clone, Copy, Debug)]
pub(super) enum Model {
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

pub(super) fn has_any(name: &str, keys: &[&str]) -> bool {
    keys.iter().any(|k| name.contains(k))
}

/// Picks a value model from what the family name says it measures.
pub(super) fn model_for(name: &str, kind: Kind, buckets: &[f64]) -> Model {
    match kind {
        Kind::Counter => counter_model(name),
        Kind::Gauge => gauge_model(name),
        Kind::Histogram | Kind::Summary => observation_model(name, kind, buckets),
    }
}

pub(super) fn counter_model(name: &str) -> Model {
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

pub(super) fn gauge_model(name: &str) -> Model {
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
pub(super) fn config_gauge(name: &str) -> Option<Model> {
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

pub(super) fn observation_model(name: &str, kind: Kind, buckets: &[f64]) -> Model {
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
    pub(super) fn init(
        &self,
        s: &mut Series,
        bounds: &[f64],
        kind: Kind,
        rng: &mut Rng,
        base_ts: f64,
    ) {
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
    pub(super) fn advance(&self, s: &mut Series, bounds: &[f64], kind: Kind, rng: &mut Rng) {
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
    pub(super) fn observe(&self, s: &mut Series, bounds: &[f64], kind: Kind, rng: &mut Rng) {
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
