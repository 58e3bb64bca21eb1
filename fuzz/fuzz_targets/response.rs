//! bytes → kv::parse_response → model::ServerModel::apply (twice).
//!
//! Invariants: no panic; `parse_response` (the scanner) gives the same
//! entries, or the same refusal, as the serde_json parser it replaced
//! (`tests/serde_oracle/`, included by path); every rendered service is a JSON array of nodes with
//! host, port and weight; a refused response (`Err`: every entry malformed)
//! changes nothing; applying the same response again changes nothing;
//! when the input holds a 0xFF byte (never valid in a JSON body) it is split
//! into two responses A and B, and applying A then B must give the same
//! services as applying B to a fresh model (the per-entry cache is invisible).
#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;

use ckv::kv::{parse_response, Rules};
use ckv::model::ServerModel;
use ckv::snapshot::Service;
use ckv_fuzz::check_nodes_json;
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/serde_oracle/mod.rs"]
mod serde_oracle;

const URL: &str = "http://127.0.0.1:8500";

fn model() -> ServerModel {
    ServerModel::new(
        3,
        URL,
        Rules {
            prefix: "upstreams".into(),
            skip_keys: vec!["upstreams/skip/".into()],
            default_weight: 1,
        },
    )
}

fn check(m: &ServerModel) {
    for (name, svc) in m.services() {
        assert!(name.starts_with(m.name_base()), "service name {name:?}");
        assert!(
            name.ends_with('/'),
            "service name {name:?} lacks trailing /"
        );
        assert_eq!(svc.server, 3);
        check_nodes_json(name, &svc.nodes_json, svc.node_count, true);
    }
    let total: u64 = m.services().map(|(_, s)| u64::from(s.node_count)).sum();
    assert_eq!(total, m.node_count());
}

fn nodes(m: &ServerModel) -> BTreeMap<Arc<str>, Arc<str>> {
    m.services()
        .map(|(k, s): (&Arc<str>, &Service)| (k.clone(), s.nodes_json.clone()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    serde_oracle::assert_same(data);
    if let Some(cut) = data.iter().position(|&b| b == 0xff) {
        let (a, b) = (&data[..cut], &data[cut + 1..]);
        serde_oracle::assert_same(a);
        serde_oracle::assert_same(b);
        let (Ok(ea), Ok(eb)) = (parse_response(a), parse_response(b)) else {
            return;
        };
        let mut m1 = model();
        let _ = m1.apply(&ea, 1);
        check(&m1);
        let after_a = nodes(&m1);
        let rb = m1.apply(&eb, 2);
        check(&m1);
        let mut m2 = model();
        let rb2 = m2.apply(&eb, 1);
        assert_eq!(rb.is_ok(), rb2.is_ok(), "B refused in one model only");
        if rb.is_ok() {
            assert_eq!(nodes(&m1), nodes(&m2), "A then B differs from B alone");
        } else {
            assert_eq!(nodes(&m1), after_a, "a refused B changed the services");
            assert!(m2.services_by_name().is_empty());
        }
        return;
    }
    let Ok(entries) = parse_response(data) else {
        return;
    };
    let mut m = model();
    let first = m.apply(&entries, 1);
    check(&m);
    let first = match first {
        Ok(a) => a,
        Err(a) => {
            assert!(!a.changed);
            assert!(m.services_by_name().is_empty(), "a refused response added services");
            assert!(
                m.apply(&entries, 2).is_err(),
                "refused once, accepted twice"
            );
            return;
        }
    };
    assert_eq!(first.changed, !m.services_by_name().is_empty());
    let before = m.services_by_name();
    let second = m.apply(&entries, 2).expect("accepted once, refused twice");
    check(&m);
    assert!(
        !second.changed,
        "applying the same response twice changed it"
    );
    assert_eq!(second.changed_services, 0);
    assert_eq!(second.malformed_total, first.malformed_total);
    assert_eq!(
        &before,
        &m.services_by_name(),
        "services changed on identical re-apply"
    );
    for svc in m.services_by_name().values() {
        assert_eq!(svc.generation, 1);
    }
});
