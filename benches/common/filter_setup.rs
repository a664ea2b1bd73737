//! What the filter benches share: the payloads, the filters built for
//! wasm32, and one scrape's CPU work with or without them.

use std::path::PathBuf;
use std::sync::Arc;

use matrixinfer_runtime::filter::{
    FilterChain, FilterHost, FilterLimits, FilterSet, FilterSpec, Routes,
};
use matrixinfer_runtime::prom::Relabeler;
use matrixinfer_runtime::prom::standard::VLLM;

/// Where the filters were built (see the benches' headers).
pub fn filters_dir() -> PathBuf {
    std::env::var("MATRIXINFER_FILTERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/wasm-filters/wasm32-unknown-unknown/release")
        })
}

/// One scrape's CPU work: relabel, then the filters, then the tail.
pub fn scrape(
    relabeler: &mut Relabeler,
    routes: &mut Routes,
    chain: Option<(&mut FilterChain, &Arc<FilterSet>)>,
    body: &[u8],
    out: &mut Vec<u8>,
) -> usize {
    let (chain, set) = match chain {
        Some((chain, set)) => (Some(chain), Some(set.clone())),
        None => (None, None),
    };
    routes.begin(set);
    relabeler.reset();
    out.clear();
    for chunk in body.chunks(64 * 1024) {
        relabeler.feed(chunk, &mut routes.sink(out));
    }
    relabeler.finish_body(&mut routes.sink(out));
    if let Some(chain) = chain {
        chain.run(routes, out).expect("filters run");
    }
    relabeler.close(out);
    out.len()
}

/// Loads filter `name` with `config`: its host, a chain over it and a
/// relabeler; `None` when it was not built.
pub fn setup(
    dir: &std::path::Path,
    name: &str,
    config: &str,
) -> Option<(Arc<FilterHost>, FilterChain, Relabeler)> {
    let path = dir.join(format!("{name}.wasm"));
    if !path.is_file() {
        return None;
    }
    let limits = FilterLimits {
        deadline: std::time::Duration::from_secs(1),
        ..FilterLimits::default()
    };
    let host = Arc::new(
        FilterHost::load(
            &[FilterSpec {
                path,
                config: config.into(),
            }],
            limits,
        )
        .expect("filter loads"),
    );
    let chain = FilterChain::new(host.clone());
    Some((host, chain, Relabeler::new(VLLM)))
}

/// The standard names' vLLM sources.
pub const FIVE: [&str; 5] = [
    "vllm:num_requests_waiting",
    "vllm:generation_tokens_total",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:e2e_request_latency_seconds",
];
