//! Throughput of the metrics path's CPU work, in bytes of engine payload
//! per second: the scanner alone, the full relabel (whole payload, in
//! 64 KiB chunks as it comes off a socket, and the same with caches that
//! other work has filled since), and a naive line-by-line
//! rewriter with a parsed model, for comparison.
//!
//! The cold row runs after every cache was emptied ([`common`]), because
//! a scrape finds little of the last one in any cache.
//!
//! Payloads are the simulated engine's, synthesized from the vLLM and
//! SGLang metric inventories, at ~100 KB and ~1 MB.
//!
//! Run: `cargo bench --bench relabel`

mod common;

use std::collections::HashMap;
use std::hint::black_box;

use common::{Evictor, bench_cold, payload};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use matrixinfer_runtime::prom::Relabeler;
use matrixinfer_runtime::prom::line::{Line, classify};
use matrixinfer_runtime::prom::scan::{LineScanner, Piece};
use matrixinfer_runtime::prom::standard::{SGLANG, StandardName, VLLM};
use sim::payload::Flavor;

fn payloads() -> Vec<(String, &'static [StandardName], Vec<u8>)> {
    let mut out = Vec::new();
    for (flavor, table) in [(Flavor::VllmV1, VLLM), (Flavor::Sglang05, SGLANG)] {
        for (label, size) in [("100KB", 100 * 1024), ("1MB", 1024 * 1024)] {
            let body = payload(flavor, size);
            out.push((format!("{}/{label}", flavor.name()), table, body));
        }
    }
    out
}

/// The scanner and line classifier, no output.
fn scan(input: &[u8]) -> usize {
    let mut scanner = LineScanner::default();
    let mut samples = 0;
    let mut visit = |piece: Piece<'_>| {
        if let Piece::Line(line) = piece
            && let Line::Sample { .. } = classify(line.strip_suffix(b"\n").unwrap_or(line))
        {
            samples += 1;
        }
    };
    scanner.feed(input, &mut visit);
    scanner.finish(&mut visit);
    samples
}

/// What a straightforward rewriter does: own every line as a String, parse
/// names into a map of families, then write everything out.
fn naive(table: &[StandardName], input: &[u8]) -> String {
    let text = String::from_utf8_lossy(input);
    let mut families: HashMap<String, Vec<String>> = HashMap::new();
    let mut order = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let name = match line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            Some(rest) => rest.split(' ').next().unwrap_or("").to_string(),
            None if line.starts_with('#') => continue,
            None => line.split(['{', ' ']).next().unwrap_or("").to_string(),
        };
        if !name.starts_with(current.as_str()) || current.is_empty() {
            current = name.clone();
            if !families.contains_key(&current) {
                order.push(current.clone());
            }
        }
        families
            .entry(current.clone())
            .or_default()
            .push(line.to_string());
    }
    let mut out = String::with_capacity(input.len() * 2);
    for name in &order {
        for line in &families[name] {
            out.push_str(line);
            out.push('\n');
        }
    }
    for standard in table {
        if let Some(source) = standard.sources.iter().find(|s| families.contains_key(**s)) {
            for line in &families[*source] {
                out.push_str(&line.replace(source, standard.name));
                out.push('\n');
            }
        }
    }
    out
}

/// One scrape's relabel, the body arriving in 64 KiB chunks as it comes
/// off a socket.
fn relabel_in_chunks(relabeler: &mut Relabeler, body: &[u8], out: &mut Vec<u8>) -> usize {
    relabeler.reset();
    out.clear();
    for chunk in body.chunks(64 * 1024) {
        relabeler.feed(chunk, out);
    }
    relabeler.finish(out, |_| {});
    out.len()
}

fn bench(c: &mut Criterion) {
    let payloads = payloads();
    let mut evictor = Evictor::new();
    let mut group = c.benchmark_group("metrics");
    for (name, table, body) in &payloads {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("scan", name), body, |b, body| {
            b.iter(|| scan(black_box(body)))
        });
        let mut relabeler = Relabeler::new(table);
        let mut out = Vec::with_capacity(body.len() * 2);
        group.bench_with_input(BenchmarkId::new("relabel", name), body, |b, body| {
            b.iter(|| {
                relabeler.reset();
                out.clear();
                relabeler.feed(black_box(body), &mut out);
                relabeler.finish(&mut out, |_| {});
                out.len()
            })
        });
        group.bench_with_input(
            BenchmarkId::new("relabel_64k_chunks", name),
            body,
            |b, body| b.iter(|| relabel_in_chunks(&mut relabeler, black_box(body), &mut out)),
        );
        // Every run after the caches were emptied (not timed).
        bench_cold(
            &mut group,
            BenchmarkId::new("relabel_cold", name),
            body,
            &mut evictor,
            |body| relabel_in_chunks(&mut relabeler, body, &mut out),
        );
        group.bench_with_input(BenchmarkId::new("naive_baseline", name), body, |b, body| {
            b.iter(|| naive(table, black_box(body)).len())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
