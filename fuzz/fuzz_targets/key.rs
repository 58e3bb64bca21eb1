//! str → kv::parse_key. The input is `prefix\nkey` when it holds a newline,
//! otherwise a key under the prefix `upstreams`.
//!
//! Invariants: no panic; a node key splits into `{prefix}/{svc}/` + host +
//! `:` + port exactly; the host is a bracketed IPv6 literal or made of ASCII
//! letters, digits, `.`, `-`, `_`; the port is 1-65535; a folder (`Ok(None)`)
//! ends with `/`; parse_entry renders a node that is valid JSON.
#![no_main]

use std::borrow::Cow;

use ckv::kv::{parse_entry, parse_key, Field, Outcome, Rules};
use ckv_fuzz::check_nodes_json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let (prefix, key) = match input.split_once('\n') {
        Some((p, k)) => (p, k),
        None => ("upstreams", input),
    };
    match parse_key(key, prefix) {
        Ok(Some(p)) => {
            let sp = p.service_path;
            assert!(sp.starts_with(prefix), "{sp:?}");
            assert_eq!(sp.as_bytes()[prefix.len()], b'/');
            assert!(sp.ends_with('/'), "{sp:?}");
            assert!(sp.len() >= prefix.len() + 3, "empty service name in {sp:?}");
            assert!(key.starts_with(sp));
            let node = &key[sp.len()..];
            assert!(!node.contains('/'), "node part {node:?} has a slash");
            assert!(node.starts_with(p.host));
            let port_text = node[p.host.len()..]
                .strip_prefix(':')
                .unwrap_or_else(|| panic!("no ':' after host in {node:?}"));
            assert_eq!(port_text.parse::<u16>().ok(), Some(p.port));
            assert!(p.port > 0);
            assert!(!p.host.is_empty());
            if let Some(inner) = p.host.strip_prefix('[') {
                let inner = inner.strip_suffix(']').expect("unterminated [");
                assert!(inner.parse::<std::net::Ipv6Addr>().is_ok(), "{inner:?}");
            } else {
                assert!(
                    p.host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')),
                    "host {:?}",
                    p.host
                );
            }
            let rules = Rules {
                prefix: prefix.to_owned(),
                skip_keys: vec![],
                default_weight: 1,
            };
            // base64 of {"weight":3,"metadata":{"a":"b"}}
            let value = Field::Ok(Cow::Borrowed(
                "eyJ3ZWlnaHQiOjMsIm1ldGFkYXRhIjp7ImEiOiJiIn19",
            ));
            match parse_entry(key, &value, &rules) {
                Outcome::Node { service_path, json } => {
                    assert_eq!(&*service_path, sp);
                    check_nodes_json(key, &format!("[{json}]"), 1, true);
                }
                other => panic!("valid key gave {other:?}"),
            }
        }
        Ok(None) => {
            assert!(key.ends_with('/'), "folder key {key:?} lacks a trailing /");
        }
        Err(e) => {
            assert!(!e.is_empty());
        }
    }
});
