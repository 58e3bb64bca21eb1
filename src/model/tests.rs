//! The model's behaviour, through its public methods.

use super::report::MAX_REPORTED_PER_RESPONSE;
use super::*;
use crate::kv::{Field, RawEntry, Rules};
use base64::Engine as _;
use rustc_hash::FxHashMap;
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
    let web = &m.services_by_name()["http://127.0.0.1:8500/v1/kv/upstreams/web/"];
    assert_eq!(
        &*web.nodes_json,
        r#"[{"host":"10.0.0.1","port":80,"weight":2},{"host":"10.0.0.2","port":80,"weight":1}]"#
    );
    assert_eq!(web.node_count, 2);
    assert!(m
        .services_by_name()
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
    let before = m.services_by_name()["http://127.0.0.1:8500/v1/kv/upstreams/web/"].clone();
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
    let after = &m.services_by_name()["http://127.0.0.1:8500/v1/kv/upstreams/web/"];
    assert_eq!(after.generation, 1);
    assert!(Arc::ptr_eq(&before.nodes_json, &after.nodes_json));
    assert_eq!(
        m.services_by_name()["http://127.0.0.1:8500/v1/kv/upstreams/api/"].generation,
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
    assert!(m.services_by_name().is_empty());
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
    let web = &m.services_by_name()["http://127.0.0.1:8500/v1/kv/upstreams/web/"];
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
    let api = m.services_by_name()["http://127.0.0.1:8500/v1/kv/upstreams/api/"].clone();
    let a = m
        .apply(&[all[0].clone_entry(), all[2].clone_entry()], 2)
        .unwrap();
    assert_eq!(a.changed_services, 1);
    let web = &m.services_by_name()["http://127.0.0.1:8500/v1/kv/upstreams/web/"];
    assert_eq!(
        &*web.nodes_json,
        r#"[{"host":"10.0.0.1","port":80,"weight":1}]"#
    );
    assert_eq!(web.generation, 2);
    let api_after = &m.services_by_name()["http://127.0.0.1:8500/v1/kv/upstreams/api/"];
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
        m.services_by_name()[name].nodes_json,
        fresh.services_by_name()[name].nodes_json
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
    second.seed(first.services_by_name());
    let a = second
        .apply(&[entry("upstreams/web/10.0.0.1:80", "{}")], 9)
        .unwrap();
    assert!(!a.changed);
    assert_eq!(
        second.services_by_name()["http://127.0.0.1:8500/v1/kv/upstreams/web/"].generation,
        4
    );
}

fn entry_at(key: &str, value: &str, index: Field<u64>) -> RawEntry<'static> {
    RawEntry {
        modify_index: index,
        ..entry(key, value)
    }
}

const WEB: &str = "http://127.0.0.1:8500/v1/kv/upstreams/web/";

