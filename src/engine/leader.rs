//! The process that watches Consul (the group's leader, or a standalone
//! process): its models, the watch tasks, and publishing each change locally,
//! to the shared directory and to the dump.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use super::state::{Role, Shared};
use crate::dump;
use crate::kv::RawEntry;
use crate::log::{escape_untrusted, Level, LogClass};
use crate::model::{self, ServerModel};
use crate::policy::{self, EmptyOutcome};
use crate::shared::{codec, Group};
use crate::snapshot::{Meta, Snapshot};
use crate::stats::{ChangeTimes, ServerStats};
use crate::watcher::{self, WatchSink};

/// Dump writes are coalesced: at most one per this interval.
const DUMP_COALESCE: Duration = Duration::from_millis(500);
/// The leader's stats file is refreshed (and a failed publish retried) at
/// most this often.
const STATS_INTERVAL: Duration = Duration::from_millis(250);

/// After an answer at least this large was handled, freed heap memory is
/// given back to the OS: its body, parse and encoded snapshot are what keep
/// the leader's RSS at its peak otherwise (glibc keeps freed pages).
const RELEASE_AFTER_BYTES: usize = 1 << 20;
/// ... at most this often: releasing costs about 1 ms of CPU at 100k keys
/// (13 MB answers), and the pages are faulted in again by the next answer.
const RELEASE_INTERVAL: Duration = Duration::from_millis(500);
/// How long the leader keeps its spare snapshot buffer after the last
/// publish ([`give_back_room`]).
const ROOM_IDLE: Duration = Duration::from_secs(2);

/// The leader's models: what each server last said.
#[derive(Debug)]
pub struct Leader {
    models: Vec<ServerModel>,
    synced: Vec<bool>,
    /// Per server: the prefix is empty in Consul and its services were kept
    /// (`on_empty_prefix = keep`); warned once per such episode.
    kept_empty: Vec<bool>,
    /// Per server: when its response being handled arrived.
    received: Vec<Option<Arrival>>,
    seq: u64,
    /// Each model's `names_epoch` when snapshot `seq` was built: while they
    /// stay, the next snapshot is that one patched.
    built_epochs: Vec<u64>,
    /// Snapshots made by patching the previous one, not built anew.
    patched: u64,
    /// The heap buffer of the last snapshot the leader swapped for its
    /// file's mapping, to patch the next one in: a fresh buffer faults in
    /// each of its pages (about 400 faults at 10k services, in four changes
    /// of ten, when glibc had given the last one back). Given back once
    /// changes stop ([`give_back_room`]): it is as large as the file.
    room: Vec<u8>,
}

/// When a response arrived.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    /// Monotonic, for `apply_seconds`.
    at: Instant,
    /// Wall clock (µs), carried in the snapshot and in `last_change_steps`.
    received_us: u64,
    headers_us: u64,
}

impl Arrival {
    fn now(headers_us: u64) -> Arrival {
        Arrival {
            at: Instant::now(),
            received_us: crate::stats::now_us(),
            headers_us,
        }
    }
}

impl Leader {
    /// When the response of `server` being applied arrived; now if unknown.
    fn take_received(&mut self, server: usize) -> Arrival {
        self.received
            .get_mut(server)
            .and_then(Option::take)
            .unwrap_or_else(|| Arrival::now(0))
    }
}

/// The runtime is built in `Engine::start`, so that failing to build it
/// fails `ckv_init` instead of leaving a leader that never watches.
pub fn build_runtime() -> Result<tokio::runtime::Runtime, String> {
    // Blocking-pool threads (dump writes) are spawned from the runtime
    // thread and inherit its signal mask and priority.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("ckv-blocking")
        .max_blocking_threads(1)
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// This process now watches Consul: build the models from what is being
/// served, so that unchanged services keep their generations.
pub fn take_leadership(shared: &Shared) {
    let current = shared.current.load_full();
    let rules = policy::rules(&shared.config);
    let models = shared
        .config
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut m = ServerModel::new(i as u16, &s.url, rules.clone());
            m.seed(
                current
                    .iter()
                    .map(|s| (Arc::from(&*s.name.to_str()), s.to_service())),
            );
            m
        })
        .collect();
    let seq = current
        .seq
        .max(shared.group.load().as_ref().map_or(0, |g| g.seq()));
    let servers = shared.config.servers.len();
    *shared.leader.lock() = Some(Leader {
        models,
        synced: vec![false; servers],
        kept_empty: vec![false; servers],
        received: vec![None; servers],
        seq,
        built_epochs: Vec::new(),
        room: Vec::new(),
        patched: 0,
    });
    if shared.role() == Role::Follower {
        shared.set_role(Role::Leader);
        shared.log(
            Level::Notice,
            format!(
                "ckv: process {} is now the Consul watcher for this nginx instance",
                std::process::id()
            ),
        );
    }
    pass_on_inherited(shared, &current);
    shared.become_leader.notify_one();
}

