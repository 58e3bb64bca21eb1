//! The KV state: entries, tombstones and the Raft-like index, with Consul's
//! index rules (`agent/consul/state/kvs.go`, `graveyard_ce.go`).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;

/// One KV entry (`structs.DirEntry`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub lock_index: u64,
    pub flags: u64,
    /// `None` for an empty value (serialised as `null`).
    pub value: Option<Vec<u8>>,
    pub session: Option<String>,
    pub create_index: u64,
    pub modify_index: u64,
    /// This entry as a compact JSON object, rendered when it was written
    /// (see `render`).
    pub compact_json: Bytes,
}

#[derive(Clone, Copy, Debug)]
struct Tombstone {
    index: u64,
    at: Instant,
}

/// Everything a snapshot saves and a restore brings back.
#[derive(Clone, Debug)]
pub struct KvState {
    entries: BTreeMap<Vec<u8>, Entry>,
    tombstones: BTreeMap<Vec<u8>, Tombstone>,
    /// Last Raft index consumed by any write.
    raft_index: u64,
    /// Table index of `kvs`.
    kvs_index: u64,
    /// Table index of `tombstones`.
    tomb_index: u64,
}

impl KvState {
    fn empty(index: u64) -> KvState {
        KvState {
            entries: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            raft_index: index,
            kvs_index: index,
            tomb_index: index,
        }
    }

    pub fn raft_index(&self) -> u64 {
        self.raft_index
    }
}

/// Result of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// What the HTTP API answers (`true`/`false`).
    pub ok: bool,
    /// Whether the KV data changed (watchers must be woken).
    pub changed: bool,
    /// The Raft index the write consumed.
    pub index: u64,
}

/// The state plus its settings.
#[derive(Debug)]
pub struct Store {
    state: KvState,
    /// Moves whenever any entry changes (writes, restores, resets): cached
    /// renderings of lists are valid for one version.
    version: u64,
    tombstone_ttl: Duration,
    max_index_skip: u64,
}

fn prefix_range<'a, V>(
    map: &'a BTreeMap<Vec<u8>, V>,
    prefix: &'a [u8],
) -> impl Iterator<Item = (&'a Vec<u8>, &'a V)> + 'a {
    map.range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

impl Store {
    pub fn new(start_index: u64, tombstone_ttl: Duration, max_index_skip: u64) -> Store {
        Store {
            state: KvState::empty(start_index.max(1)),
            version: 0,
            tombstone_ttl,
            max_index_skip: max_index_skip.max(1),
        }
    }

    /// Consumes 1..=max_index_skip Raft indexes, as a write through Raft does
    /// (other state shares the same log, so values are never contiguous).
    fn next_index(&mut self) -> u64 {
        let step = if self.max_index_skip <= 1 {
            1
        } else {
            rand::thread_rng().gen_range(1..=self.max_index_skip)
        };
        self.state.raft_index = self.state.raft_index.saturating_add(step);
        self.state.raft_index
    }

    pub fn raft_index(&self) -> u64 {
        self.state.raft_index
    }

    /// Moves whenever an entry changes: equal versions, equal entries.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// A write to another table (ACLs): consumes Raft indexes, leaves KV alone.
    pub fn consume_index(&mut self) -> u64 {
        self.next_index()
    }

    /// `kvsMaxIndex`: max(table index of kvs, table index of tombstones).
    pub fn table_index(&self) -> u64 {
        self.state.kvs_index.max(self.state.tomb_index)
    }

    pub fn len(&self) -> usize {
        self.state.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state.entries.is_empty()
    }

    pub fn tombstone_count(&self) -> usize {
        self.state.tombstones.len()
    }

