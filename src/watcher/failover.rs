//! Which member of a `cluster` the watch asks, and when it moves.
//!
//! The watch starts on the first member. After `cluster.failover_after`
//! consecutive failures on the active member it moves to the next one (in
//! the configured order, wrapping around), keeping its index: every member
//! of one cluster answers from the same Raft log, so an index from one is
//! valid on another (one that goes backwards still resets, by the usual
//! rule). While another member is active, the first one is probed every
//! `cluster.failback_interval` with `GET /v1/status/leader`; once it
//! answers with a known leader the watch returns to it. Without `cluster`
//! there is one member and nothing here ever moves.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::log::Level;
use crate::stats::{now_ms, MemberStats};

use super::WatchSink;

#[derive(Debug)]
pub(crate) struct Failover {
    pub(crate) active: usize,
    /// Per member: consecutive failures, last error, last success.
    members: Vec<MemberStats>,
    cluster: bool,
    failover_after: u32,
    failback_interval: Duration,
    next_probe: Instant,
    name: String,
}

impl Failover {
    pub(crate) fn new(config: &Config, len: usize) -> Failover {
        let (cluster, failover_after, failback_interval) = match &config.cluster {
            Some(c) => (true, c.failover_after, c.failback_interval),
            None => (false, u32::MAX, Duration::ZERO),
        };
        Failover {
            active: 0,
            members: (0..len)
                .map(|i| MemberStats {
                    active: i == 0,
                    ..MemberStats::default()
                })
                .collect(),
            cluster,
            failover_after,
            failback_interval,
            next_probe: Instant::now() + failback_interval,
            name: config
                .servers
                .first()
                .map(|s| s.url.clone())
                .unwrap_or_default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// The first stats of a cluster source: every member, the first active.
    pub(crate) fn publish(&self, sink: &dyn WatchSink, server: usize, urls: &[String]) {
        let Some(members) = self.members_json(urls) else {
            return;
        };
        let active = Self::member_url(&urls[self.active]);
        sink.update_stats(server, &mut |s| {
            s.members.clone_from(&members);
            s.active_member = Some(active.clone());
        });
    }

    /// The members' stats with their URLs, or None without `cluster`.
    pub(crate) fn members_json(&self, urls: &[String]) -> Option<Vec<MemberStats>> {
        if !self.cluster {
            return None;
        }
        Some(
            self.members
                .iter()
                .zip(urls)
                .map(|(m, u)| MemberStats {
                    url: Self::member_url(u),
                    ..m.clone()
                })
                .collect(),
        )
    }

    /// `http://a:8500/v1/kv/p/` → `http://a:8500`.
    fn member_url(watch_url: &str) -> String {
        watch_url
            .find("/v1/kv/")
            .map_or(watch_url, |i| &watch_url[..i])
            .to_string()
    }

    pub(crate) fn succeeded(&mut self, member: usize) {
        if let Some(m) = self.members.get_mut(member) {
            m.healthy = true;
            m.consecutive_errors = 0;
            m.last_success_ms = now_ms();
        }
    }

    pub(crate) fn failed(&mut self, member: usize, error: &str) {
        if let Some(m) = self.members.get_mut(member) {
            m.healthy = false;
            m.consecutive_errors = m.consecutive_errors.saturating_add(1);
            m.last_error = Some(error.to_owned());
            m.last_error_ms = now_ms();
        }
    }

    /// The member to move to after a failure, if the streak on the active
    /// one reached `failover_after`.
    pub(crate) fn next_after_failure(&self) -> Option<usize> {
        let m = self.members.get(self.active)?;
        (self.cluster && self.len() > 1 && m.consecutive_errors >= self.failover_after)
            .then(|| (self.active + 1) % self.len())
    }

    /// Whether the watch should probe the first member now and then.
    pub(crate) fn may_fail_back(&self) -> bool {
        self.cluster && self.active != 0 && !self.failback_interval.is_zero()
    }

    /// Resolves once the first member answers a probe with a known leader;
    /// probes every `failback_interval`. Dropped (by `select!`) whenever the
    /// watch's own request ends first: the schedule survives that.
    pub(crate) async fn first_is_back(
        &mut self,
        client: &reqwest::Client,
        first_base: &str,
        timeout: Duration,
    ) {
        loop {
            tokio::time::sleep_until(self.next_probe.into()).await;
            self.next_probe = Instant::now() + self.failback_interval;
            if probe(client, first_base, timeout).await {
                return;
            }
        }
    }

    /// Makes `to` the active member, says so in the log and in stats.
    pub(crate) fn switch(
        &mut self,
        sink: &dyn WatchSink,
        server: usize,
        urls: &[String],
        to: usize,
        index: u64,
        why: &str,
    ) {
        if to == self.active || to >= self.len() {
            return;
        }
        let from = std::mem::replace(&mut self.active, to);
        for (i, m) in self.members.iter_mut().enumerate() {
            m.active = i == to;
        }
        if to == 0 {
            self.members[0].healthy = true;
            self.members[0].consecutive_errors = 0;
        } else {
            self.next_probe = Instant::now() + self.failback_interval;
        }
        let (old, new) = (Self::member_url(&urls[from]), Self::member_url(&urls[to]));
        let level = if to == 0 { Level::Notice } else { Level::Warn };
        let resume = if index > 0 {
            format!("resuming at index {index}")
        } else {
            "reading the prefix afresh".to_string()
        };
        sink.log(
            level,
            format!(
                "ckv: cluster {}: {old} {why}; now watching {new} ({resume}; service names unchanged)",
                self.name
            ),
        );
        let members = self.members_json(urls).unwrap_or_default();
        sink.update_stats(server, &mut |s| {
            s.members.clone_from(&members);
            s.active_member = Some(new.clone());
            if to == 0 {
                s.failbacks += 1;
            } else {
                s.failovers += 1;
            }
        });
    }
}

/// `GET /v1/status/leader`: 200 with a non-empty JSON string means the
/// member is up and part of a cluster with a leader.
async fn probe(client: &reqwest::Client, base: &str, timeout: Duration) -> bool {
    let url = format!("{base}/v1/status/leader");
    let Ok(resp) = client.get(&url).timeout(timeout).send().await else {
        return false;
    };
    if resp.status().as_u16() != 200 {
        return false;
    }
    match resp.bytes().await {
        Ok(b) if b.len() <= 1024 => matches!(
            serde_json::from_slice::<serde_json::Value>(&b),
            Ok(serde_json::Value::String(s)) if !s.is_empty()
        ),
        _ => false,
    }
}
