//! Budgets: token buckets that bound how much of the node a unit in an
//! anomaly episode, and all such units together, may use.
//!
//! Only units in an episode draw on them; everyone else is served as before.
//! A bucket is a few numbers updated under the traffic lock, so the check is
//! as cheap as the accounting itself and runs before any body is read.

/// A token bucket in requests, refilled continuously.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TokenBucket {
    /// Tokens added per millisecond.
    rate_per_ms: f64,
    /// Most tokens held (the burst allowed).
    capacity: f64,
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket allowing `per_second` requests a second and bursts of
    /// two seconds' worth (at least one request).
    pub(crate) fn new(per_second: f64, now_ms: u64) -> Self {
        let capacity = (per_second * 2.0).max(1.0);
        Self {
            rate_per_ms: per_second / 1000.0,
            capacity,
            tokens: capacity,
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        #[allow(clippy::cast_precision_loss)] // elapsed ms are far below 2^52
        let added = elapsed as f64 * self.rate_per_ms;
        self.tokens = (self.tokens + added).min(self.capacity);
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// Takes one token, or says it cannot.
    pub(crate) fn try_take(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Gives back a token taken for a request that was refused elsewhere.
    pub(crate) fn give_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut b = TokenBucket::new(10.0, 0);
        let burst = (0..100).take_while(|_| b.try_take(0)).count();
        assert_eq!(burst, 20, "two seconds' worth");
        assert!(!b.try_take(50), "half a token after 50 ms");
        assert!(b.try_take(100), "one token after 100 ms");
        assert!(!b.try_take(100));
        // A long pause refills only up to the burst.
        let later = (0..100).take_while(|_| b.try_take(60_000)).count();
        assert_eq!(later, 20);
    }

    #[test]
    fn a_slow_budget_still_allows_one_request() {
        let mut b = TokenBucket::new(0.1, 0);
        assert!(b.try_take(0));
        assert!(!b.try_take(5_000));
        assert!(b.try_take(10_000));
        b.give_back();
        assert!(b.try_take(10_000));
    }
}
