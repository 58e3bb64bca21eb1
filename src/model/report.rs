//! What applying one response did, as the leader logs and counts it.

/// What applying one response did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Whether any service was added, removed or changed.
    pub changed: bool,
    /// Services whose nodes changed, were added or removed.
    pub changed_services: usize,
    /// Entries skipped for the first time in this response: `(key, reason)`,
    /// at most `MAX_REPORTED_PER_RESPONSE`. An entry that stays malformed is
    /// reported once, not on every poll.
    pub newly_malformed: Vec<(String, String)>,
    /// Entries skipped for the first time beyond that cap (counted only).
    pub newly_malformed_omitted: usize,
    /// All malformed entries currently in the response.
    pub malformed_total: usize,
}

/// Newly malformed entries listed per response; the rest are counted. A
/// server that keeps changing thousands of bad values must not make
/// thousands of log lines per answer (red-team D11).
pub(crate) const MAX_REPORTED_PER_RESPONSE: usize = 20;
/// How much of a reported key is kept.
pub(crate) const MAX_REPORTED_KEY_BYTES: usize = 256;

impl Applied {
    pub(super) fn report(&mut self, key: &str, reason: &str) {
        if self.newly_malformed.len() < MAX_REPORTED_PER_RESPONSE {
            // Escaped and cut: a key of 100 KB must not make a log line of 100 KB.
            let key = crate::log::excerpt(key, MAX_REPORTED_KEY_BYTES).into_owned();
            self.newly_malformed.push((key, reason.to_owned()));
        } else {
            self.newly_malformed_omitted += 1;
        }
    }
}
