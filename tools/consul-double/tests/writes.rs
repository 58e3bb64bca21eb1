//! Conformance: PUT/DELETE semantics, the global index, tombstones.

mod common;

use common::*;

async fn modify_index(a: std::net::SocketAddr, key: &str) -> u64 {
    get(a, &format!("/v1/kv/{key}")).await.json()[0]["ModifyIndex"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn put_answers_true_without_index_header() {
    let d = start(|_| {}).await;
    let a = d.addr();
    let r = put(a, "/v1/kv/k", b"v").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "true");
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert!(r.header("X-Consul-Index").is_none());
    assert!(r.header("X-Consul-Knownleader").is_none());
    let r = delete(a, "/v1/kv/k").await;
    assert_eq!((r.status, r.text().as_str()), (200, "true"));
    assert!(r.header("X-Consul-Index").is_none());
    d.shutdown().await;
}

#[tokio::test]
async fn global_index_increases_skips_and_identical_put_keeps_modify_index() {
    let d = start(|_| {}).await;
    let a = d.addr();
    let mut last = 0;
    let mut skipped = false;
    for i in 0..40 {
        put(a, &format!("/v1/kv/n/{i}"), b"v").await;
        let mi = modify_index(a, &format!("n/{i}")).await;
        assert!(mi > last, "strictly increasing");
        if last != 0 && mi - last > 1 {
            skipped = true;
        }
        assert!(last == 0 || mi - last <= 3);
        last = mi;
    }
    assert!(skipped, "some writes advance the index by more than 1");
    // Identical re-PUT: ModifyIndex kept, but the Raft index moves on.
    let before = stats(a).await["index"].as_u64().unwrap();
    put(a, "/v1/kv/n/0", b"v").await;
    let after = stats(a).await["index"].as_u64().unwrap();
    assert!(after > before);
    let e = get(a, "/v1/kv/n/0").await.json();
    assert!(e[0]["ModifyIndex"].as_u64().unwrap() < before);
    // A changed value moves ModifyIndex, keeps CreateIndex.
    let create = e[0]["CreateIndex"].as_u64().unwrap();
    put(a, "/v1/kv/n/0", b"w").await;
    let e = get(a, "/v1/kv/n/0").await.json();
    assert!(e[0]["ModifyIndex"].as_u64().unwrap() > after);
    assert_eq!(e[0]["CreateIndex"].as_u64().unwrap(), create);
    d.shutdown().await;
}

#[tokio::test]
async fn flags_are_set_and_reset_by_plain_put() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/f?flags=18446744073709551615", b"v").await;
    let r = get(a, "/v1/kv/f").await;
    assert!(r.text().contains(r#""Flags":18446744073709551615"#));
    let mi = modify_index(a, "f").await;
    // Same value, no flags: flags reset to 0, which is a change.
    put(a, "/v1/kv/f", b"v").await;
    let r = get(a, "/v1/kv/f").await;
    assert_eq!(r.json()[0]["Flags"], 0);
    assert!(modify_index(a, "f").await > mi);
    // Bad flags: 500 with Go's strconv text.
    let r = put(a, "/v1/kv/f?flags=x", b"v").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "strconv.ParseUint: parsing \"x\": invalid syntax");
    let r = put(a, "/v1/kv/f?flags=", b"v").await;
    assert_eq!(r.text(), "strconv.ParseUint: parsing \"\": invalid syntax");
    d.shutdown().await;
}

#[tokio::test]
async fn cas_put() {
    let d = start(|_| {}).await;
    let a = d.addr();
    assert_eq!(put(a, "/v1/kv/c?cas=0", b"1").await.text(), "true");
    assert_eq!(put(a, "/v1/kv/c?cas=0", b"2").await.text(), "false");
    let mi = modify_index(a, "c").await;
    assert_eq!(
        put(a, &format!("/v1/kv/c?cas={}", mi + 1), b"3")
            .await
            .text(),
        "false"
    );
    assert_eq!(put(a, "/v1/kv/absent?cas=5", b"3").await.text(), "false");
    assert_eq!(
        put(a, &format!("/v1/kv/c?cas={mi}"), b"4").await.text(),
        "true"
    );
    assert_eq!(get(a, "/v1/kv/c?raw").await.text(), "4");
    let r = put(a, "/v1/kv/c?cas=1&acquire=s", b"v").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), "Conflicting flags: acquire=s&cas=1");
    let r = put(a, "/v1/kv/c?cas=-1", b"v").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (500, "strconv.ParseUint: parsing \"-1\": invalid syntax")
    );
    d.shutdown().await;
}

