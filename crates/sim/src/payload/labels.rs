//! Label dimensions: which labels a family carries and how their values vary
//! with the replica (engine, DP rank, model alias) or per variant.

use super::*;

/// Resolves an inventory label column to label dimensions; `None` if a placeholder cannot be
/// filled.
pub(super) fn label_dims(spec: &str, family: &str, ctx: &Ctx) -> Option<Vec<(String, Dim)>> {
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
pub(super) fn push_dim(dims: &mut Vec<(String, Dim)>, name: &str, dim: Dim) {
    match dims.iter_mut().find(|(n, _)| n == name) {
        Some(existing) => {
            if matches!(existing.1, Dim::Replica(Replica::DpRankOpt)) {
                existing.1 = dim;
            }
        }
        None => dims.push((name.to_string(), dim)),
    }
}

pub(super) fn label_dim(name: &str, family: &str, ctx: &Ctx) -> Dim {
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
pub(super) fn sglang_collector_dims(ctx: &Ctx) -> Vec<(String, Dim)> {
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
pub(super) fn cache_config_dims(flavor: Flavor) -> Vec<(String, Dim)> {
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
pub(super) fn cache_config_info(ctx: &Ctx) -> Template {
    let mut dims = cache_config_dims(ctx.flavor);
    dims.push(("engine".to_string(), Dim::Replica(Replica::Engine)));
    let help = "Information of the LLMEngine CacheConfig";
    let mut t = Template::new("vllm:cache_config_info", Kind::Gauge, help, dims);
    finish(&mut t, ctx);
    t
}
