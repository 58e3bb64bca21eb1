//! One server's view of the prefix: turns each Consul response into services.
//!
//! The cost of a response is one hash lookup and one string comparison per
//! key in the steady state: entries are updated in place, a key whose value
//! did not change keeps its earlier parse, and only services touched by a
//! new, changed or removed key are rendered again. A service whose nodes come
//! out byte-for-byte the same keeps its generation and its allocation.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::kv::{self, Field, Outcome, RawEntry, Rules};
use crate::snapshot::Service;

#[derive(Debug)]
struct CachedEntry {
    /// The base64 value as received; the parse is reused while it is equal.
    value: Option<Box<str>>,
    outcome: Outcome,
    /// For a node: its service slot and rendered JSON object.
    node: Option<(u32, Arc<str>)>,
    /// Stamp of the last response that carried this key.
    seen: u64,
    /// Position among its service's nodes in the last response: a change
    /// of order (never from Consul, which sorts keys) re-renders the service.
    pos: u32,
}

/// A service path ever seen (what is served for it lives in `services`).
#[derive(Debug)]
struct Slot {
    name: Arc<str>,
    dirty: bool,
    /// Scratch: this response's nodes, in key order (dirty slots only).
    nodes: Vec<Arc<str>>,
    /// Nodes counted so far in the response with stamp `count_stamp`.
    count: u32,
    count_stamp: u64,
}

/// What applying one response did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Whether any service was added, removed or changed.
    pub changed: bool,
    /// Services whose nodes changed, were added or removed.
    pub changed_services: usize,
    /// Entries skipped for the first time in this response: `(key, reason)`,
    /// at most `MAX_REPORTED_PER_RESPONSE`. An entry that stays malformed is
    /// reported once, not on every poll.
    pub newly_malformed: Vec<(String, String)>,
    /// Entries skipped for the first time beyond that cap (counted only).
    pub newly_malformed_omitted: usize,
    /// All malformed entries currently in the response.
    pub malformed_total: usize,
}

/// Newly malformed entries listed per response; the rest are counted. A
/// server that keeps changing thousands of bad values must not make
/// thousands of log lines per answer (red-team D11).
pub(crate) const MAX_REPORTED_PER_RESPONSE: usize = 20;
/// How much of a reported key is kept.
pub(crate) const MAX_REPORTED_KEY_BYTES: usize = 256;

impl Applied {
    fn report(&mut self, key: &str, reason: &str) {
        if self.newly_malformed.len() < MAX_REPORTED_PER_RESPONSE {
            // Escaped and cut: a key of 100 KB must not make a log line of 100 KB.
            let key = crate::log::excerpt(key, MAX_REPORTED_KEY_BYTES).into_owned();
            self.newly_malformed.push((key, reason.to_owned()));
        } else {
            self.newly_malformed_omitted += 1;
        }
    }
}

#[derive(Debug)]
pub struct ServerModel {
    server: u16,
    /// `{server url}/v1/kv/`: prepended to a service path to name it.
    name_base: String,
    rules: Rules,
    entries: FxHashMap<Box<str>, CachedEntry>,
    slot_of: FxHashMap<Box<str>, u32>,
    slots: Vec<Slot>,
    stamp: u64,
    /// Keyed by full service name.
    services: FxHashMap<Arc<str>, Service>,
    nodes: u64,
}

/// Undo information for a response that is refused after entries were
/// already updated in place.
enum Undo {
    Inserted(Box<str>),
    Replaced(Box<str>, CachedEntry),
}

impl ServerModel {
    pub fn new(server: u16, url: &str, rules: Rules) -> Self {
        ServerModel {
            server,
            name_base: format!("{url}/v1/kv/"),
            rules,
            entries: FxHashMap::default(),
            slot_of: FxHashMap::default(),
            slots: Vec::new(),
            stamp: 0,
            services: FxHashMap::default(),
            nodes: 0,
        }
    }

    pub fn services(&self) -> &FxHashMap<Arc<str>, Service> {
        &self.services
    }

    pub fn name_base(&self) -> &str {
        &self.name_base
    }

    pub fn node_count(&self) -> u64 {
        self.nodes
    }

    fn slot(&mut self, path: &str) -> u32 {
        if let Some(&i) = self.slot_of.get(path) {
            return i;
        }
        let i = self.slots.len() as u32;
        self.slots.push(Slot {
            name: Arc::from(format!("{}{path}", self.name_base)),
            dirty: false,
            nodes: Vec::new(),
            count: 0,
            count_stamp: 0,
        });
        self.slot_of.insert(path.into(), i);
        i
    }

