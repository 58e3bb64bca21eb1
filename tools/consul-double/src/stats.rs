//! Counters exposed by `GET /_double/stats`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::{json, Value};

#[derive(Debug, Default)]
pub struct Stats {
    pub open_connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub requests_total: AtomicU64,
    pub kv_requests_total: AtomicU64,
    pub kv_gets_total: AtomicU64,
    pub kv_puts_total: AtomicU64,
    pub kv_deletes_total: AtomicU64,
    pub blocking_in_flight: AtomicU64,
    per_path: Mutex<BTreeMap<String, u64>>,
    blocking_per_path: Mutex<BTreeMap<String, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stats {
    /// Counts one `/v1/kv/` request.
    pub fn kv_request(&self, method: &str, path: &str) {
        self.kv_requests_total.fetch_add(1, Relaxed);
        match method {
            "GET" => self.kv_gets_total.fetch_add(1, Relaxed),
            "PUT" => self.kv_puts_total.fetch_add(1, Relaxed),
            "DELETE" => self.kv_deletes_total.fetch_add(1, Relaxed),
            _ => 0,
        };
        *lock(&self.per_path).entry(path.to_string()).or_insert(0) += 1;
    }

    /// Zeroes the counters (not the gauges: open connections, blocked reads).
    pub fn reset(&self) {
        self.connections_total.store(0, Relaxed);
        self.requests_total.store(0, Relaxed);
        self.kv_requests_total.store(0, Relaxed);
        self.kv_gets_total.store(0, Relaxed);
        self.kv_puts_total.store(0, Relaxed);
        self.kv_deletes_total.store(0, Relaxed);
        lock(&self.per_path).clear();
    }

    pub fn to_json(&self, index: u64, table_index: u64) -> Value {
        json!({
            "open_connections": self.open_connections.load(Relaxed),
            "connections_total": self.connections_total.load(Relaxed),
            "requests_total": self.requests_total.load(Relaxed),
            "kv_requests_total": self.kv_requests_total.load(Relaxed),
            "kv_gets_total": self.kv_gets_total.load(Relaxed),
            "kv_puts_total": self.kv_puts_total.load(Relaxed),
            "kv_deletes_total": self.kv_deletes_total.load(Relaxed),
            "blocking_in_flight": self.blocking_in_flight.load(Relaxed),
            "index": index,
            "table_index": table_index,
            "per_path": *lock(&self.per_path),
            "blocking_per_path": *lock(&self.blocking_per_path),
        })
    }
}

/// Held while a read is blocked; counts it in `blocking_in_flight`.
pub struct BlockingGuard {
    stats: Arc<Stats>,
    path: String,
}

impl BlockingGuard {
    pub fn new(stats: Arc<Stats>, path: String) -> BlockingGuard {
        stats.blocking_in_flight.fetch_add(1, Relaxed);
        *lock(&stats.blocking_per_path)
            .entry(path.clone())
            .or_insert(0) += 1;
        BlockingGuard { stats, path }
    }
}

impl Drop for BlockingGuard {
    fn drop(&mut self) {
        self.stats.blocking_in_flight.fetch_sub(1, Relaxed);
        let mut m = lock(&self.stats.blocking_per_path);
        if let Some(n) = m.get_mut(&self.path) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.path);
            }
        }
    }
}

/// Held while a connection is open.
pub struct ConnGuard {
    stats: Arc<Stats>,
}

impl ConnGuard {
    pub fn new(stats: Arc<Stats>) -> ConnGuard {
        stats.open_connections.fetch_add(1, Relaxed);
        stats.connections_total.fetch_add(1, Relaxed);
        ConnGuard { stats }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.stats.open_connections.fetch_sub(1, Relaxed);
    }
}
