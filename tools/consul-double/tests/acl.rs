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
