//! Conformance: fault injection, counters and connection control.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test]
async fn no_leader() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/k", b"v").await;
    fault(a, r#"{"kind":"no_leader","delay_ms":200}"#).await;
    let t = Instant::now();
    let r = get(a, "/v1/kv/k").await;
    assert!(t.elapsed() >= ms(200));
    assert_eq!((r.status, r.text().as_str()), (500, "No cluster leader"));
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert!(r.header("X-Consul-Index").is_none());
    let r = put(a, "/v1/kv/k", b"w").await;
    assert_eq!(r.status, 500);
    // Stale reads are still served, by a follower that lost its leader
    // (the GET above took >= 200 ms since the fault, so LastContact > 0).
    let r = get(a, "/v1/kv/k?stale").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-Consul-Knownleader"), Some("false"));
    let lc: u64 = r.header("X-Consul-Lastcontact").unwrap().parse().unwrap();
    assert!(lc > 0);
    assert_eq!(r.json()[0]["Value"], "dg==", "the failed PUT did not apply");
    control(a, "DELETE", "/_double/fault", None).await;
    fault(a, r#"{"kind":"no_leader","prefix_rpc":true}"#).await;
    let r = get(a, "/v1/kv/k").await;
    assert_eq!(r.text(), "rpc error making call: No cluster leader");
    d.shutdown().await;
}

#[tokio::test]
async fn rate_limits() {
    let d = start(|_| {}).await;
    let a = d.addr();
    fault(a, r#"{"kind":"rate_limit_429","count":1}"#).await;
    fault(a, r#"{"kind":"unavailable_503","count":1}"#).await;
    let r = get(a, "/v1/kv/k").await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.text(),
        "rate limit exceeded, try again later or against a different server"
    );
    let r = put(a, "/v1/kv/k", b"v").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.text(),
        "rate limit exceeded for operation that can only be performed by the leader, try again later"
    );
    assert_eq!(
        get(a, "/v1/kv/k").await.status,
        404,
        "count exhausted: cleared"
    );
    d.shutdown().await;
}

#[tokio::test]
async fn truncated_body() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/t", &[b'x'; 100]).await;
    fault(a, r#"{"kind":"truncate_body","count":1}"#).await;
    let mut c = Conn::connect(a).await;
    match c.request("GET", "/v1/kv/t?raw", &[], None).await {
        Err(ReadError::Truncated { resp, expected }) => {
            assert_eq!(resp.status, 200);
            assert_eq!(expected, 100);
            assert_eq!(resp.body.len(), 50);
        }
        other => panic!("expected a truncated body, got {other:?}"),
    }
    // The fault was one-shot.
    assert_eq!(get(a, "/v1/kv/t?raw").await.body.len(), 100);
    d.shutdown().await;
}

#[tokio::test]
async fn dropped_connection_for_new_and_blocked_requests() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/w/a", b"1").await;
    put(a, "/v1/kv/o/a", b"1").await;
    let iw = get(a, "/v1/kv/w/?recurse").await.index();
    let io = get(a, "/v1/kv/o/?recurse").await.index();
    let mut blocked = Conn::connect(a).await;
    blocked
        .send(
            "GET",
            &format!("/v1/kv/w/?recurse&index={iw}&wait=2s"),
            &[],
            None,
        )
        .await;
    let mut other = Conn::connect(a).await;
    other
        .send(
            "GET",
            &format!("/v1/kv/o/?recurse&index={io}&wait=500ms"),
            &[],
            None,
        )
        .await;
    wait_blocked(a, 2).await;
    // count 0: only the reads blocked right now under w/ are dropped.
    fault(
        a,
        r#"{"kind":"drop_connection","count":0,"path_prefix":"/v1/kv/w/"}"#,
    )
    .await;
    let t = Instant::now();
    assert!(matches!(
        blocked.read_response(false).await,
        Err(ReadError::Closed)
    ));
    assert!(t.elapsed() < ms(500));
    let r = other.read_response(false).await.expect("o/ untouched");
    assert_eq!(r.index(), io);
    assert_eq!(get(a, "/v1/kv/w/a").await.status, 200, "nothing persists");
    // A persistent fault drops new requests without a response.
    let id = fault(a, r#"{"kind":"drop_connection","path_prefix":"w/"}"#).await;
    let mut c = Conn::connect(a).await;
    assert!(matches!(
        c.request("GET", "/v1/kv/w/a", &[], None).await,
        Err(ReadError::Closed)
    ));
    assert_eq!(get(a, "/v1/kv/o/a").await.status, 200);
    control(a, "DELETE", &format!("/_double/fault?id={id}"), None).await;
    assert_eq!(get(a, "/v1/kv/w/a").await.status, 200);
    d.shutdown().await;
}

#[tokio::test]
async fn slow_hang_and_stall() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/k", b"v").await;
    fault(a, r#"{"kind":"slow","delay_ms":300,"count":1}"#).await;
    let t = Instant::now();
    assert_eq!(get(a, "/v1/kv/k").await.status, 200);
    assert!(t.elapsed() >= ms(300));

    fault(a, r#"{"kind":"hang","count":1}"#).await;
    let mut c = Conn::connect(a).await;
    c.send("GET", "/v1/kv/k", &[], None).await;
    let r = tokio::time::timeout(ms(300), c.read_response(false)).await;
    assert!(r.is_err(), "no answer");

    fault(a, r#"{"kind":"headers_then_stall","count":1}"#).await;
    let mut s = Conn::connect(a).await;
    s.send("GET", "/v1/kv/k?raw", &[], None).await;
    let head = tokio::time::timeout(ms(1000), s.read_head())
        .await
        .expect("headers arrive")
        .expect("head");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some("1"));
    assert!(
        !s.closed_within(ms(300)).await,
        "body never comes, connection stays open"
    );

    // close_connections ends both the hung and the stalled connection.
    let r = control(a, "POST", "/_double/close_connections", None).await;
    assert!(r["closed"].as_u64().unwrap() >= 2);
    assert!(c.closed_within(ms(1000)).await);
    assert!(s.closed_within(ms(1000)).await);
    d.shutdown().await;
}

#[tokio::test]
async fn stale_mode_headers() {
    let d = start(|_| {}).await;
    let a = d.addr();
    fault(a, r#"{"kind":"stale","last_contact_ms":1234}"#).await;
    let r = get(a, "/v1/kv/k").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("X-Consul-Knownleader"), Some("false"));
    assert_eq!(r.header("X-Consul-Lastcontact"), Some("1234"));
    d.shutdown().await;
}

#[tokio::test]
async fn malformed_bodies() {
    let d = start(|_| {}).await;
    let a = d.addr();
    for (kind, body) in [
        ("not_json", "<html>oops</html>"),
        ("not_array", "{\"oops\":1}"),
        (
            "wrong_types",
            "[{\"LockIndex\":\"0\",\"Key\":12,\"Flags\":-1,\"Value\":5,\"CreateIndex\":\"x\",\"ModifyIndex\":null}]",
        ),
    ] {
        fault(a, &format!(r#"{{"kind":"{kind}","count":1}}"#)).await;
        let r = get(a, "/v1/kv/app/?recurse").await;
        assert_eq!(r.status, 200, "{kind}");
        assert_eq!(r.text(), body, "{kind}");
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert!(r.header("X-Consul-Index").is_some());
    }
    d.shutdown().await;
}

#[tokio::test]
async fn fault_scoping_listing_and_clearing() {
    let d = start(|_| {}).await;
    let a = d.addr();
    fault(
        a,
        r#"{"kind":"rate_limit_429","methods":["GET"],"path_prefix":"app/"}"#,
    )
    .await;
    assert_eq!(get(a, "/v1/kv/app/x").await.status, 429);
    assert_eq!(get(a, "/v1/kv/other").await.status, 404);
    assert_eq!(put(a, "/v1/kv/app/x", b"v").await.status, 200);
    // Control endpoints are never faulted.
    let list = control(a, "GET", "/_double/fault", None).await;
    assert_eq!(list[0]["kind"], "rate_limit_429");
    assert_eq!(list[0]["hits"], 1);
    let bad = req_h(
        a,
        "PUT",
        "/_double/fault",
        &[],
        Some(br#"{"kind":"bogus"}"#),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        control(a, "DELETE", "/_double/fault", None).await["cleared"],
        1
    );
    assert_eq!(get(a, "/v1/kv/app/x").await.status, 200);
    d.shutdown().await;
}

#[tokio::test]
async fn stats_counters() {
    let d = start(|_| {}).await;
    let a = d.addr();
    let mut c = Conn::connect(a).await;
    c.request("PUT", "/v1/kv/s", &[], Some(b"v")).await.unwrap();
    c.request("GET", "/v1/kv/s", &[], None).await.unwrap();
    c.request("GET", "/v1/kv/s", &[], None).await.unwrap();
    c.request("DELETE", "/v1/kv/s", &[], None).await.unwrap();
    c.request("GET", "/v1/status/leader", &[], None)
        .await
        .unwrap();
    let s = stats(a).await;
    assert_eq!(s["kv_requests_total"], 4);
    assert_eq!(s["kv_gets_total"], 2);
    assert_eq!(s["kv_puts_total"], 1);
    assert_eq!(s["kv_deletes_total"], 1);
    assert_eq!(s["requests_total"], 5, "control calls are not counted");
    assert_eq!(s["per_path"]["/v1/kv/s"], 4);
    assert_eq!(
        s["open_connections"], 2,
        "this one and the stats call's own"
    );
    assert_eq!(s["blocking_in_flight"], 0);
    assert!(s["index"].as_u64().unwrap() >= 1000);
    control(a, "POST", "/_double/stats/reset", None).await;
    let s = stats(a).await;
    assert_eq!(s["kv_requests_total"], 0);
    assert_eq!(s["requests_total"], 0);
    assert_eq!(s["open_connections"], 2);
    drop(c);
    wait_stat(a, "open_connections", 1).await;
    d.shutdown().await;
}

#[tokio::test]
async fn per_client_connection_limit_answers_raw_429() {
    let d = start(|c| c.max_conns_per_client = 2).await;
    let a = d.addr();
    let mut c1 = Conn::connect(a).await;
    let _c2 = Conn::connect(a).await;
    c1.request("GET", "/v1/kv/x", &[], None).await.unwrap();
    let mut c3 = Conn::connect(a).await;
    let r = c3.read_response(false).await.unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.header("Connection"), Some("close"));
    assert_eq!(
        r.text(),
        "Your IP is issuing too many concurrent connections, please rate limit your calls\n"
    );
    drop(c1);
    // _c2 and the stats call itself remain.
    wait_stat(a, "open_connections", 2).await;
    // Lift the limit at run time (this call uses the freed slot).
    control(a, "POST", "/_double/conn_limit?max=0", None).await;
    d.shutdown().await;
}
