//! Service slots: every service path that has nodes (or was seeded), its
//! APISIX name, its rendered service, and an index from path to slot that
//! stores only the slot number and hashes the name the slot already holds.
//!
//! The services live in the slots, not in a map of their own: a render
//! finds a service's previous nodes through its slot without hashing its
//! name, and the services are listed in slot order, which after a first
//! sync is key order, so a snapshot is built by reading memory front to
//! back and its sort finds the names already in order.

use std::hash::Hasher as _;
use std::sync::Arc;

use hashbrown::HashTable;

use super::entry::{Entry, NO_SLOT};
use super::keys::{push_text, Span};
use crate::snapshot::Service;

#[derive(Debug, Default)]
pub(super) struct Slot {
    /// `{server url}/v1/kv/{service path}`; `None` for a free slot.
    pub name: Option<Arc<str>>,
    /// Hash of the service path, kept so that growing the index does not
    /// read every name again.
    hash: u32,
    /// Render scratch: the slot's next place in the node order.
    pub at: u32,
    /// What the snapshot serves under `name`; `None` until rendered.
    pub service: Option<Service>,
}

#[derive(Debug, Default)]
pub(super) struct Slots {
    pub list: Vec<Slot>,
    /// One bit per slot: rendered at the end of this response.
    dirty: Vec<u64>,
    free: Vec<u32>,
    index: HashTable<u32>,
    /// Length of the `{server url}/v1/kv/` part of every name.
    base_len: usize,
    /// Slots whose `service` is set.
    pub services: usize,
    /// Paths of the slots made in this response, whose names are made when
    /// they are rendered (a name and its nodes are then allocated side by
    /// side, in render order); such a slot's `at` indexes `born_spans`
    /// until then.
    born: String,
    born_spans: Vec<Span>,
    /// Where a new name is put together.
    name_buf: String,
    /// Changes whenever the services listed could change other than in
    /// their nodes (one added or removed, slots renumbered): while it stays,
    /// `services()` yields the same names in the same order, which lets the
    /// leader patch its previous snapshot instead of building it again.
    epoch: u64,
}

fn hash_path(path: &[u8]) -> u32 {
    let mut h = rustc_hash::FxHasher::default();
    h.write(path);
    let h = h.finish();
    (h >> 32) as u32 ^ h as u32
}

/// The table's 64-bit hash from a slot's 32 bits (hashbrown takes its
/// control byte from the top bits, so they must vary).
fn spread(h: u32) -> u64 {
    u64::from(h).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The service path of `slot`: after the base in its name, or, for a slot
/// made in this response, in `born`.
fn path_in<'a>(
    list: &'a [Slot],
    born: &'a str,
    born_spans: &[Span],
    base_len: usize,
    slot: u32,
) -> &'a [u8] {
    let Some(s) = list.get(slot as usize) else {
        return &[];
    };
    match &s.name {
        Some(n) => n.as_bytes().get(base_len..).unwrap_or_default(),
        None => born_spans
            .get(s.at as usize)
            .and_then(|span| born.as_bytes().get(span.range()))
            .unwrap_or_default(),
    }
}

impl Slots {
    pub fn new(base_len: usize) -> Self {
        Slots {
            base_len,
            ..Slots::default()
        }
    }

    fn path_of(&self, slot: u32) -> &[u8] {
        path_in(
            &self.list,
            &self.born,
            &self.born_spans,
            self.base_len,
            slot,
        )
    }

    /// The service path of a slot.
    pub fn path(&self, slot: u32) -> &[u8] {
        self.path_of(slot)
    }

    /// Where the path of a slot made in this response is (until it is
    /// named; its `at` is the render's scratch after that).
    pub fn born_span(&self, slot: u32) -> Option<Span> {
        let s = self.list.get(slot as usize)?;
        if s.name.is_some() {
            return None;
        }
        self.born_spans.get(s.at as usize).copied()
    }

    /// The slot's full name, made now (from `born`, its `born_span`) if the
    /// slot is new.
    pub fn name_of(&mut self, slot: u32, base: &str, born: Option<Span>) -> Option<Arc<str>> {
        let s = self.list.get(slot as usize)?;
        if let Some(n) = &s.name {
            return Some(n.clone());
        }
        let path = self.born.get(born?.range())?;
        let mut buf = std::mem::take(&mut self.name_buf);
        buf.clear();
        buf.push_str(base);
        buf.push_str(path);
        let name: Arc<str> = Arc::from(buf.as_str());
        self.name_buf = buf;
        self.list[slot as usize].name = Some(name.clone());
        self.epoch += 1;
        Some(name)
    }

    /// Forgets the paths of this response's new slots (all named by now).
    pub fn end_response(&mut self) {
        self.born.clear();
        self.born_spans.clear();
        if self.born.capacity() > 1 << 16 {
            self.born = String::new();
            self.born_spans = Vec::new();
        }
    }

    /// Room for `slots` more slots whose paths take `path_bytes` in all.
    pub fn reserve(&mut self, slots: usize, path_bytes: usize) {
        self.list.reserve(slots);
        self.dirty.reserve(slots.div_ceil(64));
        self.born.reserve(path_bytes);
        self.born_spans.reserve(slots);
        let list = &self.list;
        self.index
            .reserve(slots, |&j| spread(list[j as usize].hash));
    }

