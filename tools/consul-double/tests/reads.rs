//! Conformance: KV reads, headers, paths, parameter validation, gzip.

mod common;

use common::*;
use std::io::Read;

#[tokio::test]
async fn single_key_get_has_every_field_and_read_headers() {
    let d = start(|_| {}).await;
    let a = d.addr();
    assert_eq!(put(a, "/v1/kv/app/a", b"test").await.text(), "true");
    let r = get(a, "/v1/kv/app/a").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let v = r.json();
    let e = &v[0];
    let mi = e["ModifyIndex"].as_u64().unwrap();
    assert_eq!(
        r.text(),
        format!(
            r#"[{{"LockIndex":0,"Key":"app/a","Flags":0,"Value":"dGVzdA==","CreateIndex":{mi},"ModifyIndex":{mi}}}]"#
        )
    );
    assert!(mi > 1000, "index starts well above 1");
    assert_read_headers(&r, mi);
    assert_eq!(r.header("X-Consul-Default-Acl-Policy"), Some("allow"));
    assert!(e.get("Session").is_none(), "Session is omitempty");
    d.shutdown().await;
}

#[tokio::test]
async fn empty_value_is_null_and_missing_key_is_404_with_headers() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/e", b"").await;
    let r = get(a, "/v1/kv/e").await;
    assert_eq!(r.json()[0]["Value"], serde_json::Value::Null);
    let table = r.index();

    let r = get(a, "/v1/kv/missing").await;
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    assert_eq!(r.header("Content-Length"), Some("0"));
    assert!(r.header("Content-Type").is_none());
    assert_read_headers(&r, table);

    let r = get(a, "/v1/kv/nothing/?recurse").await;
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    assert_read_headers(&r, table);
    d.shutdown().await;
}

#[tokio::test]
async fn recurse_is_sorted_by_bytes_and_greedy() {
    let d = start(|_| {}).await;
    let a = d.addr();
    for k in ["app/b", "app/a", "apple/x", "app", "app/B", "app/a/z"] {
        put(a, &format!("/v1/kv/{k}"), k.as_bytes()).await;
    }
    let keys = |r: &Resp| -> Vec<String> {
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["Key"].as_str().unwrap().to_string())
            .collect()
    };
    let r = get(a, "/v1/kv/app?recurse").await;
    assert_eq!(
        keys(&r),
        ["app", "app/B", "app/a", "app/a/z", "app/b", "apple/x"]
    );
    let r = get(a, "/v1/kv/app/?recurse=false").await;
    assert_eq!(keys(&r), ["app/B", "app/a", "app/a/z", "app/b"]);
    let max = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ModifyIndex"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(r.index(), max);
    // Whole store.
    let r = get(a, "/v1/kv/?recurse").await;
    assert_eq!(r.json().as_array().unwrap().len(), 6);
    d.shutdown().await;
}

#[tokio::test]
async fn keys_with_separator_and_root() {
    let d = start(|_| {}).await;
    let a = d.addr();
    let r = get(a, "/v1/kv/?keys").await;
    assert_eq!((r.status, r.text().as_str()), (200, "[]"));
    let r = get(a, "/v1/kv/web/?keys").await;
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    for k in ["web/bar", "web/foo", "web/subdir/x", "web/subdir/y"] {
        put(a, &format!("/v1/kv/{k}"), b"v").await;
    }
    let r = get(a, "/v1/kv/web/?keys&separator=/").await;
    assert_eq!(r.text(), r#"["web/bar","web/foo","web/subdir/"]"#);
    let r = get(a, "/v1/kv/web/?keys&seperator=/").await;
    assert_eq!(r.text(), r#"["web/bar","web/foo","web/subdir/"]"#);
    let r = get(a, "/v1/kv/web/?keys&seperator=x&separator=/").await;
    assert_eq!(r.text(), r#"["web/bar","web/foo","web/subdir/"]"#);
    let r = get(a, "/v1/kv/web/?keys").await;
    assert_eq!(
        r.text(),
        r#"["web/bar","web/foo","web/subdir/x","web/subdir/y"]"#
    );
    assert_eq!(r.index(), get(a, "/v1/kv/web/?recurse").await.index());
    let r = get(a, "/v1/kv/web/?keys&separator=/&pretty").await;
    assert_eq!(
        r.text(),
        "[\n    \"web/bar\",\n    \"web/foo\",\n    \"web/subdir/\"\n]\n"
    );
    d.shutdown().await;
}

#[tokio::test]
async fn raw_mode_headers() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/r", b"<b>hi</b>").await;
    let r = get(a, "/v1/kv/r?raw").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"<b>hi</b>");
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert_eq!(r.header("Content-Length"), Some("9"));
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(r.header("Content-Security-Policy"), Some("sandbox"));
    assert!(r.header("X-Consul-Index").is_some());
    // raw is ignored with recurse.
    let r = get(a, "/v1/kv/r?raw&recurse").await;
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let r = get(a, "/v1/kv/nope?raw").await;
    assert_eq!(r.status, 404);
    d.shutdown().await;
}

#[tokio::test]
async fn pretty_output_matches_go_marshal_indent() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/p", b"x").await;
    let r = get(a, "/v1/kv/p?pretty").await;
    let i = r.index();
    assert_eq!(
        r.text(),
        format!(
            "[\n    {{\n        \"LockIndex\": 0,\n        \"Key\": \"p\",\n        \"Flags\": 0,\n        \"Value\": \"eA==\",\n        \"CreateIndex\": {i},\n        \"ModifyIndex\": {i}\n    }}\n]\n"
        )
    );
    let r = put(a, "/v1/kv/p?pretty", b"y").await;
    assert_eq!(r.text(), "true\n");
    d.shutdown().await;
}

