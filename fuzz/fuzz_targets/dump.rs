//! bytes → dump::parse.
//!
//! Invariants: no panic; a fresh dump's services are JSON arrays of nodes
//! with a string host and a port 1-65535, `node_count` matching; the
//! snapshot is marked from_dump and round trips through the snapshot codec;
//! expire 0 never expires.
#![no_main]

use ckv::dump::{parse, Loaded};
use ckv::shared::codec::{decode, encode};
use ckv_fuzz::check_nodes_json;
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let never = parse(data, NOW, 0);
    if let Ok((loaded, _)) = &never {
        assert!(
            !matches!(loaded, Loaded::Expired { .. }),
            "expire 0 expired"
        );
    }
    match parse(data, NOW, 3600) {
        Ok((Loaded::Fresh(s), _warnings)) => {
            assert!(s.from_dump);
            for svc in s.iter() {
                check_nodes_json(&svc.name.to_str(), svc.nodes_json, svc.node_count, false);
            }
            let again = decode(&encode(&s), None).expect("codec round trip");
            assert_eq!(again, s);
        }
        Ok((
            Loaded::Expired {
                last_update,
                expire,
            },
            _,
        )) => {
            assert!(last_update.saturating_add(expire) < NOW);
        }
        Ok((Loaded::Missing, _)) => panic!("parse returned Missing"),
        Err(e) => {
            assert!(never.is_err(), "expire changed an error into success");
            assert!(!e.is_empty());
        }
    }
});
