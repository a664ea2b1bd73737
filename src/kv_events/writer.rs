//! The Redis side of the bridge: each batch applied in one pipeline, with
//! the keys the Python sidecar writes, so the router reads the same index.
//!
//! - block stored: `SET {engine}:kv:block:{pod}@{engine_hash} <std>` with a
//!   TTL of 86400 s (as `SET … EX`: the same key, value and TTL as `SET`
//!   then `EXPIRE`, without a moment where the key has no TTL), and
//!   `HSET matrix:kv:block:{model}@{std} {pod} <unix seconds>`;
//! - block removed: its standardized hash from memory, else from the
//!   mapping key (`MGET`, one round trip for the batch), then `HDEL` of
//!   this Pod's field and `DEL` of the mapping key;
//! - all blocks cleared: `SCAN` for both key patterns of this Pod and
//!   model, removing the same way.
//!
//! A batch is retried whole when the connection fails (every command is
//! idempotent); a command Redis refuses is counted and the rest written.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::RedisResult;

use super::connection::{ConnectError, RedisConnection};
use super::{Event, KvStats, Queued, RedisError, Throttle, standard_hash};
use crate::engine::Engine;
use crate::errors;
use crate::kv_events::BlockHash;
use crate::net::RetryPolicy;
use crate::secret::Secret;
use crate::shutdown::Shutdown;

/// Seconds a block's mapping key lives.
pub const BLOCK_TTL: u64 = 86_400;

/// Standardized hashes remembered for removals; beyond it the memory is
/// emptied and removals read the mapping keys instead.
const KNOWN_MAX: usize = 1 << 18;

/// Keys per `SCAN` step.
const SCAN_COUNT: usize = 500;

/// Connect, read and write timeout of every Redis call.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// Where Redis is and how to log in (`REDIS_URL`, or `REDIS_HOST`,
/// `REDIS_PORT`, `REDIS_DB`; `REDIS_TLS`, `REDIS_USERNAME`,
/// `REDIS_PASSWORD`). Shown (`Display`) as a URL without the password.
#[derive(Clone, Debug)]
pub struct RedisTarget {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database number.
    pub db: i64,
    /// TLS, trusting what every outbound HTTPS call trusts.
    pub tls: bool,
    /// ACL user (`AUTH user password`); none: the default user.
    pub username: Option<String>,
    /// `AUTH` password, if any.
    pub password: Option<Secret>,
}

impl RedisTarget {
    /// `host:port` (IPv6 addresses in brackets).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why a batch (or part of it) did not reach Redis: it is retried.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No connection.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection broke, or Redis refused a whole command.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

impl WriteError {
    /// The cause chain on one line, for the log.
    fn describe(&self) -> String {
        match self {
            WriteError::Connect(e) => errors::chain(e),
            // Its sources repeat its own message.
            WriteError::Redis(e) => e.to_string(),
        }
    }
}

/// The key layout of one Pod's part of the index.
#[derive(Clone, Debug)]
pub struct Index {
    /// The engine, as it names mapping keys.
    pub engine: Engine,
    /// Pod identity (`--pod`).
    pub pod: String,
    /// Model name (`--model`).
    pub model: String,
}

impl Index {
    /// Engine hash → standardized hash, per Pod.
    pub fn mapping_key(&self, hash: &BlockHash) -> String {
        format!("{}:kv:block:{}@{hash}", self.engine.as_str(), self.pod)
    }

    /// Standardized hash → the Pods holding the block, per model.
    pub fn matrix_key(&self, std: u64) -> String {
        format!("matrix:kv:block:{}@{std}", self.model)
    }

    fn mapping_pattern(&self) -> String {
        format!(
            "{}:kv:block:{}@*",
            self.engine.as_str(),
            glob_escape(&self.pod)
        )
    }

