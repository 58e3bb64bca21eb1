//! Matching a response against the previous one.
//!
//! Consul sorts keys, so the next response is nearly always the previous one
//! with a few values changed: the walk compares the key at the same position
//! and, while they agree, updates entries in place (no lookup, no copy).
//! From the first key that differs (a key added or removed) it builds the
//! new entry list, merging the two sorted lists; only a response out of key
//! order (never from Consul) falls back to a hash index over the keys.

use std::hash::Hasher as _;

use hashbrown::HashTable;

use super::entry::{
    self, Entry, Fingerprint, Kind, FRESH, FRESH_TAIL, HAS_INDEX, NO_SLOT, VALUE_STORED,
};
use super::keys::{KeyArena, Span};
use super::nodes::{NodeParser, Parsed, Scratch};
use super::report::Applied;
use super::slots::Slots;
use crate::kv::{Field, RawEntry};

/// State of one response's walk.
pub(super) struct Pass<'m, 'v> {
    pub parser: &'m NodeParser,
    pub keys: &'m mut KeyArena,
    pub slots: &'m mut Slots,
    pub dirty: Vec<u32>,
    pub scratch: Scratch<'v>,
    pub applied: Applied,
    /// Entries that are not malformed (a response without any is refused).
    pub good: usize,
    last_slot: u32,
}

impl<'m, 'v> Pass<'m, 'v> {
    pub fn new(parser: &'m NodeParser, keys: &'m mut KeyArena, slots: &'m mut Slots) -> Self {
        Pass {
            parser,
            keys,
            slots,
            dirty: Vec::new(),
            scratch: Scratch::default(),
            applied: Applied::default(),
            good: 0,
            last_slot: NO_SLOT,
        }
    }

    /// Makes room at once for a response met with no previous one (a
    /// first sync): growing every buffer by doubling would copy each of
    /// them several times and touch fresh pages at every step. Room that
    /// is not used is never touched (and is given back after the apply).
    pub fn reserve_for(&mut self, raws: &[RawEntry<'_>]) {
        let (mut key_bytes, mut node_bytes) = (0usize, 0usize);
        for raw in raws {
            let key = match &raw.key {
                Field::Ok(k) => k.len(),
                _ => 0,
            };
            let value = match &raw.value {
                Field::Ok(v) => v.len(),
                _ => 0,
            };
            key_bytes += key;
            // `{"host":"..","port":N` from the key, the rest from the value
            // (base64: four characters for three bytes).
            node_bytes += key + value / 4 * 3 + 16;
        }
        self.keys.reserve(key_bytes);
        self.scratch.fresh.reserve(node_bytes);
        self.slots.reserve(raws.len(), key_bytes);
        self.dirty.reserve(raws.len());
    }

    /// The entry's key; an entry without one is counted and reported (on
    /// every response: it cannot be told apart from the next one).
    #[inline(always)]
    pub fn key_of(&mut self, raw: &'v RawEntry<'v>) -> Option<&'v str> {
        match &raw.key {
            Field::Ok(k) => Some(k),
            _ => {
                self.keyless(raw);
                None
            }
        }
    }

    #[cold]
    fn keyless(&mut self, raw: &RawEntry<'_>) {
        match &raw.key {
            Field::Ok(_) => {}
            Field::WrongType(t) => {
                self.applied.malformed_total += 1;
                self.applied.report("?", &format!("Key is {t}"));
            }
            Field::Null | Field::Absent => {
                self.applied.malformed_total += 1;
                self.applied.report("?", "entry has no Key");
            }
        }
    }

    #[inline(always)]
    pub fn count(&mut self, e: &Entry) {
        if e.kind == Kind::Malformed {
            self.applied.malformed_total += 1;
        } else {
            self.good += 1;
        }
    }

    /// Brings a known entry up to date with `raw`; returns whether it
    /// changed.
    #[inline(always)]
    pub fn update(&mut self, e: &mut Entry, raw: &'v RawEntry<'v>, key: &'v str) -> bool {
        if entry::unchanged(e, raw, self.keys) {
            self.count(e);
            return false;
        }
        self.reparse(e, raw, key)
    }

