//! What every thread of the engine reaches: the served snapshot, the role,
//! the statistics, and the one place a snapshot is published locally.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::leader::Leader;
use crate::config::Config;
use crate::log::{Level, LogQueue};
use crate::shared::Group;
use crate::snapshot::Snapshot;
use crate::stats::{ChangeTimes, Histogram, ServerState, ServerStats, Stats};

/// What this process does for its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Watches Consul itself, shares with nobody.
    Standalone = 0,
    /// Reads the leader's snapshots.
    Follower = 1,
    /// Watches Consul for the group.
    Leader = 2,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Follower => "follower",
            Role::Leader => "leader",
        }
    }

    fn from_u8(v: u8) -> Role {
        match v {
            1 => Role::Follower,
            2 => Role::Leader,
            _ => Role::Standalone,
        }
    }
}

#[derive(Debug)]
pub struct Shared {
    pub config: Arc<Config>,
    pub logs: LogQueue,
    pub current: ArcSwap<Snapshot>,
    /// Bumped on every local publish. Lua reads it through a pointer.
    pub generation: AtomicU32,
    /// Wakes C readers after every local publish (`ckv_wait_change`,
    /// `ckv_notify_fd`).
    pub change: crate::notify::ChangeSignal,
    role: AtomicU8,
    pub stats: Mutex<Vec<ServerStats>>,
    pub stats_dirty: AtomicBool,
    pub leader: Mutex<Option<Leader>>,
    pub become_leader: Notify,
    pub dump_dirty: Notify,
    /// Wakes the leader's stats writer early (after a publish or an error).
    pub stats_changed: Notify,
    /// The leader kept a snapshot buffer for the next patch (see
    /// `leader::give_back_room`).
    pub room_kept: Notify,
    /// None when not sharing, and after shutdown (leaving the group).
    pub group: ArcSwapOption<Group>,
    /// Why this process does not share although a group was configured.
    pub share_error: Option<String>,
    /// Leader: the served snapshot is not in the shared directory yet.
    pub publish_pending: AtomicBool,
    pub stopped: AtomicBool,
    /// Leader: parse + apply + publish time per Consul response.
    pub apply_seconds: Mutex<Histogram>,
    /// Consul response received (by the leader) → served by this process.
    pub propagation_seconds: Mutex<Histogram>,
    /// The steps of the last change (`stats().last_change_steps`).
    pub last_change: Mutex<ChangeTimes>,
    /// Seq of the snapshot taken from the previous group at start (0: none);
    /// `source` says "previous" while it is served.
    pub inherited_seq: AtomicU64,
}

impl Shared {
    pub fn new(config: Arc<Config>, group: Option<Group>, share_error: Option<String>) -> Shared {
        let stats = config
            .servers
            .iter()
            .map(|s| ServerStats {
                url: s.url.clone(),
                ..ServerStats::default()
            })
            .collect();
        let role = if group.is_some() {
            Role::Follower
        } else {
            Role::Standalone
        };
        Shared {
            config,
            logs: LogQueue::default(),
            current: ArcSwap::from_pointee(Snapshot::default()),
            generation: AtomicU32::new(1),
            change: Default::default(),
            role: AtomicU8::new(role as u8),
            stats: Mutex::new(stats),
            stats_dirty: AtomicBool::new(false),
            leader: Mutex::new(None),
            become_leader: Notify::new(),
            dump_dirty: Notify::new(),
            stats_changed: Notify::new(),
            room_kept: Notify::new(),
            group: ArcSwapOption::from(group.map(Arc::new)),
            share_error,
            publish_pending: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            apply_seconds: Mutex::new(Histogram::default()),
            propagation_seconds: Mutex::new(Histogram::default()),
            last_change: Mutex::new(ChangeTimes::default()),
            inherited_seq: AtomicU64::new(0),
        }
    }

    pub fn log(&self, level: Level, message: String) {
        self.logs.push(level, message);
    }