/// A snapshot inherited from the previous group at a reload goes into this
/// group as well, so that a worker started later, and the next reload, find
/// it even if Consul stays down. The stats file goes first: from it the
/// followers learn that what they read is the inherited snapshot.
fn pass_on_inherited(shared: &Shared, current: &Snapshot) {
    let Some(group) = shared.group.load_full() else {
        return;
    };
    let inherited = current.seq > 0 && shared.inherited_seq.load(Ordering::Acquire) == current.seq;
    if !inherited || group.seq() != 0 {
        return;
    }
    if let Ok(json) = serde_json::to_vec(&shared.stats_now()) {
        let _ = group.write_stats(&json);
    }
    share_current(shared);
}

/// Builds and publishes the merged snapshot after a change brought by the
/// response that arrived at `arrival` (parsed at `parsed_us`).
fn publish_from(shared: &Shared, leader: &mut Leader, arrival: Arrival, parsed_us: u64) {
    let applied_us = crate::stats::now_us();
    let received_us = arrival.received_us;
    leader.seq += 1;
    let meta = Meta {
        seq: leader.seq,
        from_dump: false,
        synced: leader.synced.iter().all(|s| *s),
        received_us,
    };
    let snapshot = next_snapshot(shared, leader, meta);
    for (i, m) in leader.models.iter().enumerate() {
        let (services, nodes) = (m.service_count() as u64, m.node_count());
        if let Some(s) = shared.stats.lock().get_mut(i) {
            s.services = services;
            s.nodes = nodes;
        }
    }
    // The times are those of this change before the snapshot is served, so
    // that `stats()` never pairs its seq with the previous change's steps;
    // `published_us` stays 0 until the followers have been woken.
    *shared.last_change.lock() = ChangeTimes {
        seq: leader.seq,
        headers_us: arrival.headers_us,
        received_us,
        parsed_us,
        applied_us,
        published_us: 0,
        served_us: 0,
    };
    shared.publish_observed(snapshot);
    if let Some(replaced) = share_current(shared) {
        leader.room = Snapshot::into_heap_bytes(replaced).unwrap_or_default();
    }
    if leader.room.capacity() > 0 {
        shared.room_kept.notify_one();
    }
    shared.last_change.lock().published_us = crate::stats::now_us();
    shared.stats_dirty.store(true, Ordering::Release);
    shared.stats_changed.notify_one();
    if shared.config.dump.is_some() {
        shared.dump_dirty.notify_one();
    }
}

/// The snapshot of the models under `meta`: the served one patched when
/// only nodes changed since it was built (no service added or removed in
/// any model), else built anew.
fn next_snapshot(shared: &Shared, leader: &mut Leader, meta: Meta) -> Snapshot {
    let epochs: Vec<u64> = leader.models.iter().map(ServerModel::names_epoch).collect();
    let current = shared.current.load();
    // The patch reads the services as the models list them: no list of
    // every service is made for it.
    let room = std::mem::take(&mut leader.room);
    let patched = (epochs == leader.built_epochs && current.seq == meta.seq - 1)
        .then(|| Snapshot::patched(&current, meta, model::each_service(&leader.models), room))
        .flatten();
    leader.built_epochs = epochs;
    match patched {
        Some(s) => {
            debug_assert!(
                codec::file_bytes(&s)[..]
                    == *codec::encode(&Snapshot::from_table(codec::Table::build_seeded(
                        &meta,
                        model::service_refs(&leader.models),
                        current.table().seed()
                    ))),
                "a patched snapshot differs from the one built anew"
            );
            leader.patched += 1;
            s
        }
        None => Snapshot::new(meta, model::service_refs(&leader.models)),
    }
}

