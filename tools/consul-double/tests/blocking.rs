//! Conformance: blocking queries and the index-goes-backwards cases.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test]
async fn timeout_returns_the_same_index_and_body() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/w/a", b"1").await;
    let first = get(a, "/v1/kv/w/?recurse").await;
    let i = first.index();
    let t = Instant::now();
    let r = get(a, &format!("/v1/kv/w/?recurse&index={i}&wait=300ms")).await;
    let took = t.elapsed();
    assert!(took >= ms(300), "{took:?}");
    assert!(
        took < ms(300 + 300 / 16 + 150),
        "jitter is at most wait/16: {took:?}"
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.index(), i);
    assert_eq!(r.body, first.body);
    // 404 views time out with their index too.
    let r404 = get(a, "/v1/kv/none/?recurse").await;
    let r = get(
        a,
        &format!("/v1/kv/none/?recurse&index={}&wait=100ms", r404.index()),
    )
    .await;
    assert_eq!((r.status, r.index()), (404, r404.index()));
    assert!(r.body.is_empty());
    d.shutdown().await;
}

#[tokio::test]
async fn index_zero_or_absent_does_not_block() {
    let d = start(|_| {}).await;
    let a = d.addr();
    let t = Instant::now();
    get(a, "/v1/kv/x?index=0&wait=1s").await;
    get(a, "/v1/kv/x?wait=1s").await;
    assert!(t.elapsed() < ms(200));
    d.shutdown().await;
}

#[tokio::test]
async fn put_under_the_prefix_wakes_the_watch() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/w/a", b"1").await;
    let i = get(a, "/v1/kv/w/?recurse").await.index();
    let watch = tokio::spawn(async move {
        let t = Instant::now();
        let r = get(a, &format!("/v1/kv/w/?recurse&index={i}&wait=2s")).await;
        (r, t.elapsed())
    });
    wait_blocked(a, 1).await;
    // An identical re-PUT and a write elsewhere do not end the watch: it
    // returns only with w/b, which is written after them.
    put(a, "/v1/kv/w/a", b"1").await;
    put(a, "/v1/kv/other", b"1").await;
    put(a, "/v1/kv/w/b", b"2").await;
    let (r, took) = watch.await.unwrap();
    assert!(took < ms(1000), "{took:?}");
    assert!(r.index() > i);
    assert_eq!(r.json().as_array().unwrap().len(), 2, "woken by w/b only");
    assert_eq!(stats(a).await["blocking_in_flight"], 0);
    d.shutdown().await;
}

#[tokio::test]
async fn delete_of_the_prefix_wakes_with_404_and_the_delete_index() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/g/a", b"1").await;
    let i = get(a, "/v1/kv/g/?recurse").await.index();
    let watch =
        tokio::spawn(async move { get(a, &format!("/v1/kv/g/?recurse&index={i}&wait=2s")).await });
    wait_blocked(a, 1).await;
    delete(a, "/v1/kv/g/?recurse").await;
    let del = stats(a).await["index"].as_u64().unwrap();
    let r = watch.await.unwrap();
    assert_eq!((r.status, r.index()), (404, del));
    assert!(r.body.is_empty());
    assert_read_headers(&r, del);
    d.shutdown().await;
}

#[tokio::test]
async fn higher_requested_index_blocks_for_the_full_wait_then_returns_lower() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/h/a", b"1").await;
    let i = get(a, "/v1/kv/h/?recurse").await.index();
    let t = Instant::now();
    let r = get(
        a,
        &format!("/v1/kv/h/?recurse&index={}&wait=300ms", i + 1000),
    )
    .await;
    assert!(t.elapsed() >= ms(300));
    assert_eq!((r.status, r.index()), (200, i));
    d.shutdown().await;
}

