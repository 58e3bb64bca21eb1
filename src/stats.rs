//! What the watcher tells the operator: per-server state, indexes, times and
//! counters. Rendered as JSON by `ckv_stats`; the token never appears here.

use serde::{Deserialize, Serialize};

/// What a server's watch is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// No response yet.
    #[default]
    Starting,
    /// Blocking query outstanding, last response good.
    Watching,
    /// `keepalive: false`: waiting for the next poll, last response good.
    Polling,
    /// The last request failed; waiting before the retry.
    Backoff,
    /// This process is not the leader: another process watches for it.
    Follower,
    /// The watch cannot start or run (see `last_error`); it is retried.
    Failed,
    Stopped,
}

/// Failed exchanges of one server, by kind (for metrics and `ckv_stats`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ErrorKinds {
    /// Connection refused or reset, DNS, TLS, a body cut short.
    pub transport: u64,
    /// Connect or read timeout.
    pub timeout: u64,
    /// HTTP 4xx: ACL refusals (403), rate limiting (429), bad requests.
    pub http_4xx: u64,
    /// HTTP 5xx other than "No cluster leader".
    pub http_5xx: u64,
    /// HTTP 500 "No cluster leader".
    pub no_leader: u64,
    /// An answer without a valid `X-Consul-Index`: not a Consul KV endpoint.
    pub not_consul: u64,
    /// A body that is not a usable JSON array of entries.
    pub bad_body: u64,
    /// A body over `max_response_bytes`.
    pub too_large: u64,
    /// A `stale` answer older than `max_stale` (not used; asked again).
    pub too_stale: u64,
}

/// One member of a `cluster` source, as its watch last saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct MemberStats {
    pub url: String,
    /// The watch asks this member now.
    pub active: bool,
    /// Its last answer (or fail-back probe) was good; false after a failure.
    pub healthy: bool,
    pub consecutive_errors: u32,
    pub last_error: Option<String>,
    pub last_error_ms: u64,
    pub last_success_ms: u64,
}

/// Followers read the leader's copy back from the shared directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ServerStats {
    pub url: String,
    pub state: ServerState,
    /// Last `X-Consul-Index` adopted (0: none yet, or reset).
    pub last_index: u64,
    /// Unix time in milliseconds; 0 means never.
    pub last_success_ms: u64,
    pub last_change_ms: u64,
    pub last_error_ms: u64,
    pub last_error: Option<String>,
    pub requests_total: u64,
    pub errors_total: u64,
    pub consecutive_errors: u32,
    /// Times the index went backwards and the watch restarted from 0.
    pub index_resets: u64,
    /// Entries skipped as malformed in the last response.
    pub malformed_entries: u64,
    pub services: u64,
    pub nodes: u64,
    pub last_response_bytes: u64,
    /// The last response was filtered by ACLs (some keys hidden).
    pub filtered_by_acls: bool,
    /// `errors_total`, split by kind.
    pub errors_by_kind: ErrorKinds,
    /// With `cluster`: the member asked now, and every member's state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_member: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStats>,
    /// Moves to the next member after `cluster.failover_after` failures.
    pub failovers: u64,
    /// Returns to the first member once it answered a probe.
    pub failbacks: u64,
    /// Answers with `X-Consul-KnownLeader: false` (the member knew no leader).
    pub known_leader_false: u64,
    /// The last answer had `X-Consul-KnownLeader: false`.
    pub no_known_leader: bool,
    /// `X-Consul-LastContact` of the last answer, in milliseconds.
    pub last_contact_ms: u64,
    /// Times a new token was read from `token_file`.
    pub token_rotations: u64,
}

