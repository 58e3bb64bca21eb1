//! The running library inside one process: the snapshot readers see, the
//! background threads that keep it current, and the statistics and log queue
//! the host pulls.
//!
//! Threads (all named `ckv-*`, all with every signal blocked so that the
//! host's signal handling is untouched, all at nice 10 so that the host's
//! event loops come first):
//! * `ckv-runtime`: a single-threaded tokio runtime. In the leader it runs one
//!   watch per server, the dump writer and the stats writer.
//! * `ckv-follow` (sharing enabled): tries to become leader every 50 ms and,
//!   until it does, follows the leader's snapshots through the futex.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

use crate::config::{Config, EmptyPrefixPolicy};
use crate::dump;
use crate::kv::{RawEntry, Rules};
use crate::log::{escape_untrusted, Level, LogClass, LogQueue};
use crate::model::ServerModel;
use crate::shared::{codec, group, Group};
use crate::snapshot::Snapshot;
use crate::stats::{ServerState, ServerStats, Stats};
use crate::watcher::{self, WatchSink};

const ROLE_STANDALONE: u8 = 0;
const ROLE_FOLLOWER: u8 = 1;
const ROLE_LEADER: u8 = 2;

/// How often a follower tries to take the leader lock. A dead leader is
/// replaced within this (well under the 1 s promised).
const ELECTION_POLL: Duration = Duration::from_millis(50);
/// Dump writes are coalesced: at most one per this interval.
const DUMP_COALESCE: Duration = Duration::from_millis(500);
/// The leader's stats file is refreshed at most this often.
const STATS_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    pid: u32,
}

/// State reachable from every thread.
#[derive(Debug)]
struct Shared {
    config: Arc<Config>,
    logs: LogQueue,
    current: ArcSwap<Snapshot>,
    /// Bumped on every local publish. Lua reads it through a pointer.
    generation: AtomicU32,
    change: crate::notify::ChangeSignal,
    role: AtomicU8,
    stats: Mutex<Vec<ServerStats>>,
    stats_dirty: AtomicBool,
    leader: Mutex<Option<Leader>>,
    become_leader: Notify,
    dump_dirty: Notify,
    /// Wakes the leader's stats writer early (after a publish or an error).
    stats_changed: Notify,
    /// None when sharing is off, and after shutdown (leaving the group).
    group: arc_swap::ArcSwapOption<Group>,
    stopped: AtomicBool,
}

/// The leader's models: what each server last said.
#[derive(Debug)]
struct Leader {
    models: Vec<ServerModel>,
    synced: Vec<bool>,
    /// Per server: the prefix is empty in Consul and its services were kept
    /// (`on_empty_prefix = keep`); warned once per such episode.
    kept_empty: Vec<bool>,
    seq: u64,
}

impl Engine {
    /// Starts the engine for `config`. Blocking work done here, before the
    /// first request: joining the group, reading the current shared snapshot
    /// or the dump file. Consul is never contacted on this thread.
    pub fn start(config: Config) -> Result<Engine, String> {
        let config = Arc::new(config);
        // Fails ckv_init on a bad tls.ca_file (the runtime builds its own).
        watcher::build_client(&config)?;
        let group = if config.share.enabled {
            let group_name = config
                .share
                .group
                .clone()
                // SAFETY: getppid never fails.
                .unwrap_or_else(|| unsafe { libc::getppid() }.to_string());
            // Processes share a watch only when their configuration is the
            // same. TODO(share): key this with the instance's secret nonce and
            // keep the key out of the name; keyed by the visible group it
            // hides nothing yet (D17).
            let fingerprint = config.share_fingerprint(group_name.as_bytes());
            let mut tag = [0u8; 8];
            tag.copy_from_slice(&fingerprint[..8]);
            let name = group::dir_name(&group_name, u64::from_le_bytes(tag));
            Group::remove_dead_groups(&config.share.dir, &name);
            Some(Group::join(&config.share.dir, &name).map_err(|e| {
                format!(
                    "cannot join shared directory {}/{name}: {e}",
                    config.share.dir.display()
                )
            })?)
        } else {
            None
        };
        let stats = config
            .servers
            .iter()
            .map(|s| ServerStats {
                url: s.url.clone(),
                ..ServerStats::default()
            })
            .collect();
        let shared = Arc::new(Shared {
            config: config.clone(),
            logs: LogQueue::default(),
            current: ArcSwap::from_pointee(Snapshot::default()),
            generation: AtomicU32::new(1),
            change: Default::default(),
            role: AtomicU8::new(if group.is_some() {
                ROLE_FOLLOWER
            } else {
                ROLE_STANDALONE
            }),
            stats: Mutex::new(stats),
            stats_dirty: AtomicBool::new(false),
            leader: Mutex::new(None),
            become_leader: Notify::new(),
            dump_dirty: Notify::new(),
            stats_changed: Notify::new(),
            group: arc_swap::ArcSwapOption::from(group.map(Arc::new)),
            stopped: AtomicBool::new(false),
        });
        shared.load_initial();

        let (stop, stop_rx) = watch::channel(false);
        let mut threads = Vec::new();
        let rt_shared = shared.clone();
        let rt_stop = stop_rx.clone();
        threads.push(spawn_quiet("ckv-runtime", move || {
            run_runtime(rt_shared, rt_stop)
        })?);
        if shared.group.load().is_some() {
            let f_shared = shared.clone();
            threads.push(spawn_quiet("ckv-follow", move || {
                follow(f_shared, stop_rx)
            })?);
        } else {
            shared.take_leadership();
        }
        Ok(Engine {
            shared,
            stop,
            threads: Mutex::new(threads),
            pid: std::process::id(),
        })
    }

