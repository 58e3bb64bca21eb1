//! The fault matrix: for each Consul fault, the last good nodes keep being
//! served, the error is logged once (not once per retry), the watch recovers
//! by itself within the backoff cap once the fault ends, and afterwards the
//! nodes equal Consul's state.

mod common;

use std::time::{Duration, Instant};

use ckv::log::Level;
use common::*;

const NODE_A: &str = r#"[{"host":"10.0.0.1","port":80,"weight":1}]"#;
const NODE_AB: &str =
    r#"[{"host":"10.0.0.1","port":80,"weight":1},{"host":"10.0.0.2","port":80,"weight":1}]"#;

/// Runs one fault through its whole life. `fault` is the double's fault
/// spec; `log_needle` a text the error log line must contain; `kind` the
/// `errors_by_kind` counter it must count under.
fn survives(fault: &str, log_needle: &str, kind: &str, extra: &str) {
    let d = Double::start();
    d.put("p/web/10.0.0.1:80", "{}");
    let e = engine(&[d.url()], "p", extra);
    let url = d.url();
    assert!(wait_until(WAIT, || nodes(&e, &url, "p/web/").as_deref()
        == Some(NODE_A)));
    let mut logs = Vec::new();
    drain(&e, &mut logs);
    logs.clear();

    // Faults hit reads only, so that the test can still write.
    d.fault(&fault.replacen('{', r#"{"methods":["GET"],"#, 1));
    // End the poll in flight so the next requests meet the fault, then
    // change Consul while it lasts.
    d.control("/_double/close_connections");
    d.put("p/web/10.0.0.2:80", "{}");
    let errors_before = stats(&e)["servers"][0]["errors_total"].as_u64().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            stats(&e)["servers"][0]["errors_total"].as_u64().unwrap() >= errors_before + 3
        }),
        "the watch kept retrying under {fault}"
    );
    // Served throughout: the last good nodes.
    assert_eq!(
        nodes(&e, &url, "p/web/").as_deref(),
        Some(NODE_A),
        "{fault}"
    );
    drain(&e, &mut logs);
    assert_eq!(
        count(&logs, Level::Err, log_needle),
        1,
        "one error line for {fault}, got {logs:#?}"
    );
    assert_eq!(stats(&e)["servers"][0]["state"], "backoff");
    let by_kind = &stats(&e)["servers"][0]["errors_by_kind"];
    // The first error may be the poll cut by close_connections (transport).
    assert!(by_kind[kind].as_u64().unwrap() >= 2, "{fault}: {by_kind}");

    let cleared = Instant::now();
    d.clear_faults();
    assert!(
        wait_until(WAIT, || nodes(&e, &url, "p/web/").as_deref()
            == Some(NODE_AB)),
        "recovered after {fault}"
    );
    let recovery = cleared.elapsed();
    // Backoff cap (200 ms) + one request timeout (connect 200 + read 300) +
    // scheduling slack.
    assert!(
        recovery < Duration::from_millis(1500),
        "{fault}: recovered in {recovery:?}"
    );
    // The notice follows the apply that made the nodes visible.
    assert!(wait_until(WAIT, || {
        drain(&e, &mut logs);
        count(&logs, Level::Notice, "recovered after") >= 1
    }));
    assert_eq!(
        count(&logs, Level::Notice, "recovered after"),
        1,
        "{logs:#?}"
    );
    let s = stats(&e);
    assert_eq!(s["servers"][0]["consecutive_errors"], 0);
    assert_eq!(s["servers"][0]["state"], "watching");
    eprintln!("{fault}: recovered {recovery:?} after the fault ended");
}

#[test]
fn no_cluster_leader() {
    survives(
        r#"{"kind":"no_leader"}"#,
        "HTTP 500 (Consul has no leader)",
        "no_leader",
        "",
    );
}

#[test]
fn no_cluster_leader_with_rpc_prefix_after_a_delay() {
    survives(
        r#"{"kind":"no_leader","delay_ms":50,"prefix_rpc":true}"#,
        "rpc error making call: No cluster leader",
        "no_leader",
        "",
    );
}