    /// Parses a known entry's new value into it.
    #[inline(never)]
    pub fn reparse(&mut self, e: &mut Entry, raw: &'v RawEntry<'v>, key: &'v str) -> bool {
        if e.is_node() {
            self.slots.mark(e.slot, &mut self.dirty);
        }
        let stored = e.flags & VALUE_STORED != 0;
        match stored_value(raw) {
            Some(value) => {
                // The value is kept beside the key: a new record.
                self.keys.forget(e.record_len() as usize);
                match self.keys.push(key, Some(value)) {
                    Some(span) => e.key = span,
                    None => return self.too_much(e, key),
                }
            }
            None if stored => self.keys.forget(e.value_len as usize),
            None => {}
        }
        self.fill(e, raw, key);
        true
    }

    /// A key the previous response did not have: its entry is pushed to
    /// `out` and filled there, not built on the stack and copied (that copy
    /// reads back bytes just written piecewise, so it waits for every store
    /// before it: 6% of a cold apply). Returns whether it was pushed.
    pub fn insert(&mut self, out: &mut Vec<Entry>, raw: &'v RawEntry<'v>, key: &'v str) -> bool {
        let Some(span) = self.keys.push(key, stored_value(raw)) else {
            self.applied.malformed_total += 1;
            self.applied.report(key, TOO_MUCH_KEYS);
            return false;
        };
        out.push(Entry {
            key: span,
            index: 0,
            value_len: 0,
            value_hash: 0,
            slot: NO_SLOT,
            json: Span::default(),
            kind: Kind::Quiet,
            flags: 0,
        });
        match out.last_mut() {
            Some(e) => self.fill(e, raw, key),
            None => return false, // unreachable: just pushed
        }
        true
    }

    fn too_much(&mut self, e: &mut Entry, key: &str) -> bool {
        e.kind = Kind::Malformed;
        e.flags = 0;
        e.slot = NO_SLOT;
        self.applied.malformed_total += 1;
        self.applied.report(key, TOO_MUCH_KEYS);
        true
    }

    /// Parses `raw` into `e` (whose key record is already right).
    #[inline(always)]
    fn fill(&mut self, e: &mut Entry, raw: &'v RawEntry<'v>, key: &'v str) {
        let index = entry::index_of(raw);
        e.index = index.unwrap_or(0);
        e.flags = if index.is_some() {
            HAS_INDEX
        } else if stored_value(raw).is_some() {
            VALUE_STORED
        } else {
            0
        };
        Fingerprint::of(&raw.value).store(e);
        e.slot = NO_SLOT;
        match self.parser.parse(key, &raw.value, &mut self.scratch) {
            Parsed::Node {
                service_path,
                json,
                tail,
            } => {
                let slot = if self.last_slot != NO_SLOT
                    && self.slots.path(self.last_slot) == service_path.as_bytes()
                {
                    self.last_slot
                } else {
                    self.slots.find_or_add(service_path)
                };
                self.last_slot = slot;
                self.slots.mark(slot, &mut self.dirty);
                e.kind = Kind::Node;
                e.slot = slot;
                e.json = json;
                e.flags |= if tail { FRESH_TAIL } else { FRESH };
            }
            Parsed::Quiet => e.kind = Kind::Quiet,
            Parsed::Malformed(reason) => {
                e.kind = Kind::Malformed;
                self.applied.report(key, &reason);
            }
        }
        self.count(e);
    }
}

const TOO_MUCH_KEYS: &str = "the model holds more than 4 GiB of keys";

/// The base64 text to keep beside the key: only without a usable index.
fn stored_value<'v>(raw: &'v RawEntry<'v>) -> Option<&'v str> {
    match (&raw.modify_index, &raw.value) {
        (Field::Ok(_), _) => None,
        (_, Field::Ok(v)) => Some(v),
        _ => None,
    }
}

fn hash_key(key: &[u8]) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write(key);
    h.finish()
}

/// Marks an index of the new list in the fallback hash index.
const IN_NEXT: u32 = 1 << 31;

/// What the walk made of a response once the keys stopped agreeing.
pub(super) struct Rebuilt {
    pub entries: Vec<Entry>,
    /// Whether `entries` is in strictly increasing key order.
    pub sorted: bool,
}

