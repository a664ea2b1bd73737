//! The ZMQ side of the bridge: a SUB socket on the engine's publisher.
//!
//! Messages are three frames, `[topic, seq, payload]`: the topic must
//! equal the filter when one is set (ZMQ itself matches prefixes only),
//! `seq` is a big-endian u64 that grows by one per message (a jump is
//! counted as that many lost messages; a step back means the engine
//! restarted), and the payload is a msgpack batch ([`super::decode`]).
//!
//! With a replay endpoint ([`super::replay`]), a gap is filled before
//! the message that revealed it is applied: every batch the engine's
//! buffer still holds from the first missed one on is applied in order,
//! then the live stream goes on, its batches the replay already applied
//! skipped as duplicates. Meanwhile the live socket is not read, so what
//! arrives waits in it (and in the engine's high-water mark) rather than
//! overtaking older batches. Sequence numbers the buffer no longer holds,
//! or a replay that fails or times out, are counted as unrecoverable.
//! The gap counter counts what the live stream lost either way.
//!
//! The socket runs on a current-thread tokio runtime of its own (the
//! runtime the zeromq crate drives its I/O with). It connects for ever:
//! while the engine is not up yet, and again after it restarts. A host
//! name is looked up on a resolver thread ([`Resolver`], the engine's when
//! the publisher is on the engine's host) and the socket dials the
//! address: left to zeromq, every attempt would look the name up on a
//! blocking-pool thread that lingers. Each attempt gives up after
//! [`CONNECT_PATIENCE`], so that every address gets its turn and a name
//! that moved is looked up again.
//!
//! Until a publisher listens, its addresses are probed ([`super::probe`]).

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use zeromq::{Socket, SocketEvent, SocketOptions, SocketRecv, SubSocket, ZmqMessage};

use super::probe::{ENGINE_UP_CAP, Pace, listening};
use super::replay::{Replay, ReplayError};
use super::{DecodeError, KvStats, Queue, Queued, Throttle, decode_batch};
use crate::shutdown::Shutdown;
use crate::upstream::{EnginePresence, Resolver};

/// How long one attempt to reach one of the publisher's addresses may
/// take (zeromq retries a refused connection inside it, backing off from
/// 50 ms) before the next address is tried.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(2);

/// How often, at most, the publisher's name is looked up again while
/// nothing listens at its addresses.
const LOOKUP_EVERY: Duration = Duration::from_secs(10);

/// One address to dial.
#[derive(Debug)]
struct Candidate {
    /// The zeromq endpoint.
    endpoint: String,
    /// The address the name resolved to, when the endpoint names a host.
    ip: Option<IpAddr>,
    /// Where to probe first: any TCP endpoint.
    probe: Option<SocketAddr>,
}

/// A publisher named by host, and the resolver that looks the name up.
#[derive(Debug)]
pub struct Named {
    /// Looks the host up, off this thread.
    pub resolver: Arc<Resolver>,
    /// The publisher's port.
    pub port: u16,
}

/// Reads the engine's KV event stream and queues the batches.
#[derive(Debug)]
pub struct Subscriber {
    endpoint: String,
    /// Set when `endpoint` names a host rather than an address.
    named: Option<Named>,
    topic: String,
    queue: Queue,
    stats: Arc<KvStats>,
    last_seq: Option<u64>,
    /// The engine's replay socket, if it has one.
    replay: Option<String>,
    /// Sequence numbers the last replay applied, which the live stream
    /// still has to deliver (and which are then skipped).
    replayed: Option<RangeInclusive<u64>>,
    warnings: Throttle,
    /// Whether the engine answers the workers.
    engine: Arc<EnginePresence>,
}

/// Why an endpoint is not one (zeromq does not export the type's name).
pub type EndpointError = <zeromq::Endpoint as std::str::FromStr>::Err;

impl Subscriber {
    /// Checks the endpoints' syntax (`Err` names the bad one); connects
    /// only in [`Subscriber::run`], to the replay endpoint only on a gap.
    pub fn new(
        endpoint: &str,
        topic: &str,
        replay: Option<&str>,
        queue: Queue,
        named: Option<Named>,
        engine: Arc<EnginePresence>,
    ) -> Result<Subscriber, (String, EndpointError)> {
        for endpoint in std::iter::once(endpoint).chain(replay) {
            endpoint
                .parse::<zeromq::Endpoint>()
                .map_err(|e| (endpoint.to_owned(), e))?;
        }
        Ok(Subscriber {
            endpoint: endpoint.to_owned(),
            named,
            topic: topic.to_owned(),
            stats: queue.stats.clone(),
            queue,
            last_seq: None,
            replay: replay.map(str::to_owned),
            replayed: None,
            warnings: Throttle::new(Duration::from_secs(30)),
            engine,
        })
    }

