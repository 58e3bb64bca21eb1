//! One server's view of the prefix: turns each Consul response into services,
//! reusing the previous parse of every entry whose value did not change, and
//! keeping a service's generation when its nodes are byte-for-byte the same.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::kv::{self, Field, Outcome, RawEntry, Rules};
use crate::snapshot::Service;

#[derive(Debug)]
struct CachedEntry {
    /// The base64 value as received; the parse is reused while it is equal.
    value: Option<Box<str>>,
    outcome: Outcome,
}

/// What applying one response did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Whether any service was added, removed or changed.
    pub changed: bool,
    /// Services whose nodes changed, were added or removed.
    pub changed_services: usize,
    /// Entries skipped for the first time in this response: `(key, reason)`.
    /// An entry that stays malformed is reported once, not on every poll.
    pub newly_malformed: Vec<(String, String)>,
    /// All malformed entries currently in the response.
    pub malformed_total: usize,
}

#[derive(Debug)]
pub struct ServerModel {
    server: u16,
    /// `{server url}/v1/kv/`: prepended to a service path to name it.
    name_base: String,
    rules: Rules,
    entries: HashMap<Box<str>, CachedEntry>,
    /// Keyed by full service name.
    services: BTreeMap<Arc<str>, Service>,
}

impl ServerModel {
    pub fn new(server: u16, url: &str, rules: Rules) -> Self {
        ServerModel {
            server,
            name_base: format!("{url}/v1/kv/"),
            rules,
            entries: HashMap::new(),
            services: BTreeMap::new(),
        }
    }

    pub fn services(&self) -> &BTreeMap<Arc<str>, Service> {
        &self.services
    }

    pub fn name_base(&self) -> &str {
        &self.name_base
    }

    pub fn node_count(&self) -> u64 {
        self.services
            .values()
            .map(|s| u64::from(s.node_count))
            .sum()
    }

    /// Starts from services known from elsewhere (the dump, or the snapshot a
    /// previous leader published), so their generations carry over.
    pub fn seed(&mut self, services: impl IntoIterator<Item = (Arc<str>, Service)>) {
        self.services = services
            .into_iter()
            .filter(|(name, _)| name.starts_with(&self.name_base))
            .map(|(name, mut s)| {
                s.server = self.server;
                (name, s)
            })
            .collect();
    }

    /// Applies a full `?recurse` response. `seq` is the generation given to
    /// services that change.
    ///
    /// A response whose entries are all malformed is refused whole and
    /// nothing changes: Consul never sends that, a broken proxy or server
    /// might, and serving nothing would throw away the last good nodes.
    pub fn apply(&mut self, entries: &[RawEntry<'_>], seq: u64) -> Result<Applied, Applied> {
        let mut applied = Applied::default();
        let mut previous = std::mem::take(&mut self.entries);
        let mut nodes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        // Pass 1: parse (or reuse) every entry.
        let mut next: HashMap<Box<str>, CachedEntry> = HashMap::with_capacity(entries.len());
        for entry in entries {
            let key: &str = match &entry.key {
                Field::Ok(k) => k,
                Field::WrongType(t) => {
                    applied.malformed_total += 1;
                    applied
                        .newly_malformed
                        .push((String::from("?"), format!("Key is {t}")));
                    continue;
                }
                Field::Null | Field::Absent => {
                    applied.malformed_total += 1;
                    applied
                        .newly_malformed
                        .push((String::from("?"), "entry has no Key".into()));
                    continue;
                }
            };
            let value: Option<&str> = match &entry.value {
                Field::Ok(v) => Some(v),
                _ => None,
            };
            let reused = match previous.remove_entry(key) {
                Some((k, cached)) if cached.value.as_deref() == value => Some((k, cached)),
                _ => None,
            };
            let (k, cached, fresh) = match reused {
                Some((k, cached)) => (k, cached, false),
                None => {
                    let outcome = kv::parse_entry(key, &entry.value, &self.rules);
                    let cached = CachedEntry {
                        value: value.map(Into::into),
                        outcome,
                    };
                    (Box::<str>::from(key), cached, true)
                }
            };
            if let Outcome::Malformed(reason) = &cached.outcome {
                applied.malformed_total += 1;
                if fresh {
                    applied
                        .newly_malformed
                        .push((key.to_owned(), reason.clone()));
                }
            }
            next.insert(k, cached);
        }
        if !entries.is_empty() && applied.malformed_total == entries.len() {
            // Keep the previous parses too: the next good response reuses them.
            self.entries = previous;
            self.entries.extend(next);
            return Err(applied);
        }
        self.entries = next;
        // Pass 2: group nodes by service in key order (Consul sorts keys).
        for entry in entries {
            if let Field::Ok(key) = &entry.key {
                if let Some(CachedEntry {
                    outcome: Outcome::Node { service_path, json },
                    ..
                }) = self.entries.get(key.as_ref())
                {
                    nodes.entry(service_path).or_default().push(json);
                }
            }
        }
        // Pass 3: render services; keep identity where nothing changed.
        let mut services = BTreeMap::new();
        let mut name = self.name_base.clone();
        for (path, list) in nodes {
            name.truncate(self.name_base.len());
            name.push_str(path);
            let len = list.iter().map(|j| j.len() + 1).sum::<usize>() + 2;
            let mut json = String::with_capacity(len);
            json.push('[');
            for (i, j) in list.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                json.push_str(j);
            }
            json.push(']');
            let (key, service) = match self.services.remove_entry(name.as_str()) {
                Some((key, old)) if *old.nodes_json == *json => (key, old),
                other => {
                    applied.changed_services += 1;
                    let key = other.map_or_else(|| Arc::from(name.as_str()), |(k, _)| k);
                    let service = Service {
                        generation: seq,
                        server: self.server,
                        node_count: u32::try_from(list.len()).unwrap_or(u32::MAX),
                        nodes_json: Arc::from(json),
                    };
                    (key, service)
                }
            };
            services.insert(key, service);
        }
        applied.changed_services += self.services.len(); // removed services
        applied.changed = applied.changed_services > 0;
        self.services = services;
        Ok(applied)
    }

    /// The prefix is gone (404): forget every service. Returns whether
    /// anything was removed.
    pub fn clear(&mut self) -> bool {
        self.entries.clear();
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