/// The whole picture for `ckv_stats`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Stats {
    pub version: &'static str,
    pub pid: u32,
    /// "leader" (this process watches Consul), "follower" or "standalone".
    pub role: &'static str,
    pub leader_pid: u32,
    /// Sequence number of the snapshot this process serves.
    pub generation: u64,
    pub services: u64,
    pub nodes: u64,
    /// "consul", "dump", "previous" (the group before a reload) or "none":
    /// where the served data came from.
    pub source: &'static str,
    /// True once data from Consul (or a fresh dump) is being served.
    pub ready: bool,
    /// The leader could not write its latest snapshot to the shared
    /// directory (it retries): the followers serve an older one.
    pub stale: bool,
    /// Why this process runs standalone although `share.group` is set
    /// (the shared directory is untrusted, read-only, full, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_error: Option<String>,
    pub servers: Vec<ServerStats>,
    /// Leader: parse + apply + publish time of each Consul response that
    /// moved the index. A follower shows the leader's (from the shared
    /// directory), so every process of an instance reports the same.
    pub apply_seconds: Histogram,
    /// This process: from the Consul response (received by the leader) to
    /// the snapshot it produced being served here.
    pub propagation_seconds: Histogram,
    /// When the last change went through each step, in this process.
    pub last_change_steps: ChangeTimes,
    /// The effective configuration: every field, defaults applied, the
    /// token shown as `"<redacted>"` (`Config::redacted_json`).
    pub config: serde_json::Value,
}

/// Where the time of the last published change went: Unix time in
/// microseconds of each step (0: the step did not run in this process; a
/// follower fills only `seq` and `served_us`). For attributing propagation
/// latency; a handful of clock reads per change.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ChangeTimes {
    /// The snapshot these times belong to.
    pub seq: u64,
    /// Leader: the response's headers arrived.
    pub headers_us: u64,
    /// Leader: the whole body was in.
    pub received_us: u64,
    /// Leader: the body was parsed.
    pub parsed_us: u64,
    /// Leader: the model was updated.
    pub applied_us: u64,
    /// Leader: the snapshot was in the shared directory, followers woken
    /// (0 while that is under way: the leader serves the snapshot first).
    pub published_us: u64,
    /// This process started serving it.
    pub served_us: u64,
}

/// Upper bounds (seconds) of the histogram buckets, shared by both
/// histograms: from half a millisecond (a small prefix) to 10 s (100k nodes
/// on a loaded machine). `+Inf` is implied.
pub(crate) const HISTOGRAM_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A fixed-bucket histogram of durations, as Prometheus counts them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative): `buckets[i]` counts values
    /// in `(HISTOGRAM_BOUNDS[i-1], HISTOGRAM_BOUNDS[i]]`; the last slot counts
    /// those above the largest bound. Shorter (an older writer) reads as 0s.
    pub buckets: Vec<u64>,
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        let slot = HISTOGRAM_BOUNDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(HISTOGRAM_BOUNDS.len());
        if self.buckets.len() <= HISTOGRAM_BOUNDS.len() {
            self.buckets.resize(HISTOGRAM_BOUNDS.len() + 1, 0);
        }
        self.buckets[slot] += 1;
        self.count += 1;
        self.sum += seconds;
    }

    /// Cumulative counts for each bound of [`HISTOGRAM_BOUNDS`] (the `le`
    /// buckets of the exposition format; `+Inf` is `count`).
    pub fn cumulative(&self) -> [u64; HISTOGRAM_BOUNDS.len()] {
        let mut out = [0; HISTOGRAM_BOUNDS.len()];
        let mut total = 0u64;
        for (i, slot) in out.iter_mut().enumerate() {
            total = total.saturating_add(self.buckets.get(i).copied().unwrap_or(0));
            *slot = total;
        }
        out
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Unix time in microseconds; 0 if the clock is before 1970.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_bounds_inclusive() {
        let mut h = Histogram::default();
        for v in [0.0, 0.0005, 0.0006, 1.0, 11.0, f64::NAN, -1.0] {
            h.observe(v);
        }
        assert_eq!(h.count, 7);
        let c = h.cumulative();
        // 0.0, 0.0005, NaN (as 0), -1 (as 0) are <= 0.0005.
        assert_eq!(c[0], 4);
        assert_eq!(c[1], 5);
        assert_eq!(c[10], 6); // le=1
        assert_eq!(c[13], 6); // le=10: 11 s is only in +Inf
        assert!((h.sum - 12.0011).abs() < 1e-9);
    }
}