/// Writes the served snapshot to the shared directory. On failure (a full
/// tmpfs, say) the followers are told through the header and the write is
/// retried by the stats writer until it succeeds; logged once per episode.
/// Returns the heap snapshot that its file's mapping replaced.
fn share_current(shared: &Shared) -> Option<Arc<Snapshot>> {
    let group = shared.group.load_full()?;
    let snapshot = shared.current.load_full();
    let mut replaced = None;
    match group.publish(snapshot.seq, &codec::file_bytes(&snapshot)) {
        Ok(()) => {
            if shared.publish_pending.swap(false, Ordering::AcqRel) {
                shared.log(
                    Level::Notice,
                    format!(
                        "ckv: published snapshot {} to {}; the other workers have it now",
                        snapshot.seq,
                        group.dir().display()
                    ),
                );
            }
            if serve_from_file(shared, &group, &snapshot) {
                replaced = Some(snapshot);
            }
        }
        Err(e) => {
            group.set_publish_failed(true);
            if !shared.publish_pending.swap(true, Ordering::AcqRel) {
                shared.log(
                    Level::Err,
                    format!(
                        "ckv: cannot publish snapshot to {}: {e}; other workers keep the previous one until a retry succeeds",
                        group.dir().display()
                    ),
                );
            }
        }
    }
    replaced
}

/// Once its file is written, the leader serves the snapshot from a mapping
/// of that file as the followers do: its pages are then shared with them
/// instead of being a private heap copy of the same bytes (about 12 MiB at
/// 100k services). Skipped when a newer snapshot was served meanwhile or the
/// file is not byte-for-byte what was written. Returns whether the mapping
/// replaced `snapshot`.
fn serve_from_file(shared: &Shared, group: &Group, snapshot: &Arc<Snapshot>) -> bool {
    if snapshot.is_mapped() {
        return false;
    }
    let Ok(Some((seq, mapping))) = group.read_latest() else {
        return false;
    };
    if seq != snapshot.seq {
        return false;
    }
    let Some(mapped) = snapshot.remapped(mapping) else {
        return false;
    };
    let before = shared.current.compare_and_swap(snapshot, Arc::new(mapped));
    Arc::ptr_eq(&before, snapshot)
}

/// Connects the watch tasks to the engine.
#[derive(Debug)]
struct Sink {
    shared: Arc<Shared>,
    /// Wakes [`release_memory`] after a large answer was dropped.
    release: Arc<Notify>,
}

impl Sink {
    /// Records parse + apply + publish time of one response.
    fn applied(&self, since: Instant) {
        let took = since.elapsed().as_secs_f64();
        self.shared.apply_seconds.lock().observe(took);
        self.shared.stats_dirty.store(true, Ordering::Release);
    }
}

impl WatchSink for Sink {
    fn received(&self, server: usize, headers_us: u64) {
        if let Some(leader) = self.shared.leader.lock().as_mut() {
            if let Some(slot) = leader.received.get_mut(server) {
                *slot = Some(Arrival::now(headers_us));
            }
        }
    }

    fn apply(&self, server: usize, entries: &[RawEntry<'_>]) -> Result<bool, String> {
        let parsed_us = crate::stats::now_us();
        let shared = &self.shared;
        let mut guard = shared.leader.lock();
        let Some(leader) = guard.as_mut() else {
            return Ok(false);
        };
        let arrival = leader.take_received(server);
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
            let key = shared.config.scrub(&escape_untrusted(key));
            let line = format!("ckv: {url}: skipped key \"{key}\": {reason}");
            shared
                .logs
                .push_limited(LogClass::MalformedKey, Level::Warn, line);
        }
        if applied.newly_malformed_omitted > 0 {
            let line = format!(
                "ckv: {url}: skipped {} more malformed keys in this response (stats: malformed_entries)",
                applied.newly_malformed_omitted
            );
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
            publish_from(shared, leader, arrival, parsed_us);
        }
        drop(guard);
        self.applied(arrival.at);
        Ok(applied.changed)
    }