#[tokio::test]
async fn wait_is_capped_by_max_wait_and_zero_means_default() {
    let d = start(|c| {
        c.max_wait = ms(300);
        c.default_wait = ms(200);
    })
    .await;
    let a = d.addr();
    let i = get(a, "/v1/kv/c/?recurse").await.index();
    let t = Instant::now();
    get(a, &format!("/v1/kv/c/?recurse&index={i}&wait=10m")).await;
    let took = t.elapsed();
    assert!(took >= ms(300) && took < ms(300 + 19 + 200), "{took:?}");
    for w in ["0", "0s", "-5s", ""] {
        let t = Instant::now();
        get(a, &format!("/v1/kv/c/?recurse&index={i}&wait={w}")).await;
        let took = t.elapsed();
        assert!(
            took >= ms(200) && took < ms(200 + 13 + 200),
            "wait={w}: {took:?}"
        );
    }
    d.shutdown().await;
}

#[tokio::test]
async fn restore_lowers_the_index_and_wakes_blocked_reads_at_once() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/r/a", b"old").await;
    let snap = control(a, "POST", "/_double/snapshot?name=s1", None).await;
    let old = get(a, "/v1/kv/r/?recurse").await.index();
    assert!(snap["index"].as_u64().unwrap() >= old);
    put(a, "/v1/kv/r/a", b"new").await;
    put(a, "/v1/kv/r/b", b"new").await;
    let cur = get(a, "/v1/kv/r/?recurse").await.index();
    assert!(cur > old);
    let watch = tokio::spawn(async move {
        let t = Instant::now();
        let r = get(a, &format!("/v1/kv/r/?recurse&index={cur}&wait=2s")).await;
        (r, t.elapsed())
    });
    // A second watcher on an unrelated, unchanged view also returns.
    let other = tokio::spawn(async move {
        let t = Instant::now();
        let r = get(a, "/v1/kv/zzz/?recurse").await;
        get(
            a,
            &format!("/v1/kv/zzz/?recurse&index={}&wait=2s", r.index()),
        )
        .await;
        t.elapsed()
    });
    wait_blocked(a, 2).await;
    let restored = control(a, "POST", "/_double/restore?name=s1", None).await;
    assert_eq!(restored["index"], snap["index"]);
    let (r, took) = watch.await.unwrap();
    assert!(took < ms(1000), "{took:?}");
    assert_eq!(r.index(), old, "index went backwards");
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert!(other.await.unwrap() < ms(1000));
    // Writes continue from the restored (lower) index.
    put(a, "/v1/kv/r/c", b"x").await;
    assert!(stats(a).await["index"].as_u64().unwrap() < cur + 4);
    let missing = req(a, "POST", "/_double/restore?name=nope").await;
    assert_eq!(missing.status, 404);
    d.shutdown().await;
}

#[tokio::test]
async fn reset_empties_the_store_at_a_lower_index() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/x/a", b"1").await;
    let i = get(a, "/v1/kv/x/?recurse").await.index();
    let watch =
        tokio::spawn(async move { get(a, &format!("/v1/kv/x/?recurse&index={i}&wait=2s")).await });
    wait_blocked(a, 1).await;
    let r = control(a, "POST", "/_double/reset?index=50", None).await;
    assert_eq!(r["index"], 50);
    let r = watch.await.unwrap();
    assert_eq!((r.status, r.index()), (404, 50));
    d.shutdown().await;
}

