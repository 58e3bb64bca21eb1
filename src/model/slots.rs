//! Service slots: every service path that has nodes (or was seeded), its
//! APISIX name, and an index from path to slot that stores only the slot
//! number and hashes the name the slot already holds.

use std::hash::Hasher as _;
use std::sync::Arc;

use hashbrown::HashTable;

use super::entry::{Entry, NO_SLOT};

#[derive(Debug, Default)]
pub(super) struct Slot {
    /// `{server url}/v1/kv/{service path}`; `None` for a free slot.
    pub name: Option<Arc<str>>,
    pub dirty: bool,
    /// Render scratch: the slot's next place in the node order.
    pub at: u32,
}

#[derive(Debug, Default)]
pub(super) struct Slots {
    pub list: Vec<Slot>,
    free: Vec<u32>,
    index: HashTable<u32>,
    /// Length of the `{server url}/v1/kv/` part of every name.
    base_len: usize,
}

fn hash(path: &[u8]) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write(path);
    h.finish()
}

impl Slots {
    pub fn new(base_len: usize) -> Self {
        Slots {
            base_len,
            ..Slots::default()
        }
    }

    fn path_of(list: &[Slot], base_len: usize, slot: u32) -> &[u8] {
        list.get(slot as usize)
            .and_then(|s| s.name.as_deref())
            .and_then(|n| n.as_bytes().get(base_len..))
            .unwrap_or_default()
    }

    pub fn name(&self, slot: u32) -> Option<&Arc<str>> {
        self.list.get(slot as usize).and_then(|s| s.name.as_ref())
    }

    pub fn find(&self, path: &str) -> Option<u32> {
        let (list, base) = (&self.list, self.base_len);
        self.index
            .find(hash(path.as_bytes()), |&i| {
                Self::path_of(list, base, i) == path.as_bytes()
            })
            .copied()
    }

    /// The slot of `path`, made if new (its name is `base` + `path`).
    pub fn find_or_add(&mut self, base: &str, path: &str) -> u32 {
        if let Some(i) = self.find(path) {
            return i;
        }
        let mut name = String::with_capacity(base.len() + path.len());
        name.push_str(base);
        name.push_str(path);
        let slot = Slot {
            name: Some(Arc::from(name.as_str())),
            dirty: false,
            at: 0,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.list[i as usize] = slot;
                i
            }
            None => {
                self.list.push(slot);
                (self.list.len() - 1) as u32
            }
        };
        let (list, b) = (&self.list, self.base_len);
        self.index.insert_unique(hash(path.as_bytes()), i, |&j| {
            hash(Self::path_of(list, b, j))
        });
        i
    }

    /// Marks `slot` for rendering (once).
    pub fn mark(&mut self, slot: u32, dirty: &mut Vec<u32>) {
        if let Some(s) = self.list.get_mut(slot as usize) {
            if !s.dirty && s.name.is_some() {
                s.dirty = true;
                dirty.push(slot);
            }
        }
    }

    /// Forgets a slot no entry and no service uses any more.
    pub fn release(&mut self, slot: u32) {
        let (list, b) = (&self.list, self.base_len);
        let path = Self::path_of(list, b, slot);
        if let Ok(e) = self.index.find_entry(hash(path), |&i| i == slot) {
            e.remove();
        }
        if let Some(s) = self.list.get_mut(slot as usize) {
            *s = Slot::default();
            self.free.push(slot);
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
            self.index = HashTable::with_capacity(live);
            let b = self.base_len;
            for i in 0..self.list.len() as u32 {
                let h = hash(Self::path_of(&self.list, b, i));
                let list = &self.list;
                self.index
                    .insert_unique(h, i, |&j| hash(Self::path_of(list, b, j)));
            }
        } else if self.index.capacity() > 2 * self.index.len() + 64 {
            let (list, b) = (&self.list, self.base_len);
            self.index
                .shrink_to_fit(|&j| hash(Self::path_of(list, b, j)));
        }
        if self.list.capacity() > 2 * self.list.len() + 64 {
            self.list.shrink_to_fit();
        }
    }

    pub fn clear(&mut self) {
        *self = Slots::new(self.base_len);
    }
}