/// Walks `raws` (from the first key that disagreed, `i`) against `old` (from
/// `j`; `old[..j]` is already up to date and kept).
pub(super) fn rebuild<'v>(
    pass: &mut Pass<'_, 'v>,
    old: &[Entry],
    old_sorted: bool,
    raws: &'v [RawEntry<'v>],
    i: usize,
    j: usize,
    prev_key: Option<&'v str>,
) -> Rebuilt {
    if old.is_empty() {
        pass.reserve_for(&raws[i..]);
    }
    let mut next: Vec<Entry> = Vec::with_capacity(raws.len().max(j));
    next.extend_from_slice(&old[..j]);
    let mut taken = vec![0u64; old.len().div_ceil(64)];
    for k in 0..j {
        taken[k / 64] |= 1 << (k % 64);
    }
    let is_taken = |taken: &[u64], k: usize| taken[k / 64] & (1 << (k % 64)) != 0;
    let mut cursor = j;
    // Old entries matched so far all lie below this: a match under it means
    // the order changed, and its service is rendered again.
    let mut matched_end = j;
    let mut sorted = old_sorted;
    let mut prev = prev_key;
    let mut inserted: Vec<u32> = Vec::new();
    let mut index: Option<HashTable<u32>> = None;
    for raw in &raws[i..] {
        let Some(key) = pass.key_of(raw) else {
            continue;
        };
        match prev.map(|p| key.cmp(p)) {
            // The same key twice in one response (never from Consul): the
            // first one counts.
            Some(std::cmp::Ordering::Equal) => continue,
            Some(std::cmp::Ordering::Less) => sorted = false,
            _ => {}
        }
        prev = Some(key);
        let found = if sorted && index.is_none() {
            while cursor < old.len() && pass.keys.get(old[cursor].key) < key.as_bytes() {
                cursor += 1;
            }
            if cursor < old.len() && pass.keys.get(old[cursor].key) == key.as_bytes() {
                cursor += 1;
                Some(cursor - 1)
            } else {
                None
            }
        } else {
            let keys = &*pass.keys;
            let index = index.get_or_insert_with(|| {
                let mut t = HashTable::with_capacity(old.len() + inserted.len());
                let at = |v: u32| {
                    if v & IN_NEXT != 0 {
                        next[(v & !IN_NEXT) as usize].key
                    } else {
                        old[v as usize].key
                    }
                };
                for v in (0..old.len() as u32).chain(inserted.iter().map(|&n| n | IN_NEXT)) {
                    t.insert_unique(hash_key(keys.get(at(v))), v, |&w| hash_key(keys.get(at(w))));
                }
                t
            });
            let h = hash_key(key.as_bytes());
            let hit = index
                .find(h, |&v| {
                    let span = if v & IN_NEXT != 0 {
                        next[(v & !IN_NEXT) as usize].key
                    } else {
                        old[v as usize].key
                    };
                    keys.get(span) == key.as_bytes()
                })
                .copied();
            match hit {
                Some(v) if v & IN_NEXT != 0 => continue,
                Some(v) if is_taken(&taken, v as usize) => continue,
                Some(v) => Some(v as usize),
                None => None,
            }
        };
        match found {
            Some(k) => {
                taken[k / 64] |= 1 << (k % 64);
                let mut e = old[k];
                if k < matched_end {
                    if e.is_node() {
                        pass.slots.mark(e.slot, &mut pass.dirty);
                    }
                } else {
                    matched_end = k + 1;
                }
                pass.update(&mut e, raw, key);
                next.push(e);
            }
            None => {
                let at = next.len() as u32;
                if pass.insert(&mut next, raw, key) {
                    if let Some(index) = index.as_mut() {
                        let keys = &*pass.keys;
                        let (old, next) = (old, &next);
                        index.insert_unique(hash_key(key.as_bytes()), at | IN_NEXT, |&w| {
                            let span = if w & IN_NEXT != 0 {
                                next.get((w & !IN_NEXT) as usize)
                                    .map_or(Span::default(), |n| n.key)
                            } else {
                                old[w as usize].key
                            };
                            hash_key(keys.get(span))
                        });
                    } else {
                        inserted.push(at);
                    }
                }
            }
        }
    }
    // Keys that are gone: their services change.
    for (k, e) in old.iter().enumerate() {
        if !is_taken(&taken, k) {
            if e.is_node() {
                pass.slots.mark(e.slot, &mut pass.dirty);
            }
            pass.keys.forget(e.record_len() as usize);
        }
    }
    if !sorted {
        // Merging is off for this response; whether the next can merge
        // depends on this one's order as a whole.
        let keys = &*pass.keys;
        sorted = next
            .windows(2)
            .all(|w| keys.get(w[0].key) < keys.get(w[1].key));
    }
    Rebuilt {
        entries: next,
        sorted,
    }
}