#[tokio::test]
async fn spurious_wakeup_new_index_same_data() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/s/a", b"1").await;
    let first = get(a, "/v1/kv/s/?recurse").await;
    let i = first.index();
    let watch =
        tokio::spawn(async move { get(a, &format!("/v1/kv/s/?recurse&index={i}&wait=2s")).await });
    wait_blocked(a, 1).await;
    let w = control(a, "POST", "/_double/wake?prefix=s/", None).await;
    let r = watch.await.unwrap();
    assert_eq!(r.index(), w["index"].as_u64().unwrap());
    assert!(r.index() > i);
    assert_eq!(r.body, first.body, "same data");

    // Without a prefix only table-index views (empty prefixes) move.
    let e = get(a, "/v1/kv/empty/?recurse").await.index();
    let s = get(a, "/v1/kv/s/?recurse").await.index();
    let empty_watch =
        tokio::spawn(
            async move { get(a, &format!("/v1/kv/empty/?recurse&index={e}&wait=2s")).await },
        );
    let s_watch = tokio::spawn(async move {
        let t = Instant::now();
        let r = get(a, &format!("/v1/kv/s/?recurse&index={s}&wait=400ms")).await;
        (r, t.elapsed())
    });
    wait_blocked(a, 2).await;
    let w = control(a, "POST", "/_double/wake", None).await;
    let r = empty_watch.await.unwrap();
    assert_eq!((r.status, r.index()), (404, w["index"].as_u64().unwrap()));
    let (r, took) = s_watch.await.unwrap();
    assert_eq!(r.index(), s);
    assert!(took >= ms(400));
    d.shutdown().await;
}

#[tokio::test]
async fn empty_prefix_view_wakes_on_unrelated_writes() {
    let d = start(|_| {}).await;
    let a = d.addr();
    let e = get(a, "/v1/kv/empty/?recurse").await.index();
    let watch =
        tokio::spawn(
            async move { get(a, &format!("/v1/kv/empty/?recurse&index={e}&wait=2s")).await },
        );
    wait_blocked(a, 1).await;
    put(a, "/v1/kv/elsewhere", b"1").await;
    let r = watch.await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.index() > e);
    d.shutdown().await;
}

#[tokio::test]
async fn missing_single_key_keeps_blocking_across_unrelated_writes() {
    let d = start(|_| {}).await;
    let a = d.addr();
    let i = get(a, "/v1/kv/ghost").await.index();
    let watch = tokio::spawn(async move {
        let t = Instant::now();
        let r = get(a, &format!("/v1/kv/ghost?index={i}&wait=400ms")).await;
        (r, t.elapsed())
    });
    wait_blocked(a, 1).await;
    put(a, "/v1/kv/unrelated", b"1").await;
    let (r, took) = watch.await.unwrap();
    assert!(took >= ms(400), "kept blocking: {took:?}");
    assert_eq!(r.status, 404);
    assert!(r.index() > i, "returns the last evaluation's index");
    // Creating the key does wake it.
    let i = get(a, "/v1/kv/ghost").await.index();
    let watch =
        tokio::spawn(async move { get(a, &format!("/v1/kv/ghost?index={i}&wait=2s")).await });
    wait_blocked(a, 1).await;
    put(a, "/v1/kv/ghost", b"boo").await;
    assert_eq!(watch.await.unwrap().status, 200);
    d.shutdown().await;
}

#[tokio::test]
async fn many_concurrent_long_polls() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/m/a", b"1").await;
    let i = get(a, "/v1/kv/m/?recurse").await.index();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        tasks.push(tokio::spawn(async move {
            get(a, &format!("/v1/kv/m/?recurse&index={i}&wait=2s"))
                .await
                .index()
        }));
    }
    wait_blocked(a, 200).await;
    let s = stats(a).await;
    assert_eq!(s["blocking_in_flight"], 200);
    assert_eq!(s["blocking_per_path"]["/v1/kv/m/"], 200);
    put(a, "/v1/kv/m/b", b"2").await;
    for t in tasks {
        assert!(t.await.unwrap() > i);
    }
    d.shutdown().await;
}

#[tokio::test]
async fn client_disconnect_releases_the_blocked_read() {
    let d = start(|_| {}).await;
    let a = d.addr();
    let i = get(a, "/v1/kv/dc/?recurse").await.index();
    let mut c = Conn::connect(a).await;
    c.send(
        "GET",
        &format!("/v1/kv/dc/?recurse&index={i}&wait=2s"),
        &[],
        None,
    )
    .await;
    wait_blocked(a, 1).await;
    drop(c);
    // The disconnect releases it: the counter goes back to 0.
    wait_blocked(a, 0).await;
    d.shutdown().await;
}
