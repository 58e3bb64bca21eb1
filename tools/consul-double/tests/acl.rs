//! Conformance: ACL mode.

mod common;

use ckv_consul_double::ReadToken;
use common::*;

const MGMT: &str = "root-secret";
const READER: &str = "reader-secret";
const ACCESSOR: &str = "00000000-0000-4000-8000-000000000001";
const ANON_SUFFIX: &str =
    ". The anonymous token is used implicitly when a request does not specify a token.";

async fn acl_double(list_policy: bool) -> ckv_consul_double::Handle {
    start(|c| {
        c.token = Some(MGMT.into());
        c.read_tokens = vec![ReadToken {
            secret: READER.into(),
            prefix: b"pub/".to_vec(),
        }];
        c.acl_key_list_policy = list_policy;
    })
    .await
}

fn tok(t: &str) -> [(&'static str, String); 1] {
    [("X-Consul-Token", t.to_string())]
}

async fn seed(a: std::net::SocketAddr) {
    for k in ["pub/a", "pub/b", "secret/x"] {
        let r = req_h(
            a,
            "PUT",
            &format!("/v1/kv/{k}"),
            &[("X-Consul-Token", MGMT)],
            Some(b"v"),
        )
        .await;
        assert_eq!(r.text(), "true");
    }
}

#[tokio::test]
async fn token_sources_and_precedence() {
    let d = acl_double(false).await;
    let a = d.addr();
    seed(a).await;
    let ok = |r: &Resp| r.status == 200;
    assert!(ok(&get(a, &format!("/v1/kv/secret/x?token={MGMT}")).await));
    assert!(ok(&req_h(
        a,
        "GET",
        "/v1/kv/secret/x",
        &[("X-Consul-Token", MGMT)],
        None
    )
    .await));
    let bearer = format!("Bearer {MGMT}");
    assert!(ok(&req_h(
        a,
        "GET",
        "/v1/kv/secret/x",
        &[("Authorization", &bearer)],
        None
    )
    .await));
    let bearer = format!("bEaReR {MGMT} trailing");
    assert!(ok(&req_h(
        a,
        "GET",
        "/v1/kv/secret/x",
        &[("Authorization", &bearer)],
        None
    )
    .await));
    // ?token beats the header; the header beats Bearer.
    let r = req_h(
        a,
        "GET",
        "/v1/kv/secret/x?token=bogus",
        &[("X-Consul-Token", MGMT)],
        None,
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (403, "ACL not found"));
    let bearer = format!("Bearer {MGMT}");
    let r = req_h(
        a,
        "GET",
        "/v1/kv/secret/x",
        &[("X-Consul-Token", "bogus"), ("Authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    // Other schemes are ignored: anonymous.
    let r = req_h(
        a,
        "GET",
        "/v1/kv/secret/x",
        &[("Authorization", &format!("Basic {MGMT}"))],
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.text().starts_with("Permission denied: anonymous token"));
    d.shutdown().await;
}

#[tokio::test]
async fn forbidden_bodies_and_headers() {
    let d = acl_double(false).await;
    let a = d.addr();
    seed(a).await;
    let r = get(a, "/v1/kv/secret/x").await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.text(),
        format!("Permission denied: anonymous token lacks permission 'key:read' on \"secret/x\"{ANON_SUFFIX}")
    );
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("X-Consul-Default-Acl-Policy"), Some("deny"));
    assert!(r.header("X-Consul-Index").is_none());
    let [(h, v)] = tok(READER);
    let r = req_h(a, "GET", "/v1/kv/secret/x", &[(h, &v)], None).await;
    assert_eq!(
        r.text(),
        format!("Permission denied: token with AccessorID '{ACCESSOR}' lacks permission 'key:read' on \"secret/x\"")
    );
    let r = req_h(a, "PUT", "/v1/kv/pub/a", &[(h, &v)], Some(b"x")).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.text(),
        format!("Permission denied: token with AccessorID '{ACCESSOR}' lacks permission 'key:write' on \"pub/a\"")
    );
    let r = req_h(a, "DELETE", "/v1/kv/pub/a", &[], None).await;
    assert_eq!(r.status, 403);
    let r = req_h(
        a,
        "GET",
        "/v1/kv/pub/a",
        &[("X-Consul-Token", "nope")],
        None,
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (403, "ACL not found"));
    // The reader can read its prefix.
    let r = req_h(a, "GET", "/v1/kv/pub/a", &[(h, &v)], None).await;
    assert_eq!(r.status, 200);
    // Validation errors come before ACL errors.
    let r = req_h(
        a,
        "GET",
        "/v1/kv/pub/a?index=x",
        &[("X-Consul-Token", "nope")],
        None,
    )
    .await;
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid index"));
    d.shutdown().await;
}

#[tokio::test]
async fn lists_are_filtered_not_denied_and_the_index_is_not_filtered() {
    let d = acl_double(false).await;
    let a = d.addr();
    seed(a).await;
    let full = req_h(
        a,
        "GET",
        "/v1/kv/?recurse",
        &[("X-Consul-Token", MGMT)],
        None,
    )
    .await;
    assert_eq!(full.json().as_array().unwrap().len(), 3);
    assert!(full.header("X-Consul-Results-Filtered-By-Acls").is_none());
    let r = req_h(
        a,
        "GET",
        "/v1/kv/?recurse",
        &[("X-Consul-Token", READER)],
        None,
    )
    .await;
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    assert_eq!(r.header("X-Consul-Results-Filtered-By-Acls"), Some("true"));
    assert!(r.has_exact_header("X-Consul-Results-Filtered-By-Acls"));
    assert_eq!(r.index(), full.index());
    let r = req_h(
        a,
        "GET",
        "/v1/kv/?keys",
        &[("X-Consul-Token", READER)],
        None,
    )
    .await;
    assert_eq!(r.text(), r#"["pub/a","pub/b"]"#);
    // Anonymous: everything filtered -> 404 with headers, no filtered header (masked).
    let r = get(a, "/v1/kv/?recurse").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.index(), full.index());
    assert!(r.header("X-Consul-Results-Filtered-By-Acls").is_none());
    d.shutdown().await;
}

#[tokio::test]
async fn key_list_policy_denies_lists() {
    let d = acl_double(true).await;
    let a = d.addr();
    seed(a).await;
    let r = req_h(
        a,
        "GET",
        "/v1/kv/?recurse",
        &[("X-Consul-Token", READER)],
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.text(),
        format!("Permission denied: token with AccessorID '{ACCESSOR}' lacks permission 'key:list' on \"\"")
    );
    let r = req_h(
        a,
        "GET",
        "/v1/kv/pub/?recurse",
        &[("X-Consul-Token", READER)],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    d.shutdown().await;
}

/// `PUT /v1/acl/bootstrap`: once 200 with the management token (Consul 1.14's
/// `aclBootstrapResponse` shape), then 403; the secret it returns works.
#[tokio::test]
async fn acl_bootstrap_once() {
    let d = acl_double(false).await;
    let a = d.addr();
    let before = get(a, "/v1/kv/?recurse").await.index();
    let r = req(a, "PUT", "/v1/acl/bootstrap").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header("X-Consul-Default-Acl-Policy"), Some("deny"));
    assert!(r.header("X-Consul-Index").is_none());
    let text = r.text();
    let keys: Vec<&str> = [
        "ID",
        "AccessorID",
        "SecretID",
        "Description",
        "Policies",
        "Local",
        "CreateTime",
        "Hash",
        "CreateIndex",
        "ModifyIndex",
    ]
    .to_vec();
    let mut at = 0;
    for k in &keys {
        let pos = text
            .find(&format!("\"{k}\":"))
            .unwrap_or_else(|| panic!("{k} in {text}"));
        assert!(pos >= at, "{k} out of Go's field order in {text}");
        at = pos;
    }
    let j = r.json();
    assert_eq!(j.as_object().unwrap().len(), keys.len(), "{text}");
    assert_eq!(j["SecretID"], MGMT);
    assert_eq!(j["ID"], MGMT);
    assert_eq!(j["Policies"][0]["Name"], "global-management");
    assert_eq!(
        j["Policies"][0]["ID"],
        "00000000-0000-0000-0000-000000000001"
    );
    assert_eq!(j["Local"], false);
    assert_eq!(j["AccessorID"].as_str().unwrap().len(), 36);
    assert!(j["CreateTime"].as_str().unwrap().ends_with('Z'));
    let idx = j["CreateIndex"].as_u64().unwrap();
    assert!(idx > before, "bootstrap consumes a Raft index");
    assert_eq!(j["ModifyIndex"].as_u64(), Some(idx));
    // An ACL write does not move the KV view index.
    assert_eq!(get(a, "/v1/kv/?recurse").await.index(), before);

    // The returned secret is a management token.
    let secret = j["SecretID"].as_str().unwrap().to_string();
    let w = req_h(
        a,
        "PUT",
        "/v1/kv/x",
        &[("X-Consul-Token", &secret)],
        Some(b"1"),
    )
    .await;
    assert_eq!(w.text(), "true");

    for _ in 0..2 {
        let again = req(a, "PUT", "/v1/acl/bootstrap").await;
        assert_eq!(again.status, 403);
        assert_eq!(
            again.text(),
            format!("Permission denied: ACL bootstrap no longer allowed (reset index: {idx})")
        );
        assert_eq!(
            again.header("Content-Type"),
            Some("text/plain; charset=utf-8")
        );
    }
    let g = req(a, "GET", "/v1/acl/bootstrap").await;
    assert_eq!(g.status, 405);
    assert_eq!(g.text(), "method GET not allowed");
    assert_eq!(g.header("Allow"), Some("OPTIONS,PUT"));
    d.shutdown().await;
}

#[tokio::test]
async fn acl_bootstrap_without_acls_is_401() {
    let d = start(|_| {}).await;
    let r = req(d.addr(), "PUT", "/v1/acl/bootstrap").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), "ACL support disabled");
    assert_eq!(r.header("X-Consul-Default-Acl-Policy"), Some("allow"));
    d.shutdown().await;
}
