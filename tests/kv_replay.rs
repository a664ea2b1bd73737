//! KV event replay: a publisher with vLLM's replay buffer and ROUTER
//! socket (`kv_publisher.py --replay`) that leaves chosen batches out of
//! the live stream on purpose, the real sidecar asking for them back, and
//! a real redis-server whose whole contents are compared with those of a
//! run that lost nothing.

use redis::Commands;
use serde_json::{Value, json};

use crate::kv_events::{Bridge, Publisher, RedisServer, stored};
use crate::util::*;

/// One batch of the script, and whether the live stream loses it.
struct Step {
    events: Value,
    lost: bool,
}

fn step(events: Value, lost: bool) -> Step {
    Step { events, lost }
}

fn store(hash: u64) -> Value {
    stored(json!([hash]), &[hash as u32])
}

/// Stores, removals and a clear whose order matters: applied out of
/// order, or without the lost ones, they leave other keys behind.
fn script() -> Vec<Step> {
    vec![
        step(json!([store(101), store(102)]), false),
        step(json!([store(103)]), false),
        step(
            json!([{"type": "BlockRemoved", "block_hashes": [101]}]),
            true,
        ),
        step(json!([store(104), store(105)]), true),
        step(
            json!([{"type": "BlockRemoved", "block_hashes": [103]}]),
            false,
        ),
        step(json!([store(106)]), false),
        step(json!([{"type": "AllBlocksCleared"}]), true),
        step(json!([store(107)]), false),
        step(json!([store(108)]), true),
        step(
            json!([{"type": "BlockRemoved", "block_hashes": [107]}]),
            true,
        ),
        step(json!([store(109)]), false),
    ]
}

/// Every key with its value: strings with whether they expire, hashes
/// with their field names (the values are timestamps of the run).
fn dump(redis: &RedisServer) -> Vec<(String, String)> {
    let mut conn = redis.connection();
    redis
        .keys()
        .into_iter()
        .map(|key| {
            let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).unwrap();
            let value = match kind.as_str() {
                "string" => {
                    let value: String = conn.get(&key).unwrap();
                    let ttl: i64 = conn.ttl(&key).unwrap();
                    format!("{value} (expires: {})", ttl > 0)
                }
                "hash" => {
                    let mut fields: Vec<String> = conn.hkeys(&key).unwrap();
                    fields.sort();
                    format!("fields {fields:?}")
                }
                other => panic!("{key} is a {other}"),
            };
            (key, value)
        })
        .collect()
}

/// A publisher keeping its last `buffer` batches for replay, and a bridge
/// that asks its replay socket for what it missed, warmed up.
fn replaying(buffer: usize) -> (RedisServer, Publisher, Bridge) {
    let redis = RedisServer::start();
    let mut publisher = Publisher::start_with_replay(buffer);
    let replay = publisher.replay_endpoint();
    let bridge = Bridge::start(
        "vllm",
        &publisher,
        &redis,
        &["--kv-events-replay-endpoint", &replay],
    );
    bridge.warm_up(&mut publisher, "kv-events");
    (redis, publisher, bridge)
}

/// Plays the script, losing what it says to lose when `lossy`, and
/// returns Redis's contents once every batch is written.
fn run(lossy: bool) -> (Vec<(String, String)>, Bridge, RedisServer) {
    let (redis, mut publisher, bridge) = replaying(10_000);
    let steps = script();
    for s in &steps {
        let spec = json!({ "events": s.events, "drop": lossy && s.lost });
        if lossy && s.lost {
            publisher.publish(spec);
        } else {
            bridge.apply(&mut publisher, spec);
        }
    }
    let all = steps.len() as f64;
    eventually("every batch is written", || {
        bridge.metric("matrixinfer_runtime_kv_batches_written_total") == all
    });
    (dump(&redis), bridge, redis)
}

#[test]
fn lost_batches_are_replayed_in_order() {
    let (lossless, clean, _redis) = run(false);
    let (recovered, bridge, _redis2) = run(true);
    assert_eq!(recovered, lossless);
    // What the script leaves: 108 and 109, in both indexes.
    let blocks: Vec<&str> = lossless
        .iter()
        .filter_map(|(k, _)| k.strip_prefix("vllm:kv:block:pod-0.default@"))
        .collect();
    assert_eq!(blocks, ["108", "109"]);
    let m = |name: &str| bridge.metric(&format!("matrixinfer_runtime_kv_{name}"));
    // Three gaps (2 + 1 + 2 lost); each replay also returns the live batch
    // that revealed the gap, applied in its place and skipped live.
    assert_eq!(m("sequence_gaps_total"), 5.0);
    assert_eq!(m("replayed_batches_total"), 8.0);
    assert_eq!(m("duplicate_batches_total"), 3.0);
    assert_eq!(m("unrecoverable_batches_total"), 0.0);
    assert_eq!(
        clean.metric("matrixinfer_runtime_kv_replayed_batches_total"),
        0.0
    );
}

#[test]
fn a_replay_buffer_too_short_is_counted_and_the_bridge_goes_on() {
    let (redis, mut publisher, bridge) = replaying(2);
    bridge.apply(&mut publisher, json!({ "events": [store(1)] }));
    for hash in [2, 3, 4] {
        publisher.publish(json!({ "events": [store(hash)], "drop": true }));
    }
    // The buffer holds 4 and 5 only: 2 and 3 are gone.
    bridge.apply(&mut publisher, json!({ "events": [store(5)] }));
    bridge.apply(&mut publisher, json!({ "events": [store(6)] }));
    eventually("6 is written", || {
        bridge.metric("matrixinfer_runtime_kv_batches_written_total") == 4.0
    });
    let mut conn = redis.connection();
    for (hash, held) in [
        (1, true),
        (2, false),
        (3, false),
        (4, true),
        (5, true),
        (6, true),
    ] {
        let key = format!("vllm:kv:block:pod-0.default@{hash}");
        assert_eq!(conn.exists::<_, bool>(&key).unwrap(), held, "{key}");
    }
    let m = |name: &str| bridge.metric(&format!("matrixinfer_runtime_kv_{name}"));
    assert_eq!(m("sequence_gaps_total"), 3.0);
    assert_eq!(m("unrecoverable_batches_total"), 2.0);
    assert_eq!(m("replayed_batches_total"), 2.0);
    assert_eq!(m("duplicate_batches_total"), 1.0);
}

#[test]
fn a_dead_replay_socket_does_not_stall_the_bridge() {
    let redis = RedisServer::start();
    let mut publisher = Publisher::start();
    let dead = format!("tcp://{}", closed_port());
    let bridge = Bridge::start(
        "vllm",
        &publisher,
        &redis,
        &["--kv-events-replay-endpoint", &dead],
    );
    bridge.warm_up(&mut publisher, "kv-events");
    bridge.apply(&mut publisher, json!({ "events": [store(1)] }));
    publisher.publish(json!({ "events": [store(2)], "drop": true }));
    // The replay times out; the live batch is applied after it.
    bridge.apply(&mut publisher, json!({ "events": [store(3)] }));
    bridge.apply(&mut publisher, json!({ "events": [store(4)] }));
    let m = |name: &str| bridge.metric(&format!("matrixinfer_runtime_kv_{name}"));
    assert_eq!(m("unrecoverable_batches_total"), 1.0);
    assert_eq!(m("replayed_batches_total"), 0.0);
    assert_eq!(m("batches_written_total"), 3.0);
}
