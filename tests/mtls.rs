//! Mutual TLS (issue 16): `tls.cert_file`/`tls.key_file` presented to a
//! double that verifies client certificates, and `tls.server_name` for a
//! server addressed by IP whose certificate names `consul.test`. Everything
//! is checked at start (`Engine::start`, i.e. `ckv_init`).

mod common;

use std::path::PathBuf;

use ckv::engine::Engine;
use common::*;

fn data(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .display()
        .to_string()
}

/// A double whose listener requires a client certificate from the test CA.
fn mtls_double() -> Double {
    Double::start_with(|c| {
        c.tls = Some(ckv_consul_double::Tls {
            cert_file: data("mtls-server.pem").into(),
            key_file: data("mtls-server-key.pem").into(),
            client_ca_file: Some(data("mtls-ca.pem").into()),
        });
    })
}

fn start(url: &str, tls: &str) -> Result<Engine, String> {
    let json = format!(
        r#"{{"servers":["{url}"],"prefix":"p","tls":{{{tls}}},
            "timeout":{{"connect":200,"read":300,"wait":1}},
            "backoff":{{"initial":20,"max":200}},"share":{{"enabled":false}}}}"#
    );
    Engine::start(ckv::config::parse(json.as_bytes()).map_err(|e| e.to_string())?)
}

/// The same, holding one node from the start (it cannot be written to
/// without a client certificate).
fn seeded_mtls_double() -> Double {
    Double::start_with(|c| {
        c.seed = vec![(b"p/web/10.0.0.1:80".to_vec(), b"{}".to_vec())];
        c.tls = Some(ckv_consul_double::Tls {
            cert_file: data("mtls-server.pem").into(),
            key_file: data("mtls-server-key.pem").into(),
            client_ca_file: Some(data("mtls-ca.pem").into()),
        });
    })
}

#[test]
fn a_client_certificate_is_accepted_and_its_absence_refused() {
    let d = seeded_mtls_double();
    let url = format!("https://{}", d.addr);
    let ca = data("mtls-ca.pem");
    let with_cert = format!(
        r#""ca_file":"{ca}","server_name":"consul.test","cert_file":"{}","key_file":"{}""#,
        data("mtls-client.pem"),
        data("mtls-client-key.pem")
    );
    let e = start(&url, &with_cert).unwrap();
    assert!(
        wait_until(WAIT, || nodes(&e, &url, "p/web/").is_some()),
        "{}",
        stats(&e)
    );

    // No client certificate: the handshake is refused, nothing is served.
    let e = start(
        &url,
        &format!(r#""ca_file":"{ca}","server_name":"consul.test""#),
    )
    .unwrap();
    assert!(
        wait_until(WAIT, || stats(&e)["servers"][0]["errors_total"]
            .as_u64()
            .unwrap()
            >= 2),
        "{}",
        stats(&e)
    );
    assert!(nodes(&e, &url, "p/web/").is_none());
    let err = stats(&e)["servers"][0]["last_error"].to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[test]
fn server_name_is_what_the_certificate_is_verified_against() {
    let d = seeded_mtls_double();
    let url = format!("https://{}", d.addr);
    let client = format!(
        r#""ca_file":"{}","cert_file":"{}","key_file":"{}""#,
        data("mtls-ca.pem"),
        data("mtls-client.pem"),
        data("mtls-client-key.pem")
    );
    // The certificate names consul.test, not 127.0.0.1.
    let e = start(&url, &client).unwrap();
    assert!(
        wait_until(WAIT, || stats(&e)["servers"][0]["last_error"]
            .as_str()
            .is_some_and(
                |t| t.contains("not valid for name") || t.contains("NotValidForName")
            )),
        "{}",
        stats(&e)
    );
    assert!(nodes(&e, &url, "p/web/").is_none());
    let e = start(
        &url,
        &format!(r#"{client},"server_name":"server.dc1.consul""#),
    )
    .unwrap();
    assert!(
        wait_until(WAIT, || nodes(&e, &url, "p/web/").is_some()),
        "{}",
        stats(&e)
    );
    // The name is also sent as SNI (the URL's host is an IP address, which
    // is never sent as SNI).
    let seen = double_stats_over_mtls(&d)["tls_sni_seen"].clone();
    assert!(
        seen.as_array()
            .unwrap()
            .contains(&serde_json::json!("server.dc1.consul")),
        "{seen}"
    );
}

/// `/_double/stats` of a double that wants a client certificate (asked
/// with SNI `consul.test`).
fn double_stats_over_mtls(d: &Double) -> serde_json::Value {
    let pem = |n: &str| std::fs::read(data(n)).unwrap();
    let mut identity = pem("mtls-client.pem");
    identity.extend(pem("mtls-client-key.pem"));
    let ca = reqwest::Certificate::from_pem(&pem("mtls-ca.pem")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(ca)
            .identity(reqwest::Identity::from_pem(&identity).unwrap())
            .resolve("consul.test", d.addr)
            .build()
            .unwrap();
        let url = format!("https://consul.test:{}/_double/stats", d.addr.port());
        let body = client.get(url).send().await.unwrap().bytes().await.unwrap();
        serde_json::from_slice(&body).unwrap()
    })
}

#[test]
fn client_certificate_problems_fail_the_start() {
    let url = "https://127.0.0.1:1";
    let (cert, key) = (data("mtls-client.pem"), data("mtls-client-key.pem"));
    let cases = [
        (
            format!(r#""cert_file":"/nonexistent/c.pem","key_file":"{key}""#),
            "tls.cert_file /nonexistent/c.pem: cannot open",
        ),
        (
            format!(
                r#""cert_file":"{cert}","key_file":"{}""#,
                data("mtls-server-key.pem")
            ),
            "does not belong to tls.cert_file",
        ),
        (
            format!(r#""cert_file":"{key}","key_file":"{key}""#),
            "no certificates found",
        ),
        (
            format!(r#""cert_file":"{cert}","key_file":"{cert}""#),
            "no usable private key",
        ),
        (format!(r#""cert_file":"{cert}""#), "tls.key_file: required"),
        (
            r#""server_name":"not a name""#.to_string(),
            "tls.server_name: expected a DNS name",
        ),
    ];
    for (tls, want) in cases {
        let e = start(url, &tls)
            .err()
            .unwrap_or_else(|| panic!("{tls} started"));
        assert!(e.contains(want), "{tls}: {e}");
    }
    // The key never appears in an error.
    let e = start(url, &format!(r#""cert_file":"{cert}","key_file":"{cert}""#))
        .err()
        .unwrap();
    assert!(!e.contains("BEGIN"), "{e}");
}

#[test]
fn the_double_refuses_a_client_without_certificate() {
    let d = mtls_double();
    // Plain HTTP to a TLS listener gets no HTTP answer.
    let (status, _) = http(d.addr, "GET", "/v1/kv/p/?recurse", "", &[]);
    assert_eq!(status, 0);
}