    /// Runs until `shutdown`.
    pub fn run(mut self, shutdown: Arc<Shutdown>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            // The replay socket's name lookups run on the blocking pool;
            // its thread need not outlive them by long.
            .thread_keep_alive(Duration::from_secs(1))
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!("KV events: cannot start the subscriber's runtime: {e}");
                return;
            }
        };
        runtime.block_on(async {
            tokio::select! {
                () = async { loop { self.subscribe(&shutdown).await } } => {}
                () = shutdown.wait() => {}
            }
        });
        self.stats.set_engine_up(false);
    }

    /// Connects and reads; returns when the publisher's name has moved to
    /// other addresses while it was away.
    async fn subscribe(&mut self, shutdown: &Shutdown) {
        // The monitor reports this first connection too.
        let (mut socket, mut events, dialed) = self.connect(shutdown).await;
        // The socket reconnects by itself from here on, to the address it
        // dialed; after a disconnection the name is looked up again, and
        // the socket is replaced if the address is no longer among it.
        let mut recheck: Option<tokio::time::Instant> = None;
        loop {
            let due =
                recheck.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                message = socket.recv() => match message {
                    Ok(message) => self.handle(message).await,
                    Err(e) => {
                        tracing::debug!("KV events: receive failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(event) = events.next() => {
                    if matches!(event, SocketEvent::Disconnected(_))
                        && let Some(named) = &self.named
                    {
                        named.resolver.refresh();
                        recheck = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    }
                    self.connection_event(event);
                }
                () = tokio::time::sleep_until(due), if recheck.is_some() => {
                    recheck = None;
                    if let (Some(named), Some(ip)) = (&self.named, dialed)
                        && let Ok(addrs) = named.resolver.addresses()
                        && !addrs.iter().any(|a| a.ip() == ip)
                    {
                        tracing::info!(
                            endpoint = %self.endpoint,
                            "KV events: the publisher's name moved from {ip}; dialing it again"
                        );
                        return;
                    }
                }
            }
        }
    }

    /// The endpoints to dial: the one given, or for a host name one per
    /// address it resolves to now (`localhost` is `::1` and `127.0.0.1`,
    /// and a publisher may listen on only one of them).
    fn dial(&self) -> Result<Vec<Candidate>, String> {
        let Some(Named { resolver, port }) = &self.named else {
            let probe = match self.endpoint.parse::<zeromq::Endpoint>() {
                Ok(zeromq::Endpoint::Tcp(zeromq::Host::Ipv4(ip), port)) => {
                    Some(SocketAddr::new(ip.into(), port))
                }
                Ok(zeromq::Endpoint::Tcp(zeromq::Host::Ipv6(ip), port)) => {
                    Some(SocketAddr::new(ip.into(), port))
                }
                _ => None,
            };
            return Ok(vec![Candidate {
                endpoint: self.endpoint.clone(),
                ip: None,
                probe,
            }]);
        };
        let mut ips: Vec<IpAddr> = Vec::new();
        for addr in resolver.addresses()?.iter() {
            if !ips.contains(&addr.ip()) {
                ips.push(addr.ip());
            }
        }
        Ok(ips
            .into_iter()
            .map(|ip| {
                let endpoint = match ip {
                    IpAddr::V4(v4) => format!("tcp://{v4}:{port}"),
                    IpAddr::V6(v6) => format!("tcp://[{v6}]:{port}"),
                };
                Candidate {
                    endpoint,
                    ip: Some(ip),
                    probe: Some(SocketAddr::new(ip, *port)),
                }
            })
            .collect())
    }

    /// The first connection, tried until it succeeds: every address in
    /// turn (a TCP one only once a probe finds it listening), each for up
    /// to [`CONNECT_PATIENCE`], then again after a backoff growing to
    /// [`super::probe::PROBE_CAP`]; the name is looked up again every [`LOOKUP_EVERY`].
    /// Pends for ever once `shutdown` is triggered (the caller races it).
    async fn connect(
        &mut self,
        shutdown: &Shutdown,
    ) -> (
        SubSocket,
        impl Stream<Item = SocketEvent> + Unpin + use<>,
        Option<IpAddr>,
    ) {
        // At start the name's first lookup is under way: wait for it here
        // (this thread has nothing else to do) rather than warn that the
        // name does not resolve yet, which would also hold back the next
        // warning, the one that says nothing listens, for 30 s.
        if let Some(named) = &self.named {
            let _ = named.resolver.wait_first(CONNECT_PATIENCE);
        }
        let mut pace = Pace::default();
        let mut looked_up = Instant::now();
        loop {
            let candidates = self.dial().unwrap_or_else(|e| {
                if let Some(held) = self.warnings.check() {
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        repeats = held,
                        "KV events: the publisher's host does not resolve yet ({e}); retrying"
                    );
                }
                Vec::new()
            });
            for Candidate {
                endpoint,
                ip,
                probe,
            } in candidates
            {
                if let Some(addr) = probe
                    && let Err(e) = listening(addr, CONNECT_PATIENCE).await
                {
                    if let Some(held) = self.warnings.check() {
                        tracing::warn!(
                            endpoint = %self.endpoint,
                            repeats = held,
                            "KV events: no publisher at {endpoint} yet ({e}); retrying"
                        );
                    }
                    continue;
                }
                let mut options = SocketOptions::default();
                // Connection refused is retried inside `connect`, backing
                // off, for up to its patience.
                options.connect_timeout(CONNECT_PATIENCE);
                let mut socket = SubSocket::with_options(options);
                let events = socket.monitor();
                let connected = match socket.subscribe(&self.topic).await {
                    Ok(()) => socket.connect(&endpoint).await,
                    Err(e) => Err(e),
                };
                match connected {
                    Ok(()) => return (socket, events, ip),
                    Err(e) => {
                        if let Some(held) = self.warnings.check() {
                            tracing::warn!(
                                endpoint = %self.endpoint,
                                repeats = held,
                                "KV events: cannot connect to the engine at {endpoint} ({e}); retrying"
                            );
                        }
                    }
                }
            }
            if let Some(named) = &self.named
                && looked_up.elapsed() >= LOOKUP_EVERY
            {
                named.resolver.refresh();
                looked_up = Instant::now();
            }
            let (wait, no_publisher) = pace.after_round(self.engine.answering());
            if no_publisher {
                tracing::info!(
                    endpoint = %self.endpoint,
                    "KV events: the engine answers but publishes no KV events here; \
                     looking for a publisher every {ENGINE_UP_CAP:?} while it does"
                );
            }
            // The wait blocks this thread rather than sleeping on tokio's
            // timer, whose wheel fires a 5 s sleep through its levels:
            // three or four wakeups for one wait (strace). Nothing else
            // runs on this runtime before a connection (an earlier socket,
            // if any, has been dropped), and shutdown ends the wait.
            tracing::debug!(endpoint = %self.endpoint, "KV events: next probe round in {wait:?}");
            if shutdown.wait_timeout(wait) {
                std::future::pending::<()>().await;
            }
        }
    }

    fn connection_event(&mut self, event: SocketEvent) {
        match event {
            SocketEvent::Connected(..) => {
                tracing::info!(endpoint = %self.endpoint, "KV events: connected to the engine");
                self.stats.set_engine_up(true);
            }
            SocketEvent::Disconnected(_) => {
                tracing::warn!(
                    endpoint = %self.endpoint,
                    "KV events: the engine closed the stream; reconnecting"
                );
                self.stats.set_engine_up(false);
            }
            _ => {}
        }
    }

    /// Checks, decodes and queues one message, after what the replay
    /// buffer holds of the messages lost before it.
    pub async fn handle(&mut self, message: ZmqMessage) {
        let received = Instant::now();
        let frames = message.into_vec();
        let [topic, seq, payload] = frames.as_slice() else {
            self.stats.decode_errors(DecodeError::Frames, 1);
            self.warn(format_args!("a message of {} frames, not 3", frames.len()));
            return;
        };
        if !self.topic.is_empty() && topic[..] != *self.topic.as_bytes() {
            self.stats.wrong_topic();
            return;
        }
        let Ok(seq) = <[u8; 8]>::try_from(&seq[..]) else {
            self.stats.decode_errors(DecodeError::Frames, 1);
            self.warn(format_args!(
                "a sequence frame of {} bytes, not 8",
                seq.len()
            ));
            return;
        };
        self.stats.message();
        if self.sequence(u64::from_be_bytes(seq)).await {
            self.apply(payload, received);
        }
    }

    /// Decodes and queues one batch.
    fn apply(&mut self, payload: &[u8], received: Instant) {
        let batch = match decode_batch(payload) {
            Ok(batch) => batch,
            Err(e) => {
                self.stats.decode_errors(DecodeError::Batch, 1);
                self.warn(format_args!("a batch was dropped: {e}"));
                return;
            }
        };
        if let Some(first) = batch.malformed.first() {
            self.stats
                .decode_errors(DecodeError::Event, batch.malformed.len() as u64);
            self.warn(format_args!(
                "{} malformed events skipped, first: {first}",
                batch.malformed.len()
            ));
        }
        for event in &batch.events {
            self.stats.events(event.kind(), 1);
        }
        self.stats
            .events(super::EventKind::Other, u64::from(batch.unknown));
        if batch.events.is_empty() {
            return;
        }
        self.queue.push(Queued {
            batch,
            bytes: payload.len(),
            received,
        });
    }

    /// Whether the live message `seq` is to be applied: not when a replay
    /// already did.
    async fn sequence(&mut self, seq: u64) -> bool {
        match self.last_seq {
            Some(last) if seq > last.saturating_add(1) => {
                let missed = seq - last - 1;
                self.stats.seq_gap(missed);
                self.warn(format_args!(
                    "{missed} messages lost (sequence {last} to {seq})"
                ));
                if let Some(endpoint) = self.replay.clone() {
                    self.recover(&endpoint, last + 1, seq).await;
                    if self.last_seq.is_some_and(|l| l >= seq) {
                        self.stats.duplicates(1);
                        return false;
                    }
                } else {
                    self.stats.unrecoverable(missed);
                }
            }
            Some(last) if seq <= last => {
                if self.replayed.as_ref().is_some_and(|r| r.contains(&seq)) {
                    self.stats.duplicates(1);
                    return false;
                }
                self.replayed = None;
                tracing::info!(
                    seq,
                    last,
                    "KV events: the sequence restarted (engine restart?)"
                );
            }
            _ => {}
        }
        self.last_seq = Some(seq);
        true
    }

    /// Applies what the replay buffer holds from `start` on; what it no
    /// longer holds before `live` is unrecoverable.
    async fn recover(&mut self, endpoint: &str, start: u64, live: u64) {
        let mut next = start;
        if let Err(e) = self.replay_from(endpoint, &mut next, live).await {
            self.warn(format_args!(
                "replay from {endpoint} failed after sequence {}: {e}",
                next.wrapping_sub(1)
            ));
        }
        if next < live {
            self.stats.unrecoverable(live - next);
            self.warn(format_args!(
                "{} messages not recovered (the replay buffer no longer holds them, or the replay failed)",
                live - next
            ));
        }
        if next > start {
            self.last_seq = Some(next - 1);
            self.replayed = Some(start..=next - 1);
        }
    }

    /// Applies the replayed batches in order; `next` is the first sequence
    /// number not applied yet.
    async fn replay_from(
        &mut self,
        endpoint: &str,
        next: &mut u64,
        live: u64,
    ) -> Result<(), ReplayError> {
        let mut replay = Replay::request(endpoint, *next).await?;
        while let Some((seq, payload)) = replay.next().await? {
            if seq < *next {
                self.stats.duplicates(1);
                continue;
            }
            if seq > *next {
                if seq > live {
                    // A hole reaching past the live message: the live
                    // stream has the rest ([`Self::recover`] counts what
                    // is missing before it).
                    break;
                }
                self.stats.unrecoverable(seq - *next);
            }
            self.apply(&payload, Instant::now());
            self.stats.replayed(1);
            *next = seq + 1;
        }
        Ok(())
    }

    fn warn(&mut self, what: std::fmt::Arguments<'_>) {
        if let Some(held) = self.warnings.check() {
            tracing::warn!(endpoint = %self.endpoint, repeats = held, "KV events: {what}");
        }
    }
}
