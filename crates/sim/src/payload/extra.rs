//! Families that are not in the inventories: SGLang 0.4's, prometheus_client's
//! default collectors, the hostile-but-valid fixture, label variant values.

use super::*;

/// SGLang 0.4: the core families of that release, labeled by `model_name` only, with
/// `time_per_output_token` where 0.5 has `inter_token_latency`.
pub(super) fn sglang04_templates(ctx: &Ctx) -> Vec<Template> {
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
pub(super) fn default_collectors(ctx: &Ctx) -> Vec<Template> {
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
pub(super) fn fixture(ctx: &Ctx) -> Template {
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
pub(super) fn variant_values(family: &str, label: &str) -> Vec<String> {
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
