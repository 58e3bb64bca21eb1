//! The model's behaviour, through its public methods.

use super::report::MAX_REPORTED_PER_RESPONSE;
use super::*;
use crate::kv::{Field, RawEntry, Rules};
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
