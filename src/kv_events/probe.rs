//! Finding a KV publisher that is not there yet: a plain TCP probe of an
//! address, and the pace of the rounds of probes.
//!
//! Many engines never publish (vLLM only does when configured to), and
//! what waiting for a publisher costs is its connection attempts and the
//! wakeups around them: a quarter to half a millisecond of CPU a round on
//! a 2-vCPU VM, with zeromq or without (the refused connect itself is
//! 9 µs). So the subscriber first probes a TCP address with one plain
//! connect, and sets up a zeromq socket, which retries a refused
//! connection several times within its patience, only once something
//! listens there. Rounds of probes back off to [`PROBE_CAP`] apart (no
//! jitter: it is the Pod's own engine), so a publisher is found within
//! that of listening; between rounds the subscriber's thread waits on the
//! shutdown signal, not on tokio's timer (one wakeup a round instead of
//! three or four). Once the engine has answered the workers for
//! [`ENGINE_UP_ROUNDS`] rounds at that cap with nothing listening, it has
//! no publisher (vLLM and SGLang bind theirs before their API serves):
//! rounds go [`ENGINE_UP_CAP`] apart until it stops answering.

use std::net::SocketAddr;
use std::time::Duration;

use crate::net::RetryPolicy;

/// The longest wait between two rounds of probes while nothing listens.
pub const PROBE_CAP: Duration = Duration::from_secs(5);

/// Rounds at [`PROBE_CAP`] that find no publisher while the engine
/// answers the workers, after which the engine is taken to have none.
pub const ENGINE_UP_ROUNDS: u32 = 3;

/// The wait between rounds once the engine is taken to have no publisher.
pub const ENGINE_UP_CAP: Duration = Duration::from_secs(60);

/// How long the subscriber waits after a round of probes that found no
/// publisher. Without jitter: one sidecar probes its own engine.
#[derive(Debug, Default)]
pub(super) struct Pace {
    /// Rounds so far.
    rounds: u32,
    /// Rounds in a row at [`PROBE_CAP`] after which the engine answered.
    engine_up_rounds: u32,
}

impl Pace {
    /// The wait after one more round, given whether the engine answers
    /// the workers; true on the round that takes the engine to have no
    /// publisher. vLLM and SGLang bind theirs before their API serves, so
    /// an engine that has answered for [`ENGINE_UP_ROUNDS`] rounds with
    /// nothing listening has none until it restarts (when it stops
    /// answering for a while, and the waits are short again).
    pub(super) fn after_round(&mut self, engine_answering: Option<bool>) -> (Duration, bool) {
        const RETRY: RetryPolicy = RetryPolicy {
            attempts: u32::MAX,
            base: Duration::from_millis(200),
            cap: PROBE_CAP,
        };
        self.rounds += 1;
        let wait = RETRY.ceiling(self.rounds);
        match engine_answering {
            Some(true) if wait == PROBE_CAP => self.engine_up_rounds += 1,
            Some(true) => {}
            _ => self.engine_up_rounds = 0,
        }
        match self.engine_up_rounds {
            n if n < ENGINE_UP_ROUNDS => (wait, false),
            n => (ENGINE_UP_CAP, n == ENGINE_UP_ROUNDS),
        }
    }
}

/// Whether something accepts TCP connections at `addr`: a plain connect,
/// closed at once, given up after `patience` (an address that drops
/// packets answers nothing).
pub(super) async fn listening(addr: SocketAddr, patience: Duration) -> std::io::Result<()> {
    match tokio::time::timeout(patience, tokio::net::TcpStream::connect(addr)).await {
        Ok(connected) => connected.map(drop),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_back_off_and_slow_down_once_the_engine_answers_without_a_publisher() {
        let ms = Duration::from_millis;
        let mut pace = Pace::default();
        // Nothing known of the engine (no scrape yet): up to the cap.
        let waits: Vec<_> = (0..7).map(|_| pace.after_round(None)).collect();
        let short = [200, 400, 800, 1600, 3200, 5000, 5000].map(|m| (ms(m), false));
        assert_eq!(waits, short);
        // The engine answers: three more rounds at the cap, then the long
        // wait, announced once.
        assert_eq!(pace.after_round(Some(true)), (PROBE_CAP, false));
        assert_eq!(pace.after_round(Some(true)), (PROBE_CAP, false));
        assert_eq!(pace.after_round(Some(true)), (ENGINE_UP_CAP, true));
        assert_eq!(pace.after_round(Some(true)), (ENGINE_UP_CAP, false));
        // It stops answering (a restart): short again, and three rounds
        // of answers are needed before the long wait comes back.
        assert_eq!(pace.after_round(Some(false)), (PROBE_CAP, false));
        assert_eq!(pace.after_round(Some(true)), (PROBE_CAP, false));
        assert_eq!(pace.after_round(Some(true)), (PROBE_CAP, false));
        assert_eq!(pace.after_round(Some(true)), (ENGINE_UP_CAP, true));
        // Answers before the cap do not count.
        let mut early = Pace::default();
        assert_eq!(early.after_round(Some(true)), (ms(200), false));
        assert_eq!(early.engine_up_rounds, 0);
    }

    #[test]
    fn a_probe_tells_a_listener_from_a_closed_port() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        // A port just freed: nothing listens there.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        runtime.block_on(async {
            listening(open, Duration::from_secs(2)).await.unwrap();
            let refused = listening(closed, Duration::from_secs(2)).await.unwrap_err();
            assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        });
    }
}