#[tokio::test]
async fn keys_are_json_escaped_like_go_and_percent_decoded() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/a%3Cb%3E%26c%20d%25", b"v").await;
    let r = get(a, "/v1/kv/a%3Cb%3E%26c%20d%25").await;
    assert!(
        r.text().contains(r#""Key":"a\u003cb\u003e\u0026c d%""#),
        "{}",
        r.text()
    );
    d.shutdown().await;
}

#[tokio::test]
async fn path_handling_301_400_404() {
    let d = start(|_| {}).await;
    let a = d.addr();
    let r = get(a, "/v1/kv?recurse").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("Location"), Some("/v1/kv/?recurse"));
    assert_eq!(
        r.text(),
        "<a href=\"/v1/kv/?recurse\">Moved Permanently</a>.\n\n"
    );
    let r = get(a, "/v1/kv/foo//bar").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("Location"), Some("/v1/kv/foo/bar"));
    let r = get(a, "/v1/kv//foo?x=1").await;
    assert_eq!(
        (r.status, r.header("Location")),
        (301, Some("/v1/kv/foo?x=1"))
    );
    let r = get(a, "/v1/kv/a/./b").await;
    assert_eq!((r.status, r.header("Location")), (301, Some("/v1/kv/a/b")));
    let r = req(a, "PUT", "/v1/kv/a/../b").await;
    assert_eq!((r.status, r.header("Location")), (301, Some("/v1/kv/b")));
    assert!(r.body.is_empty(), "no body for non-GET redirects");
    // Non-printable characters: 400 with an empty body.
    let r = get(a, "/v1/kv/a%0Ab").await;
    assert_eq!(r.status, 400);
    assert!(r.body.is_empty());
    let r = get(a, "/v1/kv/tab%09").await;
    assert_eq!(r.status, 400);
    // Unknown endpoints.
    let r = get(a, "/v1/agent/self").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.text(),
        "Invalid URL path: not a recognized HTTP API endpoint\n"
    );
    let r = get(a, "/nope").await;
    assert_eq!(r.status, 404);
    d.shutdown().await;
}

#[tokio::test]
async fn methods_options_and_405() {
    let d = start(|_| {}).await;
    let a = d.addr();
    let r = req(a, "OPTIONS", "/v1/kv/x").await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("Allow"), Some("OPTIONS,GET,PUT,DELETE"));
    for m in ["POST", "PATCH"] {
        let r = req(a, m, "/v1/kv/x").await;
        assert_eq!(r.status, 405);
        assert_eq!(r.text(), format!("method {m} not allowed"));
        assert_eq!(r.header("Allow"), Some("OPTIONS,GET,PUT,DELETE"));
    }
    let mut c = Conn::connect(a).await;
    let r = c.request("HEAD", "/v1/kv/x", &[], None).await.unwrap();
    assert_eq!(r.status, 405);
    d.shutdown().await;
}

