//! State shared by every connection: the store, the wake-up channels, the
//! fault table, snapshots and counters.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::watch;

use crate::config::Config;
use crate::faults::FaultTable;
use crate::stats::Stats;
use crate::store::{KvState, Store};

/// "Drop every blocked read whose key starts with `prefix` (and whose method
/// matches)", broadcast to blocked reads by the `drop_connection` fault.
#[derive(Clone, Debug, Default)]
pub struct DropSignal {
    pub epoch: u64,
    pub prefix: Vec<u8>,
}

/// "Close every connection except `except`".
#[derive(Clone, Copy, Debug, Default)]
pub struct CloseSignal {
    pub epoch: u64,
    pub except: u64,
}

pub struct Shared {
    pub cfg: Config,
    store: RwLock<Store>,
    /// Bumped whenever KV data changes: blocked reads re-evaluate.
    pub change: watch::Sender<u64>,
    /// Bumped on restore/reset (`AbandonCh`): blocked reads return at once.
    pub abandon: watch::Sender<u64>,
    pub drop_blocked: watch::Sender<DropSignal>,
    pub close_conns: watch::Sender<CloseSignal>,
    /// Set to true once to stop the server.
    pub shutdown: watch::Sender<bool>,
    faults: Mutex<FaultTable>,
    pub snapshots: Mutex<HashMap<String, KvState>>,
    pub stats: Arc<Stats>,
    pub max_conns_per_client: AtomicUsize,
    pub per_client: Mutex<HashMap<IpAddr, usize>>,
    pub next_conn_id: AtomicU64,
    /// The Raft index of the ACL bootstrap, once it happened (its "reset index").
    pub acl_bootstrap_index: Mutex<Option<u64>>,
    /// Listeners stopped with `/_double/listener` (a cluster member that is
    /// down): not bound, their connections dropped, until started again.
    pub down: watch::Sender<std::collections::BTreeSet<std::net::SocketAddr>>,
    /// The bound listener addresses.
    pub bound: Mutex<Vec<std::net::SocketAddr>>,
    /// Tokens deleted with `/_double/acl/revoke`: `403 ACL not found`.
    pub revoked: Mutex<std::collections::HashSet<String>>,
    /// Every SNI name TLS clients sent (`tls_sni_seen` in the stats).
    pub sni_seen: Mutex<std::collections::BTreeSet<String>>,
    /// Compact `?recurse` answers of the current store version.
    pub list_cache: Mutex<ListCache>,
}

/// `?recurse` bodies (None: no visible entry) by prefix and token, all of
/// one store version; a newer version empties it.
#[derive(Debug, Default)]
pub struct ListCache {
    version: u64,
    answers: HashMap<(Vec<u8>, String), (Option<Bytes>, bool)>,
}

/// Distinct prefix/token pairs kept per version (tests use a handful).
const LIST_CACHE_MAX: usize = 64;

impl ListCache {
    pub fn get(&self, version: u64, prefix: &[u8], token: &str) -> Option<(Option<Bytes>, bool)> {
        if self.version != version {
            return None;
        }
        self.answers
            .get(&(prefix.to_vec(), token.to_owned()))
            .cloned()
    }

    pub fn put(
        &mut self,
        version: u64,
        prefix: &[u8],
        token: &str,
        body: Option<Bytes>,
        filtered: bool,
    ) {
        if self.version != version || self.answers.len() >= LIST_CACHE_MAX {
            self.answers.clear();
            self.version = version;
        }
        self.answers
            .insert((prefix.to_vec(), token.to_owned()), (body, filtered));
    }
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(cfg: Config) -> Shared {
        let mut store = Store::new(cfg.start_index, cfg.tombstone_ttl, cfg.max_index_skip);
        if !cfg.seed.is_empty() {
            let items = cfg
                .seed
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect();
            store.bulk(items, Instant::now());
        }
        Shared {
            max_conns_per_client: AtomicUsize::new(cfg.max_conns_per_client),
            cfg,
            store: RwLock::new(store),
            change: watch::Sender::new(0),
            abandon: watch::Sender::new(0),
            drop_blocked: watch::Sender::new(DropSignal::default()),
            close_conns: watch::Sender::new(CloseSignal::default()),
            shutdown: watch::Sender::new(false),
            faults: Mutex::new(FaultTable::default()),
            snapshots: Mutex::new(HashMap::new()),
            stats: Arc::new(Stats::default()),
            per_client: Mutex::new(HashMap::new()),
            next_conn_id: AtomicU64::new(1),
            acl_bootstrap_index: Mutex::new(None),
            down: watch::Sender::new(Default::default()),
            bound: Mutex::new(Vec::new()),
            revoked: Mutex::new(Default::default()),
            sni_seen: Mutex::new(Default::default()),
            list_cache: Mutex::new(ListCache::default()),
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn faults(&self) -> MutexGuard<'_, FaultTable> {
        lock(&self.faults)
    }

    /// Whether `addr` is one of the bound listeners (for port 0 in `listen`).
    pub fn listening(&self, addr: std::net::SocketAddr) -> bool {
        lock(&self.bound).contains(&addr)
    }

    /// Wakes blocked reads so they re-evaluate their view.
    pub fn notify_change(&self) {
        self.change.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Makes every blocked read return at once (snapshot restore).
    pub fn abandon_all(&self) {
        self.abandon.send_modify(|v| *v = v.wrapping_add(1));
    }
}
