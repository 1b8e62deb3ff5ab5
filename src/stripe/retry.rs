//! When and how long to wait before asking Stripe again.
//!
//! Modelled on stripe-go: exponential backoff `base × (1 + n²)` capped, with jitter; honour
//! `Stripe-Should-Retry` when Stripe sends it; otherwise retry network failures, timeouts,
//! 409 (`idempotency_key_in_use`), 429 and 5xx. Every retry of a POST reuses its Idempotency-Key.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    /// Per-attempt timeout.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// A fast policy for tests and benchmarks against local fakes.
    pub fn fast() -> Self {
        Self {
            max_attempts: 3,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(100),
            request_timeout: Duration::from_secs(2),
        }
    }

    /// The wait before retry number `retry` (1 = the first retry), jittered to 50–100 %.
    pub fn backoff(&self, retry: u32) -> Duration {
        let n = retry.min(16);
        let raw = self.base.saturating_mul(1 + n * n).min(self.cap);
        raw.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
    }

    /// The wait before the background worker drives a refund again after `attempts`
    /// unanswered submissions: doubling from `base`, capped at five minutes.
    pub fn worker_delay(&self, attempts: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << attempts.min(12))
            .min(Duration::from_secs(300))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy::default();
        assert!(policy.backoff(1) <= Duration::from_secs(1));
        assert!(policy.backoff(1) >= Duration::from_millis(500));
        assert!(policy.backoff(10) <= Duration::from_secs(5));
        assert_eq!(policy.worker_delay(0), Duration::from_millis(500));
        assert_eq!(policy.worker_delay(30), Duration::from_secs(300));
    }
}
