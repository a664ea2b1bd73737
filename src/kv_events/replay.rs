//! Asking the engine's replay buffer for batches the live stream lost.
//!
//! The protocol is vLLM's (`vllm/distributed/kv_events.py`,
//! `ZmqEventPublisher`, read at vllm-project/vllm commit `0181ea31`): the
//! publisher keeps the last `buffer_steps` batches (`KVEventsConfig`,
//! default 10,000) as `(seq, payload)` and binds a ROUTER socket on
//! `KVEventsConfig.replay_endpoint` (no environment variable: the engine
//! reads it from `--kv-events-config` only). SGLang's copy
//! (`python/sglang/srt/disaggregation/kv_events.py`, read at
//! sgl-project/sglang commit `006d053f`) speaks the same protocol, with
//! `replay_endpoint` in its `--kv-events-config` JSON, no variable either.
//! Both engines add the data-parallel rank to the port of each rank's
//! sockets; the sidecar asks the one endpoint it is given. A request is one frame after the empty delimiter,
//! the first wanted sequence number as 8 bytes big-endian; the ROUTER
//! checks for exactly three frames `[identity, "", start]`. It answers,
//! for every buffered batch with `seq >= start`, `[identity, "", seq
//! (8 bytes big-endian), payload]`, then the end marker `[identity, "",
//! (-1) as 8 signed big-endian bytes, ""]`. The payload is the same
//! msgpack batch as on the PUB socket; there is no topic frame.
//!
//! We speak it from a DEALER socket (the ROUTER routes every answer back
//! to it, which a REQ socket would refuse after the first), a new one per
//! request: an answer to an earlier request that timed out can then never
//! be taken for an answer to this one. The whole exchange has a deadline
//! ([`REPLAY_TIMEOUT`]), so a replay socket that is down or silent costs
//! the live stream that long at most.

use std::time::Duration;

use tokio::time::{Instant, timeout_at};
use zeromq::{DealerSocket, Socket, SocketOptions, SocketRecv, SocketSend, ZmqMessage};

/// How long one replay may take, from connecting to the end marker.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(3);

/// vLLM's `END_SEQ`: `(-1).to_bytes(8, "big", signed=True)`.
const END_SEQ: [u8; 8] = [0xff; 8];

/// Why a replay did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// No answer (or not all of it) within [`REPLAY_TIMEOUT`].
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// The socket failed.
    #[error("replay socket")]
    Socket(#[source] zeromq::ZmqError),
    /// An answer that is not `["", seq, payload]`.
    #[error("a malformed answer ({0})")]
    Malformed(&'static str),
}

/// One request in progress: its answers, in the order the engine sent them.
pub struct Replay {
    socket: DealerSocket,
    deadline: Instant,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Replay {
    /// Connects to `endpoint` and asks for every buffered batch from
    /// `start` on.
    pub async fn request(endpoint: &str, start: u64) -> Result<Replay, ReplayError> {
        let deadline = Instant::now() + REPLAY_TIMEOUT;
        let mut options = SocketOptions::default();
        options.connect_timeout(REPLAY_TIMEOUT);
        let mut socket = DealerSocket::with_options(options);
        let exchange = async {
            socket.connect(endpoint).await?;
            let mut request = ZmqMessage::from(start.to_be_bytes().to_vec());
            request.prepend(&ZmqMessage::from(Vec::new()));
            socket.send(request).await
        };
        match timeout_at(deadline, exchange).await {
            Ok(Ok(())) => Ok(Replay { socket, deadline }),
            Ok(Err(e)) => Err(ReplayError::Socket(e)),
            Err(_) => Err(ReplayError::Timeout(REPLAY_TIMEOUT)),
        }
    }

    /// The next batch, `(seq, payload)`, or `None` after the end marker.
    pub async fn next(&mut self) -> Result<Option<(u64, Vec<u8>)>, ReplayError> {
        let message = match timeout_at(self.deadline, self.socket.recv()).await {
            Ok(Ok(message)) => message,
            Ok(Err(e)) => return Err(ReplayError::Socket(e)),
            Err(_) => return Err(ReplayError::Timeout(REPLAY_TIMEOUT)),
        };
        parse_answer(message.into_vec().iter().map(|f| &f[..]).collect())
    }
}

/// `["", seq, payload]` (the delimiter may be missing), or the end marker.
fn parse_answer(mut frames: Vec<&[u8]>) -> Result<Option<(u64, Vec<u8>)>, ReplayError> {
    if frames.first().is_some_and(|f| f.is_empty()) {
        frames.remove(0);
    }
    let [seq, payload] = frames[..] else {
        return Err(ReplayError::Malformed("not [seq, payload]"));
    };
    let seq: [u8; 8] = seq
        .try_into()
        .map_err(|_| ReplayError::Malformed("a sequence frame not of 8 bytes"))?;
    if seq == END_SEQ {
        return Ok(None);
    }
    Ok(Some((u64::from_be_bytes(seq), payload.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let seq = 7u64.to_be_bytes();
        let parsed = parse_answer(vec![b"", &seq, b"\x92"]).unwrap();
        assert_eq!(parsed, Some((7, vec![0x92])));
        assert_eq!(
            parse_answer(vec![&seq, b"x"]).unwrap(),
            Some((7, b"x".to_vec()))
        );
        let end = (-1i64).to_be_bytes();
        assert_eq!(parse_answer(vec![b"", &end, b""]).unwrap(), None);
        assert!(parse_answer(vec![b"", b"123", b"x"]).is_err());
        assert!(parse_answer(vec![b"", &seq]).is_err());
    }
}
