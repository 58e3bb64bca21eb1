//! Consul's index rules for one watch (`consul-kv-api.md` §14, rules 4–6)
//! and the HTTP timeout of a blocking query.

use std::time::Duration;

/// The index to send next, given the last one and the one just received.
pub fn next_index(last: u64, received: u64) -> IndexStep {
    if received < last {
        IndexStep::Reset
    } else if received == last {
        IndexStep::Unchanged
    } else {
        IndexStep::Advance(received.max(1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexStep {
    /// Went backwards (snapshot restore, tombstone reap): read again from 0.
    Reset,
    /// Same index: a timeout or a spurious wake-up; nothing to parse.
    Unchanged,
    Advance(u64),
}

/// The HTTP timeout of a blocking query: longer than Consul may hold it
/// (`wait` plus up to `wait/16` of jitter) plus the read timeout.
pub fn blocking_timeout(wait: Duration, read: Duration) -> Duration {
    wait + wait / 16 + read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rules() {
        assert_eq!(next_index(0, 5), IndexStep::Advance(5));
        assert_eq!(next_index(5, 5), IndexStep::Unchanged);
        assert_eq!(next_index(5, 9), IndexStep::Advance(9));
        assert_eq!(next_index(9, 3), IndexStep::Reset);
    }

    #[test]
    fn blocking_timeout_exceeds_consul_hold() {
        let wait = Duration::from_secs(60);
        let read = Duration::from_millis(2000);
        let t = blocking_timeout(wait, read);
        assert!(t > wait * 17 / 16);
        assert_eq!(t, Duration::from_millis(60_000 + 3_750 + 2_000));
    }
}