    fn matrix_pattern(&self) -> String {
        format!("matrix:kv:block:{}@*", glob_escape(&self.model))
    }
}

/// `SCAN MATCH` treats `*?[]\` specially; a Pod or model name is literal.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Applies batches to Redis.
pub struct Writer {
    target: RedisTarget,
    /// The target as logged.
    shown: String,
    conn: Option<RedisConnection>,
    index: Index,
    /// Engine hash → standardized hash of the blocks stored, for removals.
    known: HashMap<BlockHash, u64>,
    stats: Arc<KvStats>,
    shutdown: Arc<Shutdown>,
    warnings: Throttle,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("target", &self.shown)
            .field("index", &self.index)
            .field("known", &self.known.len())
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// A writer for `target`; it connects when it first has work.
    pub fn new(
        target: &RedisTarget,
        index: Index,
        stats: Arc<KvStats>,
        shutdown: Arc<Shutdown>,
    ) -> Writer {
        Writer {
            target: target.clone(),
            shown: target.to_string(),
            conn: None,
            index,
            known: HashMap::new(),
            stats,
            shutdown,
            warnings: Throttle::new(Duration::from_secs(30)),
        }
    }

    /// Writes batches until the subscriber stops; retries a batch while
    /// Redis is away (the subscriber queues, then drops, what follows).
    pub fn run(mut self, batches: Receiver<Queued>) {
        let retry = RetryPolicy {
            attempts: u32::MAX,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        };
        while let Ok(item) = batches.recv() {
            self.stats.dequeued(item.bytes);
            let mut done = 0;
            let mut failures = 0;
            while let Err(e) = self.apply(&item.batch.events, &mut done) {
                self.disconnect();
                self.stats.redis_errors(RedisError::Connection, 1);
                failures += 1;
                if let Some(held) = self.warnings.check() {
                    tracing::warn!(
                        redis = %self.shown,
                        repeats = held,
                        "KV events: Redis unavailable ({}); batches wait, then are dropped, until it is back",
                        e.describe()
                    );
                }
                if self.shutdown.is_triggered()
                    || self.shutdown.wait_timeout(retry.backoff(failures))
                {
                    let lost = 1 + batches.try_iter().count() as u64;
                    self.stats.dropped(lost);
                    tracing::warn!(
                        batches = lost,
                        "KV events: stopping with Redis unavailable; batches lost"
                    );
                    return;
                }
            }
            if failures > 0 {
                tracing::info!(redis = %self.shown, "KV events: Redis is back");
            }
            self.stats.written(lag(&item));
        }
    }

    /// Applies `events[*done..]`, advancing `done` past what is written, so
    /// that a retry after a failure resumes at the first unwritten part.
    pub fn apply(&mut self, events: &[Event], done: &mut usize) -> Result<(), WriteError> {
        while *done < events.len() {
            let rest = &events[*done..];
            if rest[0] == Event::Cleared {
                self.clear_all()?;
                *done += 1;
                continue;
            }
            let run = rest
                .iter()
                .position(|e| *e == Event::Cleared)
                .unwrap_or(rest.len());
            self.apply_run(&rest[..run])?;
            *done += run;
        }
        Ok(())
    }

    fn connection(&mut self) -> Result<&mut RedisConnection, WriteError> {
        if self.conn.is_none() {
            let conn = RedisConnection::connect(&self.target, REDIS_TIMEOUT)?;
            tracing::info!(redis = %self.shown, "KV events: connected to Redis");
            self.stats.set_redis_up(true);
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    fn disconnect(&mut self) {
        self.conn = None;
        self.stats.set_redis_up(false);
    }

    /// Stores and removals, without a clear among them: one pipeline.
    fn apply_run(&mut self, events: &[Event]) -> Result<(), WriteError> {
        let fetched = self.fetch_unknown(events)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // What this run changes, kept apart until Redis has it: a failed
        // run is retried from what was known before it.
        let mut changes: HashMap<&BlockHash, Option<u64>> = HashMap::new();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for event in events {
            match event {
                Event::Stored { hashes, token_ids } => {
                    if hashes.is_empty() {
                        continue;
                    }
                    let per_block = token_ids.len() / hashes.len();
                    for (hash, tokens) in hashes.iter().zip(token_ids.chunks_exact(per_block)) {
                        let std = standard_hash(tokens);
                        pipe.set_ex(self.index.mapping_key(hash), std, BLOCK_TTL);
                        pipe.hset(self.index.matrix_key(std), &self.index.pod, now);
                        changes.insert(hash, Some(std));
                    }
                }
                Event::Removed { hashes } => {
                    for hash in hashes {
                        let std = match changes.get(hash) {
                            Some(std) => *std,
                            None => self.known.get(hash).or(fetched.get(hash)).copied(),
                        };
                        if let Some(std) = std {
                            pipe.hdel(self.index.matrix_key(std), &self.index.pod);
                        }
                        pipe.del(self.index.mapping_key(hash));
                        changes.insert(hash, None);
                    }
                }
                Event::Cleared => unreachable!("runs end at a clear"),
            }
        }
        self.execute(&pipe)?;
        for (hash, std) in changes {
            match std {
                Some(std) => {
                    if self.known.len() >= KNOWN_MAX && !self.known.contains_key(hash) {
                        self.known.clear();
                    }
                    self.known.insert(hash.clone(), std);
                }
                None => {
                    self.known.remove(hash);
                }
            }
        }
        Ok(())
    }

    /// The standardized hashes of removed blocks we do not remember, from
    /// their mapping keys (written by an earlier run of the sidecar, or
    /// forgotten to bound memory).
    fn fetch_unknown<'e>(
        &mut self,
        events: &'e [Event],
    ) -> Result<HashMap<&'e BlockHash, u64>, WriteError> {
        let mut unknown: Vec<&BlockHash> = Vec::new();
        for event in events {
            if let Event::Removed { hashes } = event {
                unknown.extend(hashes.iter().filter(|h| !self.known.contains_key(*h)));
            }
        }
        if unknown.is_empty() {
            return Ok(HashMap::new());
        }
        let keys: Vec<String> = unknown.iter().map(|h| self.index.mapping_key(h)).collect();
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query(self.connection()?)?;
        Ok(unknown
            .into_iter()
            .zip(values)
            .filter_map(|(hash, value)| Some((hash, value?.parse().ok()?)))
            .collect())
    }