    fn apply_empty(&self, server: usize) -> bool {
        let shared = &self.shared;
        let mut guard = shared.leader.lock();
        let Some(leader) = guard.as_mut() else {
            return false;
        };
        let arrival = leader.take_received(server);
        let parsed_us = arrival.received_us;
        let first = !std::mem::replace(&mut leader.synced[server], true);
        let url = &shared.config.servers[server].url;
        let prefix = &shared.config.prefix;
        let outcome =
            policy::on_empty_prefix(shared.config.on_empty_prefix, &mut leader.models[server]);
        match outcome {
            EmptyOutcome::Kept(n) => {
                if !std::mem::replace(&mut leader.kept_empty[server], true) {
                    shared.log(
                        Level::Warn,
                        format!(
                            "ckv: {url}: prefix {prefix}/ is empty in Consul; keeping the last {n} services (on_empty_prefix = keep)"
                        ),
                    );
                }
            }
            EmptyOutcome::Cleared => shared.log(
                Level::Warn,
                format!(
                    "ckv: {url}: prefix {prefix}/ is empty in Consul; its services were removed"
                ),
            ),
            EmptyOutcome::Unchanged => {}
        }
        let changed = outcome == EmptyOutcome::Cleared;
        if changed || first {
            publish_from(shared, leader, arrival, parsed_us);
        }
        drop(guard);
        self.applied(arrival.at);
        changed
    }

    fn update_stats(&self, server: usize, f: &mut dyn FnMut(&mut ServerStats)) {
        let state_changed = match self.shared.stats.lock().get_mut(server) {
            Some(s) => {
                let before = s.state;
                f(s);
                s.state != before
            }
            None => false,
        };
        self.shared.stats_dirty.store(true, Ordering::Release);
        if state_changed {
            self.shared.stats_changed.notify_one();
        }
    }

    fn answer_dropped(&self, body_bytes: usize) {
        if body_bytes >= RELEASE_AFTER_BYTES {
            self.release.notify_one();
        }
    }

    fn log(&self, level: Level, message: String) {
        self.shared.log(level, message);
    }

    fn log_limited(&self, class: LogClass, level: Level, message: String) {
        self.shared.logs.push_limited(class, level, message);
    }
}

