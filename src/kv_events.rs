//! KV-cache events into Redis: the engine publishes which blocks of
//! tokens enter and leave its prefix cache; we keep the index a KV-aware
//! router reads to send a prompt to the Pod that already holds its prefix.
//!
//! Two threads of their own, off the workers, so a scrape never waits on
//! an event:
//!
//! - [`subscriber`]: a ZMQ SUB socket on the engine's endpoint (reconnects
//!   for ever), checks the three frames, counts sequence gaps, decodes the
//!   msgpack batch ([`decode`]);
//!   on a gap, asks the engine's replay buffer for what was lost
//!   ([`replay`], vLLM's protocol) when it has one;
//! - [`writer`]: applies each batch to Redis in one pipeline, with the
//!   standardized hash of [`hash`], over a [`connection`] (TCP or TLS,
//!   the default or an ACL user).
//!
//! Between them, a bounded queue: while Redis is away the subscriber keeps
//! reading and batches wait, up to `--kv-events-buffer` batches and
//! [`QUEUE_BYTES`]; beyond that they are dropped and counted. Redis is
//! contacted only once events arrive, so an engine that publishes none
//! never needs it.

pub mod connection;
pub mod decode;
pub mod hash;
mod probe;
mod replay;
mod subscriber;
mod writer;

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::prom::expo;
use crate::shutdown::Shutdown;
use crate::stats::{Histogram, MetricsSection};
use crate::upstream::{EnginePresence, Resolver};

pub use connection::ConnectError;
pub use decode::{Batch, BlockHash, Event, EventKind, decode_batch};
pub use hash::standard_hash;
pub use writer::{Index, RedisTarget, WriteError, Writer};

/// Batches held while Redis is unavailable, at most, in payload bytes.
pub const QUEUE_BYTES: usize = 32 * 1024 * 1024;

/// What the bridge connects to and the keys it writes.
#[derive(Clone, Debug)]
pub struct KvEventsConfig {
    /// The engine's ZMQ endpoint (`tcp://host:port` or `ipc://path`).
    pub endpoint: String,
    /// Exact topic to accept; empty accepts every topic.
    pub topic: String,
    /// The engine's replay socket (vLLM's `replay_endpoint`), asked for
    /// the batches a sequence gap lost.
    pub replay_endpoint: Option<String>,
    /// Where the index lives.
    pub redis: RedisTarget,
    /// The key layout: engine, Pod, model.
    pub index: Index,
    /// Batches held while Redis is unavailable.
    pub buffer: usize,
}

/// The running bridge.
#[derive(Debug)]
pub struct KvEvents {
    stats: Arc<KvStats>,
    threads: Vec<JoinHandle<()>>,
}

/// Why the bridge could not start; each keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The engine's ZMQ endpoint is not one.
    #[error("KV events endpoint {endpoint:?}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What the parser said.
        #[source]
        source: subscriber::EndpointError,
    },
    /// A thread did not start.
    #[error("cannot start the {0} thread")]
    Thread(&'static str, #[source] io::Error),
}