    /// The slot of `path`, if there is one.
    pub fn find(&self, path: &str) -> Option<u32> {
        let h = hash_path(path.as_bytes());
        self.index
            .find(spread(h), |&i| self.path_of(i) == path.as_bytes())
            .copied()
    }

    /// The slot of `path`, made if new (named when rendered).
    pub fn find_or_add(&mut self, path: &str) -> u32 {
        let h = hash_path(path.as_bytes());
        // One probe finds the slot or the place of a new one.
        let Slots {
            list,
            index,
            born,
            born_spans,
            base_len,
            ..
        } = self;
        let at = |i: u32| path_in(list, born, born_spans, *base_len, i);
        let vacant = match index.entry(
            spread(h),
            |&i| at(i) == path.as_bytes(),
            |&j| spread(list[j as usize].hash),
        ) {
            hashbrown::hash_table::Entry::Occupied(o) => return *o.get(),
            hashbrown::hash_table::Entry::Vacant(v) => v,
        };
        let born_at = born_spans.len() as u32;
        let span = push_text(born, &[path]).unwrap_or_default();
        born_spans.push(span);
        let slot = Slot {
            name: None,
            hash: h,
            at: born_at,
            service: None,
        };
        let i = match self.free.pop() {
            Some(i) => {
                list[i as usize] = slot;
                i
            }
            None => {
                list.push(slot);
                (list.len() - 1) as u32
            }
        };
        vacant.insert(i);
        if self.dirty.len() * 64 < list.len() {
            self.dirty.push(0);
        }
        i
    }

    /// Marks `slot` for rendering (once).
    #[inline]
    pub fn mark(&mut self, slot: u32, dirty: &mut Vec<u32>) {
        let (word, bit) = (slot as usize / 64, 1u64 << (slot % 64));
        if let Some(w) = self.dirty.get_mut(word) {
            if *w & bit == 0 {
                *w |= bit;
                dirty.push(slot);
            }
        }
    }

    #[inline]
    pub fn is_dirty(&self, slot: u32) -> bool {
        self.dirty
            .get(slot as usize / 64)
            .is_some_and(|w| w & (1u64 << (slot % 64)) != 0)
    }

    pub fn unmark(&mut self, slot: u32) {
        if let Some(w) = self.dirty.get_mut(slot as usize / 64) {
            *w &= !(1u64 << (slot % 64));
        }
    }

    /// Sets (or, with `None`, removes) the service of a slot; returns the
    /// one it replaces.
    pub fn set_service(&mut self, slot: u32, service: Option<Service>) -> Option<Service> {
        let s = self.list.get_mut(slot as usize)?;
        let old = std::mem::replace(&mut s.service, service);
        if old.is_some() {
            self.services -= 1;
        }
        if s.service.is_some() {
            self.services += 1;
        }
        if old.is_some() != s.service.is_some() {
            self.epoch += 1;
        }
        old
    }

    /// Every named slot's service, in slot order.
    pub fn services(&self) -> impl Iterator<Item = (&Arc<str>, &Service)> + '_ {
        self.list
            .iter()
            .filter_map(|s| Some((s.name.as_ref()?, s.service.as_ref()?)))
    }

    /// Forgets a slot no entry and no service uses any more.
    pub fn release(&mut self, slot: u32) {
        let Some(h) = self.list.get(slot as usize).map(|s| s.hash) else {
            return;
        };
        self.set_service(slot, None);
        if let Ok(e) = self.index.find_entry(spread(h), |&i| i == slot) {
            e.remove();
        }
        if let Some(s) = self.list.get_mut(slot as usize) {
            *s = Slot::default();
            self.free.push(slot);
            self.epoch += 1;
        }
    }

    pub fn live(&self) -> usize {
        self.list.len() - self.free.len()
    }

    /// Renumbers the slots without gaps and returns spare capacity when most
    /// of them are free (a big response replaced by a small one).
    pub fn compact_if_sparse(&mut self, entries: &mut [Entry]) {
        let live = self.live();
        if self.free.len() > live.max(64) {
            let mut renumber = vec![NO_SLOT; self.list.len()];
            let mut list = Vec::with_capacity(live);
            for (i, s) in std::mem::take(&mut self.list).into_iter().enumerate() {
                if s.name.is_some() {
                    renumber[i] = list.len() as u32;
                    list.push(s);
                }
            }
            for e in entries.iter_mut().filter(|e| e.is_node()) {
                e.slot = renumber.get(e.slot as usize).copied().unwrap_or(NO_SLOT);
            }
            self.list = list;
            self.free = Vec::new();
            self.epoch += 1;
            self.dirty = vec![0; self.list.len().div_ceil(64)];
            self.index = HashTable::with_capacity(live);
            let list = &self.list;
            for (i, s) in list.iter().enumerate() {
                self.index
                    .insert_unique(spread(s.hash), i as u32, |&j| spread(list[j as usize].hash));
            }
        } else if self.index.capacity() > 2 * self.index.len() + 64 {
            let list = &self.list;
            self.index.shrink_to_fit(|&j| spread(list[j as usize].hash));
        }
        if self.list.capacity() > 2 * self.list.len() + 64 {
            self.list.shrink_to_fit();
        }
    }

    pub fn clear(&mut self) {
        *self = Slots {
            epoch: self.epoch + 1,
            ..Slots::new(self.base_len)
        };
    }

    /// See [`Slots::epoch`](Slots#structfield.epoch).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}
