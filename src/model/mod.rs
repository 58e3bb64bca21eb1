//! One server's view of the prefix: turns each Consul response into services.
//!
//! In the steady state a response costs, per key, one comparison with the
//! key at the same place in the previous response and one of the
//! `ModifyIndex` (plus a length and hash check of the base64 text); only
//! services touched by a new, changed or removed key are rendered again, and
//! a service whose nodes come out byte-for-byte the same keeps its
//! generation and its allocation.
//!
//! * `walk.rs`: matching a response against the previous one;
//! * `entry.rs`: what is kept per key, and when it counts as unchanged;
//! * `keys.rs`: every key in one buffer;
//! * `nodes.rs`: key and value to node JSON, each distinct value parsed once;
//! * `slots.rs`: the services, their names and the index from path to
//!   service;
//! * `render.rs`: a changed service's `nodes_json`;
//! * `report.rs`: what an apply reports.

mod entry;
mod keys;
mod nodes;
mod render;
mod report;
mod slots;
mod walk;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::kv::{RawEntry, Rules};
use crate::snapshot::{Service, ServiceRef};
use entry::Entry;
use keys::KeyArena;
use nodes::NodeParser;
use slots::Slots;
use walk::Pass;

pub use report::Applied;

/// Every service of `models`, as a snapshot is built from them, in one list
/// sized at once (grown by doubling, the list of 100k services, 6 MiB, was
/// copied and its fresh pages touched at every step).
pub fn service_refs(models: &[ServerModel]) -> Vec<ServiceRef<'_>> {
    let mut out = Vec::with_capacity(models.iter().map(ServerModel::service_count).sum());
    out.extend(each_service(models));
    out
}

/// Every service of `models`, in the order of [`service_refs`].
pub fn each_service(models: &[ServerModel]) -> impl Iterator<Item = ServiceRef<'_>> + '_ {
    models
        .iter()
        .flat_map(ServerModel::services)
        .map(|(name, s)| s.as_ref(name))
}

#[derive(Debug)]
pub struct ServerModel {
    server: u16,
    /// `{server url}/v1/kv/`: prepended to a service path to name it.
    name_base: String,
    parser: NodeParser,
    /// The last accepted response's entries, in its order (duplicates and
    /// entries without a key left out).
    entries: Vec<Entry>,
    /// Whether `entries` is in strictly increasing key order (as Consul
    /// sends it), so that the next response can be merged with it.
    sorted: bool,
    keys: KeyArena,
    slots: Slots,
    /// Slots of seeded services not yet confirmed by a response: the next
    /// response renders them (and drops the ones it does not name).
    seeded: Vec<u32>,
    nodes: u64,
}

impl ServerModel {
    pub fn new(server: u16, url: &str, rules: Rules) -> Self {
        let name_base = format!("{url}/v1/kv/");
        ServerModel {
            server,
            slots: Slots::new(name_base.len()),
            name_base,
            parser: NodeParser::new(rules),
            entries: Vec::new(),
            sorted: true,
            keys: KeyArena::default(),
            seeded: Vec::new(),
            nodes: 0,
        }
    }