    fn mark(slots: &mut [Slot], dirty: &mut Vec<u32>, slot: u32) {
        if let Some(s) = slots.get_mut(slot as usize) {
            if !s.dirty {
                s.dirty = true;
                dirty.push(slot);
            }
        }
    }

    /// Starts from services known from elsewhere (the dump, or the snapshot a
    /// previous leader published), so their generations carry over.
    pub fn seed(&mut self, services: impl IntoIterator<Item = (Arc<str>, Service)>) {
        for (name, mut service) in services {
            let Some(path) = name.strip_prefix(self.name_base.as_str()) else {
                continue;
            };
            let path = path.to_owned();
            service.server = self.server;
            let slot = self.slot(&path) as usize;
            self.nodes += u64::from(service.node_count);
            self.services.insert(self.slots[slot].name.clone(), service);
        }
    }

    fn parse(&mut self, key: &str, value: &Field<std::borrow::Cow<'_, str>>) -> CachedEntry {
        let outcome = kv::parse_entry(key, value, &self.rules);
        let node = match &outcome {
            Outcome::Node { service_path, json } => {
                Some((self.slot(service_path), Arc::<str>::from(&**json)))
            }
            _ => None,
        };
        CachedEntry {
            value: match value {
                Field::Ok(v) => Some((**v).into()),
                _ => None,
            },
            outcome,
            node,
            seen: 0,
            pos: u32::MAX,
        }
    }

    /// Applies a full `?recurse` response. `seq` is the generation given to
    /// services that change.
    ///
    /// A response whose entries are all malformed is refused whole and
    /// nothing changes: Consul never sends that, a broken proxy or server
    /// might, and serving nothing would throw away the last good nodes.
    pub fn apply(&mut self, entries: &[RawEntry<'_>], seq: u64) -> Result<Applied, Applied> {
        let mut applied = Applied::default();
        self.entries
            .reserve(entries.len().saturating_sub(self.entries.len()));
        self.stamp += 1;
        let stamp = self.stamp;
        let mut order: Vec<(u32, Arc<str>)> = Vec::with_capacity(entries.len());
        let mut dirty: Vec<u32> = Vec::new();
        let mut undo: Vec<Undo> = Vec::new();
        for entry in entries {
            let key: &str = match &entry.key {
                Field::Ok(k) => k,
                Field::WrongType(t) => {
                    applied.malformed_total += 1;
                    applied.report("?", &format!("Key is {t}"));
                    continue;
                }
                Field::Null | Field::Absent => {
                    applied.malformed_total += 1;
                    applied.report("?", "entry has no Key");
                    continue;
                }
            };
            let value = match &entry.value {
                Field::Ok(v) => Some(&**v),
                _ => None,
            };
            let cached = match self.entries.get_mut(key) {
                // The same key twice in one response (never from Consul):
                // the first one counts.
                Some(c) if c.seen == stamp => continue,
                Some(c) if c.value.as_deref() == value => {
                    c.seen = stamp;
                    c
                }
                found => {
                    let was_there = found.is_some();
                    let mut fresh = self.parse(key, &entry.value);
                    fresh.seen = stamp;
                    if let Outcome::Malformed(reason) = &fresh.outcome {
                        applied.report(key, reason);
                    }
                    if let Some((slot, _)) = fresh.node {
                        Self::mark(&mut self.slots, &mut dirty, slot);
                    }
                    let boxed: Box<str> = key.into();
                    match self.entries.insert(boxed.clone(), fresh) {
                        Some(old) => {
                            if let Some((slot, _)) = old.node {
                                Self::mark(&mut self.slots, &mut dirty, slot);
                            }
                            undo.push(Undo::Replaced(boxed.clone(), old));
                        }
                        None => {
                            debug_assert!(!was_there);
                            undo.push(Undo::Inserted(boxed.clone()));
                        }
                    }
                    match self.entries.get_mut(key) {
                        Some(c) => c,
                        None => continue,
                    }
                }
            };
            if matches!(cached.outcome, Outcome::Malformed(_)) {
                applied.malformed_total += 1;
            }
            if let Some((slot, json)) = &cached.node {
                let s = &mut self.slots[*slot as usize];
                if s.count_stamp != stamp {
                    s.count_stamp = stamp;
                    s.count = 0;
                }
                let pos = s.count;
                s.count += 1;
                if cached.pos != pos {
                    cached.pos = pos;
                    Self::mark(&mut self.slots, &mut dirty, *slot);
                }
                order.push((*slot, json.clone()));
            }
        }
        if !entries.is_empty() && applied.malformed_total == entries.len() {
            for u in undo.into_iter().rev() {
                match u {
                    Undo::Inserted(k) => {
                        self.entries.remove(&k);
                    }
                    Undo::Replaced(k, old) => {
                        self.entries.insert(k, old);
                    }
                }
            }
            for slot in dirty {
                self.slots[slot as usize].dirty = false;
            }
            return Err(applied);
        }
        // Keys that are gone: their services change.
        let slots = &mut self.slots;
        self.entries.retain(|_, c| {
            if c.seen == stamp {
                return true;
            }
            if let Some((slot, _)) = c.node {
                Self::mark(slots, &mut dirty, slot);
            }
            false
        });
        if dirty.is_empty() {
            return Ok(applied);
        }
        for (slot, json) in order {
            let s = &mut self.slots[slot as usize];
            if s.dirty {
                s.nodes.push(json);
            }
        }
        for slot in dirty {
            let s = &mut self.slots[slot as usize];
            s.dirty = false;
            let nodes = std::mem::take(&mut s.nodes);
            if nodes.is_empty() {
                if let Some(old) = self.services.remove(&s.name) {
                    self.nodes -= u64::from(old.node_count);
                    applied.changed_services += 1;
                }
                continue;
            }
            let len = nodes.iter().map(|j| j.len() + 1).sum::<usize>() + 2;
            let mut json = String::with_capacity(len);
            json.push('[');
            for (i, j) in nodes.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                json.push_str(j);
            }
            json.push(']');
            if self
                .services
                .get(&s.name)
                .is_some_and(|old| *old.nodes_json == *json)
            {
                continue;
            }
            let service = Service {
                generation: seq,
                server: self.server,
                node_count: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
                nodes_json: Arc::from(json),
            };
            self.nodes += u64::from(service.node_count);
            if let Some(old) = self.services.insert(s.name.clone(), service) {
                self.nodes -= u64::from(old.node_count);
            }
            applied.changed_services += 1;
        }
        applied.changed = applied.changed_services > 0;
        Ok(applied)
    }