    fn live(&self, t: &Tombstone, now: Instant) -> bool {
        now.saturating_duration_since(t.at) < self.tombstone_ttl
    }

    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.state.entries.get(key)
    }

    /// Index of a single-key read (`KVS.Get`): the entry's ModifyIndex, or
    /// the table index when the key is absent. Never 0.
    pub fn key_index(&self, key: &[u8]) -> u64 {
        match self.state.entries.get(key) {
            Some(e) => e.modify_index,
            None => self.table_index(),
        }
        .max(1)
    }

    /// Index of a prefix list (`kvsListTxn`). Never 0.
    pub fn prefix_index(&self, prefix: &[u8], now: Instant) -> u64 {
        let mut l = prefix_range(&self.state.entries, prefix)
            .map(|(_, e)| e.modify_index)
            .max()
            .unwrap_or(0);
        if prefix.is_empty() {
            l = self.table_index();
        } else {
            let t = prefix_range(&self.state.tombstones, prefix)
                .filter(|(_, t)| self.live(t, now))
                .map(|(_, t)| t.index)
                .max()
                .unwrap_or(0);
            l = l.max(t);
        }
        if l == 0 {
            l = self.table_index();
        }
        l.max(1)
    }

    /// Entries under a byte prefix, in key byte order.
    pub fn list<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = (&'a [u8], &'a Entry)> {
        prefix_range(&self.state.entries, prefix).map(|(k, e)| (k.as_slice(), e))
    }

    /// Keys under a prefix, cut after the first separator that follows the
    /// prefix and de-duplicated (`ListKeys`).
    pub fn keys<'a>(&'a self, prefix: &'a [u8], separator: &[u8]) -> Vec<&'a [u8]> {
        let mut out: Vec<&'a [u8]> = Vec::new();
        for (k, _) in prefix_range(&self.state.entries, prefix) {
            let mut item: &'a [u8] = k.as_slice();
            if !separator.is_empty() {
                let after = &k[prefix.len()..];
                if let Some(pos) = after.windows(separator.len()).position(|w| w == separator) {
                    item = &k[..prefix.len() + pos + separator.len()];
                }
            }
            if out.last() != Some(&item) {
                out.push(item);
            }
        }
        out
    }

    /// `kvsSetTxn` / `kvsSetCASTxn` for a plain PUT. `cas` is `Some` for `?cas=`.
    pub fn put(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        flags: u64,
        cas: Option<u64>,
    ) -> WriteOutcome {
        let index = self.next_index();
        let existing = self.state.entries.get(key);
        if let Some(c) = cas {
            let ok = match (c, existing) {
                (0, existing) => existing.is_none(),
                (_, None) => false,
                (c, Some(e)) => e.modify_index == c,
            };
            if !ok {
                return WriteOutcome {
                    ok: false,
                    changed: false,
                    index,
                };
            }
        }
        let changed = self.set_entry(key, value, flags, index);
        WriteOutcome {
            ok: true,
            changed,
            index,
        }
    }

    /// Sets an entry at `index`; returns false if it was identical.
    fn set_entry(&mut self, key: &[u8], value: Vec<u8>, flags: u64, index: u64) -> bool {
        let value = if value.is_empty() { None } else { Some(value) };
        let existing = self.state.entries.get(key);
        let (create_index, session) = match existing {
            Some(e) => (e.create_index, e.session.clone()),
            None => (index, None),
        };
        if let Some(e) = existing {
            // DirEntry.Equal: LockIndex (0 for a plain PUT), Flags, Value, Session.
            if e.lock_index == 0 && e.flags == flags && e.value == value {
                return false;
            }
        }
        let mut entry = Entry {
            lock_index: 0,
            flags,
            value,
            session,
            create_index,
            modify_index: index,
            compact_json: Bytes::new(),
        };
        entry.compact_json = crate::render::compact_entry(key, &entry);
        self.state.entries.insert(key.to_vec(), entry);
        self.state.kvs_index = index;
        self.version += 1;
        true
    }

    fn remove_entry(&mut self, key: &[u8], index: u64, now: Instant) -> bool {
        if self.state.entries.remove(key).is_none() {
            return false;
        }
        self.state
            .tombstones
            .insert(key.to_vec(), Tombstone { index, at: now });
        self.state.kvs_index = index;
        self.state.tomb_index = index;
        self.version += 1;
        true
    }

    /// `kvsDeleteTxn` / `kvsDeleteCASTxn`.
    pub fn delete(&mut self, key: &[u8], cas: Option<u64>, now: Instant) -> WriteOutcome {
        let index = self.next_index();
        if let (Some(c), Some(e)) = (cas, self.state.entries.get(key)) {
            if e.modify_index != c {
                return WriteOutcome {
                    ok: false,
                    changed: false,
                    index,
                };
            }
        }
        let changed = self.remove_entry(key, index, now);
        WriteOutcome {
            ok: true,
            changed,
            index,
        }
    }

    /// `kvsDeleteTreeTxn`: one tombstone for the prefix itself (none for the
    /// empty prefix), only if something was deleted.
    pub fn delete_tree(&mut self, prefix: &[u8], now: Instant) -> WriteOutcome {
        let index = self.next_index();
        let keys: Vec<Vec<u8>> = prefix_range(&self.state.entries, prefix)
            .map(|(k, _)| k.clone())
            .collect();
        let changed = !keys.is_empty();
        if changed {
            for k in keys {
                self.state.entries.remove(&k);
            }
            if !prefix.is_empty() {
                self.state
                    .tombstones
                    .insert(prefix.to_vec(), Tombstone { index, at: now });
                self.state.tomb_index = index;
            }
            self.state.kvs_index = index;
            self.version += 1;
        }
        WriteOutcome {
            ok: true,
            changed,
            index,
        }
    }

    /// Non-Consul bulk write: every pair applied at ONE index. `None` deletes.
    pub fn bulk(&mut self, items: Vec<(Vec<u8>, Option<Vec<u8>>)>, now: Instant) -> WriteOutcome {
        let index = self.next_index();
        let mut changed = false;
        for (k, v) in items {
            changed |= match v {
                Some(v) => self.set_entry(&k, v, 0, index),
                None => self.remove_entry(&k, index, now),
            };
        }
        WriteOutcome {
            ok: true,
            changed,
            index,
        }
    }

    /// Spurious wake-up support: consumes an index and raises the KV table
    /// index to it; with a non-empty prefix also records a tombstone for the
    /// prefix itself (as if an invisible key under it had been created and
    /// deleted), so that lists of that prefix report the new index.
    pub fn bump(&mut self, prefix: &[u8], now: Instant) -> u64 {
        let index = self.next_index();
        if !prefix.is_empty() {
            self.state
                .tombstones
                .insert(prefix.to_vec(), Tombstone { index, at: now });
            self.state.tomb_index = index;
        }
        self.state.kvs_index = index;
        index
    }

    /// Reaps tombstones older than the TTL. Does not touch any index.
    pub fn reap_expired(&mut self, now: Instant) -> usize {
        let ttl = self.tombstone_ttl;
        let before = self.state.tombstones.len();
        self.state
            .tombstones
            .retain(|_, t| now.saturating_duration_since(t.at) < ttl);
        before - self.state.tombstones.len()
    }

    /// Reaps every tombstone now. Does not touch any index.
    pub fn reap_all(&mut self) -> usize {
        let n = self.state.tombstones.len();
        self.state.tombstones.clear();
        n
    }

    pub fn snapshot(&self) -> KvState {
        self.state.clone()
    }

    pub fn restore(&mut self, state: KvState) {
        self.state = state;
        self.version += 1;
    }

    /// Empty store at `index` ("Consul restarted with an empty data dir").
    pub fn reset(&mut self, index: u64) {
        self.state = KvState::empty(index.max(1));
        self.version += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(100, Duration::from_secs(60), 3)
    }

    #[test]
    fn identical_put_keeps_modify_index() {
        let mut s = store();
        let now = Instant::now();
        let w1 = s.put(b"a", b"x".to_vec(), 0, None);
        assert!(w1.ok && w1.changed);
        let w2 = s.put(b"a", b"x".to_vec(), 0, None);
        assert!(w2.ok && !w2.changed && w2.index > w1.index);
        assert_eq!(s.get(b"a").map(|e| e.modify_index), Some(w1.index));
        assert_eq!(s.prefix_index(b"a", now), w1.index);
        assert_eq!(s.table_index(), w1.index);
    }

    #[test]
    fn prefix_index_rules() {
        let mut s = store();
        let now = Instant::now();
        let a = s.put(b"p/a", b"1".to_vec(), 0, None).index;
        let b = s.put(b"p/b", b"2".to_vec(), 0, None).index;
        assert_eq!(s.prefix_index(b"p/", now), b);
        let d = s.delete(b"p/b", None, now).index;
        assert_eq!(s.prefix_index(b"p/", now), d);
        s.reap_all();
        assert_eq!(s.prefix_index(b"p/", now), a);
        // Empty prefix without tombstones: table index.
        assert_eq!(s.prefix_index(b"q/", now), s.table_index());
        assert_eq!(s.prefix_index(b"", now), s.table_index());
    }

    #[test]
    fn keys_with_separator() {
        let mut s = store();
        for k in ["web/bar", "web/foo", "web/subdir/x", "web/subdir/y"] {
            s.put(k.as_bytes(), b"v".to_vec(), 0, None);
        }
        let keys: Vec<&[u8]> = s.keys(b"web/", b"/");
        assert_eq!(
            keys,
            vec![&b"web/bar"[..], &b"web/foo"[..], &b"web/subdir/"[..]]
        );
    }
}