    /// Removes this Pod from every block of the model, and every mapping
    /// key of the Pod.
    fn clear_all(&mut self) -> Result<(), WriteError> {
        let pod = self.index.pod.clone();
        self.scan_apply(&self.index.matrix_pattern(), |pipe, key| {
            pipe.hdel(key, &pod);
        })?;
        self.scan_apply(&self.index.mapping_pattern(), |pipe, key| {
            pipe.del(key);
        })?;
        self.known.clear();
        Ok(())
    }

    fn scan_apply(
        &mut self,
        pattern: &str,
        mut per_key: impl FnMut(&mut redis::Pipeline, &[u8]),
    ) -> Result<(), WriteError> {
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query(self.connection()?)?;
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for key in &keys {
                per_key(&mut pipe, key);
            }
            self.execute(&pipe)?;
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Sends a pipeline made with `ignore_errors` (so one refused command
    /// does not hide the others' replies); counts the refused ones.
    fn execute(&mut self, pipe: &redis::Pipeline) -> Result<(), WriteError> {
        if pipe.is_empty() {
            return Ok(());
        }
        let replies: Vec<RedisResult<redis::Value>> = pipe.query(self.connection()?)?;
        let refused: Vec<_> = replies.into_iter().filter_map(Result::err).collect();
        if let Some(first) = refused.first() {
            self.stats
                .redis_errors(RedisError::Command, refused.len() as u64);
            if let Some(held) = self.warnings.check() {
                tracing::warn!(
                    commands = refused.len(),
                    repeats = held,
                    "KV events: Redis refused commands: {first}"
                );
            }
        }
        Ok(())
    }
}

/// From the engine's timestamp when it gave one, else from arrival.
fn lag(item: &Queued) -> Duration {
    let engine_ts = item.batch.ts.and_then(|ts| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        Duration::try_from_secs_f64(now - ts).ok()
    });
    engine_ts.unwrap_or_else(|| item.received.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let index = Index {
            engine: Engine::Sglang,
            pod: "pod-0.ns".into(),
            model: "meta/llama*[1]".into(),
        };
        assert_eq!(
            index.mapping_key(&BlockHash::Int(-3)),
            "sglang:kv:block:pod-0.ns@-3"
        );
        assert_eq!(index.matrix_key(42), "matrix:kv:block:meta/llama*[1]@42");
        assert_eq!(
            index.matrix_pattern(),
            "matrix:kv:block:meta/llama\\*\\[1\\]@*"
        );
        assert_eq!(index.mapping_pattern(), "sglang:kv:block:pod-0.ns@*");
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let target = RedisTarget {
            host: "redis".into(),
            port: 6379,
            db: 0,
            tls: true,
            username: Some("kv".into()),
            password: Some(Secret::new("hunter2")),
        };
        let shown = format!("{target:?} {target}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(target.to_string(), "rediss://kv@redis:6379/0");
    }
}