#[test]
fn rate_limited_429() {
    survives(
        r#"{"kind":"rate_limit_429"}"#,
        "HTTP 429 (Consul is rate limiting)",
        "http_4xx",
        "",
    );
}

#[test]
fn unavailable_503() {
    survives(r#"{"kind":"unavailable_503"}"#, "HTTP 503", "http_5xx", "");
}

#[test]
fn connection_dropped_without_answer() {
    survives(
        r#"{"kind":"drop_connection"}"#,
        "connection closed before message completed",
        "transport",
        "",
    );
}

#[test]
fn truncated_body() {
    survives(
        r#"{"kind":"truncate_body"}"#,
        "end of file before message length reached",
        "transport",
        "",
    );
}

#[test]
fn body_not_json() {
    survives(
        r#"{"kind":"not_json"}"#,
        "response is not valid JSON",
        "bad_body",
        "",
    );
}

#[test]
fn body_json_but_not_an_array() {
    survives(
        r#"{"kind":"not_array"}"#,
        "response is not a JSON array",
        "bad_body",
        "",
    );
}

#[test]
fn entries_with_wrong_field_types() {
    survives(
        r#"{"kind":"wrong_types"}"#,
        "entries of the response are malformed",
        "bad_body",
        "",
    );
}

#[test]
fn server_accepts_and_never_answers() {
    survives(r#"{"kind":"hang"}"#, "timed out", "timeout", "");
}

#[test]
fn headers_then_stall() {
    survives(
        r#"{"kind":"headers_then_stall"}"#,
        "operation timed out",
        "timeout",
        "",
    );
}

#[test]
fn slow_responses_still_apply() {
    let d = Double::start();
    d.fault(r#"{"kind":"slow","delay_ms":150}"#);
    d.put("p/web/10.0.0.1:80", "{}");
    let e = engine(&[d.url()], "p", "");
    assert!(wait_until(WAIT, || nodes(&e, &d.url(), "p/web/")
        .as_deref()
        == Some(NODE_A)));
    assert_eq!(stats(&e)["servers"][0]["errors_total"], 0);
}

#[test]
fn response_larger_than_the_limit() {
    let d = Double::start();
    d.put("p/web/10.0.0.1:80", "{}");
    let e = engine(&[d.url()], "p", r#""max_response_bytes":2048,"#);
    let url = d.url();
    assert!(wait_until(WAIT, || nodes(&e, &url, "p/web/").as_deref()
        == Some(NODE_A)));
    let big = format!(r#"{{"metadata":{{"pad":"{}"}}}}"#, "x".repeat(4000));
    d.put("p/web/10.0.0.2:80", &big);
    assert!(wait_until(WAIT, || {
        stats(&e)["servers"][0]["errors_total"].as_u64().unwrap() >= 2
    }));
    assert_eq!(nodes(&e, &url, "p/web/").as_deref(), Some(NODE_A));
    let mut logs = Vec::new();
    drain(&e, &mut logs);
    assert_eq!(
        count(&logs, Level::Err, "exceeds max_response_bytes (2048)"),
        1,
        "{logs:#?}"
    );
    d.put("p/web/10.0.0.2:80", "{}");
    assert!(wait_until(WAIT, || nodes(&e, &url, "p/web/").as_deref()
        == Some(NODE_AB)));
}

#[test]
fn consul_down_at_start_then_up() {
    let addr = free_addr();
    let url = format!("http://{addr}");
    let e = engine(std::slice::from_ref(&url), "p", "");
    assert!(wait_until(WAIT, || {
        stats(&e)["servers"][0]["errors_total"].as_u64().unwrap() >= 3
    }));
    assert!(e.snapshot().is_empty());
    assert_eq!(stats(&e)["ready"], false);
    let d = Double::start_on(addr, |_| {});
    d.put("p/web/10.0.0.1:80", "{}");
    assert!(wait_until(WAIT, || nodes(&e, &url, "p/web/").as_deref()
        == Some(NODE_A)));
    assert_eq!(stats(&e)["ready"], true);
    let mut logs = Vec::new();
    drain(&e, &mut logs);
    assert_eq!(
        count(&logs, Level::Err, "error sending request"),
        1,
        "{logs:#?}"
    );
}

#[test]
fn consul_killed_during_a_long_poll_and_restarted() {
    let d = Double::start();
    let addr = d.addr;
    let url = d.url();
    d.put("p/web/10.0.0.1:80", "{}");
    let e = engine(std::slice::from_ref(&url), "p", "");
    assert!(wait_until(WAIT, || nodes(&e, &url, "p/web/").as_deref()
        == Some(NODE_A)));
    assert!(wait_until(WAIT, || d.stats()["blocking_in_flight"] == 1));
    d.stop();
    assert!(wait_until(WAIT, || {
        stats(&e)["servers"][0]["errors_total"].as_u64().unwrap() >= 2
    }));
    assert_eq!(nodes(&e, &url, "p/web/").as_deref(), Some(NODE_A));
    // Restarted with an empty store: the services go (on_empty_prefix=clear).
    let d = Double::start_on(addr, |_| {});
    assert!(wait_until(WAIT, || nodes(&e, &url, "p/web/").is_none()));
    d.put("p/web/10.0.0.2:80", "{}");
    assert!(wait_until(WAIT, || {
        nodes(&e, &url, "p/web/").as_deref()
            == Some(r#"[{"host":"10.0.0.2","port":80,"weight":1}]"#)
    }));
}

#[test]
fn restarted_empty_store_with_keep_policy_keeps_nodes() {
    let d = Double::start();
    let url = d.url();
    d.put("p/web/10.0.0.1:80", "{}");
    let e = engine(
        std::slice::from_ref(&url),
        "p",
        r#""on_empty_prefix":"keep","#,
    );
    assert!(wait_until(WAIT, || nodes(&e, &url, "p/web/").as_deref()
        == Some(NODE_A)));
    d.control("/_double/reset");
    let mut logs = Vec::new();
    assert!(wait_until(WAIT, || {
        drain(&e, &mut logs);
        count(&logs, Level::Warn, "keeping the last 1 services") == 1
    }));
    assert_eq!(nodes(&e, &url, "p/web/").as_deref(), Some(NODE_A));
    // Consul's state comes back: it applies.
    d.put("p/web/10.0.0.2:80", "{}");
    assert!(wait_until(WAIT, || {
        nodes(&e, &url, "p/web/").as_deref()
            == Some(r#"[{"host":"10.0.0.2","port":80,"weight":1}]"#)
    }));
}

#[test]
fn snapshot_restore_lowers_the_index_and_the_nodes_follow() {
    let d = Double::start();
    let url = d.url();
    d.put("p/web/10.0.0.1:80", "{}");
    d.control("/_double/snapshot?name=old");
    let e = engine(std::slice::from_ref(&url), "p", "");
    assert!(wait_until(WAIT, || nodes(&e, &url, "p/web/").as_deref()
        == Some(NODE_A)));
    d.put("p/web/10.0.0.2:80", "{}");
    assert!(wait_until(WAIT, || nodes(&e, &url, "p/web/").as_deref()
        == Some(NODE_AB)));
    let before = stats(&e)["servers"][0]["last_index"].as_u64().unwrap();
    d.control("/_double/restore?name=old");
    assert!(wait_until(WAIT, || nodes(&e, &url, "p/web/").as_deref()
        == Some(NODE_A)));
    assert!(wait_until(WAIT, || {
        let s = stats(&e);
        s["servers"][0]["index_resets"].as_u64().unwrap() >= 1
            && s["servers"][0]["last_index"].as_u64().unwrap() < before
    }));
    assert_eq!(stats(&e)["servers"][0]["errors_total"], 0);
    // Writes after the restore still arrive.
    d.put("p/web/10.0.0.2:80", "{}");
    assert!(wait_until(WAIT, || nodes(&e, &url, "p/web/").as_deref()
        == Some(NODE_AB)));
}

#[test]
fn tombstone_reap_lowering_the_index() {
    let d = Double::start();
    let url = d.url();
    d.put("p/web/10.0.0.1:80", "{}");
    d.put("p/web/10.0.0.2:80", "{}");
    let e = engine(std::slice::from_ref(&url), "p", "");
    assert!(wait_until(WAIT, || nodes(&e, &url, "p/web/").as_deref()
        == Some(NODE_AB)));
    d.delete("p/web/10.0.0.2:80", false);
    assert!(wait_until(WAIT, || nodes(&e, &url, "p/web/").as_deref()
        == Some(NODE_A)));
    d.control("/_double/reap");
    // The reap wakes nobody; the next poll (at most `wait` later) sees a
    // lower index, resets and re-reads. Nodes stay right throughout.
    assert!(wait_until(Duration::from_secs(4), || {
        stats(&e)["servers"][0]["index_resets"].as_u64().unwrap() >= 1
    }));
    assert_eq!(nodes(&e, &url, "p/web/").as_deref(), Some(NODE_A));
    d.put("p/web/10.0.0.2:80", "{}");
    assert!(wait_until(WAIT, || nodes(&e, &url, "p/web/").as_deref()
        == Some(NODE_AB)));
}

#[test]
fn spurious_wake_up_changes_nothing() {
    let d = Double::start();
    let url = d.url();
    d.put("p/web/10.0.0.1:80", "{}");
    let e = engine(std::slice::from_ref(&url), "p", "");
    assert!(wait_until(WAIT, || nodes(&e, &url, "p/web/").as_deref()
        == Some(NODE_A)));
    let seq = e.snapshot().seq;
    let index = stats(&e)["servers"][0]["last_index"].as_u64().unwrap();
    d.control("/_double/wake?prefix=p/");
    assert!(wait_until(WAIT, || {
        stats(&e)["servers"][0]["last_index"].as_u64().unwrap() > index
    }));
    assert_eq!(e.snapshot().seq, seq, "same data: nothing published");
}

#[test]
fn stale_reads_apply() {
    let d = Double::start();
    d.fault(r#"{"kind":"stale","last_contact_ms":1500}"#);
    d.put("p/web/10.0.0.1:80", "{}");
    let e = engine(&[d.url()], "p", "");
    assert!(wait_until(WAIT, || nodes(&e, &d.url(), "p/web/")
        .as_deref()
        == Some(NODE_A)));
}

#[test]
fn whole_prefix_deleted_clears_by_default() {
    let d = Double::start();
    let url = d.url();
    d.put("p/web/10.0.0.1:80", "{}");
    d.put("p/api/10.0.0.1:80", "{}");
    let e = engine(std::slice::from_ref(&url), "p", "");
    assert!(wait_until(WAIT, || e.snapshot().len() == 2));
    d.delete("p/", true);
    assert!(wait_until(WAIT, || e.snapshot().is_empty()));
    let mut logs = Vec::new();
    drain(&e, &mut logs);
    assert_eq!(count(&logs, Level::Warn, "its services were removed"), 1);
    assert_eq!(
        stats(&e)["servers"][0]["errors_total"],
        0,
        "404 is not an error"
    );
    // Keys added after the prefix was emptied appear at once (APISIX's
    // module backs off on 404 and takes minutes).
    d.put("p/web/10.0.0.1:80", "{}");
    assert!(wait_until(Duration::from_secs(2), || {
        nodes(&e, &url, "p/web/").as_deref() == Some(NODE_A)
    }));
}

#[test]
fn acl_token_refused_is_logged_without_the_token() {
    let d = Double::start_with(|c| c.token = Some("the-real-token".into()));
    let url = d.url();
    let e = engine(
        std::slice::from_ref(&url),
        "p",
        r#""token":"wrong-token-123","#,
    );
    assert!(wait_until(WAIT, || {
        stats(&e)["servers"][0]["errors_total"].as_u64().unwrap() >= 2
    }));
    let mut logs = Vec::new();
    drain(&e, &mut logs);
    assert_eq!(
        count(
            &logs,
            Level::Err,
            "HTTP 403 (the ACL token is unknown to Consul)"
        ),
        1,
        "{logs:#?}"
    );
    assert!(logs.iter().all(|r| !r.message.contains("wrong-token")));
    assert!(!e.stats_json().contains("wrong-token"));

    let (status, _) = http(
        d.addr,
        "PUT",
        "/v1/kv/p/web/10.0.0.1:80",
        "{}",
        &[("X-Consul-Token", "the-real-token")],
    );
    assert_eq!(status, 200);
    let ok = engine(
        std::slice::from_ref(&url),
        "p",
        r#""token":"the-real-token","#,
    );
    assert!(wait_until(WAIT, || nodes(&ok, &url, "p/web/").as_deref()
        == Some(NODE_A)));
}

#[test]
fn one_failing_server_does_not_disturb_the_other() {
    let a = Double::start();
    let b = Double::start();
    a.put("p/web/10.0.0.1:80", "{}");
    b.put("p/web/10.0.0.1:80", "{}");
    let e = engine(&[a.url(), b.url()], "p", "");
    assert!(wait_until(WAIT, || e.snapshot().len() == 2));
    a.fault(r#"{"kind":"no_leader"}"#);
    a.control("/_double/close_connections");
    b.put("p/web/10.0.0.2:80", "{}");
    assert!(wait_until(WAIT, || nodes(&e, &b.url(), "p/web/")
        .as_deref()
        == Some(NODE_AB)));
    // Server a's watcher meets the fault when it reconnects, which may come
    // after b's change was served: wait for the error rather than race it.
    assert!(wait_until(WAIT, || stats(&e)["servers"][0]["errors_total"]
        .as_u64()
        .unwrap()
        >= 1));
    assert_eq!(nodes(&e, &a.url(), "p/web/").as_deref(), Some(NODE_A));
    assert_eq!(stats(&e)["servers"][1]["errors_total"], 0);
    a.clear_faults();
}

#[test]
fn servers_keep_their_own_index() {
    // Two doubles start at very different indexes: a shared index (APISIX's
    // bug) would make one of them block on an index it never reaches.
    // With wait = 10 s, an index from the wrong server would hold a change
    // back for ~10 s; the deadline below is far shorter.
    let a = Double::start_with(|c| {
        c.start_index = 100;
        c.max_wait = Duration::from_secs(10);
    });
    let b = Double::start_with(|c| {
        c.start_index = 5_000_000;
        c.max_wait = Duration::from_secs(10);
    });
    let json = format!(
        r#"{{"servers":["{}","{}"],"prefix":"p","timeout":{{"wait":10}},"share":{{"enabled":false}}}}"#,
        a.url(),
        b.url()
    );
    let e = ckv::engine::Engine::start(ckv::config::parse(json.as_bytes()).unwrap()).unwrap();
    assert!(wait_until(WAIT, || stats(&e)["ready"] == true));
    // Both watches are blocked on their own index now.
    assert!(wait_until(WAIT, || a.stats()["blocking_in_flight"] == 1
        && b.stats()["blocking_in_flight"] == 1));
    a.put("p/web/10.0.0.1:80", "{}");
    assert!(wait_until(Duration::from_secs(3), || {
        nodes(&e, &a.url(), "p/web/").as_deref() == Some(NODE_A)
    }));
    b.put("p/web/10.0.0.1:80", "{}");
    assert!(wait_until(Duration::from_secs(3), || {
        nodes(&e, &b.url(), "p/web/").as_deref() == Some(NODE_A)
    }));
}

#[test]
fn keys_hidden_by_acls_are_reported() {
    let d = Double::start_with(|c| {
        c.token = Some("root".into());
        c.read_tokens = vec![ckv_consul_double::ReadToken {
            secret: "web-only".into(),
            prefix: b"p/web/".to_vec(),
        }];
    });
    let url = d.url();
    for key in ["p/web/10.0.0.1:80", "p/api/10.0.0.1:80"] {
        let (status, _) = http(
            d.addr,
            "PUT",
            &format!("/v1/kv/{key}"),
            "{}",
            &[("X-Consul-Token", "root")],
        );
        assert_eq!(status, 200);
    }
    let e = engine(std::slice::from_ref(&url), "p", r#""token":"web-only","#);
    assert!(wait_until(WAIT, || nodes(&e, &url, "p/web/").as_deref()
        == Some(NODE_A)));
    assert!(nodes(&e, &url, "p/api/").is_none());
    let mut logs = Vec::new();
    assert!(wait_until(WAIT, || {
        drain(&e, &mut logs);
        count(&logs, Level::Warn, "Consul hid some keys") == 1
    }));
    assert_eq!(stats(&e)["servers"][0]["filtered_by_acls"], true);
}
