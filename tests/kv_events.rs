//! KV-cache events into Redis: a real `redis-server`, a real ZMQ publisher
//! (pyzmq on libzmq) sending batches serialized exactly as vLLM and SGLang
//! serialize them (msgspec, the engines' own struct definitions: see
//! `kv_publisher.py`), and the real sidecar between them. Every check reads
//! Redis itself: keys, values, TTLs, hash fields.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::Commands;
use serde_json::{Value, json};

use crate::util::*;

pub(crate) const POD: &str = "pod-0.default";
pub(crate) const MODEL: &str = "llama";

// === A real redis-server ===

/// A `redis-server` on a port of its own, without persistence.
pub(crate) struct RedisServer {
    /// Its plain-text port, where the tests read what the sidecar wrote.
    pub(crate) port: u16,
    /// More options (TLS, ACL file).
    options: Vec<String>,
    /// How the tests log in on `port`, if not as the default user.
    login: Option<(String, String)>,
    child: Option<Tied>,
}

impl RedisServer {
    pub(crate) fn start() -> RedisServer {
        RedisServer::start_with(Vec::new(), None)
    }

    /// With more `options`; the tests log in as `login` (user, password).
    pub(crate) fn start_with(options: Vec<String>, login: Option<(&str, &str)>) -> RedisServer {
        let port = closed_port().port();
        let mut server = RedisServer {
            port,
            options,
            login: login.map(|(u, p)| (u.to_owned(), p.to_owned())),
            child: None,
        };
        server.restart();
        server
    }

    /// Starts it (again) on the same port.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.options)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn_tied();
        self.child = Some(child);
        eventually("redis-server answers PING", || {
            self.try_connection()
                .is_some_and(|mut c| redis::cmd("PING").query::<String>(&mut c).is_ok())
        });
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn try_connection(&self) -> Option<redis::Connection> {
        let login = match &self.login {
            Some((user, password)) => format!("{user}:{password}@"),
            None => String::new(),
        };
        let client =
            redis::Client::open(format!("redis://{login}127.0.0.1:{}/", self.port)).ok()?;
        client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()
    }

    pub(crate) fn connection(&self) -> redis::Connection {
        self.try_connection().expect("connect to redis-server")
    }

    /// Every key, sorted.
    pub(crate) fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.connection().keys("*").unwrap();
        keys.sort();
        keys
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// === A publisher built as the engines build theirs ===

pub(crate) struct Publisher {
    child: Tied,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
    /// Its replay socket, as vLLM's, when it has one.
    replay_port: Option<u16>,
}

impl Publisher {
    pub(crate) fn start() -> Publisher {
        Publisher::start_on(None)
    }

    /// With vLLM's replay socket, keeping the last `buffer_steps` batches.
    pub(crate) fn start_with_replay(buffer_steps: usize) -> Publisher {
        Publisher::launch(None, Some(buffer_steps))
    }

    /// On `port`, or a free one.
    fn start_on(port: Option<u16>) -> Publisher {
        Publisher::launch(port, None)
    }

    fn launch(port: Option<u16>, replay: Option<usize>) -> Publisher {
        let python = std::env::var("MATRIXINFER_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/kv_publisher.py");
        let mut child = Command::new(&python)
            .arg(script)
            .args(port.map(|p| p.to_string()))
            .args(
                replay
                    .iter()
                    .flat_map(|n| ["--replay".to_owned(), n.to_string()]),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn_tied();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let port = line
            .strip_prefix("port ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!("{python} did not start the publisher (needs pyzmq and msgspec, which scripts/test installs): {line:?}")
            });
        let replay_port = replay.map(|_| {
            line.clear();
            stdout.read_line(&mut line).unwrap();
            line.strip_prefix("replay ")
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("no replay socket: {line:?}"))
        });
        Publisher {
            child,
            stdin,
            stdout,
            port,
            replay_port,
        }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Its replay socket's endpoint.
    pub(crate) fn replay_endpoint(&self) -> String {
        format!(
            "tcp://127.0.0.1:{}",
            self.replay_port.expect("started with replay")
        )
    }

    fn command(&mut self, command: Value) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the publisher died on {command}");
        line.trim().to_owned()
    }

    /// Publishes one batch: `spec` as in `kv_publisher.py`.
    pub(crate) fn publish(&mut self, spec: Value) {
        assert_eq!(self.command(json!({ "publish": spec })), "ok");
    }

