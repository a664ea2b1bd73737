//! What gzip costs per scrape, and what it saves: CPU time and compressed
//! bytes of the simulated engine's vLLM payloads (~114 KB and ~1 MB)
//! through each candidate compressor and level:
//!
//! - zlib-rs through flate2 (the sidecar's, streaming, level 1 today),
//!   at levels 1, 2, 4 and 6;
//! - libdeflate (whole buffers only: streaming would mean one gzip member
//!   per chunk), at levels 1, 4 and 6;
//! - ISA-L's igzip through isal-rs, streaming, at levels 0, 1 and 3;
//! - the sidecar's own encoder ([`GzipEncoder`], igzip level 1 since
//!   zlib-rs level 1) fed in 32 KiB pieces as the relabeler feeds it.
//!
//! A scrape finds little of the last one in any cache, so the sidecar's
//! encoder and igzip level 0 are also timed cold (`-cold`), every cache
//! emptied before each run ([`common`]).
//!
//! The sizes are printed once per payload before the timings:
//! `gzip-size <payload> <compressor> <bytes>`.
//!
//! Run: `cargo bench --bench gzip`

mod common;

use std::hint::black_box;

use common::{Evictor, bench_cold, payload};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flate2::{Compress, Compression, FlushCompress};
use matrixinfer_runtime::http::gzip::GzipEncoder;
use sim::payload::Flavor;

fn payloads() -> Vec<(&'static str, Vec<u8>)> {
    [("114KB", 114 * 1024), ("1MB", 1024 * 1024)]
        .into_iter()
        .map(|(label, size)| (label, payload(Flavor::VllmV1, size)))
        .collect()
}

fn zlib_rs(input: &[u8], level: u32, out: &mut Vec<u8>) -> usize {
    let mut deflate = Compress::new_gzip(Compression::new(level), 15);
    out.clear();
    out.reserve(input.len() / 2 + 1024);
    loop {
        let before = deflate.total_in() as usize;
        let status = deflate
            .compress_vec(&input[before..], out, FlushCompress::Finish)
            .unwrap();
        if status == flate2::Status::StreamEnd {
            return out.len();
        }
        out.reserve(64 * 1024);
    }
}

fn libdeflate(input: &[u8], compressor: &mut libdeflater::Compressor, out: &mut Vec<u8>) -> usize {
    out.resize(compressor.gzip_compress_bound(input.len()), 0);
    compressor.gzip_compress(input, out).unwrap()
}

fn igzip(input: &[u8], encoder: &mut isal::write::Encoder<Vec<u8>>, out: &mut Vec<u8>) -> usize {
    use std::io::Write;
    encoder.get_ref_mut().clear();
    for piece in input.chunks(32 * 1024) {
        encoder.write_all(piece).unwrap();
    }
    encoder.flush().unwrap();
    out.clear();
    out.append(encoder.get_ref_mut());
    out.len()
}

fn ours(input: &[u8], encoder: &mut GzipEncoder, out: &mut Vec<u8>) -> usize {
    encoder.reset();
    out.clear();
    for piece in input.chunks(32 * 1024) {
        encoder.encode(piece, out).unwrap();
    }
    encoder.finish(out).unwrap();
    out.len()
}

fn gzip(c: &mut Criterion) {
    let mut group = c.benchmark_group("gzip");
    let mut out = Vec::new();
    let mut evictor = Evictor::new();
    for (label, payload) in payloads() {
        group.throughput(Throughput::Bytes(payload.len() as u64));
        println!("gzip-size {label} plain {}", payload.len());
        for level in [1, 2, 4, 6] {
            let name = format!("zlib-rs-{level}");
            println!(
                "gzip-size {label} {name} {}",
                zlib_rs(&payload, level, &mut out)
            );
            group.bench_with_input(BenchmarkId::new(name, label), &payload, |b, p| {
                b.iter(|| zlib_rs(black_box(p), level, &mut out))
            });
        }
        for level in [1, 4, 6] {
            let name = format!("libdeflate-{level}");
            let mut compressor =
                libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).unwrap());
            println!(
                "gzip-size {label} {name} {}",
                libdeflate(&payload, &mut compressor, &mut out)
            );
            group.bench_with_input(BenchmarkId::new(name, label), &payload, |b, p| {
                b.iter(|| libdeflate(black_box(p), &mut compressor, &mut out))
            });
        }
        for (level, name) in [
            (isal::CompressionLevel::Zero, "igzip-0"),
            (isal::CompressionLevel::One, "igzip-1"),
            (isal::CompressionLevel::Three, "igzip-3"),
        ] {
            let mut encoder = isal::write::Encoder::new(Vec::new(), level, isal::Codec::Gzip);
            println!(
                "gzip-size {label} {name} {}",
                igzip(&payload, &mut encoder, &mut out)
            );
            group.bench_with_input(BenchmarkId::new(name, label), &payload, |b, p| {
                b.iter(|| igzip(black_box(p), &mut encoder, &mut out))
            });
        }
        let mut level0 =
            isal::write::Encoder::new(Vec::new(), isal::CompressionLevel::Zero, isal::Codec::Gzip);
        bench_cold(
            &mut group,
            BenchmarkId::new("igzip-0-cold", label),
            &payload,
            &mut evictor,
            |p| igzip(p, &mut level0, &mut out),
        );
        let mut encoder = GzipEncoder::default();
        println!(
            "gzip-size {label} sidecar {}",
            ours(&payload, &mut encoder, &mut out)
        );
        group.bench_with_input(
            BenchmarkId::new("sidecar-encoder", label),
            &payload,
            |b, p| b.iter(|| ours(black_box(p), &mut encoder, &mut out)),
        );
        bench_cold(
            &mut group,
            BenchmarkId::new("sidecar-encoder-cold", label),
            &payload,
            &mut evictor,
            |p| ours(p, &mut encoder, &mut out),
        );
    }
    group.finish();
}

criterion_group!(benches, gzip);
criterion_main!(benches);