#[tokio::test]
async fn parameter_validation_400s() {
    let d = start(|_| {}).await;
    let a = d.addr();
    let cases = [
        ("/v1/kv/x?index=1&wait=30", "Invalid wait time"),
        ("/v1/kv/x?index=1&wait=1d", "Invalid wait time"),
        ("/v1/kv/x?index=-1", "Invalid index"),
        ("/v1/kv/x?index=abc", "Invalid index"),
        ("/v1/kv/x?index=+1", "Invalid index"),
        ("/v1/kv/x?index=18446744073709551616", "Invalid index"),
        (
            "/v1/kv/x?stale&consistent",
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ),
        (
            "/v1/kv/x?ns=a",
            "Invalid query parameter: \"ns\" - Namespaces are a Consul Enterprise feature",
        ),
        ("/v1/kv/", "Missing key name"),
    ];
    for (path, body) in cases {
        let r = get(a, path).await;
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.text(), body, "{path}");
        assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
        assert!(r.header("X-Consul-Index").is_none());
        assert!(r.header("X-Consul-Default-Acl-Policy").is_some());
    }
    // Validation happens for writes too, before anything else.
    let r = put(a, "/v1/kv/x?wait=zz", b"v").await;
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid wait time"));
    // Empty wait= and index= are ignored; wait=0 parses.
    assert_eq!(get(a, "/v1/kv/x?wait=&index=").await.status, 404);
    assert_eq!(get(a, "/v1/kv/x?wait=0").await.status, 404);
    d.shutdown().await;
}

#[tokio::test]
async fn status_leader() {
    let d = start(|_| {}).await;
    let a = d.addr();
    let r = get(a, "/v1/status/leader").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "\"127.0.0.1:8300\"");
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    fault(a, r#"{"kind":"no_leader"}"#).await;
    assert_eq!(get(a, "/v1/status/leader").await.text(), "\"\"");
    d.shutdown().await;
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

#[tokio::test]
async fn gzip_threshold_is_1400_bytes() {
    let d = start(|_| {}).await;
    let a = d.addr();
    let gz = [("Accept-Encoding", "gzip")];
    put(a, "/v1/kv/small", &[b'a'; 1399]).await;
    put(a, "/v1/kv/big", &[b'a'; 1400]).await;
    let r = req_h(a, "GET", "/v1/kv/small?raw", &gz, None).await;
    assert!(r.header("Content-Encoding").is_none());
    assert_eq!(r.header("Content-Length"), Some("1399"));
    assert_eq!(r.header("Vary"), Some("Accept-Encoding"));
    let r = req_h(a, "GET", "/v1/kv/big?raw", &gz, None).await;
    assert_eq!(r.header("Content-Encoding"), Some("gzip"));
    assert!(r.header("Content-Length").is_none());
    assert!(r.chunked);
    assert_eq!(gunzip(&r.body), vec![b'a'; 1400]);
    // Without Accept-Encoding, or with q=0: never compressed.
    let r = get(a, "/v1/kv/big?raw").await;
    assert!(r.header("Content-Encoding").is_none());
    assert_eq!(r.body.len(), 1400);
    let r = req_h(
        a,
        "GET",
        "/v1/kv/big?raw",
        &[("Accept-Encoding", "gzip;q=0")],
        None,
    )
    .await;
    assert!(r.header("Content-Encoding").is_none());
    // JSON bodies: the whole list is compressed and decodes to the same JSON.
    let plain = get(a, "/v1/kv/?recurse").await;
    let r = req_h(a, "GET", "/v1/kv/?recurse", &gz, None).await;
    assert_eq!(r.header("Content-Encoding"), Some("gzip"));
    assert_eq!(gunzip(&r.body), plain.body);
    // Empty 404 bodies are never compressed.
    let r = req_h(a, "GET", "/v1/kv/none", &gz, None).await;
    assert!(r.header("Content-Encoding").is_none());
    d.shutdown().await;
}

#[tokio::test]
async fn large_bodies_are_chunked_small_ones_have_length() {
    let d = start(|_| {}).await;
    let a = d.addr();
    put(a, "/v1/kv/v", &[b'z'; 4000]).await;
    let r = get(a, "/v1/kv/v").await;
    assert!(r.chunked);
    assert!(r.header("Content-Length").is_none());
    let r = get(a, "/v1/kv/v?raw").await;
    assert!(!r.chunked);
    assert_eq!(r.header("Content-Length"), Some("4000"));
    d.shutdown().await;
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let d = start(|_| {}).await;
    let a = d.addr();
    let mut c = Conn::connect(a).await;
    for i in 0..20 {
        let r = c
            .request("PUT", &format!("/v1/kv/k{i}"), &[], Some(b"v"))
            .await
            .unwrap();
        assert_eq!(r.text(), "true");
        let r = c
            .request("GET", &format!("/v1/kv/k{i}"), &[], None)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(stats(a).await["connections_total"], 2);
    d.shutdown().await;
}