    /// The process that started the engine (to detect use after fork).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The snapshot to read from now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }

    /// A counter that moves whenever the snapshot is replaced.
    pub fn generation(&self) -> &AtomicU32 {
        &self.shared.generation
    }

    /// Wakes C readers after every publish (`ckv_wait_change`, `ckv_notify_fd`).
    pub fn change_signal(&self) -> &crate::notify::ChangeSignal {
        &self.shared.change
    }

    pub fn logs(&self) -> &LogQueue {
        &self.shared.logs
    }

    /// Statistics as JSON. A follower reports the leader's view of the
    /// servers (from the shared directory) with its own snapshot figures.
    pub fn stats_json(&self) -> String {
        let stats = self.shared.stats_now();
        serde_json::to_string(&stats).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Stops the threads, waiting at most `timeout`, and gives up leadership
    /// so that another process of the group takes over the watch. Returns
    /// false when a thread did not stop in time (it is then left detached).
    pub fn shutdown(&self, timeout: Duration) -> bool {
        if self.shared.stopped.swap(true, Ordering::AcqRel) {
            return true;
        }
        let _ = self.stop.send(true);
        self.shared.dump_dirty.notify_one();
        let deadline = Instant::now() + timeout;
        let mut all = true;
        for t in self.threads.lock().drain(..) {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                all = false;
            }
        }
        if let Some(g) = self.shared.group.swap(None) {
            if self.shared.role.swap(ROLE_FOLLOWER, Ordering::AcqRel) == ROLE_LEADER {
                self.shared.log(
                    Level::Notice,
                    format!(
                        "ckv: process {} stopped watching Consul; another worker takes over",
                        std::process::id()
                    ),
                );
            }
            g.release_leadership();
        }
        all
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if std::process::id() == self.pid {
            self.shutdown(Duration::from_secs(2));
        }
    }
}

/// Nice value of the library's threads: parsing a large prefix must not take
/// CPU from the nginx event loops that serve requests on the same cores.
const THREAD_NICE: libc::c_int = 10;

/// Spawns a named thread with every signal blocked, at a lower priority.
fn spawn_quiet(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            block_all_signals();
            lower_priority();
            f()
        })
        .map_err(|e| format!("cannot start thread {name}: {e}"))
}

fn lower_priority() {
    // SAFETY: plain syscalls; with PRIO_PROCESS and a thread id, Linux sets
    // that thread's nice value only. Lowering priority needs no privilege;
    // failure just leaves the default.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, THREAD_NICE);
    }
}