    /// Every service with its full name, in no promised order (key order
    /// after a first sync).
    pub fn services(&self) -> impl Iterator<Item = (&Arc<str>, &Service)> + '_ {
        self.slots.services()
    }

    /// Changes whenever a service is added or removed (or the order of
    /// [`ServerModel::services`] could change otherwise); stays while only
    /// nodes change. A service that changes while it stays gets the `seq`
    /// of that `apply`.
    pub fn names_epoch(&self) -> u64 {
        self.slots.epoch()
    }

    /// Number of services.
    pub fn service_count(&self) -> usize {
        self.slots.services
    }

    /// The service of that full name.
    pub fn service(&self, name: &str) -> Option<&Service> {
        let path = name.strip_prefix(self.name_base.as_str())?;
        let slot = self.slots.find(path)?;
        self.slots.list.get(slot as usize)?.service.as_ref()
    }

    /// A copy of every service by name (for tests and tools).
    pub fn services_by_name(&self) -> FxHashMap<Arc<str>, Service> {
        self.services()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect()
    }

    pub fn name_base(&self) -> &str {
        &self.name_base
    }

    pub fn node_count(&self) -> u64 {
        self.nodes
    }

    /// Starts from services known from elsewhere (the dump, or the snapshot a
    /// previous leader published), so their generations carry over. A
    /// service the model already has keeps what the model has.
    pub fn seed(&mut self, services: impl IntoIterator<Item = (Arc<str>, Service)>) {
        for (name, mut service) in services {
            let Some(path) = name.strip_prefix(self.name_base.as_str()) else {
                continue;
            };
            let slot = self.slots.find_or_add(path);
            if self.slots.list[slot as usize].service.is_some() {
                continue;
            }
            let born = self.slots.born_span(slot);
            if self.slots.name_of(slot, &self.name_base, born).is_none() {
                continue;
            }
            service.server = self.server;
            self.nodes += u64::from(service.node_count);
            self.slots.set_service(slot, Some(service));
            self.seeded.push(slot);
        }
    }

    /// Applies a full `?recurse` response. `seq` is the generation given to
    /// services that change.
    ///
    /// A response whose entries are all malformed is refused whole and
    /// nothing changes: Consul never sends that, a broken proxy or server
    /// might, and serving nothing would throw away the last good nodes.
    pub fn apply<'v>(&mut self, raws: &'v [RawEntry<'v>], seq: u64) -> Result<Applied, Applied> {
        let (keys_len, keys_garbage) = (self.keys.len(), self.keys.garbage());
        let mut pass = Pass::new(&self.parser, &mut self.keys, &mut self.slots);
        // In step with the previous response: entries are updated in place,
        // with what they were kept for a refusal.
        let mut undo: Vec<(usize, Entry)> = Vec::new();
        let (mut i, mut j) = (0, 0);
        let mut prev_key = None;
        while let Some(raw) = raws.get(i) {
            let Some(key) = pass.key_of(raw) else {
                i += 1;
                continue;
            };
            let Some(e) = self.entries.get_mut(j) else {
                break;
            };
            if !entry::same_key(pass.keys.get(e.key), key.as_bytes()) {
                break;
            }
            if entry::unchanged(e, raw, pass.keys) {
                pass.count(e);
            } else {
                undo.push((j, *e));
                pass.reparse(e, raw, key);
            }
            prev_key = Some(key);
            i += 1;
            j += 1;
        }
        let rebuilt = (i < raws.len() || j < self.entries.len())
            .then(|| walk::rebuild(&mut pass, &self.entries, self.sorted, raws, i, j, prev_key));
        if !raws.is_empty() && pass.good == 0 {
            let Pass {
                applied,
                dirty,
                slots,
                ..
            } = pass;
            for s in dirty {
                slots.unmark(s);
            }
            slots.end_response();
            for (j, before) in undo.into_iter().rev() {
                self.entries[j] = before;
            }
            self.keys.truncate(keys_len, keys_garbage);
            return Err(applied);
        }
        for &s in &self.seeded {
            pass.slots.mark(s, &mut pass.dirty);
        }
        let Pass {
            mut applied,
            dirty,
            scratch,
            ..
        } = pass;
        self.seeded = Vec::new();
        if let Some(r) = rebuilt {
            self.entries = r.entries;
            self.sorted = r.sorted;
        }
        if !dirty.is_empty() {
            applied.changed_services = render::render(
                &mut self.entries,
                &mut self.slots,
                &dirty,
                render::Fresh {
                    nodes: &scratch.fresh,
                    tails: &scratch.tails,
                    keys: &self.keys,
                },
                render::Target {
                    nodes: &mut self.nodes,
                    base: &self.name_base,
                    server: self.server,
                    generation: seq,
                },
            );
        }
        self.slots.end_response();
        applied.changed = applied.changed_services > 0;
        self.give_back_room();
        Ok(applied)
    }

    /// Returns what a shrinking prefix left unused.
    fn give_back_room(&mut self) {
        self.keys
            .compact_if_wasteful(self.entries.iter_mut().map(|e| {
                let len = e.record_len();
                (&mut e.key, len)
            }));
        self.slots.compact_if_sparse(&mut self.entries);
        if self.entries.capacity() > 2 * self.entries.len() + 64 {
            self.entries.shrink_to_fit();
        }
    }

    /// The prefix is gone (404): forget every service. Returns whether
    /// anything was removed.
    pub fn clear(&mut self) -> bool {
        let had = self.slots.services > 0;
        self.entries = Vec::new();
        self.sorted = true;
        self.keys = KeyArena::default();
        self.slots.clear();
        self.seeded = Vec::new();
        self.nodes = 0;
        had
    }
}
