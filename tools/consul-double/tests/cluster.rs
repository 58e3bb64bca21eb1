//! Cluster mode (several listeners, one store), listeners stopped one by
//! one, faults scoped to a listener, the follower fault, token revocation
//! and Consul CE's refusal of partitions.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn listeners_share_one_store_and_stop_one_by_one() {
    let d = start(|c| c.listen = vec!["127.0.0.1:0".parse().unwrap(); 3]).await;
    let (a, b, c) = (d.addrs[0], d.addrs[1], d.addrs[2]);
    put(a, "/v1/kv/p/x", b"1").await;
    let ra = get(b, "/v1/kv/p/?recurse").await;
    assert_eq!(ra.json()[0]["Value"], "MQ==");
    assert_eq!(ra.index(), get(c, "/v1/kv/p/?recurse").await.index());

    // A long poll on `a` is dropped when `a` stops; new connections refused.
    let mut blocked = Conn::connect(a).await;
    let index = ra.index();
    blocked
        .send(
            "GET",
            &format!("/v1/kv/p/?recurse&index={index}&wait=5s"),
            &[],
            None,
        )
        .await;
    let mut in_flight = false;
    for _ in 0..200 {
        if stats(b).await["blocking_in_flight"] == 1 {
            in_flight = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(in_flight, "the long poll is blocked");
    control(
        b,
        "POST",
        &format!("/_double/listener?addr={a}&state=down"),
        None,
    )
    .await;
    assert!(blocked.closed_within(Duration::from_secs(2)).await);
    assert!(tokio::net::TcpStream::connect(a).await.is_err());
    put(b, "/v1/kv/p/y", b"2").await;

    control(
        c,
        "POST",
        &format!("/_double/listener?addr={a}&state=up"),
        None,
    )
    .await;
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(a).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(up, "listener {a} came back");
    let r = get(a, "/v1/kv/p/?recurse").await;
    assert_eq!(r.json().as_array().unwrap().len(), 2, "one store");

    let bad = req(b, "POST", "/_double/listener?addr=127.0.0.1:1&state=down").await;
    assert_eq!(bad.status, 404);
    let bad = req(
        b,
        "POST",
        &format!("/_double/listener?addr={a}&state=sideways"),
    )
    .await;
    assert_eq!(bad.status, 400);
    d.shutdown().await;
}

#[tokio::test]
async fn a_follower_fault_on_one_listener_changes_only_its_stale_reads() {
    let d = start(|c| c.listen = vec!["127.0.0.1:0".parse().unwrap(); 2]).await;
    let (a, b) = (d.addrs[0], d.addrs[1]);
    put(a, "/v1/kv/p/x", b"1").await;
    fault(
        a,
        &format!(
            r#"{{"kind":"follower","last_contact_ms":7000,"known_leader":false,"listener":"{b}"}}"#
        ),
    )
    .await;
    let stale_b = get(b, "/v1/kv/p/?recurse&stale").await;
    assert_eq!(stale_b.header("X-Consul-Lastcontact"), Some("7000"));
    assert_eq!(stale_b.header("X-Consul-Knownleader"), Some("false"));
    // Default reads are forwarded to the leader by a follower.
    let default_b = get(b, "/v1/kv/p/?recurse").await;
    assert_eq!(default_b.header("X-Consul-Lastcontact"), Some("0"));
    assert_eq!(default_b.header("X-Consul-Knownleader"), Some("true"));
    let stale_a = get(a, "/v1/kv/p/?recurse&stale").await;
    assert_eq!(stale_a.header("X-Consul-Lastcontact"), Some("0"));
    d.shutdown().await;
}

#[tokio::test]
async fn a_revoked_token_is_unknown() {
    let d = start(|c| {
        c.token = Some("root".into());
        c.read_tokens.push(ckv_consul_double::ReadToken {
            secret: "reader".into(),
            prefix: b"p/".to_vec(),
        });
    })
    .await;
    let a = d.addr();
    req_h(
        a,
        "PUT",
        "/v1/kv/p/x",
        &[("X-Consul-Token", "root")],
        Some(b"1"),
    )
    .await;
    let r = req_h(
        a,
        "GET",
        "/v1/kv/p/?recurse",
        &[("X-Consul-Token", "reader")],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    control(a, "POST", "/_double/acl/revoke?token=reader", None).await;
    let r = req_h(
        a,
        "GET",
        "/v1/kv/p/?recurse",
        &[("X-Consul-Token", "reader")],
        None,
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (403, "ACL not found"));
    d.shutdown().await;
}

#[tokio::test]
async fn partitions_are_refused_as_in_consul_ce() {
    let d = start(|_| {}).await;
    let a = d.addr();
    let r = get(a, "/v1/kv/p/?recurse&partition=p1").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        "Invalid query parameter: \"partition\" - Partitions are a Consul Enterprise feature"
    );
    let r = req_h(
        a,
        "GET",
        "/v1/kv/p/?recurse",
        &[("X-Consul-Partition", "p1")],
        None,
    )
    .await;
    assert_eq!(
        r.text(),
        "Invalid header: \"X-Consul-Partition\" - Partitions are a Consul Enterprise feature"
    );
    // An empty parameter is no partition.
    assert_eq!(get(a, "/v1/kv/p/?recurse&partition=").await.status, 404);
    d.shutdown().await;
}
