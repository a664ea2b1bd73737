//! The one retry policy of outbound calls: exponential backoff with full
//! jitter. Downloads, the HuggingFace API, LoRA engine calls and the KV
//! bridge's reconnections all back off by it.

use std::time::Duration;

/// How persistent a transfer is.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// First backoff ceiling.
    pub base: Duration,
    /// Largest backoff ceiling.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(15),
        }
    }
}

impl RetryPolicy {
    /// How long to wait before attempt `attempt` (1 = the first retry):
    /// uniformly random up to `base · 2^(attempt-1)`, capped, so that many
    /// transfers failing at once do not come back at once.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.ceiling(attempt).mul_f64(fastrand::f64())
    }

    /// The ceiling [`backoff`](Self::backoff) draws from: `base ·
    /// 2^(attempt-1)`, capped. Waited out as it is where no crowd comes
    /// back at once (a Pod's own engine), it is half as many attempts.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let policy = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        for _ in 0..100 {
            assert!(policy.backoff(1) <= Duration::from_millis(100));
            assert!(policy.backoff(3) <= Duration::from_millis(400));
            assert!(policy.backoff(30) <= Duration::from_secs(1));
        }
        assert_eq!(policy.ceiling(1), Duration::from_millis(100));
        assert_eq!(policy.ceiling(3), Duration::from_millis(400));
        assert_eq!(policy.ceiling(30), Duration::from_secs(1));
    }
}