#[tokio::test]
async fn delete_cas_and_recurse() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/d/a", b"1").await;
    put(a, "/v1/kv/d/b", b"2").await;
    put(a, "/v1/kv/dd", b"3").await;
    assert_eq!(delete(a, "/v1/kv/d/a?cas=0").await.text(), "false");
    let mi = modify_index(a, "d/a").await;
    assert_eq!(
        delete(a, &format!("/v1/kv/d/a?cas={}", mi + 1))
            .await
            .text(),
        "false"
    );
    assert_eq!(
        delete(a, &format!("/v1/kv/d/a?cas={mi}")).await.text(),
        "true"
    );
    assert_eq!(delete(a, "/v1/kv/d/missing?cas=7").await.text(), "true");
    assert_eq!(delete(a, "/v1/kv/never").await.text(), "true");
    let r = delete(a, "/v1/kv/d?recurse&cas=1").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "Conflicting flags: cas=1&recurse=")
    );
    let r = delete(a, "/v1/kv/").await;
    assert_eq!((r.status, r.text().as_str()), (400, "Missing key name"));
    // Byte-prefix recursive delete: "d" matches "d/b" and "dd".
    assert_eq!(delete(a, "/v1/kv/d?recurse").await.text(), "true");
    assert_eq!(get(a, "/v1/kv/?recurse").await.status, 404);
    d.shutdown().await;
}

#[tokio::test]
async fn delete_everything_with_empty_key_recurse() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/x", b"1").await;
    put(a, "/v1/kv/y/z", b"1").await;
    assert_eq!(delete(a, "/v1/kv/?recurse").await.text(), "true");
    let r = get(a, "/v1/kv/?recurse").await;
    assert_eq!(r.status, 404);
    assert_eq!(get(a, "/v1/kv/?keys").await.text(), "[]");
    d.shutdown().await;
}

#[tokio::test]
async fn missing_key_name_for_put() {
    let d = start(|_| {}).await;
    let r = put(d.addr(), "/v1/kv/", b"v").await;
    assert_eq!((r.status, r.text().as_str()), (400, "Missing key name"));
    d.shutdown().await;
}

#[tokio::test]
async fn value_size_limit_is_512_kib() {
    let d = start(|_| {}).await;
    let a = d.addr();
    let ok = vec![b'v'; 524_288];
    assert_eq!(put(a, "/v1/kv/big", &ok).await.text(), "true");
    assert_eq!(get(a, "/v1/kv/big?raw").await.body.len(), 524_288);
    let too = vec![b'v'; 524_289];
    let r = put(a, "/v1/kv/big", &too).await;
    assert_eq!(r.status, 413);
    assert_eq!(
        r.text(),
        "Request body(524289 bytes) too large, max size: 524288 bytes. See \
         https://www.consul.io/docs/agent/config/config-files#kv_max_value_size."
    );
    // Chunked bodies are measured too.
    let mut c = Conn::connect(a).await;
    let mut raw =
        b"PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend_from_slice(format!("{:x}\r\n", too.len()).as_bytes());
    raw.extend_from_slice(&too);
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    c.write_raw(&raw).await;
    let r = c.read_response(false).await.unwrap();
    assert_eq!(r.status, 413);
    d.shutdown().await;
}

#[tokio::test]
async fn sessions_are_not_implemented_and_fail_like_unknown_sessions() {
    let d = start(|_| {}).await;
    let r = put(d.addr(), "/v1/kv/l?acquire=abc", b"v").await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (500, "invalid session \"abc\"")
    );
    let r = put(d.addr(), "/v1/kv/l?release=", b"v").await;
    assert_eq!((r.status, r.text().as_str()), (500, "missing session"));
    d.shutdown().await;
}

