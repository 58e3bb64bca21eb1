//! The engine against a real Consul agent, with no fault injection: live
//! changes, host-name and IPv6 keys, deletions, ACL tokens. Run by
//! `scripts/real-consul-stage.sh` as
//!   cargo test --test real_consul -- --ignored
//! with CKV_REAL_CONSUL_URL (a plain agent), CKV_REAL_CONSUL_ACL_URL (ACLs
//! on, default deny, key-list policy) and CKV_REAL_CONSUL_TOKEN (its
//! management token). Ignored in the plain `cargo test`, which has no agent.

mod common;

use std::net::SocketAddr;

use ckv::log::Level;
use common::*;

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run scripts/real-consul-stage.sh"))
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

fn put(a: SocketAddr, key: &str, value: &str, token: &str) {
    let (status, body) = http(
        a,
        "PUT",
        &format!("/v1/kv/{key}"),
        value,
        &[("X-Consul-Token", token)],
    );
    assert_eq!((status, body.trim()), (200, "true"), "PUT {key}");
}

fn delete(a: SocketAddr, key: &str, token: &str) {
    let (status, _) = http(
        a,
        "DELETE",
        &format!("/v1/kv/{key}"),
        "",
        &[("X-Consul-Token", token)],
    );
    assert_eq!(status, 200, "DELETE {key}");
}

/// A prefix no other test run has used on this agent.
fn fresh_prefix(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("rs-{tag}-{}-{nanos}", std::process::id())
}

#[test]
#[ignore = "needs a real Consul agent (scripts/real-consul-stage.sh)"]
fn live_changes_host_names_ipv6_and_deletes() {
    let url = env("CKV_REAL_CONSUL_URL");
    let a = addr_of(&url);
    let p = fresh_prefix("live");
    put(a, &format!("{p}/web/10.0.0.1:80"), "{}", "");
    let e = engine(std::slice::from_ref(&url), &p, "");
    let web = format!("{p}/web/");
    assert!(wait_until(WAIT, || nodes(&e, &url, &web).as_deref()
        == Some(r#"[{"host":"10.0.0.1","port":80,"weight":1}]"#)));

    put(a, &format!("{p}/web/10.0.0.1:80"), r#"{"weight":3}"#, "");
    assert!(wait_until(WAIT, || nodes(&e, &url, &web).as_deref()
        == Some(r#"[{"host":"10.0.0.1","port":80,"weight":3}]"#)));

    put(a, &format!("{p}/api/[2001:db8::1]:9000"), "{}", "");
    put(a, &format!("{p}/api/backend-1.example_x:8080"), "{}", "");
    let api = format!("{p}/api/");
    assert!(wait_until(WAIT, || {
        nodes(&e, &url, &api).is_some_and(|n| {
            n.contains(r#""host":"[2001:db8::1]","port":9000"#)
                && n.contains(r#""host":"backend-1.example_x","port":8080"#)
        })
    }));

    delete(a, &format!("{p}/web/10.0.0.1:80"), "");
    assert!(wait_until(WAIT, || nodes(&e, &url, &web).is_none()));
    assert!(nodes(&e, &url, &api).is_some(), "the other service stays");
    let s = stats(&e);
    assert_eq!(s["servers"][0]["errors_total"], 0, "{s}");
}

#[test]
#[ignore = "needs a real Consul agent (scripts/real-consul-stage.sh)"]
fn acl_list_token_sees_nodes_and_no_token_is_refused() {
    let url = env("CKV_REAL_CONSUL_ACL_URL");
    let mgmt = env("CKV_REAL_CONSUL_TOKEN");
    let a = addr_of(&url);
    let p = fresh_prefix("acl");
    put(a, &format!("{p}/web/10.0.0.1:80"), "{}", &mgmt);

    // A token with a `list` rule on the prefix (read alone cannot list
    // under the key-list policy).
    let policy =
        format!(r#"{{"Name":"{p}","Rules":"key_prefix \"{p}/\" {{ policy = \"list\" }}"}}"#);
    let (status, body) = http(
        a,
        "PUT",
        "/v1/acl/policy",
        &policy,
        &[("X-Consul-Token", &mgmt)],
    );
    assert_eq!(status, 200, "{body}");
    let token = format!(r#"{{"Policies":[{{"Name":"{p}"}}]}}"#);
    let (status, body) = http(
        a,
        "PUT",
        "/v1/acl/token",
        &token,
        &[("X-Consul-Token", &mgmt)],
    );
    assert_eq!(status, 200, "{body}");
    let secret = serde_json::from_str::<serde_json::Value>(&body).unwrap()["SecretID"]
        .as_str()
        .unwrap()
        .to_string();

    let e = engine(
        std::slice::from_ref(&url),
        &p,
        &format!(r#""token":"{secret}","#),
    );
    let web = format!("{p}/web/");
    assert!(wait_until(WAIT, || nodes(&e, &url, &web).as_deref()
        == Some(r#"[{"host":"10.0.0.1","port":80,"weight":1}]"#)));
    assert!(
        !e.stats_json().contains(&secret),
        "the token never shows in stats"
    );

    let anonymous = engine(std::slice::from_ref(&url), &p, "");
    let mut logs = Vec::new();
    assert!(wait_until(WAIT, || {
        drain(&anonymous, &mut logs);
        count(&logs, Level::Err, "HTTP 403") >= 1
    }));
    assert!(nodes(&anonymous, &url, &web).is_none());
}

#[test]
#[ignore = "needs a real Consul agent (scripts/real-consul-stage.sh)"]
fn keepalive_false_polls_and_skip_keys_hide_a_service() {
    let url = env("CKV_REAL_CONSUL_URL");
    let a = addr_of(&url);
    let p = fresh_prefix("poll");
    put(a, &format!("{p}/web/10.0.0.1:80"), "{}", "");
    put(a, &format!("{p}/hidden/10.0.0.9:80"), "{}", "");
    let e = engine(
        std::slice::from_ref(&url),
        &p,
        &format!(r#""keepalive":false,"fetch_interval":1,"skip_keys":["{p}/hidden/"],"#),
    );
    let web = format!("{p}/web/");
    assert!(wait_until(WAIT, || nodes(&e, &url, &web).is_some()));
    assert!(nodes(&e, &url, &format!("{p}/hidden/")).is_none());
    // The next poll (at most fetch_interval later) sees a change.
    put(a, &format!("{p}/web/10.0.0.2:80"), "{}", "");
    assert!(wait_until(WAIT, || nodes(&e, &url, &web)
        .is_some_and(|n| n.contains("10.0.0.2"))));
}