fn block_all_signals() {
    // SAFETY: sigset_t is plain data; pthread_sigmask affects only this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

impl Shared {
    fn log(&self, level: Level, message: String) {
        self.logs.push(level, message);
    }

    /// At start: the leader's current snapshot if there is one, else the
    /// dump file when `dump.load_on_init` is set.
    fn load_initial(&self) {
        if let Some(group) = self.group.load_full() {
            match group.read_latest() {
                Ok(Some((seq, bytes))) => match codec::decode(&bytes, None) {
                    Ok(s) => {
                        self.publish_local(s);
                        return;
                    }
                    Err(e) => self.log(Level::Err, format!("ckv: shared snapshot {seq}: {e}")),
                },
                Ok(None) => {}
                Err(e) => self.log(Level::Err, format!("ckv: cannot read shared snapshot: {e}")),
            }
        }
        let Some(d) = &self.config.dump else { return };
        if !d.load_on_init {
            return;
        }
        let now = crate::stats::now_ms() / 1000;
        match dump::load(&d.path, now, d.expire) {
            Ok((dump::Loaded::Fresh(s), warnings)) => {
                for w in warnings {
                    self.log(Level::Warn, format!("ckv: dump {}: {w}", d.path.display()));
                }
                self.log(
                    Level::Notice,
                    format!(
                        "ckv: loaded {} services ({} nodes) from dump {}",
                        s.services.len(),
                        s.node_count(),
                        d.path.display()
                    ),
                );
                self.publish_local(s);
            }
            Ok((
                dump::Loaded::Expired {
                    last_update,
                    expire,
                },
                _,
            )) => self.log(
                Level::Info,
                format!(
                    "ckv: dump {} expired (written at {last_update}, expire {expire}s), ignored",
                    d.path.display()
                ),
            ),
            Ok((dump::Loaded::Missing, _)) => self.log(
                Level::Info,
                format!("ckv: no dump at {} yet", d.path.display()),
            ),
            Err(e) => self.log(Level::Err, format!("ckv: {e}; ignored")),
        }
    }

    fn publish_local(&self, snapshot: Snapshot) {
        let seq = snapshot.seq;
        self.current.store(Arc::new(snapshot));
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.change.publish(seq);
    }

    /// This process now watches Consul: build the models from what is being
    /// served, so that unchanged services keep their generations.
    fn take_leadership(&self) {
        let current = self.current.load_full();
        let rules = Rules {
            prefix: self.config.prefix.clone(),
            skip_keys: self.config.skip_keys.clone(),
            default_weight: self.config.weight,
        };
        let models = self
            .config
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut m = ServerModel::new(i as u16, &s.url, rules.clone());
                m.seed(current.services.iter().map(|(k, v)| (k.clone(), v.clone())));
                m
            })
            .collect();
        let seq = current
            .seq
            .max(self.group.load().as_ref().map_or(0, |g| g.seq()));
        *self.leader.lock() = Some(Leader {
            models,
            synced: vec![false; self.config.servers.len()],
            kept_empty: vec![false; self.config.servers.len()],
            seq,
        });
        if self.role.load(Ordering::Acquire) == ROLE_FOLLOWER {
            self.role.store(ROLE_LEADER, Ordering::Release);
            self.log(
                Level::Notice,
                format!(
                    "ckv: process {} is now the Consul watcher for this nginx instance",
                    std::process::id()
                ),
            );
        }
        self.become_leader.notify_one();
    }

    /// Leader: builds and publishes the merged snapshot after a change.
    fn publish_from(&self, leader: &mut Leader) {
        leader.seq += 1;
        let mut services = std::collections::HashMap::new();
        for m in &leader.models {
            for (k, v) in m.services() {
                services.insert(k.clone(), v.clone());
            }
        }
        let snapshot = Snapshot {
            seq: leader.seq,
            services,
            from_dump: false,
            synced: leader.synced.iter().all(|s| *s),
        };
        if let Some(group) = self.group.load_full() {
            let bytes = codec::encode(&snapshot);
            if let Err(e) = group.publish(snapshot.seq, &bytes) {
                self.log(
                    Level::Err,
                    format!(
                        "ckv: cannot publish snapshot to {}: {e}; other workers keep the previous one",
                        group.dir().display()
                    ),
                );
            }
        }
        for (i, m) in leader.models.iter().enumerate() {
            let (services, nodes) = (m.services().len() as u64, m.node_count());
            if let Some(s) = self.stats.lock().get_mut(i) {
                s.services = services;
                s.nodes = nodes;
            }
        }
        self.stats_dirty.store(true, Ordering::Release);
        self.stats_changed.notify_one();
        self.publish_local(snapshot);
        if self.config.dump.is_some() {
            self.dump_dirty.notify_one();
        }
    }

    fn stats_now(&self) -> Stats {
        let snap = self.current.load();
        let role = self.role.load(Ordering::Acquire);
        let mut servers = self.stats.lock().clone();
        let group = self.group.load_full();
        if role == ROLE_FOLLOWER {
            if let Some(g) = &group {
                match g
                    .read_stats()
                    .ok()
                    .and_then(|b| serde_json::from_slice::<LeaderStats>(&b).ok())
                {
                    // Same configuration, so the same servers in the same order.
                    Some(leader) => {
                        for (dst, src) in servers.iter_mut().zip(leader.servers) {
                            *dst = src;
                        }
                    }
                    None => {
                        for s in &mut servers {
                            s.state = ServerState::Follower;
                        }
                    }
                }
            }
        }
        Stats {
            version: crate::VERSION,
            pid: std::process::id(),
            role: match role {
                ROLE_LEADER => "leader",
                ROLE_FOLLOWER => "follower",
                _ => "standalone",
            },
            leader_pid: group
                .as_ref()
                .map_or(std::process::id(), |g| g.leader_pid()),
            generation: snap.seq,
            services: snap.services.len() as u64,
            nodes: snap.node_count(),
            source: if snap.from_dump {
                "dump"
            } else if snap.seq > 0 {
                "consul"
            } else {
                "none"
            },
            ready: snap.synced || snap.from_dump,
            servers,
            config: self.config.redacted_json(),
        }
    }
}

