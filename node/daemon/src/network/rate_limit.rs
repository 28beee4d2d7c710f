//! Rate limits: a token bucket per observer for sync requests, and a limiter
//! that keeps repeated warnings from flooding the log.

use super::*;

/// Emits a warning at most once per [`WARN_INTERVAL`], counting the rest.
#[derive(Default)]
pub(crate) struct LogLimiter {
    pub(crate) last: Option<Instant>,
    pub(crate) suppressed: u64,
}

impl LogLimiter {
    /// `Some(number suppressed since the last warning)` if a warning may be logged now.
    pub(crate) fn check(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < WARN_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Per-peer token bucket for sync requests from non-members.
pub(crate) struct TokenBucket {
    pub(crate) tokens: f64,
    pub(crate) last: Instant,
}

impl TokenBucket {
    pub(crate) fn full(rate: u32, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(rate),
            last: now,
        }
    }

    /// Refills at `rate` per second (burst `rate`) and takes one token if any.
    pub(crate) fn try_take(&mut self, rate: u32, now: Instant) -> bool {
        let rate = f64::from(rate);
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