#[test]
fn an_equal_modify_index_skips_the_entry_and_a_new_one_parses_it_again() {
    let mut m = ServerModel::new(0, URL, rules());
    let key = "upstreams/web/10.0.0.1:80";
    m.apply(&[entry_at(key, r#"{"weight":3}"#, Field::Ok(7))], 1)
        .unwrap();
    let before = m.services_by_name()[WEB].clone();
    // Same index, same value: nothing to do.
    let a = m
        .apply(&[entry_at(key, r#"{"weight":3}"#, Field::Ok(7))], 2)
        .unwrap();
    assert!(!a.changed);
    // A write of the same value (Consul raises the index): parsed again,
    // renders the same, keeps generation and allocation.
    let a = m
        .apply(&[entry_at(key, r#"{"weight":3}"#, Field::Ok(9))], 3)
        .unwrap();
    assert!(!a.changed);
    let after = &m.services_by_name()[WEB];
    assert_eq!(after.generation, 1);
    assert!(Arc::ptr_eq(&before.nodes_json, &after.nodes_json));
    // A new value under a new index.
    let a = m
        .apply(&[entry_at(key, r#"{"weight":4}"#, Field::Ok(10))], 4)
        .unwrap();
    assert!(a.changed);
    assert!(m.services_by_name()[WEB]
        .nodes_json
        .contains(r#""weight":4"#));
}

#[test]
fn a_new_value_under_the_same_index_is_still_picked_up() {
    // Never from Consul; a broken server or proxy might. The length and
    // hash check catches it, whether the length changes or not.
    let mut m = ServerModel::new(0, URL, rules());
    let key = "upstreams/web/10.0.0.1:80";
    m.apply(&[entry_at(key, r#"{"weight":3}"#, Field::Ok(7))], 1)
        .unwrap();
    for (seq, value, weight) in [
        (2, r#"{"weight":4}"#, "4"),
        (3, r#"{"weight":40}"#, "40"),
        (4, r#"{"weight":41}"#, "41"),
    ] {
        let a = m.apply(&[entry_at(key, value, Field::Ok(7))], seq).unwrap();
        assert!(a.changed, "{value}");
        let json = &m.services_by_name()[WEB].nodes_json;
        assert!(json.contains(&format!(r#""weight":{weight}}}"#)), "{json}");
        assert_eq!(m.services_by_name()[WEB].generation, seq);
    }
}

#[test]
fn without_a_usable_modify_index_the_value_itself_is_compared() {
    let key = "upstreams/web/10.0.0.1:80";
    for odd in [Field::Absent, Field::Null, Field::WrongType("a string")] {
        let mut m = ServerModel::new(0, URL, rules());
        let bad = "upstreams/web/10.0.0.2:80";
        let body = |w: &str| {
            [
                entry_at(key, &format!(r#"{{"weight":{w}}}"#), odd.clone()),
                entry_at(bad, "not json", odd.clone()),
            ]
        };
        let a = m.apply(&body("3"), 1).unwrap();
        assert_eq!(a.newly_malformed.len(), 1);
        // The same values: unchanged, and the bad one is not reported again.
        let a = m.apply(&body("3"), 2).unwrap();
        assert!(!a.changed, "{odd:?}");
        assert!(a.newly_malformed.is_empty());
        assert_eq!(a.malformed_total, 1);
        // A value of the same length, then of another length.
        for (seq, w) in [(3, "4"), (4, "44")] {
            let a = m.apply(&body(w), seq).unwrap();
            assert!(a.changed, "{odd:?} {w}");
            assert!(m.services_by_name()[WEB]
                .nodes_json
                .contains(&format!(r#""weight":{w}}}"#)));
        }
        // The index appears, then goes again: each time parsed afresh.
        let a = m
            .apply(&[entry_at(key, r#"{"weight":5}"#, Field::Ok(3))], 5)
            .unwrap();
        assert!(a.changed);
        let a = m
            .apply(&[entry_at(key, r#"{"weight":6}"#, odd.clone())], 6)
            .unwrap();
        assert!(a.changed);
        let a = m
            .apply(&[entry_at(key, r#"{"weight":6}"#, odd.clone())], 7)
            .unwrap();
        assert!(!a.changed);
    }
}

#[test]
fn an_odd_value_field_is_remembered_as_such() {
    // Null, absent or a number: malformed, reported once, then unchanged.
    let mut m = ServerModel::new(0, URL, rules());
    let good = entry("upstreams/web/10.0.0.1:80", "{}");
    for value in [Field::Null, Field::Absent, Field::WrongType("a number")] {
        let odd = RawEntry {
            value: value.clone(),
            ..entry("upstreams/web/10.0.0.2:80", "{}")
        };
        let a = m
            .apply(&[good.clone_entry(), odd.clone_entry()], 1)
            .unwrap();
        assert_eq!(a.newly_malformed.len(), 1, "{value:?}");
        let a = m
            .apply(&[good.clone_entry(), odd.clone_entry()], 2)
            .unwrap();
        assert!(a.newly_malformed.is_empty(), "{value:?}");
        assert_eq!(a.malformed_total, 1);
    }
}

#[test]
fn a_refused_response_after_in_place_changes_is_undone() {
    // Index-less entries keep their value beside the key: a refused
    // response must leave that text as it was too.
    let mut m = ServerModel::new(0, URL, rules());
    let keys = ["upstreams/web/10.0.0.1:80", "upstreams/web/10.0.0.2:80"];
    let good: Vec<_> = keys
        .iter()
        .map(|k| entry_at(k, "{}", Field::Absent))
        .collect();
    m.apply(&good, 1).unwrap();
    let before = m.services_by_name()[WEB].clone();
    let bad: Vec<_> = keys
        .iter()
        .map(|k| entry_at(k, "not json", Field::Absent))
        .collect();
    assert!(m.apply(&bad, 2).is_err());
    assert_eq!(m.services_by_name()[WEB], before);
    let a = m.apply(&good, 3).unwrap();
    assert!(!a.changed);
    assert!(a.newly_malformed.is_empty());
    // And after a refusal that also dropped and added keys.
    let mut bad = bad;
    bad.remove(0);
    bad.push(entry_at("upstreams/web/10.0.0.3:80", "nope", Field::Absent));
    assert!(m.apply(&bad, 4).is_err());
    let a = m.apply(&good, 5).unwrap();
    assert!(!a.changed);
    assert_eq!(m.node_count(), 2);
}

#[test]
fn a_seeded_service_the_first_response_does_not_name_is_dropped() {
    let mut first = ServerModel::new(0, URL, rules());
    first
        .apply(
            &[
                entry("upstreams/web/10.0.0.1:80", "{}"),
                entry("upstreams/gone/10.0.0.2:80", "{}"),
            ],
            4,
        )
        .unwrap();
    let mut second = ServerModel::new(0, URL, rules());
    second.seed(first.services_by_name());
    assert_eq!(second.node_count(), 2);
    let a = second
        .apply(&[entry("upstreams/web/10.0.0.1:80", "{}")], 9)
        .unwrap();
    assert_eq!(a.changed_services, 1);
    assert_eq!(second.services_by_name().len(), 1);
    assert_eq!(second.services_by_name()[WEB].generation, 4);
    assert_eq!(second.node_count(), 1);
}

#[test]
fn a_big_response_followed_by_a_small_one_gives_the_room_back() {
    let mut m = ServerModel::new(0, URL, rules());
    let big: Vec<_> = (0..20_000)
        .map(|i| entry(&format!("upstreams/s{i:05}/10.0.0.1:80"), "{}"))
        .collect();
    m.apply(&big, 1).unwrap();
    assert_eq!(m.service_count(), 20_000);
    let small: Vec<_> = big[..10].iter().map(|e| e.clone_entry()).collect();
    let a = m.apply(&small, 2).unwrap();
    assert_eq!(a.changed_services, 20_000 - 10);
    assert_eq!(m.service_count(), 10);
    assert!(m.entries.capacity() < 100, "{}", m.entries.capacity());
    assert!(m.keys.len() < 1000, "{}", m.keys.len());
    assert!(m.slots.list.capacity() < 200, "{}", m.slots.list.capacity());
    // Still the same model: a change and a growth apply as usual.
    let mut more = small;
    more.push(entry("upstreams/s99999/10.0.0.1:80", "{}"));
    let a = m.apply(&more, 3).unwrap();
    assert_eq!(a.changed_services, 1);
    let fresh = fresh_services(&more);
    assert_same_nodes(&m, &fresh);
}

fn fresh_services(raws: &[RawEntry<'_>]) -> FxHashMap<Arc<str>, crate::snapshot::Service> {
    let mut f = ServerModel::new(0, URL, rules());
    let _ = f.apply(raws, 1);
    f.services_by_name()
}

fn assert_same_nodes(m: &ServerModel, fresh: &FxHashMap<Arc<str>, crate::snapshot::Service>) {
    assert_eq!(m.service_count(), fresh.len());
    for (name, s) in fresh {
        let mine = m.service(name).unwrap();
        assert_eq!(mine.nodes_json, s.nodes_json, "{name}");
        assert_eq!(mine.node_count, s.node_count, "{name}");
    }
    let total: u64 = fresh.values().map(|s| u64::from(s.node_count)).sum();
    assert_eq!(m.node_count(), total);
}

/// A small deterministic generator for the walk tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// `(key, weight, index)` rows to raw entries.
fn raws(rows: &[(String, u32, u64)]) -> Vec<RawEntry<'static>> {
    rows.iter()
        .map(|(k, w, i)| entry_at(k, &format!(r#"{{"weight":{w}}}"#), Field::Ok(*i)))
        .collect()
}

/// Random `(key, weight, index)` rows for the model's random walks: keys
/// of `services` on hosts `10.0.{subnet}.{host}`, and a new `ModifyIndex`
/// for every row made or changed.
struct Rows {
    rng: Rng,
    index: u64,
    services: &'static [&'static str],
    subnets: usize,
    hosts: usize,
}

impl Rows {
    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    fn row(&mut self) -> (String, u32, u64) {
        let svc = self.services[self.rng.next(self.services.len())];
        let subnet = if self.subnets > 1 {
            self.rng.next(self.subnets)
        } else {
            0
        };
        let key = format!(
            "upstreams/{svc}/10.0.{subnet}.{}:80",
            self.rng.next(self.hosts)
        );
        (key, self.rng.next(3) as u32, self.bump())
    }

    /// `n` rows drawn, in key order, without repeated keys.
    fn sorted(&mut self, n: usize) -> Vec<(String, u32, u64)> {
        let mut rows: Vec<_> = (0..n).map(|_| self.row()).collect();
        rows.sort();
        rows.dedup_by(|a, b| a.0 == b.0);
        rows
    }
}

#[test]
fn keys_added_and_removed_anywhere_give_what_a_fresh_model_gives() {
    // Start, middle, end; one or several; with changed values and nested
    // services (whose keys interleave with their parent's). Unchanged
    // services keep their generation and allocation.
    let mut g = Rows {
        rng: Rng(0x9E37_79B9_7F4A_7C15),
        index: 1,
        services: &["a", "b", "b/x", "c", "d/e/f"],
        subnets: 4,
        hosts: 50,
    };
    let mut rows = g.sorted(60);
    let mut m = ServerModel::new(0, URL, rules());
    m.apply(&raws(&rows), 1).unwrap();
    for seq in 2..300 {
        let before = m.services_by_name();
        let at = match g.rng.next(3) {
            0 => 0,
            1 => rows.len() / 2,
            _ => rows.len(),
        };
        match g.rng.next(4) {
            0 if !rows.is_empty() => {
                let n = 1 + g.rng.next(3);
                let at = at.min(rows.len() - 1);
                rows.drain(at..(at + n).min(rows.len()));
            }
            1 if !rows.is_empty() => {
                let i = g.rng.next(rows.len());
                rows[i].1 += 1;
                rows[i].2 = g.bump();
            }
            _ => {
                for _ in 0..1 + g.rng.next(3) {
                    let row = g.row();
                    if !rows.iter().any(|r| r.0 == row.0) {
                        rows.insert(at.min(rows.len()), row);
                    }
                }
                rows.sort();
            }
        }
        let body = raws(&rows);
        m.apply(&body, seq).unwrap();
        assert!(m.sorted);
        let fresh = fresh_services(&body);
        assert_same_nodes(&m, &fresh);
        for (name, s) in m.services() {
            if let Some(old) = before.get(name).filter(|o| o.nodes_json == s.nodes_json) {
                assert_eq!(s.generation, old.generation, "{name}");
                assert!(Arc::ptr_eq(&s.nodes_json, &old.nodes_json));
            } else {
                assert_eq!(s.generation, seq, "{name}");
            }
        }
    }
}

#[test]
fn a_response_out_of_key_order_or_with_duplicates_gives_what_a_fresh_model_gives() {
    let mut rng = Rng(12345);
    let keys: Vec<String> = (0..40)
        .map(|i| format!("upstreams/s{}/10.0.0.{i}:80", i % 6))
        .collect();
    let mut m = ServerModel::new(0, URL, rules());
    for seq in 1..200 {
        let mut body: Vec<RawEntry<'static>> = Vec::new();
        for k in &keys {
            match rng.next(6) {
                0 => {}
                1 => {
                    body.push(entry_at(k, "{}", Field::Ok(seq)));
                    body.push(entry_at(k, r#"{"weight":9}"#, Field::Ok(seq)));
                }
                _ => body.push(entry_at(k, "{}", Field::Ok(1))),
            }
        }
        // Swap a few entries (a sorted response now and then).
        if rng.next(3) > 0 {
            for _ in 0..rng.next(4) {
                let (i, j) = (rng.next(body.len()), rng.next(body.len()));
                body.swap(i, j);
            }
        }
        m.apply(&body, seq).unwrap();
        assert_same_nodes(&m, &fresh_services(&body));
    }
}

#[test]
fn the_value_memo_renders_what_the_parser_renders() {
    let rules = Rules {
        prefix: "upstreams".into(),
        skip_keys: vec!["upstreams/skipped/".into()],
        default_weight: 3,
    };
    let values = [
        "{}",
        r#"{"weight":2,"max_fails":1,"fail_timeout":1.5,"priority":-1}"#,
        r#"{"metadata":{"zone":"a","n":[1,2]}}"#,
        r#"{"check_status":false}"#,
        r#"{"weight":"x"}"#,
        "not json",
        "[1]",
        "",
    ];
    let hosts = [
        "10.0.0.1:80",
        "[::1]:8080",
        "node-1.example:65535",
        "bad host:1",
    ];
    let mut body = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        for (j, v) in values.iter().enumerate() {
            for svc in ["web", "skipped"] {
                // Each value several times, so the memo is used.
                for copy in 0..3 {
                    body.push(entry(&format!("upstreams/{svc}{copy}{i}{j}/{h}"), v));
                    body.push(entry(&format!("upstreams/{svc}/{copy}{i}{j}/{h}"), v));
                }
            }
        }
    }
    body.push(RawEntry {
        value: Field::WrongType("a number"),
        ..entry("upstreams/web/10.9.9.9:80", "{}")
    });
    body.push(entry("upstreams/folder/", ""));
    let mut m = ServerModel::new(0, URL, rules.clone());
    let a = m.apply(&body, 1).unwrap();
    let mut expect: FxHashMap<String, Vec<String>> = FxHashMap::default();
    let mut malformed = Vec::new();
    for e in &body {
        let Field::Ok(k) = &e.key else { continue };
        match crate::kv::parse_entry(k, &e.value, &rules) {
            crate::kv::Outcome::Node { service_path, json } => expect
                .entry(format!("{URL}/v1/kv/{service_path}"))
                .or_default()
                .push(json.into()),
            crate::kv::Outcome::Malformed(reason) => malformed.push((k.to_string(), reason)),
            _ => {}
        }
    }
    assert_eq!(m.service_count(), expect.len());
    for (name, nodes) in &expect {
        assert_eq!(
            &*m.service(name).unwrap().nodes_json,
            format!("[{}]", nodes.join(","))
        );
    }
    assert_eq!(a.malformed_total, malformed.len());
    for (k, reason) in malformed.iter().take(MAX_REPORTED_PER_RESPONSE) {
        assert!(
            a.newly_malformed.contains(&(k.clone(), reason.clone())),
            "{k}: {reason}"
        );
    }
}

#[test]
fn services_are_listed_in_key_order_after_a_first_sync_and_found_by_name() {
    let mut m = ServerModel::new(0, URL, rules());
    let body: Vec<_> = ["b", "a-x", "a", "c/d", "c"]
        .iter()
        .map(|s| entry(&format!("upstreams/{s}/10.0.0.1:80"), "{}"))
        .collect();
    let mut sorted: Vec<_> = body.iter().map(|e| e.clone_entry()).collect();
    sorted.sort_by(|x, y| match (&x.key, &y.key) {
        (Field::Ok(a), Field::Ok(b)) => a.cmp(b),
        _ => std::cmp::Ordering::Equal,
    });
    m.apply(&sorted, 1).unwrap();
    let names: Vec<&str> = m.services().map(|(n, _)| &**n).collect();
    let mut want = names.clone();
    want.sort_unstable();
    assert_eq!(names, want);
    assert_eq!(m.service_count(), 5);
    for (name, s) in &m.services_by_name() {
        assert_eq!(m.service(name), Some(s));
    }
    assert_eq!(m.service("http://127.0.0.1:8500/v1/kv/upstreams/zz/"), None);
    assert_eq!(m.service("elsewhere"), None);
    // A removed service is gone from every view.
    m.apply(&sorted[1..], 2).unwrap();
    assert_eq!(m.service_count(), 4);
    assert_eq!(m.services().count(), 4);
}

/// Every node as `kv::parse_entry` renders it, grouped by service in key
/// order: what the model must serve.
fn parser_services(raws: &[RawEntry<'_>]) -> Vec<(String, String)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for raw in raws {
        let Field::Ok(key) = &raw.key else { continue };
        if let crate::kv::Outcome::Node { service_path, json } =
            crate::kv::parse_entry(key, &raw.value, &rules())
        {
            let name = format!("{URL}/v1/kv/{service_path}");
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, nodes)) => nodes.push(json.into()),
                None => out.push((name, vec![json.into()])),
            }
        }
    }
    out.into_iter()
        .map(|(n, nodes)| (n, format!("[{}]", nodes.join(","))))
        .collect()
}

#[test]
fn nodes_put_together_from_key_and_value_match_the_parser() {
    // Hosts and ports as the key writes them (IPv6 literals, leading zeros,
    // names), nested services, a repeated value (the memo's tail path) and
    // then distinct values (the memo turns itself off: whole nodes).
    let hosts = [
        "[2001:db8::1]:080",
        "[::1]:1",
        "10.0.0.1:00080",
        "api-1_b.internal:65535",
        "h:8080",
    ];
    let services = ["a", "a/b", "a/b/c", "z"];
    let mut keys: Vec<String> = Vec::new();
    for s in services {
        for h in hosts {
            keys.push(format!("upstreams/{s}/{h}"));
        }
    }
    for i in 0..1500 {
        keys.push(format!(
            "upstreams/many/10.1.{}.{}:0{}",
            i / 250,
            i % 250,
            1 + i % 9
        ));
    }
    keys.sort();
    let repeated: Vec<RawEntry<'static>> = keys
        .iter()
        .map(|k| entry(k, r#"{"weight":3,"metadata":{"x":[1]}}"#))
        .collect();
    let distinct: Vec<RawEntry<'static>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| entry(k, &format!(r#"{{"weight":{i},"priority":-1}}"#)))
        .collect();
    for raws in [&repeated, &distinct] {
        let mut m = ServerModel::new(0, URL, rules());
        m.apply(raws, 1).unwrap();
        let want = parser_services(raws);
        assert_eq!(m.service_count(), want.len());
        for (name, json) in &want {
            assert_eq!(
                &*m.service(name).unwrap().nodes_json,
                json.as_str(),
                "{name}"
            );
        }
        // The next response walks the rendered text, not the tails.
        let mut again: Vec<RawEntry<'static>> = raws.iter().map(|e| e.clone_entry()).collect();
        again[3].modify_index = Field::Ok(2);
        again[3].value = entry("x", r#"{"weight":9}"#).value;
        m.apply(&again, 2).unwrap();
        for (name, json) in &parser_services(&again) {
            assert_eq!(
                &*m.service(name).unwrap().nodes_json,
                json.as_str(),
                "{name}"
            );
        }
    }
}

fn names(m: &ServerModel) -> Vec<String> {
    m.services().map(|(n, _)| n.to_string()).collect()
}

#[test]
fn the_names_epoch_stays_exactly_while_the_list_of_names_does() {
    // The leader patches its previous snapshot while every epoch stays: a
    // list of names that changed under the same epoch would serve nodes
    // under the wrong names.
    let mut g = Rows {
        rng: Rng(0x2545_F491_4F6C_DD1D),
        index: 1,
        services: &["a", "b", "b/x", "c", "d/e/f", "g"],
        subnets: 1,
        hosts: 6,
    };
    let mut rows = g.sorted(20);
    let mut m = ServerModel::new(0, URL, rules());
    m.apply(&raws(&rows), 1).unwrap();
    let (mut stayed, mut moved) = (0, 0);
    for seq in 2..400 {
        let (epoch, before) = (m.names_epoch(), names(&m));
        match g.rng.next(5) {
            0 if !rows.is_empty() => {
                rows.remove(g.rng.next(rows.len()));
            }
            1 => {
                let row = g.row();
                if !rows.iter().any(|r| r.0 == row.0) {
                    rows.push(row);
                    rows.sort();
                }
            }
            _ if !rows.is_empty() => {
                let i = g.rng.next(rows.len());
                rows[i].1 += 1;
                rows[i].2 = g.bump();
            }
            _ => {}
        }
        if g.rng.next(40) == 0 {
            m.clear();
        } else {
            m.apply(&raws(&rows), seq).unwrap();
        }
        if m.names_epoch() == epoch {
            assert_eq!(
                names(&m),
                before,
                "names changed under epoch {epoch} at {seq}"
            );
            stayed += 1;
        } else {
            moved += 1;
        }
    }
    // Both happen often: most changes are of weights only.
    assert!(stayed > 150 && moved > 40, "stayed {stayed}, moved {moved}");
}

#[test]
fn the_names_epoch_moves_on_an_added_removed_or_cleared_service_only() {
    let mut m = ServerModel::new(0, URL, rules());
    m.apply(&[entry("upstreams/a/10.0.0.1:80", "{}")], 1)
        .unwrap();
    let e = m.names_epoch();
    m.apply(&[entry("upstreams/a/10.0.0.1:80", r#"{"weight":5}"#)], 2)
        .unwrap();
    assert_eq!(m.names_epoch(), e, "a weight");
    m.apply(
        &[
            entry("upstreams/a/10.0.0.1:80", r#"{"weight":5}"#),
            entry("upstreams/a/10.0.0.2:80", "{}"),
        ],
        3,
    )
    .unwrap();
    assert_eq!(m.names_epoch(), e, "a node more in the same service");
    m.apply(
        &[
            entry("upstreams/a/10.0.0.1:80", r#"{"weight":5}"#),
            entry("upstreams/b/10.0.0.2:80", "{}"),
        ],
        4,
    )
    .unwrap();
    let added = m.names_epoch();
    assert_ne!(added, e, "a service added");
    m.apply(&[entry("upstreams/a/10.0.0.1:80", r#"{"weight":5}"#)], 5)
        .unwrap();
    let removed = m.names_epoch();
    assert_ne!(removed, added, "a service removed");
    m.clear();
    assert_ne!(m.names_epoch(), removed, "cleared");
    assert!(m.names_epoch() > removed, "never back to an earlier epoch");
}