/// What a follower needs from the leader's `stats.json` (a whole [`Stats`]).
#[derive(Debug, serde::Deserialize)]
struct LeaderStats {
    servers: Vec<ServerStats>,
}

/// Connects the watch tasks to the engine.
#[derive(Debug)]
struct Sink(Arc<Shared>);

impl WatchSink for Sink {
    fn apply(&self, server: usize, entries: &[RawEntry<'_>]) -> Result<bool, String> {
        let shared = &self.0;
        let mut guard = shared.leader.lock();
        let Some(leader) = guard.as_mut() else {
            return Ok(false);
        };
        let Some(model) = leader.models.get_mut(server) else {
            return Ok(false);
        };
        let url = model.name_base().to_owned();
        let applied = match model.apply(entries, leader.seq + 1) {
            Ok(a) => a,
            Err(refused) => {
                return Err(format!(
                    "all {} entries of the response are malformed (first: {})",
                    refused.malformed_total,
                    refused
                        .newly_malformed
                        .first()
                        .map_or_else(String::new, |(k, r)| format!("{k:?}: {r}"))
                ));
            }
        };
        for (key, reason) in &applied.newly_malformed {
            let key = watcher::redact::scrub(&shared.config, &escape_untrusted(key));
            let line = format!("ckv: {url}: skipped key \"{key}\": {reason}");
            shared
                .logs
                .push_limited(LogClass::MalformedKey, Level::Warn, line);
        }
        if applied.newly_malformed_omitted > 0 {
            let line = format!("ckv: {url}: skipped {} more malformed keys in this response (stats: malformed_entries)", applied.newly_malformed_omitted);
            shared
                .logs
                .push_limited(LogClass::MalformedKey, Level::Warn, line);
        }
        let malformed = applied.malformed_total as u64;
        if let Some(s) = shared.stats.lock().get_mut(server) {
            s.malformed_entries = malformed;
        }
        let first = !std::mem::replace(&mut leader.synced[server], true);
        leader.kept_empty[server] = false;
        if applied.changed || first {
            shared.publish_from(leader);
        }
        Ok(applied.changed)
    }

    fn apply_empty(&self, server: usize) -> bool {
        let shared = &self.0;
        let mut guard = shared.leader.lock();
        let Some(leader) = guard.as_mut() else {
            return false;
        };
        let first = !std::mem::replace(&mut leader.synced[server], true);
        let url = shared.config.servers[server].url.clone();
        let changed = match shared.config.on_empty_prefix {
            EmptyPrefixPolicy::Clear => leader.models[server].clear(),
            EmptyPrefixPolicy::Keep => {
                let kept = !leader.models[server].services().is_empty();
                if kept && !std::mem::replace(&mut leader.kept_empty[server], true) {
                    shared.log(
                        Level::Warn,
                        format!(
                            "ckv: {url}: prefix {}/ is empty in Consul; keeping the last {} services (on_empty_prefix = keep)",
                            shared.config.prefix,
                            leader.models[server].services().len()
                        ),
                    );
                }
                false
            }
        };
        if changed {
            shared.log(
                Level::Warn,
                format!(
                    "ckv: {url}: prefix {}/ is empty in Consul; its services were removed",
                    shared.config.prefix
                ),
            );
        }
        if changed || first {
            shared.publish_from(leader);
        }
        changed
    }

    fn update_stats(&self, server: usize, f: &mut dyn FnMut(&mut ServerStats)) {
        let state_changed = match self.0.stats.lock().get_mut(server) {
            Some(s) => {
                let before = s.state;
                f(s);
                s.state != before
            }
            None => false,
        };
        self.0.stats_dirty.store(true, Ordering::Release);
        if state_changed {
            self.0.stats_changed.notify_one();
        }
    }

    fn log(&self, level: Level, message: String) {
        self.0.log(level, message);
    }

    fn log_limited(&self, class: LogClass, level: Level, message: String) {
        self.0.logs.push_limited(class, level, message);
    }
}

fn run_runtime(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    // Blocking-pool threads (dump writes) inherit this thread's signal mask.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("ckv-blocking")
        .max_blocking_threads(1)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            shared.log(Level::Err, format!("ckv: cannot start the runtime: {e}"));
            return;
        }
    };
    rt.block_on(async move {
        let mut stop_wait = stop.clone();
        // Wait to be leader (at once when not sharing).
        tokio::select! {
            _ = shared.become_leader.notified() => {}
            _ = stop_wait.wait_for(|s| *s) => return,
        }
        let client = match watcher::build_client(&shared.config) {
            Ok(c) => c,
            Err(e) => {
                shared.log(Level::Err, format!("ckv: {e}; not watching Consul"));
                return;
            }
        };
        let sink: Arc<dyn WatchSink> = Arc::new(Sink(shared.clone()));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..shared.config.servers.len() {
            tasks.spawn(watcher::run(
                i,
                shared.config.clone(),
                client.clone(),
                sink.clone(),
                stop.clone(),
            ));
        }
        if shared.config.dump.is_some() {
            tasks.spawn(write_dumps(shared.clone(), stop.clone()));
        }
        if shared.group.load().is_some() {
            tasks.spawn(write_stats(shared.clone(), stop.clone()));
        }
        while tasks.join_next().await.is_some() {}
    });
}

