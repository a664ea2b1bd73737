//! Histogram buckets: the engines' bucket lists, and the bucket expressions
//! of the inventories resolved to them.

/// vLLM's `request_latency_buckets`.
pub(super) const REQUEST_LATENCY: [f64; 21] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
/// vLLM's time-to-first-token buckets (literal in vLLM 0.10.2).
pub(super) const VLLM_TTFT: [f64; 22] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's inter-token latency / TPOT buckets (literal in vLLM 0.10.2).
pub(super) const VLLM_ITL: [f64; 19] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// vLLM's iteration token buckets (literal in vLLM 0.10.2).
pub(super) const VLLM_ITERATION_TOKENS: [f64; 13] = [
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];
/// SGLang's default `bucket_time_to_first_token`.
pub(super) const SGLANG_TTFT: [f64; 18] = [
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 200.0,
    400.0,
];
/// SGLang's default `bucket_inter_token_latency`.
pub(super) const SGLANG_ITL: [f64; 23] = [
    0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.06, 0.08, 0.1, 0.2,
    0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0,
];
/// SGLang's default `bucket_e2e_request_latency`.
pub(super) const SGLANG_E2E: [f64; 22] = [
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 200.0,
    400.0, 600.0, 1200.0, 1800.0, 2400.0,
];
/// SGLang's `default_bucket_prompt_tokens`.
pub(super) const SGLANG_PROMPT_TOKENS: [f64; 30] = [
    100.0, 300.0, 500.0, 700.0, 1000.0, 1500.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0, 7000.0,
    8000.0, 9000.0, 10000.0, 12000.0, 15000.0, 20000.0, 22000.0, 25000.0, 30000.0, 35000.0,
    40000.0, 66000.0, 99000.0, 132000.0, 300000.0, 600000.0, 900000.0, 1100000.0,
];
/// KV block residency (lifetime, idle, reuse gap) in seconds.
pub(super) const RESIDENCY: [f64; 15] = [
    0.001, 0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Short I/O operations in seconds.
pub(super) const FAST_IO_SECONDS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 5.0,
];
/// Generic latencies in seconds.
pub(super) const GENERIC_SECONDS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Transfer sizes in bytes.
pub(super) const BYTE_SIZES: [f64; 11] = [
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
pub(super) const COUNTS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// Resolves an inventory bucket expression to finite, sorted bounds.
pub(super) fn resolve_buckets(expr: &str, family: &str) -> Vec<f64> {
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
pub(super) fn parse_literal_list(expr: &str) -> Option<Vec<f64>> {
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
pub(super) fn named_buckets(expr: &str, family: &str) -> Option<Vec<f64>> {
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
pub(super) fn build_1_2_5(max_value: f64) -> Vec<f64> {
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
pub(super) fn exponential_buckets(expr: &str) -> Option<Vec<f64>> {
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
pub(super) fn fallback_buckets(family: &str) -> Vec<f64> {
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
