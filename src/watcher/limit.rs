//! A token bucket that keeps a misbehaving server (one that answers blocking
//! queries at once without advancing the index, over and over) from turning
//! the watch into a busy loop. Only such answers spend tokens: a real change
//! is re-requested at once, however fast changes come.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct RateLimit {
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub(crate) const BURST: f64 = 8.0;
    pub(crate) const PER_SECOND: f64 = 5.0;

    pub(crate) fn new() -> Self {
        RateLimit {
            tokens: Self::BURST,
            last: Instant::now(),
        }
    }

    /// How long to wait before the next request.
    pub(crate) fn take(&mut self) -> Duration {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * Self::PER_SECOND).min(Self::BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Duration::ZERO
        } else {
            let wait = (1.0 - self.tokens) / Self::PER_SECOND;
            self.tokens = 0.0;
            self.last = now + Duration::from_secs_f64(wait);
            Duration::from_secs_f64(wait)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_spaces_requests() {
        let mut r = RateLimit::new();
        for _ in 0..8 {
            assert_eq!(r.take(), Duration::ZERO);
        }
        let d = r.take();
        assert!(
            d > Duration::ZERO && d <= Duration::from_millis(201),
            "{d:?}"
        );
    }
}