/// Leader: writes the dump after changes, at most once per `DUMP_COALESCE`.
async fn write_dumps(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let Some(d) = shared.config.dump.clone() else {
        return;
    };
    loop {
        tokio::select! {
            _ = shared.dump_dirty.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(DUMP_COALESCE) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        let snap = shared.current.load_full();
        if snap.from_dump || !snap.synced {
            // Never overwrite a good dump with a partial or reloaded view.
            if *stop.borrow() {
                return;
            }
            continue;
        }
        let text = dump::render(&snap, crate::stats::now_ms() / 1000, d.expire);
        let path = d.path.clone();
        let result =
            tokio::task::spawn_blocking(move || dump::write_atomic(&path, text.as_bytes())).await;
        match result {
            Ok(Ok(())) => shared.log(
                Level::Info,
                format!(
                    "ckv: wrote dump {} ({} services)",
                    d.path.display(),
                    snap.services.len()
                ),
            ),
            Ok(Err(e)) => shared.log(
                Level::Err,
                format!("ckv: cannot write dump {}: {e}", d.path.display()),
            ),
            Err(e) => shared.log(Level::Err, format!("ckv: dump writer failed: {e}")),
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Leader: shares its watch statistics with the other processes.
async fn write_stats(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        if shared.stats_dirty.swap(false, Ordering::AcqRel) {
            if let Some(g) = shared.group.load_full() {
                let stats = shared.stats_now();
                if let Ok(json) = serde_json::to_vec(&stats) {
                    let _ = g.write_stats(&json);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(STATS_INTERVAL) => {}
            _ = shared.stats_changed.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Follower thread: take over when the leader goes, follow it until then.
fn follow(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let Some(group) = shared.group.load_full() else {
        return;
    };
    let mut seen_seq = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        let word = group.wake_word();
        if shared.role.load(Ordering::Acquire) == ROLE_FOLLOWER {
            let latest = group.seq();
            if latest != seen_seq {
                match group.read_latest() {
                    Ok(Some((seq, bytes))) => {
                        let previous = shared.current.load_full();
                        match codec::decode(&bytes, Some(&previous)) {
                            Ok(s) => {
                                seen_seq = seq;
                                shared.publish_local(s);
                            }
                            Err(e) => {
                                seen_seq = seq;
                                shared.log(
                                    Level::Err,
                                    format!("ckv: shared snapshot {seq} is unusable: {e}; keeping the previous one"),
                                );
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        shared.log(Level::Err, format!("ckv: cannot read shared snapshot: {e}"))
                    }
                }
            }
            match group.try_lead() {
                Ok(true) => {
                    // From now on the runtime thread does the work.
                    shared.take_leadership();
                    return;
                }
                Ok(false) => {}
                Err(e) => shared.log(Level::Err, format!("ckv: leader lock: {e}")),
            }
        }
        group.wait(word, ELECTION_POLL);
    }
}