    pub fn role(&self) -> Role {
        Role::from_u8(self.role.load(Ordering::Acquire))
    }

    pub fn set_role(&self, role: Role) {
        self.role.store(role as u8, Ordering::Release);
    }

    pub fn swap_role(&self, role: Role) -> Role {
        Role::from_u8(self.role.swap(role as u8, Ordering::AcqRel))
    }

    /// The one place where this process starts serving a new snapshot.
    pub fn publish_local(&self, snapshot: Snapshot) {
        let seq = snapshot.seq;
        self.inherited_seq.store(0, Ordering::Release);
        self.current.store(Arc::new(snapshot));
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.change.publish(seq);
    }

    /// [`Shared::publish_local`] for a snapshot made from a Consul response
    /// just now (by this process or the leader): records how long the
    /// response took to be served here.
    pub fn publish_observed(&self, snapshot: Snapshot) {
        let (seq, received_us) = (snapshot.seq, snapshot.received_us);
        self.publish_local(snapshot);
        let now = crate::stats::now_us();
        {
            let mut times = self.last_change.lock();
            times.seq = seq;
            times.served_us = now;
        }
        if received_us > 0 {
            let lag = now.saturating_sub(received_us);
            self.propagation_seconds.lock().observe(lag as f64 / 1e6);
        }
    }

    pub fn stats_now(&self) -> Stats {
        let snap = self.current.load();
        let role = self.role();
        let mut servers = self.stats.lock().clone();
        let group = self.group.load_full();
        let mut stale = false;
        let mut apply_seconds = self.apply_seconds.lock().clone();
        // The leader passed on the previous group's snapshot (reload).
        let mut inherited_from_leader = false;
        if let Some(g) = &group {
            match role {
                Role::Follower => {
                    stale = g.publish_failed();
                    match g
                        .read_stats()
                        .ok()
                        .and_then(|b| serde_json::from_slice::<LeaderStats>(&b).ok())
                    {
                        // Same configuration, so the same servers in the same order.
                        Some(leader) => {
                            inherited_from_leader =
                                leader.source == "previous" && leader.generation == snap.seq;
                            for (dst, src) in servers.iter_mut().zip(leader.servers) {
                                *dst = src;
                            }
                            apply_seconds = leader.apply_seconds;
                        }
                        None => {
                            for s in &mut servers {
                                s.state = ServerState::Follower;
                            }
                        }
                    }
                }
                Role::Leader => stale = self.publish_pending.load(Ordering::Acquire),
                Role::Standalone => {}
            }
        }
        Stats {
            version: crate::VERSION,
            pid: std::process::id(),
            role: role.as_str(),
            leader_pid: group
                .as_ref()
                .map_or(std::process::id(), |g| g.leader_pid()),
            generation: snap.seq,
            services: snap.len() as u64,
            nodes: snap.node_count(),
            source: if snap.from_dump {
                "dump"
            } else if snap.seq > 0
                && (inherited_from_leader || snap.seq == self.inherited_seq.load(Ordering::Acquire))
            {
                "previous"
            } else if snap.seq > 0 {
                "consul"
            } else {
                "none"
            },
            // A follower whose leader could not publish serves old data.
            ready: (snap.synced || snap.from_dump) && !(stale && role == Role::Follower),
            stale,
            share_error: self.share_error.clone(),
            servers,
            apply_seconds,
            propagation_seconds: self.propagation_seconds.lock().clone(),
            last_change_steps: *self.last_change.lock(),
            config: self.config.redacted_json(),
        }
    }
}

/// What a follower needs from the leader's `stats.json` (a whole [`Stats`]).
#[derive(Debug, serde::Deserialize)]
struct LeaderStats {
    servers: Vec<ServerStats>,
    /// Absent in a file from a release before metrics.
    #[serde(default)]
    apply_seconds: Histogram,
    #[serde(default)]
    source: String,
    #[serde(default)]
    generation: u64,
}
