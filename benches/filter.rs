//! What WASM filters add to the relabel: relabel alone, relabel with a
//! pass-through filter (selecting a few families, and everything; answering
//! "unchanged", and copying every byte back), and with
//! the add-labels example, on ~100 KB and ~1 MB vLLM payloads; the output
//! check alone; and the cost of building an instance (paid at start and after a failure, never per
//! scrape).
//!
//! Relabel alone and the pass-through answering "unchanged" over every
//! family are also timed cold (`_cold`), every cache emptied before each
//! run ([`common`]), as a scrape finds them.
//!
//! Needs the filters built:
//! `cargo build --release --target wasm32-unknown-unknown --manifest-path wasm-filters/Cargo.toml`
//! with `CARGO_TARGET_DIR=target/wasm-filters` (or set MATRIXINFER_FILTERS_DIR).
//!
//! Run: `cargo bench --bench filter`

mod common;
#[path = "common/filter_setup.rs"]
mod filter_setup;

use std::hint::black_box;

use common::{Evictor, bench_cold, payload};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use filter_setup::{FIVE, filters_dir, scrape, setup};
use matrixinfer_runtime::filter::validate::{Checker, Presence, Scope};
use matrixinfer_runtime::filter::{Routes, host};
use matrixinfer_runtime::prom::Relabeler;
use matrixinfer_runtime::prom::standard::VLLM;
use sim::payload::Flavor;

fn bench(c: &mut Criterion) {
    let dir = filters_dir();
    if !dir.join("passthrough.wasm").is_file() {
        eprintln!(
            "filters not built in {}; see this file's header",
            dir.display()
        );
        return;
    }
    let five_selectors = FIVE.join("\n");
    let mut evictor = Evictor::new();
    let mut group = c.benchmark_group("filter");
    for (label, size) in [("100KB", 100 * 1024), ("1MB", 1024 * 1024)] {
        let body = payload(Flavor::VllmV1, size);
        let mut out = Vec::with_capacity(body.len() * 2);
        group.throughput(Throughput::Bytes(body.len() as u64));

        let mut plain = Relabeler::new(VLLM);
        let mut routes = Routes::default();
        group.bench_with_input(BenchmarkId::new("relabel_only", label), &body, |b, body| {
            b.iter(|| scrape(&mut plain, &mut routes, None, black_box(body), &mut out))
        });
        bench_cold(
            &mut group,
            BenchmarkId::new("relabel_only_cold", label),
            &body,
            &mut evictor,
            |body| scrape(&mut plain, &mut routes, None, body, &mut out),
        );
        let cases = [
            (
                "passthrough_5_families",
                "passthrough",
                five_selectors.as_str(),
            ),
            // Answers "unchanged" (ABI version 2): no copy out, no compare.
            ("passthrough_everything", "passthrough", "*"),
            // Copies every byte back, as a filter that rewrites them would.
            ("passthrough_everything_copied", "passthrough", "*,!copy"),
            (
                "add_labels_vllm_all",
                "add_labels",
                r#"{"labels": {"pod": "pod-7", "model": "llama"}, "select": ["vllm:*"]}"#,
            ),
        ];
        for (case, name, config) in cases {
            let Some((host, mut chain, mut relabeler)) = setup(&dir, name, config) else {
                continue;
            };
            let set = host.current();
            group.bench_with_input(BenchmarkId::new(case, label), &body, |b, body| {
                b.iter(|| {
                    scrape(
                        &mut relabeler,
                        &mut routes,
                        Some((&mut chain, &set)),
                        black_box(body),
                        &mut out,
                    )
                })
            });
            if case == "passthrough_everything" {
                bench_cold(
                    &mut group,
                    BenchmarkId::new("passthrough_everything_cold", label),
                    &body,
                    &mut evictor,
                    |body| {
                        let chain = Some((&mut chain, &set));
                        scrape(&mut relabeler, &mut routes, chain, body, &mut out)
                    },
                );
            }
        }
        // The full output check alone, on the whole relabeled payload as a
        // filter would return it changed (a pass-through filter's output
        // skips it: it is byte for byte what the filter was given).
        let mut relabeled = Vec::new();
        scrape(&mut plain, &mut routes, None, &body, &mut relabeled);
        let mut checker = Checker::default();
        // The five standard source families alone: what the check costs
        // a filter over them that changes a byte.
        let five = families_named(&relabeled, &FIVE);
        group.bench_with_input(
            BenchmarkId::new("output_check_5_families", label),
            &five,
            |b, text| {
                b.iter(|| {
                    checker
                        .check(black_box(text), &NewScope, |_, _| {})
                        .expect("valid")
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("output_check_only", label),
            &relabeled,
            |b, text| {
                b.iter(|| {
                    checker
                        .check(black_box(text), &NewScope, |_, _| {})
                        .expect("valid")
                })
            },
        );
    }
    group.finish();

    let mut group = c.benchmark_group("filter_instance");
    let add_labels = r#"{"labels": {"pod": "pod-7"}}"#;
    for (name, config) in [("passthrough", "*"), ("add_labels", add_labels)] {
        let Some((host, _, _)) = setup(&dir, name, config) else {
            continue;
        };
        let limits = host.limits;
        let set = host.current();
        group.bench_function(BenchmarkId::new("instantiate_and_init", name), |b| {
            b.iter(|| {
                host::instantiate(host.engine(), &set.filters[0], &limits)
                    .map(|_| ())
                    .expect("instantiates")
            })
        });
    }
    group.finish();
}

/// The lines of `text` that belong to the families `names`.
fn families_named(text: &[u8], names: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in text.split_inclusive(|&b| b == b'\n') {
        let line_text = String::from_utf8_lossy(line);
        let bare = line_text
            .strip_prefix("# HELP ")
            .or_else(|| line_text.strip_prefix("# TYPE "))
            .unwrap_or(&line_text);
        let name = bare.split(['{', ' ']).next().unwrap_or_default();
        let owned = names.iter().any(|family| {
            name.strip_prefix(family)
                .is_some_and(|rest| ["", "_total", "_bucket", "_sum", "_count"].contains(&rest))
        });
        if owned {
            out.extend_from_slice(line);
        }
    }
    out
}

/// A scrape in which every family of the output is the filter's.
struct NewScope;

impl Scope for NewScope {
    fn selects(&self, _: &[u8]) -> bool {
        true
    }
    fn presence(&self, _: &[u8]) -> Presence {
        Presence::Mine
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