/// The runtime thread: waits to lead (at once when standalone), then runs a
/// watch per server, the dump writer and the stats writer until stopped.
pub fn run(
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    rt.block_on(async move {
        let mut stop_wait = stop.clone();
        tokio::select! {
            _ = shared.become_leader.notified() => {}
            _ = stop_wait.wait_for(|s| *s) => return,
        }
        let release = Arc::new(Notify::new());
        let sink: Arc<dyn WatchSink> = Arc::new(Sink {
            shared: shared.clone(),
            release: release.clone(),
        });
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(release_memory(
            release,
            stop.clone(),
            crate::memory::release_free_memory,
        ));
        tasks.spawn(give_back_room(shared.clone(), stop.clone()));
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

/// Drops the leader's spare snapshot buffer ([`Leader::room`]) once no
/// snapshot was published for `ROOM_IDLE`, and gives its pages back: while
/// changes keep coming it spares each one the page faults of a fresh
/// buffer; when they stop it is memory the leader has no use for (9 MiB at
/// 100k services).
async fn give_back_room(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shared.room_kept.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // Every publish in between starts the wait again.
        loop {
            tokio::select! {
                _ = tokio::time::sleep(ROOM_IDLE) => break,
                _ = shared.room_kept.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        let room = shared
            .leader
            .lock()
            .as_mut()
            .map(|l| std::mem::take(&mut l.room))
            .unwrap_or_default();
        let had_room = room.capacity() > 0;
        drop(room);
        if had_room {
            crate::memory::release_free_memory();
        }
    }
}

/// Calls `release` after each wake-up, at most once per `RELEASE_INTERVAL`:
/// wake-ups within the interval make one call at its end. It runs on the
/// watch's runtime once the watch has sent its next request.
async fn release_memory(wanted: Arc<Notify>, mut stop: watch::Receiver<bool>, release: impl Fn()) {
    let mut last: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = wanted.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let at = last.map_or_else(tokio::time::Instant::now, |l| l + RELEASE_INTERVAL);
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // Let the watch's connection send the next request first.
        tokio::task::yield_now().await;
        // Wake-ups so far are covered by this call.
        let _ = futures_util::FutureExt::now_or_never(wanted.notified());
        release();
        last = Some(tokio::time::Instant::now());
    }
}

/// Writes the dump after changes, at most once per `DUMP_COALESCE`.
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
        let result = tokio::task::spawn_blocking(move || dump::write(&path, text.as_bytes())).await;
        match result {
            Ok(Ok(())) => shared.log(
                Level::Info,
                format!(
                    "ckv: wrote dump {} ({} services)",
                    d.path.display(),
                    snap.len()
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

/// Shares the watch statistics with the other processes, and retries a
/// publish that failed.
async fn write_stats(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        if shared.publish_pending.load(Ordering::Acquire) {
            share_current(&shared);
            shared.stats_dirty.store(true, Ordering::Release);
        }
        if shared.stats_dirty.swap(false, Ordering::AcqRel) {
            if let Some(g) = shared.group.load_full() {
                let stats = shared.stats_now();
                let written = serde_json::to_vec(&stats).map(|json| g.write_stats(&json));
                if !matches!(written, Ok(Ok(()))) {
                    // Full or unwritable: try again at the next tick.
                    shared.stats_dirty.store(true, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Field;
    use std::borrow::Cow;
    use std::sync::atomic::AtomicUsize;

    fn node(service: &str, host: u8, weight: u32) -> RawEntry<'static> {
        use base64::Engine as _;
        let value = format!(r#"{{"weight":{weight}}}"#);
        RawEntry {
            key: Field::Ok(Cow::Owned(format!("upstreams/{service}/10.0.0.{host}:80"))),
            value: Field::Ok(Cow::Owned(
                base64::engine::general_purpose::STANDARD.encode(value),
            )),
            modify_index: Field::Ok(u64::from(weight)),
        }
    }

    /// The engine state of a leader of one server, `upstreams` prefix.
    fn leading(group: Option<Group>) -> Arc<Shared> {
        let config = crate::config::Config::from_json(
            br#"{"servers":["http://127.0.0.1:8500"],"prefix":"upstreams"}"#,
        )
        .unwrap();
        let shared = Arc::new(Shared::new(Arc::new(config), group, None));
        take_leadership(&shared);
        shared
    }

    fn sink_of(shared: &Arc<Shared>) -> Sink {
        Sink {
            shared: shared.clone(),
            release: Arc::new(Notify::new()),
        }
    }

    #[test]
    fn a_change_of_nodes_only_patches_the_served_snapshot() {
        let shared = leading(None);
        let sink = sink_of(&shared);
        let patched = || shared.leader.lock().as_ref().unwrap().patched;
        let weight_of = |service: &str| {
            let name = format!("http://127.0.0.1:8500/v1/kv/upstreams/{service}/");
            let snap = shared.current.load_full();
            let json = snap.get(&name).map(|s| s.nodes_json.to_owned());
            json
        };
        let mut nodes = vec![node("a", 1, 1), node("b", 1, 1), node("c", 1, 1)];
        assert_eq!(sink.apply(0, &nodes), Ok(true));
        assert_eq!(patched(), 0, "the first snapshot is built");
        nodes[1] = node("b", 1, 7);
        assert_eq!(sink.apply(0, &nodes), Ok(true));
        assert_eq!(patched(), 1, "a weight: patched");
        assert!(weight_of("b").unwrap().contains(r#""weight":7"#));
        nodes.push(node("c", 2, 3));
        assert_eq!(sink.apply(0, &nodes), Ok(true));
        assert_eq!(patched(), 2, "a node more in a service: patched");
        nodes.push(node("d", 1, 1));
        assert_eq!(sink.apply(0, &nodes), Ok(true));
        assert_eq!(patched(), 2, "a service more: built");
        assert!(weight_of("d").is_some());
        nodes.remove(0);
        assert_eq!(sink.apply(0, &nodes), Ok(true));
        assert_eq!(patched(), 2, "a service fewer: built");
        assert!(weight_of("a").is_none());
        nodes[0] = node("b", 1, 9);
        assert_eq!(sink.apply(0, &nodes), Ok(true));
        assert_eq!(patched(), 3);
        assert!(weight_of("b").unwrap().contains(r#""weight":9"#));
        assert_eq!(shared.current.load().len(), 3);
    }

    #[test]
    fn a_patch_is_written_into_the_buffer_its_predecessors_mapping_freed() {
        let base = tempfile::tempdir().unwrap();
        let limits = crate::shared::Limits {
            snapshot_bytes: 1 << 20,
            stats_bytes: 1 << 20,
        };
        let group = Group::join(base.path(), "g", 1, limits).unwrap();
        assert!(group.try_lead().unwrap());
        let shared = leading(Some(group));
        let sink = sink_of(&shared);
        let room = || {
            let leader = shared.leader.lock();
            let room = &leader.as_ref().unwrap().room;
            (room.as_ptr(), room.capacity())
        };
        let mut nodes: Vec<_> = (1..=200).map(|h| node("a", h, 1)).collect();
        assert_eq!(sink.apply(0, &nodes), Ok(true));
        let served = shared.current.load_full();
        assert!(served.is_mapped(), "the leader serves its file");
        let (first, capacity) = room();
        assert!(capacity >= codec::file_bytes(&served).len());
        drop(served);
        for weight in 2..5 {
            nodes[7] = node("a", 8, weight);
            assert_eq!(sink.apply(0, &nodes), Ok(true));
            assert!(shared.current.load().is_mapped());
            // Patched in that buffer, which came back when the patch's own
            // file replaced it in turn.
            assert_eq!(room().0, first, "change {weight}");
        }
        assert_eq!(shared.leader.lock().as_ref().unwrap().patched, 3);
        // While a reader holds the heap snapshot, its buffer stays with it.
        let held = Arc::new(Snapshot::default());
        let _reader = held.clone();
        assert!(Snapshot::into_heap_bytes(held).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_spare_buffer_is_given_back_once_changes_stop() {
        let shared = leading(None);
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(give_back_room(shared.clone(), stop));
        let keep = |shared: &Shared| {
            shared.leader.lock().as_mut().unwrap().room = vec![7; 1 << 16];
            shared.room_kept.notify_one();
        };
        let kept = |shared: &Shared| shared.leader.lock().as_ref().unwrap().room.capacity() > 0;
        keep(&shared);
        settle().await;
        // Changes closer together than ROOM_IDLE: the buffer stays.
        for _ in 0..5 {
            tokio::time::advance(ROOM_IDLE / 2).await;
            settle().await;
            assert!(kept(&shared));
            shared.room_kept.notify_one();
            settle().await;
        }
        tokio::time::advance(ROOM_IDLE + Duration::from_millis(1)).await;
        settle().await;
        assert!(!kept(&shared), "given back after a quiet ROOM_IDLE");
        // And kept again by the next change.
        keep(&shared);
        settle().await;
        assert!(kept(&shared));
        tokio::time::advance(ROOM_IDLE + Duration::from_millis(1)).await;
        settle().await;
        assert!(!kept(&shared));
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    /// Lets the release task run until it waits again (time is paused).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_released_after_a_large_answer_at_most_once_per_interval() {
        let calls = Arc::new(AtomicUsize::new(0));
        let wanted = Arc::new(Notify::new());
        let (stop_tx, stop) = watch::channel(false);
        let counted = calls.clone();
        let task = tokio::spawn(release_memory(wanted.clone(), stop, move || {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        settle().await;
        assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing before a wake-up");

        // The first large answer: released at once (once the watch yields).
        wanted.notify_one();
        settle().await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Three more right after: one release, at the end of the interval.
        for _ in 0..3 {
            wanted.notify_one();
        }
        tokio::time::advance(RELEASE_INTERVAL / 2).await;
        settle().await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "not within the interval");
        tokio::time::advance(RELEASE_INTERVAL / 2).await;
        settle().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        tokio::time::advance(RELEASE_INTERVAL * 4).await;
        settle().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "coalesced into one");

        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}