#[tokio::test]
async fn tombstones_keep_the_prefix_index_until_reaped() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/p/a", b"1").await;
    let ia = modify_index(a, "p/a").await;
    put(a, "/v1/kv/p/b", b"2").await;
    let ib = modify_index(a, "p/b").await;
    assert_eq!(get(a, "/v1/kv/p/?recurse").await.index(), ib);
    delete(a, "/v1/kv/p/b").await;
    let del = stats(a).await["index"].as_u64().unwrap();
    let r = get(a, "/v1/kv/p/?recurse").await;
    assert_eq!(r.index(), del, "tombstone index counts");
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    // Deleting the whole prefix: 404 with the delete's index.
    put(a, "/v1/kv/q/a", b"1").await;
    delete(a, "/v1/kv/q/?recurse").await;
    let qdel = stats(a).await["index"].as_u64().unwrap();
    let r = get(a, "/v1/kv/q/?recurse").await;
    assert_eq!((r.status, r.index()), (404, qdel));
    // A sub-prefix of the deleted tree falls back to the table index.
    let r = get(a, "/v1/kv/q/a/?recurse").await;
    assert_eq!(r.index(), qdel);
    // Reap: p/ goes back down to p/a's ModifyIndex; nothing else moves.
    let reaped = control(a, "POST", "/_double/reap", None).await;
    assert_eq!(reaped["reaped"], 2);
    assert_eq!(get(a, "/v1/kv/p/?recurse").await.index(), ia);
    assert_eq!(
        get(a, "/v1/kv/q/?recurse").await.index(),
        qdel,
        "table index unchanged"
    );
    d.shutdown().await;
}

#[tokio::test]
async fn tombstones_expire_after_the_ttl() {
    let d = start(|c| c.tombstone_ttl = std::time::Duration::from_millis(150)).await;
    let a = d.addr();
    put(a, "/v1/kv/t/a", b"1").await;
    let ia = modify_index(a, "t/a").await;
    put(a, "/v1/kv/t/b", b"1").await;
    delete(a, "/v1/kv/t/b").await;
    assert!(get(a, "/v1/kv/t/?recurse").await.index() > ia);
    // Reaped after the TTL: the prefix index falls back to the live entry's.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while get(a, "/v1/kv/t/?recurse").await.index() != ia {
        assert!(
            std::time::Instant::now() < deadline,
            "tombstone never reaped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    d.shutdown().await;
}

#[tokio::test]
async fn bulk_writes_at_one_index() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/b/gone", b"x").await;
    let r = control(
        a,
        "PUT",
        "/_double/bulk",
        Some(r#"{"b/1":"one","b/2":"two","b/gone":null,"b/empty":""}"#),
    )
    .await;
    let idx = r["index"].as_u64().unwrap();
    assert_eq!(r["changed"], true);
    let list = get(a, "/v1/kv/b/?recurse").await;
    assert_eq!(list.index(), idx);
    let v = list.json();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    assert!(arr.iter().all(|e| e["ModifyIndex"] == idx));
    assert_eq!(arr[2]["Value"], serde_json::Value::Null);
    let bad = req_h(a, "PUT", "/_double/bulk", &[], Some(br#"{"k":1}"#)).await;
    assert_eq!(bad.status, 400);
    d.shutdown().await;
}

#[tokio::test]
async fn big_prefix_is_served_fast() {
    let d = start(|_| {}).await;
    let a = d.addr();
    let mut obj = serde_json::Map::new();
    let value = "x".repeat(64);
    for i in 0..100_000 {
        obj.insert(
            format!("big/{i:06}"),
            serde_json::Value::String(value.clone()),
        );
    }
    let body = serde_json::Value::Object(obj).to_string();
    control(a, "PUT", "/_double/bulk", Some(&body)).await;
    let t = std::time::Instant::now();
    let r = get(a, "/v1/kv/big/?recurse").await;
    let took = t.elapsed();
    assert_eq!(r.status, 200);
    assert!(r.body.len() > 10_000_000);
    assert_eq!(r.json().as_array().unwrap().len(), 100_000);
    // Generous in debug builds; release is far faster.
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    d.shutdown().await;
}