    /// The prefix is gone (404): forget every service. Returns whether
    /// anything was removed.
    pub fn clear(&mut self) -> bool {
        self.entries.clear();
        self.nodes = 0;
        let had = !self.services.is_empty();
        self.services.clear();
        had
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use std::borrow::Cow;

    fn rules() -> Rules {
        Rules {
            prefix: "upstreams".into(),
            skip_keys: vec![],
            default_weight: 1,
        }
    }

    fn entry(key: &str, value: &str) -> RawEntry<'static> {
        RawEntry {
            key: Field::Ok(Cow::Owned(key.into())),
            value: Field::Ok(Cow::Owned(
                base64::engine::general_purpose::STANDARD.encode(value),
            )),
            modify_index: Field::Ok(1),
        }
    }

    const URL: &str = "http://127.0.0.1:8500";

    trait CloneEntry {
        fn clone_entry(&self) -> RawEntry<'static>;
    }

    impl CloneEntry for RawEntry<'_> {
        fn clone_entry(&self) -> RawEntry<'static> {
            let own = |f: &Field<Cow<'_, str>>| match f {
                Field::Ok(v) => Field::Ok(Cow::Owned(v.to_string())),
                Field::Null => Field::Null,
                Field::Absent => Field::Absent,
                Field::WrongType(t) => Field::WrongType(t),
            };
            RawEntry {
                key: own(&self.key),
                value: own(&self.value),
                modify_index: self.modify_index.clone(),
            }
        }
    }

    #[test]
    fn services_are_named_like_apisix_and_grouped_in_key_order() {
        let mut m = ServerModel::new(0, URL, rules());
        let a = m
            .apply(
                &[
                    entry("upstreams/web/10.0.0.1:80", r#"{"weight":2}"#),
                    entry("upstreams/web/10.0.0.2:80", "{}"),
                    entry("upstreams/api/v1/10.0.0.3:81", "{}"),
                ],
                1,
            )
            .unwrap();
        assert!(a.changed);
        assert_eq!(a.changed_services, 2);
        let web = &m.services()["http://127.0.0.1:8500/v1/kv/upstreams/web/"];
        assert_eq!(
            &*web.nodes_json,
            r#"[{"host":"10.0.0.1","port":80,"weight":2},{"host":"10.0.0.2","port":80,"weight":1}]"#
        );
        assert_eq!(web.node_count, 2);
        assert!(m
            .services()
            .contains_key("http://127.0.0.1:8500/v1/kv/upstreams/api/v1/"));
    }

    #[test]
    fn unchanged_services_keep_generation_and_identity() {
        let mut m = ServerModel::new(0, URL, rules());
        m.apply(
            &[
                entry("upstreams/web/10.0.0.1:80", "{}"),
                entry("upstreams/api/10.0.0.3:81", "{}"),
            ],
            1,
        )
        .unwrap();
        let before = m.services()["http://127.0.0.1:8500/v1/kv/upstreams/web/"].clone();
        let a = m
            .apply(
                &[
                    entry("upstreams/web/10.0.0.1:80", "{}"),
                    entry("upstreams/api/10.0.0.3:81", r#"{"weight":5}"#),
                ],
                2,
            )
            .unwrap();
        assert_eq!(a.changed_services, 1);
        let after = &m.services()["http://127.0.0.1:8500/v1/kv/upstreams/web/"];
        assert_eq!(after.generation, 1);
        assert!(Arc::ptr_eq(&before.nodes_json, &after.nodes_json));
        assert_eq!(
            m.services()["http://127.0.0.1:8500/v1/kv/upstreams/api/"].generation,
            2
        );
        // The same response again changes nothing.
        let a = m
            .apply(
                &[
                    entry("upstreams/web/10.0.0.1:80", "{}"),
                    entry("upstreams/api/10.0.0.3:81", r#"{"weight":5}"#),
                ],
                3,
            )
            .unwrap();
        assert!(!a.changed);
    }

    #[test]
    fn removed_service_counts_as_change() {
        let mut m = ServerModel::new(0, URL, rules());
        m.apply(&[entry("upstreams/web/10.0.0.1:80", "{}")], 1)
            .unwrap();
        let a = m.apply(&[], 2).unwrap();
        assert!(a.changed);
        assert!(m.services().is_empty());
    }

    #[test]
    fn malformed_entries_are_reported_once_and_the_rest_applies() {
        let mut m = ServerModel::new(0, URL, rules());
        let body = [
            entry("upstreams/web/10.0.0.1:80", "{}"),
            entry("upstreams/web/bad host:80", "{}"),
            entry("upstreams/web/10.0.0.2:80", "not json"),
        ];
        let a = m.apply(&body, 1).unwrap();
        assert_eq!(a.malformed_total, 2);
        assert_eq!(a.newly_malformed.len(), 2);
        assert_eq!(m.node_count(), 1);
        let a = m.apply(&body, 2).unwrap();
        assert_eq!(a.malformed_total, 2);
        assert!(a.newly_malformed.is_empty());
        assert!(!a.changed);
    }

    #[test]
    fn newly_malformed_entries_are_listed_up_to_the_cap_and_counted_beyond() {
        let mut m = ServerModel::new(0, URL, rules());
        let mut body = vec![entry("upstreams/web/10.0.0.1:80", "{}")];
        for round in 0..3 {
            body.truncate(1);
            for i in 0..500 {
                body.push(entry(
                    &format!("upstreams/web/10.1.0.{i}:80"),
                    &format!("bad {round}"),
                ));
            }
            let a = m.apply(&body, round + 1).unwrap();
            assert_eq!(a.malformed_total, 500);
            assert_eq!(a.newly_malformed.len(), MAX_REPORTED_PER_RESPONSE);
            assert_eq!(a.newly_malformed_omitted, 500 - MAX_REPORTED_PER_RESPONSE);
        }
        assert_eq!(m.node_count(), 1);
    }

    #[test]
    fn a_deep_value_drops_only_its_node() {
        let mut m = ServerModel::new(0, URL, rules());
        let deep = format!(
            r#"{{"metadata":{}0{}}}"#,
            "[".repeat(1500),
            "]".repeat(1500)
        );
        let a = m
            .apply(
                &[
                    entry("upstreams/web/10.0.0.1:80", "{}"),
                    entry("upstreams/web/10.0.0.2:80", &deep),
                    entry("upstreams/web/10.0.0.3:80", r#"{"metadata":{"a":1}}"#),
                ],
                1,
            )
            .unwrap();
        assert_eq!(a.malformed_total, 1);
        assert!(a.newly_malformed[0].1.contains("deeper than"));
        let web = &m.services()["http://127.0.0.1:8500/v1/kv/upstreams/web/"];
        assert_eq!(web.node_count, 2);
        let nodes: serde_json::Value = serde_json::from_str(&web.nodes_json).unwrap();
        assert_eq!(nodes[1]["metadata"]["a"], 1);
    }

    #[test]
    fn a_response_of_only_malformed_entries_is_refused() {
        let mut m = ServerModel::new(0, URL, rules());
        m.apply(&[entry("upstreams/web/10.0.0.1:80", "{}")], 1)
            .unwrap();
        let bad = RawEntry {
            key: Field::WrongType("a number"),
            ..RawEntry::default()
        };
        let refused = m.apply(&[bad], 2).unwrap_err();
        assert_eq!(refused.malformed_total, 1);
        assert_eq!(m.node_count(), 1, "the last good nodes are kept");
        // A good response afterwards applies normally.
        let a = m
            .apply(&[entry("upstreams/web/10.0.0.1:80", "{}")], 3)
            .unwrap();
        assert!(!a.changed);
        // An empty array is not "all malformed": it empties the prefix.
        assert!(m.apply(&[], 4).unwrap().changed);
    }

    #[test]
    fn removing_one_key_rerenders_only_its_service() {
        let mut m = ServerModel::new(0, URL, rules());
        let all = [
            entry("upstreams/web/10.0.0.1:80", "{}"),
            entry("upstreams/web/10.0.0.2:80", "{}"),
            entry("upstreams/api/10.0.0.3:81", "{}"),
        ];
        m.apply(&all, 1).unwrap();
        let api = m.services()["http://127.0.0.1:8500/v1/kv/upstreams/api/"].clone();
        let a = m
            .apply(&[all[0].clone_entry(), all[2].clone_entry()], 2)
            .unwrap();
        assert_eq!(a.changed_services, 1);
        let web = &m.services()["http://127.0.0.1:8500/v1/kv/upstreams/web/"];
        assert_eq!(
            &*web.nodes_json,
            r#"[{"host":"10.0.0.1","port":80,"weight":1}]"#
        );
        assert_eq!(web.generation, 2);
        let api_after = &m.services()["http://127.0.0.1:8500/v1/kv/upstreams/api/"];
        assert!(Arc::ptr_eq(&api.nodes_json, &api_after.nodes_json));
        assert_eq!(m.node_count(), 2);
    }

    #[test]
    fn a_refused_response_leaves_the_model_as_it_was() {
        let mut m = ServerModel::new(0, URL, rules());
        m.apply(&[entry("upstreams/web/10.0.0.1:80", "{}")], 1)
            .unwrap();
        // The key's value turns malformed and it is the only entry: refused.
        assert!(m
            .apply(&[entry("upstreams/web/10.0.0.1:80", "not json")], 2)
            .is_err());
        assert_eq!(m.node_count(), 1);
        // The old parse is still there: the same good response changes nothing.
        let a = m
            .apply(&[entry("upstreams/web/10.0.0.1:80", "{}")], 3)
            .unwrap();
        assert!(!a.changed);
        assert!(a.newly_malformed.is_empty());
    }

    #[test]
    fn a_change_of_order_is_applied_as_a_fresh_model_would() {
        // Found by fuzzing: Consul sorts keys, a hostile server need not.
        let a = entry("upstreams/web/[::1]:8080", "{}");
        let b = entry("upstreams/web/[fe80::1]:443", "{}");
        let mut m = ServerModel::new(0, URL, rules());
        m.apply(&[a.clone_entry(), b.clone_entry()], 1).unwrap();
        let changed = m.apply(&[b.clone_entry(), a.clone_entry()], 2).unwrap();
        assert!(changed.changed);
        let mut fresh = ServerModel::new(0, URL, rules());
        fresh.apply(&[b.clone_entry(), a.clone_entry()], 1).unwrap();
        let name = "http://127.0.0.1:8500/v1/kv/upstreams/web/";
        assert_eq!(
            m.services()[name].nodes_json,
            fresh.services()[name].nodes_json
        );
    }

    #[test]
    fn a_duplicated_key_counts_once() {
        let mut m = ServerModel::new(0, URL, rules());
        let e = entry("upstreams/web/10.0.0.1:80", "{}");
        m.apply(&[e.clone_entry(), e.clone_entry()], 1).unwrap();
        assert_eq!(m.node_count(), 1);
    }

    #[test]
    fn seed_keeps_generations_for_unchanged_services() {
        let mut first = ServerModel::new(0, URL, rules());
        first
            .apply(&[entry("upstreams/web/10.0.0.1:80", "{}")], 4)
            .unwrap();
        let mut second = ServerModel::new(0, URL, rules());
        second.seed(first.services().clone());
        let a = second
            .apply(&[entry("upstreams/web/10.0.0.1:80", "{}")], 9)
            .unwrap();
        assert!(!a.changed);
        assert_eq!(
            second.services()["http://127.0.0.1:8500/v1/kv/upstreams/web/"].generation,
            4
        );
    }
}
