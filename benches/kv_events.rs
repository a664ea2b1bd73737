//! KV events per second: msgpack decode alone, and decode plus the Redis
//! pipeline against a real `redis-server` (started here on a free port;
//! `apt-get install redis-server` if missing). The bridge's work runs on
//! the benchmark thread, one core; Redis is its own process, as in a Pod.
//!
//! The batch is shaped like a busy vLLM scheduler step, positional
//! encoding: 48 `BlockStored` events of 2 blocks × 16 tokens and 16
//! `BlockRemoved` events of 2 blocks. Throughput is in events; multiply
//! by 2 for blocks.
//!
//! Run: `cargo bench --bench kv_events`

use std::hint::black_box;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use matrixinfer_runtime::engine::Engine;
use matrixinfer_runtime::kv_events::{Index, KvStats, RedisTarget, Writer, decode_batch};
use matrixinfer_runtime::shutdown::Shutdown;
use rmpv::Value;

const STORED: u64 = 48;
const REMOVED: u64 = 16;

/// Batch `n` of the stream: fresh hashes, so that removals hit blocks the
/// batch before stored.
fn batch(n: u64) -> Vec<u8> {
    let mut events = Vec::new();
    for e in 0..STORED {
        let base = n * 1_000 + e * 2;
        let hashes = vec![
            Value::from(u64::MAX - base),
            Value::from(u64::MAX - base - 1),
        ];
        let tokens: Vec<Value> = (0..32)
            .map(|t| Value::from((base * 31 + t) % 128_000))
            .collect();
        events.push(Value::Array(vec![
            Value::from("BlockStored"),
            Value::Array(hashes),
            Value::Nil,
            Value::Array(tokens),
            Value::from(16),
            Value::Nil,
            Value::from("GPU"),
            Value::Nil,
        ]));
    }
    for e in 0..REMOVED {
        let base = n.saturating_sub(1) * 1_000 + e * 2;
        let hashes = vec![
            Value::from(u64::MAX - base),
            Value::from(u64::MAX - base - 1),
        ];
        events.push(Value::Array(vec![
            Value::from("BlockRemoved"),
            Value::Array(hashes),
            Value::from("GPU"),
        ]));
    }
    let batch = Value::Array(vec![
        Value::F64(1.7e9),
        Value::Array(events),
        Value::from(0),
    ]);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &batch).unwrap();
    out
}

struct RedisServer(Child, u16);

impl RedisServer {
    fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        while client.get_connection().is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer(child, port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bench(c: &mut Criterion) {
    let batches: Vec<Vec<u8>> = (0..64).map(batch).collect();
    let mut group = c.benchmark_group("kv_events");
    group.throughput(Throughput::Elements(STORED + REMOVED));
    let mut i = 0;
    group.bench_function("decode", |b| {
        b.iter(|| {
            i = (i + 1) % batches.len();
            black_box(decode_batch(&batches[i]).unwrap())
        })
    });

    let redis = RedisServer::start();
    let target = RedisTarget {
        host: "127.0.0.1".into(),
        port: redis.1,
        db: 0,
        tls: false,
        username: None,
        password: None,
    };
    let index = Index {
        engine: Engine::Vllm,
        pod: "pod-0.default".into(),
        model: "meta-llama/Llama-3.1-8B-Instruct".into(),
    };
    let stats = Arc::new(KvStats::default());
    let mut writer = Writer::new(&target, index, stats.clone(), Arc::new(Shutdown::default()));
    let mut n = 0u64;
    group.bench_function("decode_and_redis", |b| {
        b.iter(|| {
            n += 1;
            // Encoding is the engine's work, done once before timing.
            let payload = &batches[(n % batches.len() as u64) as usize];
            let decoded = decode_batch(payload).unwrap();
            let mut done = 0;
            writer.apply(&decoded.events, &mut done).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