    /// Sends these frames as they are.
    fn frames(&mut self, frames: &[&[u8]]) {
        let hex: Vec<String> = frames
            .iter()
            .map(|f| f.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        assert_eq!(self.command(json!({ "frames": hex })), "ok");
    }

    /// The standardized hash of `tokens`, as Python's hashlib computes it.
    pub(crate) fn std_hash(&mut self, tokens: &[u32]) -> u64 {
        self.command(json!({ "std_hash": tokens })).parse().unwrap()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === The sidecar between them ===

pub(crate) struct Bridge {
    pub(crate) sidecar: Proc,
    _engine: Proc,
}

impl Bridge {
    /// A sidecar for `engine` on the publisher's endpoint, writing to
    /// `redis`, with `extra` flags.
    pub(crate) fn start(
        engine: &str,
        publisher: &Publisher,
        redis: &RedisServer,
        extra: &[&str],
    ) -> Bridge {
        let flavor = if engine == "vllm" {
            "vllm-v1"
        } else {
            "sglang-0.5"
        };
        let simulated = Engine::flavor(flavor).start();
        let endpoint = publisher.endpoint();
        let port = redis.port.to_string();
        let mut sidecar = Sidecar::new(engine, simulated.addr)
            .workers(1)
            .arg("--kv-events-endpoint")
            .arg(&endpoint)
            .arg("--redis-host")
            .arg("127.0.0.1")
            .arg("--redis-port")
            .arg(&port);
        for arg in extra {
            sidecar = sidecar.arg(arg);
        }
        Bridge {
            sidecar: sidecar.start(),
            _engine: simulated,
        }
    }

    /// A vLLM sidecar on the publisher named `tcp://localhost:{port}`, as
    /// in a Pod, writing to `redis`.
    pub(crate) fn on_localhost(port: u16, redis: &RedisServer) -> Bridge {
        let engine = Engine::flavor("vllm-v1").start();
        let sidecar = Sidecar::new("vllm", engine.addr)
            .workers(1)
            .arg("--kv-events-endpoint")
            .arg(&format!("tcp://localhost:{port}"))
            .arg("--redis-host")
            .arg("127.0.0.1")
            .arg("--redis-port")
            .arg(&redis.port.to_string())
            .start();
        Bridge {
            sidecar,
            _engine: engine,
        }
    }

    /// A vLLM sidecar on the publisher's endpoint, with the Redis options
    /// and environment `configure` adds.
    pub(crate) fn start_configured(
        publisher: &Publisher,
        configure: impl FnOnce(Sidecar) -> Sidecar,
    ) -> Bridge {
        let simulated = Engine::flavor("vllm-v1").start();
        let sidecar = Sidecar::new("vllm", simulated.addr)
            .workers(1)
            .arg("--kv-events-endpoint")
            .arg(&publisher.endpoint());
        Bridge {
            sidecar: configure(sidecar).start(),
            _engine: simulated,
        }
    }

    pub(crate) fn metric(&self, series: &str) -> f64 {
        metric(&self.sidecar, series)
    }

    fn written(&self) -> f64 {
        self.metric("matrixinfer_runtime_kv_batches_written_total")
    }

    /// Waits out ZMQ's slow joiner: the SUB socket's subscription reaches
    /// the PUB socket some time after connecting, and what is published
    /// before that is not delivered. Empty batches until one arrives.
    pub(crate) fn warm_up(&self, publisher: &mut Publisher, topic: &str) {
        eventually("the sidecar receives events", || {
            publisher.publish(json!({ "topic": topic, "events": [] }));
            thread::sleep(Duration::from_millis(30));
            self.metric("matrixinfer_runtime_kv_messages_total") >= 1.0
        });
    }

    /// Publishes a batch and waits until it is in Redis.
    pub(crate) fn apply(&self, publisher: &mut Publisher, spec: Value) {
        let before = self.written();
        publisher.publish(spec);
        eventually("the batch is written", || self.written() > before);
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub(crate) fn stored(hashes: Value, tokens: &[u32]) -> Value {
    json!({ "type": "BlockStored", "block_hashes": hashes, "token_ids": tokens })
}

fn removed(hashes: Value) -> Value {
    json!({ "type": "BlockRemoved", "block_hashes": hashes })
}

/// Checks a stored block: the mapping key with the standardized hash and a
/// TTL of a day, and this Pod in the block's hash with a fresh timestamp.
pub(crate) fn assert_block(redis: &RedisServer, engine: &str, engine_hash: &str, std: u64) {
    let mut conn = redis.connection();
    let mapping = format!("{engine}:kv:block:{POD}@{engine_hash}");
    let value: Option<String> = conn.get(&mapping).unwrap();
    assert_eq!(value, Some(std.to_string()), "{mapping}");
    let ttl: i64 = conn.ttl(&mapping).unwrap();
    assert!((86_390..=86_400).contains(&ttl), "{mapping} TTL {ttl}");
    let matrix = format!("matrix:kv:block:{MODEL}@{std}");
    let stamp: Option<i64> = conn.hget(&matrix, POD).unwrap();
    let stamp = stamp.unwrap_or_else(|| panic!("{POD} missing from {matrix}"));
    assert!((now() - stamp).abs() <= 5, "{matrix} {POD} = {stamp}");
}

#[test]
fn hash_vector_matches_an_independent_implementation() {
    let mut publisher = Publisher::start();
    assert_eq!(publisher.std_hash(&[1, 2, 3, 4]), 4233425515844289900);
    assert_eq!(
        matrixinfer_runtime::kv_events::standard_hash(&[1, 2, 3, 4]),
        4233425515844289900
    );
    let tokens: Vec<u32> = (0..64u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
    assert_eq!(
        publisher.std_hash(&tokens),
        matrixinfer_runtime::kv_events::standard_hash(&tokens)
    );
}

#[test]
fn current_vllm_store_remove_clear() {
    let redis = RedisServer::start();
    let mut publisher = Publisher::start();
    let bridge = Bridge::start("vllm", &publisher, &redis, &[]);
    bridge.warm_up(&mut publisher, "kv-events");
    // Another Pod's blocks and another model's, which a clear must keep.
    let mut conn = redis.connection();
    let _: () = conn.set("vllm:kv:block:pod-1.default@7", "1").unwrap();
    let _: () = conn.hset("matrix:kv:block:other-model@1", POD, 5).unwrap();

    let big = u64::MAX - 41; // above i64::MAX: msgpack uint64
    let tokens = [1, 2, 3, 4, 10, 11, 12, 13, 20, 21, 22, 23];
    bridge.apply(
        &mut publisher,
        json!({
            "encoding": "vllm",
            "dp_rank": 0,
            "events": [stored(json!([big, 17, {"bytes": "00ab10ff"}]), &tokens)],
        }),
    );
    let std: Vec<u64> = tokens.chunks(4).map(|t| publisher.std_hash(t)).collect();
    assert_eq!(std[0], 4233425515844289900);
    assert_block(&redis, "vllm", &big.to_string(), std[0]);
    assert_block(&redis, "vllm", "17", std[1]);
    assert_block(&redis, "vllm", "00ab10ff", std[2]);
    // Another Pod holding the same block.
    let _: () = conn
        .hset(
            format!("matrix:kv:block:{MODEL}@{}", std[1]),
            "pod-1.default",
            1,
        )
        .unwrap();

    bridge.apply(
        &mut publisher,
        json!({ "encoding": "vllm", "events": [removed(json!([17]))] }),
    );
    assert!(
        !conn
            .exists::<_, bool>(format!("vllm:kv:block:{POD}@17"))
            .unwrap()
    );
    let holders: Vec<String> = conn
        .hkeys(format!("matrix:kv:block:{MODEL}@{}", std[1]))
        .unwrap();
    assert_eq!(holders, ["pod-1.default"]);
    assert_block(&redis, "vllm", &big.to_string(), std[0]);

    bridge.apply(
        &mut publisher,
        json!({ "encoding": "vllm", "events": [{"type": "AllBlocksCleared"}] }),
    );
    assert_eq!(
        redis.keys(),
        [
            format!("matrix:kv:block:{MODEL}@{}", std[1]),
            "matrix:kv:block:other-model@1".to_owned(),
            "vllm:kv:block:pod-1.default@7".to_owned(),
        ]
    );
    assert_eq!(
        bridge.metric("matrixinfer_runtime_kv_events_total{type=\"BlockStored\"}"),
        1.0
    );
    assert_eq!(
        bridge.metric("matrixinfer_runtime_kv_events_total{type=\"AllBlocksCleared\"}"),
        1.0
    );
    assert_eq!(bridge.metric("matrixinfer_runtime_kv_redis_connected"), 1.0);
    assert!(bridge.metric("matrixinfer_runtime_kv_lag_seconds_count") >= 3.0);
}

#[test]
fn every_engine_encoding() {
    let redis = RedisServer::start();
    // vLLM 0.10/0.11 positional with every trailing field, and vLLM 0.8.
    let mut publisher = Publisher::start();
    let bridge = Bridge::start("vllm", &publisher, &redis, &[]);
    bridge.warm_up(&mut publisher, "kv-events");
    let mut with_trailing = stored(json!([1001, 1002]), &[5, 6, 7, 8]);
    with_trailing["lora_name"] = json!("adapter-a");
    with_trailing["extra_keys"] = json!([["mm-hash", 3], null]);
    with_trailing["group_idx"] = json!(1);
    bridge.apply(
        &mut publisher,
        json!({ "encoding": "vllm-array", "dp_rank": 2, "events": [with_trailing] }),
    );
    bridge.apply(
        &mut publisher,
        json!({ "encoding": "vllm-0.8", "events": [stored(json!([1003]), &[9, 9])] }),
    );
    assert_block(&redis, "vllm", "1001", publisher.std_hash(&[5, 6]));
    assert_block(&redis, "vllm", "1002", publisher.std_hash(&[7, 8]));
    assert_block(&redis, "vllm", "1003", publisher.std_hash(&[9, 9]));
    bridge.apply(
        &mut publisher,
        json!({ "encoding": "vllm-array", "events": [removed(json!([1001]))] }),
    );
    bridge.apply(
        &mut publisher,
        json!({ "encoding": "vllm-0.8", "events": [removed(json!([1003]))] }),
    );
    assert!(
        redis
            .keys()
            .iter()
            .all(|k| !k.ends_with("@1001") && !k.ends_with("@1003"))
    );
    drop(bridge);

    // SGLang 0.5 (optional medium, attn_dp_rank; signed hashes) and 0.4,
    // on SGLang's default topic filter: empty, every topic.
    let mut publisher = Publisher::start();
    let bridge = Bridge::start("sglang", &publisher, &redis, &[]);
    bridge.warm_up(&mut publisher, "");
    let mut with_medium = stored(json!([-8_000_000_000_000_000_000i64, 42]), &[1, 2, 3, 4]);
    with_medium["medium"] = json!("GPU");
    bridge.apply(
        &mut publisher,
        json!({ "encoding": "sglang", "topic": "", "dp_rank": 1, "events": [with_medium] }),
    );
    bridge.apply(
        &mut publisher,
        json!({ "encoding": "sglang-0.4", "topic": "", "events": [stored(json!([43]), &[7; 16])] }),
    );
    assert_block(
        &redis,
        "sglang",
        "-8000000000000000000",
        publisher.std_hash(&[1, 2]),
    );
    assert_block(&redis, "sglang", "42", publisher.std_hash(&[3, 4]));
    assert_block(&redis, "sglang", "43", publisher.std_hash(&[7; 16]));
    bridge.apply(
        &mut publisher,
        json!({ "encoding": "sglang", "topic": "", "events": [removed(json!([-8_000_000_000_000_000_000i64]))] }),
    );
    assert!(
        !redis
            .keys()
            .iter()
            .any(|k| k.ends_with("@-8000000000000000000"))
    );
    let holders: Vec<String> = redis
        .connection()
        .hkeys(format!(
            "matrix:kv:block:{MODEL}@{}",
            publisher.std_hash(&[1, 2])
        ))
        .unwrap();
    assert!(holders.is_empty(), "{holders:?}");
}

#[test]
fn malformed_events_are_skipped_and_counted() {
    let redis = RedisServer::start();
    let mut publisher = Publisher::start();
    let bridge = Bridge::start("vllm", &publisher, &redis, &[]);
    bridge.warm_up(&mut publisher, "kv-events");
    bridge.apply(
        &mut publisher,
        json!({
            "encoding": "vllm-array",
            "events": [
                {"raw": ["BlockStored", "not a list", null, [1, 2]]},
                stored(json!([501]), &[1, 2]),
                {"raw": 42},
                {"raw": ["BlockStored", [502, 503], null, [1, 2, 3], 16, null, "GPU"]},
                {"raw": {"type": "BlockStored", "block_hashes": [504], "token_ids": [[1, 2]]}},
                stored(json!([505]), &[3, 4]),
                {"raw": ["KVCacheCreated", 1]},
            ],
        }),
    );
    assert_block(&redis, "vllm", "501", publisher.std_hash(&[1, 2]));
    assert_block(&redis, "vllm", "505", publisher.std_hash(&[3, 4]));
    assert_eq!(redis.keys().len(), 4, "{:?}", redis.keys());
    assert_eq!(
        bridge.metric("matrixinfer_runtime_kv_decode_errors_total{level=\"event\"}"),
        4.0
    );
    assert_eq!(
        bridge.metric("matrixinfer_runtime_kv_events_total{type=\"other\"}"),
        1.0
    );

    // Whole messages that are not batches: counted, and nothing stops.
    publisher.frames(&[b"kv-events", &1u64.to_be_bytes(), b"\xc1 not msgpack"]);
    publisher.frames(&[b"kv-events", &2u64.to_be_bytes()]);
    publisher.frames(&[b"kv-events", b"seq", b"\x90"]);
    eventually("the bad messages are counted", || {
        bridge.metric("matrixinfer_runtime_kv_decode_errors_total{level=\"batch\"}") == 1.0
            && bridge.metric("matrixinfer_runtime_kv_decode_errors_total{level=\"frames\"}") == 2.0
    });
    bridge.apply(
        &mut publisher,
        json!({ "encoding": "vllm", "events": [removed(json!([501]))] }),
    );
    assert_eq!(redis.keys().len(), 2, "{:?}", redis.keys());
}

#[test]
fn redis_restarted_mid_stream_loses_nothing_buffered() {
    let mut redis = RedisServer::start();
    let mut publisher = Publisher::start();
    let bridge = Bridge::start("vllm", &publisher, &redis, &[]);
    bridge.warm_up(&mut publisher, "kv-events");
    bridge.apply(
        &mut publisher,
        json!({ "events": [stored(json!([1]), &[1, 1])] }),
    );

    redis.stop();
    for hash in 2..=6u32 {
        publisher.publish(json!({ "events": [stored(json!([hash]), &[hash, hash])] }));
    }
    eventually("the writer notices Redis is gone", || {
        bridge.metric("matrixinfer_runtime_kv_redis_errors_total{kind=\"connection\"}") >= 1.0
    });
    // The sidecar keeps serving while Redis is away.
    assert_eq!(get(bridge.sidecar.addr, "/metrics").status, 200);
    assert_eq!(bridge.metric("matrixinfer_runtime_kv_redis_connected"), 0.0);

    redis.restart();
    eventually("the buffered batches are written", || {
        bridge.written() >= 6.0
    });
    for hash in 2..=6u32 {
        assert_block(
            &redis,
            "vllm",
            &hash.to_string(),
            publisher.std_hash(&[hash, hash]),
        );
    }
    assert_eq!(
        bridge.metric("matrixinfer_runtime_kv_batches_dropped_total"),
        0.0
    );
    assert_eq!(bridge.metric("matrixinfer_runtime_kv_batches_queued"), 0.0);
}

#[test]
fn a_full_buffer_drops_and_counts() {
    let mut redis = RedisServer::start();
    let mut publisher = Publisher::start();
    let bridge = Bridge::start("vllm", &publisher, &redis, &["--kv-events-buffer", "2"]);
    bridge.warm_up(&mut publisher, "kv-events");
    redis.stop();
    // The writer holds the first batch, retrying; two wait; two are dropped.
    publisher.publish(json!({ "events": [stored(json!([1]), &[1])] }));
    eventually("the writer holds the first batch", || {
        bridge.metric("matrixinfer_runtime_kv_redis_errors_total{kind=\"connection\"}") >= 1.0
    });
    for hash in 2..=5u32 {
        publisher.publish(json!({ "events": [stored(json!([hash]), &[hash])] }));
    }
    eventually("two batches are dropped", || {
        bridge.metric("matrixinfer_runtime_kv_batches_dropped_total") == 2.0
    });
    redis.restart();
    eventually("the rest is written", || bridge.written() >= 3.0);
    let keys = redis.keys();
    for hash in 1..=3 {
        assert!(
            keys.contains(&format!("vllm:kv:block:{POD}@{hash}")),
            "{keys:?}"
        );
    }
    for hash in 4..=5 {
        assert!(
            !keys.contains(&format!("vllm:kv:block:{POD}@{hash}")),
            "{keys:?}"
        );
    }
}

#[test]
fn wrong_topics_are_ignored() {
    let redis = RedisServer::start();
    let mut publisher = Publisher::start();
    let bridge = Bridge::start("vllm", &publisher, &redis, &[]);
    bridge.warm_up(&mut publisher, "kv-events");
    // ZMQ matches subscriptions by prefix: this one arrives and must be
    // dropped here; "other" is filtered by the publisher already.
    publisher.publish(json!({ "topic": "kv-events-dp1", "events": [stored(json!([1]), &[1])] }));
    publisher.publish(json!({ "topic": "other", "events": [stored(json!([2]), &[2])] }));
    eventually("the prefix match is ignored", || {
        bridge.metric("matrixinfer_runtime_kv_messages_wrong_topic_total") == 1.0
    });
    bridge.apply(
        &mut publisher,
        json!({ "events": [stored(json!([3]), &[3])] }),
    );
    let keys = redis.keys();
    assert!(
        keys.iter()
            .all(|k| !k.ends_with("@1") && !k.ends_with("@2")),
        "{keys:?}"
    );
    assert!(keys.contains(&format!("vllm:kv:block:{POD}@3")), "{keys:?}");
}

#[test]
fn sequence_gaps_are_counted() {
    let redis = RedisServer::start();
    let mut publisher = Publisher::start();
    let bridge = Bridge::start("vllm", &publisher, &redis, &[]);
    bridge.warm_up(&mut publisher, "kv-events");
    bridge.apply(
        &mut publisher,
        json!({ "seq": 100, "events": [stored(json!([1]), &[1])] }),
    );
    let before = bridge.metric("matrixinfer_runtime_kv_sequence_gaps_total");
    bridge.apply(
        &mut publisher,
        json!({ "seq": 101, "events": [stored(json!([2]), &[2])] }),
    );
    bridge.apply(
        &mut publisher,
        json!({ "seq": 105, "events": [stored(json!([3]), &[3])] }),
    );
    assert_eq!(
        bridge.metric("matrixinfer_runtime_kv_sequence_gaps_total") - before,
        3.0
    );
    // An engine restart starts again from zero: not a gap.
    bridge.apply(
        &mut publisher,
        json!({ "seq": 0, "events": [stored(json!([4]), &[4])] }),
    );
    assert_eq!(
        bridge.metric("matrixinfer_runtime_kv_sequence_gaps_total") - before,
        3.0
    );
}

#[test]
fn removal_after_a_sidecar_restart_reads_the_mapping() {
    let redis = RedisServer::start();
    let mut publisher = Publisher::start();
    let bridge = Bridge::start("vllm", &publisher, &redis, &[]);
    bridge.warm_up(&mut publisher, "kv-events");
    bridge.apply(
        &mut publisher,
        json!({ "events": [stored(json!([11, 12]), &[1, 2, 3, 4])] }),
    );
    drop(bridge);

    // A new process remembers nothing: the standardized hash comes from
    // the mapping key.
    let bridge = Bridge::start("vllm", &publisher, &redis, &[]);
    bridge.warm_up(&mut publisher, "kv-events");
    bridge.apply(
        &mut publisher,
        json!({ "events": [removed(json!([11, 999]))] }),
    );
    assert_eq!(
        redis.keys(),
        [
            format!("matrix:kv:block:{MODEL}@{}", publisher.std_hash(&[3, 4])),
            format!("vllm:kv:block:{POD}@12"),
        ]
    );
}

#[test]
fn without_events_redis_is_never_contacted() {
    // Stand-ins that only record who connects: Redis, and an engine
    // endpoint that takes each connection and drops it, so that the bridge
    // keeps reconnecting and never gets an event.
    let counter = || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let peers = Arc::new(std::sync::Mutex::new(Vec::<SocketAddr>::new()));
        let seen = peers.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                seen.lock().unwrap().push(stream.peer_addr().unwrap());
            }
        });
        (addr, peers)
    };
    let (redis_addr, redis_peers) = counter();
    let (events_addr, events_peers) = counter();
    let engine = Engine::flavor("vllm-v1").start();
    let port = redis_addr.port().to_string();
    let mut sidecar = Sidecar::new("vllm", engine.addr)
        .workers(1)
        .arg("--kv-events-endpoint")
        .arg(&format!("tcp://{events_addr}"))
        .env("REDIS_HOST", "127.0.0.1")
        .env("REDIS_PORT", &port)
        .start();
    for _ in 0..3 {
        let scrape = get(sidecar.addr, "/metrics");
        assert_eq!(scrape.status, 200);
        assert!(
            scrape
                .text()
                .contains("matrixinfer_runtime_kv_engine_connected 0")
        );
    }
    eventually("the bridge has tried the engine twice", || {
        events_peers.lock().unwrap().len() >= 2
    });
    // Its whole life, to the end: whatever it would have sent, it has.
    sidecar.terminate();
    assert!(sidecar.wait_exit().success(), "{}", sidecar.log());
    // Connections are accepted in order: once ours is, any earlier is too.
    let sentinel = std::net::TcpStream::connect(redis_addr).unwrap();
    let sentinel = sentinel.local_addr().unwrap();
    eventually("the stand-in Redis accepts the sentinel", || {
        redis_peers.lock().unwrap().contains(&sentinel)
    });
    assert_eq!(
        *redis_peers.lock().unwrap(),
        [sentinel],
        "only the sentinel"
    );

    // Off: no bridge, no bridge metrics.
    let off = Sidecar::new("vllm", engine.addr)
        .workers(1)
        .arg("--no-kv-events")
        .start();
    let text = get(off.addr, "/metrics").text();
    assert!(!text.contains("matrixinfer_runtime_kv_"), "{text}");
    assert!(off.log().contains("KV events: off"), "{}", off.log());
}

/// A publisher named by host, as in a Pod (`localhost`, which is `::1`
/// and `127.0.0.1` while the publisher listens on the latter only), is
/// looked up on a resolver thread of the bridge's own (the engine is
/// named by address here) and dialed by address, every address in turn:
/// no thread of the subscriber runtime's blocking pool looks it up. After
/// an engine restart the bridge finds it again.
#[test]
fn a_publisher_named_by_host_is_dialed_by_address_and_found_again() {
    let redis = RedisServer::start();
    let mut publisher = Publisher::start();
    let port = publisher.port;
    let bridge = Bridge::on_localhost(port, &redis);
    bridge.warm_up(&mut publisher, "kv-events");
    drop(publisher);
    eventually("the sidecar sees the engine go", || {
        bridge.metric("matrixinfer_runtime_kv_engine_connected") == 0.0
    });
    let mut publisher = Publisher::start_on(Some(port));
    let before = bridge.metric("matrixinfer_runtime_kv_messages_total");
    eventually("the sidecar receives the new engine's events", || {
        publisher.publish(json!({ "events": [] }));
        thread::sleep(Duration::from_millis(50));
        bridge.metric("matrixinfer_runtime_kv_messages_total") > before
    });
    bridge.apply(
        &mut publisher,
        json!({ "events": [stored(json!([78]), &[7, 8])] }),
    );
    assert_block(&redis, "vllm", "78", publisher.std_hash(&[7, 8]));
    let tasks = std::fs::read_dir(format!("/proc/{}/task", bridge.sidecar.child.id())).unwrap();
    let names: Vec<String> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    assert!(names.iter().any(|n| n == "kv-dns"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("tokio")), "{names:?}");
}

/// An engine that starts publishing after the sidecar is up, as every
/// Pod's does: while nothing listens, the bridge only probes the
/// publisher's addresses (no zeromq socket per attempt; its warning says
/// so), and it finds the publisher once it listens.
#[test]
fn a_publisher_that_starts_after_the_sidecar_is_found() {
    let redis = RedisServer::start();
    let port = closed_port().port();
    let bridge = Bridge::on_localhost(port, &redis);
    eventually("the bridge reports no publisher yet", || {
        bridge.sidecar.log().contains("KV events: no publisher at")
    });
    assert_eq!(
        bridge.metric("matrixinfer_runtime_kv_engine_connected"),
        0.0
    );
    let mut publisher = Publisher::start_on(Some(port));
    bridge.warm_up(&mut publisher, "kv-events");
    assert_eq!(
        bridge.metric("matrixinfer_runtime_kv_engine_connected"),
        1.0
    );
    bridge.apply(
        &mut publisher,
        json!({ "events": [stored(json!([79]), &[7, 9])] }),
    );
    assert_block(&redis, "vllm", "79", publisher.std_hash(&[7, 9]));
}

/// SIGTERM ends the wait between two rounds of probes at once. The wait
/// blocks the subscriber's thread (one wakeup a round, where a tokio sleep
/// took three or four), and the process joins that thread before it
/// exits: a wait deaf to the signal would hold the exit for up to the
/// probe cap (5 s). The log says when a 5 s wait starts; the signal
/// follows within milliseconds.
#[test]
fn sigterm_ends_the_wait_for_a_publisher() {
    let port = closed_port().port();
    let engine = Engine::flavor("vllm-v1").size("4k").start();
    let mut sidecar = Sidecar::new("vllm", engine.addr)
        .workers(1)
        .arg("--kv-events-endpoint")
        .arg(&format!("tcp://127.0.0.1:{port}"))
        .env(
            "MATRIXINFER_LOG",
            "info,matrixinfer_runtime::kv_events=debug",
        )
        .start();
    eventually("the probes have backed off to 5 s apart", || {
        sidecar.log().contains("KV events: next probe round in 5s")
    });
    let signalled = Instant::now();
    sidecar.terminate();
    let status = sidecar.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", sidecar.log());
    assert!(
        signalled.elapsed() < Duration::from_millis(2500),
        "the exit waited {:?} for the probe's wait to end:\n{}",
        signalled.elapsed(),
        sidecar.log()
    );
}

/// An engine that answers the workers round after round while nothing
/// listens at its KV endpoint has no publisher (vLLM and SGLang bind
/// theirs before their API serves): after three rounds at the 5 s cap the
/// subscriber says so and waits 60 s between rounds. Beside it, a sidecar
/// whose engine does not answer (one that is still loading, say) keeps
/// probing every 5 s.
#[test]
fn an_engine_that_answers_without_a_publisher_is_probed_less_often() {
    let engine = Engine::flavor("vllm-v1").size("4k").start();
    let sidecar = |upstream: SocketAddr| {
        Sidecar::new("vllm", upstream)
            .workers(1)
            .arg("--kv-events-endpoint")
            .arg(&format!("tcp://127.0.0.1:{}", closed_port().port()))
            .env(
                "MATRIXINFER_LOG",
                "info,matrixinfer_runtime::kv_events=debug",
            )
            .start()
    };
    let answered = sidecar(engine.addr);
    let silent = sidecar(closed_port());
    // The waits reach the 5 s cap after 6.2 s; the third round at it
    // switches, at about 16 s.
    let deadline = Instant::now() + Duration::from_secs(22) + patience();
    let said = "KV events: the engine answers but publishes no KV events here";
    while !answered.log().contains(said) {
        assert!(
            Instant::now() < deadline,
            "no change of pace:\n{}",
            answered.log()
        );
        // Prometheus' part: the workers ask the engine.
        assert_eq!(get(answered.addr, "/metrics").status, 200);
        assert_eq!(get(silent.addr, "/metrics").status, 502);
        thread::sleep(Duration::from_millis(500));
    }
    eventually("the next wait is the long one", || {
        answered
            .log()
            .contains("KV events: next probe round in 60s")
    });
    eventually(
        "the other keeps its rounds 5 s apart, three of them",
        || silent.log().matches("next probe round in 5s").count() >= 3,
    );
    let silent_log = silent.log();
    assert!(!silent_log.contains(said), "{silent_log}");
    assert!(
        !silent_log.contains("next probe round in 60s"),
        "{silent_log}"
    );
}

#[test]
fn the_subscriber_reconnects_after_an_engine_restart() {
    let redis = RedisServer::start();
    let mut publisher = Publisher::start();
    let port = publisher.port;
    let bridge = Bridge::start("vllm", &publisher, &redis, &[]);
    bridge.warm_up(&mut publisher, "kv-events");
    drop(publisher);
    eventually("the sidecar sees the engine go", || {
        bridge.metric("matrixinfer_runtime_kv_engine_connected") == 0.0
    });
    let mut publisher = Publisher::start_on(Some(port));
    let before = bridge.metric("matrixinfer_runtime_kv_messages_total");
    eventually("the sidecar receives the new engine's events", || {
        publisher.publish(json!({ "events": [] }));
        thread::sleep(Duration::from_millis(50));
        bridge.metric("matrixinfer_runtime_kv_messages_total") > before
    });
    bridge.apply(
        &mut publisher,
        json!({ "events": [stored(json!([77]), &[7, 7])] }),
    );
    assert_block(&redis, "vllm", "77", publisher.std_hash(&[7, 7]));
    assert_eq!(
        bridge.metric("matrixinfer_runtime_kv_engine_connected"),
        1.0
    );
}