impl KvEvents {
    /// Starts the subscriber and the writer; both stop on `shutdown`, the
    /// writer once what is queued is written (or Redis proves away). A
    /// publisher on the engine's host is looked up by `engine`'s thread;
    /// `presence` says whether the engine answers the workers.
    pub fn start(
        config: KvEventsConfig,
        shutdown: Arc<Shutdown>,
        engine: &Arc<Resolver>,
        presence: Arc<EnginePresence>,
    ) -> Result<KvEvents, StartError> {
        let stats = Arc::new(KvStats::default());
        let (tx, rx) = mpsc::sync_channel(config.buffer.max(1));
        let queue = Queue {
            tx,
            stats: stats.clone(),
        };
        tracing::info!(
            endpoint = %config.endpoint,
            topic = %config.topic,
            replay = config.replay_endpoint.as_deref().unwrap_or("none"),
            redis = %config.redis,
            "KV events: subscribing; Redis is contacted when the first events arrive"
        );
        let writer = Writer::new(&config.redis, config.index, stats.clone(), shutdown.clone());
        // A malformed endpoint is reported by `Subscriber::new`.
        let named = match config.endpoint.parse::<zeromq::Endpoint>() {
            Ok(zeromq::Endpoint::Tcp(zeromq::Host::Domain(host), port)) => {
                let resolver = if host == engine.host() {
                    engine.clone()
                } else {
                    Arc::new(
                        Resolver::start_as("kv-dns", &host, port)
                            .map_err(|e| StartError::Thread("KV publisher lookup", e))?,
                    )
                };
                Some(subscriber::Named { resolver, port })
            }
            _ => None,
        };
        let subscriber = subscriber::Subscriber::new(
            &config.endpoint,
            &config.topic,
            config.replay_endpoint.as_deref(),
            queue,
            named,
            presence,
        )
        .map_err(|(endpoint, source)| StartError::Endpoint { endpoint, source })?;
        let writer = std::thread::Builder::new()
            .name("kv-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StartError::Thread("KV writer", e))?;
        let subscriber = std::thread::Builder::new()
            .name("kv-subscriber".into())
            .spawn(move || subscriber.run(shutdown))
            .map_err(|e| StartError::Thread("KV subscriber", e))?;
        Ok(KvEvents {
            stats,
            threads: vec![subscriber, writer],
        })
    }

    /// Its metrics.
    pub fn stats(&self) -> Arc<KvStats> {
        self.stats.clone()
    }

    /// Waits for both threads to finish.
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// A decoded batch on its way to Redis.
#[derive(Debug)]
pub struct Queued {
    /// The events.
    pub batch: Batch,
    /// Its payload size, charged against [`QUEUE_BYTES`].
    pub bytes: usize,
    /// When it arrived, for the lag of batches without a timestamp.
    pub received: Instant,
}

/// The subscriber's end of the queue.
#[derive(Debug)]
pub struct Queue {
    tx: mpsc::SyncSender<Queued>,
    stats: Arc<KvStats>,
}

impl Queue {
    /// Queues a batch, or drops and counts it when the queue is full.
    pub fn push(&self, item: Queued) -> bool {
        let bytes = item.bytes;
        if self.stats.queued_bytes.load(Relaxed) + bytes > QUEUE_BYTES {
            self.stats.batches_dropped.fetch_add(1, Relaxed);
            return false;
        }
        match self.tx.try_send(item) {
            Ok(()) => {
                self.stats.queued_bytes.fetch_add(bytes, Relaxed);
                self.stats.queued.fetch_add(1, Relaxed);
                true
            }
            Err(_) => {
                self.stats.batches_dropped.fetch_add(1, Relaxed);
                false
            }
        }
    }
}

/// Where decode problems were found.
#[derive(Clone, Copy, Debug)]
pub enum DecodeError {
    /// The ZMQ message: not three frames, or a bad sequence frame.
    Frames = 0,
    /// The payload is not an event batch; the whole message is lost.
    Batch = 1,
    /// One event is not of the expected shape; the rest of its batch is kept.
    Event = 2,
}

const DECODE_ERRORS: [&str; 3] = ["frames", "batch", "event"];

/// Where Redis failed.
#[derive(Clone, Copy, Debug)]
pub enum RedisError {
    /// No connection, or it broke: the batch is retried.
    Connection = 0,
    /// Redis refused one command (e.g. a key of another type): that command
    /// is lost, the rest of the batch written.
    Command = 1,
}

const REDIS_ERRORS: [&str; 2] = ["connection", "command"];

/// Seconds from the engine's batch timestamp to the batch written.
const LAG_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// The bridge's counters, shared by its two threads and rendered with the
/// sidecar's own metrics.
#[derive(Debug)]
pub struct KvStats {
    messages: AtomicU64,
    wrong_topic: AtomicU64,
    seq_gaps: AtomicU64,
    replayed: AtomicU64,
    unrecoverable: AtomicU64,
    duplicates: AtomicU64,
    events: [AtomicU64; 4],
    decode_errors: [AtomicU64; 3],
    batches_written: AtomicU64,
    batches_dropped: AtomicU64,
    queued: AtomicU64,
    queued_bytes: AtomicUsize,
    redis_errors: [AtomicU64; 2],
    redis_up: AtomicU64,
    engine_up: AtomicU64,
    lag: Histogram,
}

impl Default for KvStats {
    fn default() -> Self {
        KvStats {
            messages: AtomicU64::new(0),
            wrong_topic: AtomicU64::new(0),
            seq_gaps: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            unrecoverable: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            events: Default::default(),
            decode_errors: Default::default(),
            batches_written: AtomicU64::new(0),
            batches_dropped: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            queued_bytes: AtomicUsize::new(0),
            redis_errors: Default::default(),
            redis_up: AtomicU64::new(0),
            engine_up: AtomicU64::new(0),
            lag: Histogram::new(&LAG_BUCKETS),
        }
    }
}

impl KvStats {
    /// Counts a message accepted from the engine.
    pub fn message(&self) {
        self.messages.fetch_add(1, Relaxed);
    }

    /// Counts a message on another topic.
    pub fn wrong_topic(&self) {
        self.wrong_topic.fetch_add(1, Relaxed);
    }

    /// Counts sequence numbers that never arrived.
    pub fn seq_gap(&self, missed: u64) {
        self.seq_gaps.fetch_add(missed, Relaxed);
    }

    /// Counts batches the replay buffer gave back and that were applied.
    pub fn replayed(&self, n: u64) {
        self.replayed.fetch_add(n, Relaxed);
    }

    /// Counts lost batches the replay buffer could not give back.
    pub fn unrecoverable(&self, n: u64) {
        self.unrecoverable.fetch_add(n, Relaxed);
    }

    /// Counts batches skipped because a replay had applied them already.
    pub fn duplicates(&self, n: u64) {
        self.duplicates.fetch_add(n, Relaxed);
    }

    /// Counts decoded events.
    pub fn events(&self, kind: EventKind, n: u64) {
        self.events[kind as usize].fetch_add(n, Relaxed);
    }

    /// Counts decode problems.
    pub fn decode_errors(&self, at: DecodeError, n: u64) {
        self.decode_errors[at as usize].fetch_add(n, Relaxed);
    }

    /// A batch left the queue.
    pub fn dequeued(&self, bytes: usize) {
        self.queued.fetch_sub(1, Relaxed);
        self.queued_bytes.fetch_sub(bytes, Relaxed);
    }

    /// Counts batches lost for good.
    pub fn dropped(&self, n: u64) {
        self.batches_dropped.fetch_add(n, Relaxed);
    }

    /// A batch is in Redis; `lag` since the engine made it.
    pub fn written(&self, lag: Duration) {
        self.batches_written.fetch_add(1, Relaxed);
        self.lag.observe(lag);
    }

    /// Counts Redis failures.
    pub fn redis_errors(&self, at: RedisError, n: u64) {
        self.redis_errors[at as usize].fetch_add(n, Relaxed);
    }

    /// Whether the writer holds a Redis connection.
    pub fn set_redis_up(&self, up: bool) {
        self.redis_up.store(u64::from(up), Relaxed);
    }

    /// Whether the subscriber is connected to the engine.
    pub fn set_engine_up(&self, up: bool) {
        self.engine_up.store(u64::from(up), Relaxed);
    }

    /// Batches written so far.
    pub fn batches_written(&self) -> u64 {
        self.batches_written.load(Relaxed)
    }
}

impl MetricsSection for KvStats {
    fn render(&self, out: &mut Vec<u8>) {
        let counter = |out: &mut Vec<u8>, name: &str, help: &str, value: &AtomicU64| {
            expo::header(out, name, "counter", help);
            expo::sample(out, name, &[], value.load(Relaxed));
        };
        let gauge = |out: &mut Vec<u8>, name: &str, help: &str, value: u64| {
            expo::header(out, name, "gauge", help);
            expo::sample(out, name, &[], value);
        };
        gauge(
            out,
            "matrixinfer_runtime_kv_engine_connected",
            "Whether the KV event subscriber is connected to the engine.",
            self.engine_up.load(Relaxed),
        );
        counter(
            out,
            "matrixinfer_runtime_kv_messages_total",
            "KV event messages received from the engine on the expected topic.",
            &self.messages,
        );
        counter(
            out,
            "matrixinfer_runtime_kv_messages_wrong_topic_total",
            "KV event messages ignored for their topic.",
            &self.wrong_topic,
        );
        counter(
            out,
            "matrixinfer_runtime_kv_sequence_gaps_total",
            "KV event messages the engine numbered but that never arrived.",
            &self.seq_gaps,
        );
        counter(
            out,
            "matrixinfer_runtime_kv_replayed_batches_total",
            "KV event batches lost from the live stream, then applied from the engine's replay buffer.",
            &self.replayed,
        );
        counter(
            out,
            "matrixinfer_runtime_kv_unrecoverable_batches_total",
            "KV event batches lost from the live stream that no replay gave back (none configured, buffer too short, replay failed).",
            &self.unrecoverable,
        );
        counter(
            out,
            "matrixinfer_runtime_kv_duplicate_batches_total",
            "KV event batches skipped because a replay had applied them already.",
            &self.duplicates,
        );
        let name = "matrixinfer_runtime_kv_events_total";
        expo::header(out, name, "counter", "KV events decoded, by type.");
        for kind in EventKind::ALL {
            let value = self.events[kind as usize].load(Relaxed);
            expo::sample(out, name, &[("type", kind.label())], value);
        }
        let name = "matrixinfer_runtime_kv_decode_errors_total";
        expo::header(
            out,
            name,
            "counter",
            "KV event messages, batches or single events that could not be decoded, by level.",
        );
        for (i, level) in DECODE_ERRORS.iter().enumerate() {
            let value = self.decode_errors[i].load(Relaxed);
            expo::sample(out, name, &[("level", level)], value);
        }
        counter(
            out,
            "matrixinfer_runtime_kv_batches_written_total",
            "KV event batches written to Redis.",
            &self.batches_written,
        );
        counter(
            out,
            "matrixinfer_runtime_kv_batches_dropped_total",
            "KV event batches dropped because the queue to Redis was full.",
            &self.batches_dropped,
        );
        gauge(
            out,
            "matrixinfer_runtime_kv_batches_queued",
            "KV event batches waiting for Redis.",
            self.queued.load(Relaxed),
        );
        gauge(
            out,
            "matrixinfer_runtime_kv_redis_connected",
            "Whether the KV event writer holds a Redis connection.",
            self.redis_up.load(Relaxed),
        );
        let name = "matrixinfer_runtime_kv_redis_errors_total";
        expo::header(
            out,
            name,
            "counter",
            "Redis failures: connection (batch retried) or command (that command lost).",
        );
        for (i, kind) in REDIS_ERRORS.iter().enumerate() {
            let value = self.redis_errors[i].load(Relaxed);
            expo::sample(out, name, &[("kind", kind)], value);
        }
        let name = "matrixinfer_runtime_kv_lag_seconds";
        expo::header(
            out,
            name,
            "histogram",
            "Time from the engine's batch timestamp to the batch written to Redis.",
        );
        self.lag.render(out, name, &[]);
    }
}

/// Lets a repeated warning through at most once per interval, saying how
/// many were held back, so a flapping peer cannot flood the log.
#[derive(Debug)]
struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            held: 0,
        }
    }

    /// `Some(held back since the last one)` when this one may be logged.
    fn check(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last < self.every) {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

/// Shown in logs as a URL without the password:
/// `rediss://user@host:port/db`.
impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        write!(f, "{scheme}://")?;
        if let Some(user) = &self.username {
            write!(f, "{user}@")?;
        }
        write!(f, "{}/{}", self.addr(), self.db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_holds_back_repeats() {
        let mut throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.check(), Some(0));
        assert_eq!(throttle.check(), None);
        assert_eq!(throttle.check(), None);
        throttle.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(throttle.check(), Some(2));
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let stats = Arc::new(KvStats::default());
        let (tx, rx) = mpsc::sync_channel(2);
        let queue = Queue {
            tx,
            stats: stats.clone(),
        };
        let item = |bytes| Queued {
            batch: Batch::default(),
            bytes,
            received: Instant::now(),
        };
        assert!(queue.push(item(10)));
        assert!(queue.push(item(10)));
        assert!(!queue.push(item(10)));
        assert!(!queue.push(item(QUEUE_BYTES)));
        assert_eq!(stats.batches_dropped.load(Relaxed), 2);
        assert_eq!(stats.queued.load(Relaxed), 2);
        let first = rx.recv().unwrap();
        stats.dequeued(first.bytes);
        assert_eq!(stats.queued_bytes.load(Relaxed), 10);
    }
}
