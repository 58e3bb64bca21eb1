//! Issue 16 against the double: one cluster behind several servers
//! (failover keeping names and index, fail-back), consistency modes and
//! `max_stale`, Consul's scope parameters, and a token file that rotates.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use ckv::log::Level;
use common::*;

const NODE_A: &str = r#"[{"host":"10.0.0.1","port":80,"weight":1}]"#;
const NODE_AB: &str =
    r#"[{"host":"10.0.0.1","port":80,"weight":1},{"host":"10.0.0.2","port":80,"weight":1}]"#;

/// A double with `n` listeners sharing one store: the members of a cluster.
fn cluster_double(n: usize, tweak: impl FnOnce(&mut ckv_consul_double::Config)) -> Double {
    Double::start_with(|c| {
        c.listen = vec!["127.0.0.1:0".parse().unwrap(); n];
        tweak(c);
    })
}

fn urls(d: &Double) -> Vec<String> {
    d.addrs.iter().map(|a| format!("http://{a}")).collect()
}

/// Stops or starts one member (through another listener).
fn set_member(d: &Double, member: usize, up: bool) {
    let via = d.addrs[(member + 1) % d.addrs.len()];
    let state = if up { "up" } else { "down" };
    let path = format!("/_double/listener?addr={}&state={state}", d.addrs[member]);
    let (status, body) = http(via, "POST", &path, "", &[]);
    assert_eq!(status, 200, "{path}: {body}");
}

/// PUT through a member that is up.
fn put_via(d: &Double, member: usize, key: &str, value: &str) {
    let (status, body) = http(d.addrs[member], "PUT", &format!("/v1/kv/{key}"), value, &[]);
    assert_eq!((status, body.as_str()), (200, "true"), "PUT {key}");
}

#[test]
fn failover_keeps_names_and_index_and_fails_back() {
    let d = cluster_double(3, |_| {});
    let members = urls(&d);
    put_via(&d, 0, "p/web/10.0.0.1:80", "{}");
    let e = engine(
        &members,
        "p",
        r#""cluster":{"failover_after":2,"failback_interval":1},"#,
    );
    // Service names are the first member's, as without `cluster`.
    let name = members[0].clone();
    assert!(wait_until(WAIT, || nodes(&e, &name, "p/web/").as_deref()
        == Some(NODE_A)));
    let s = stats(&e);
    assert_eq!(s["servers"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(s["servers"][0]["url"], name.as_str());
    assert_eq!(s["servers"][0]["active_member"], members[0].as_str());
    assert_eq!(s["servers"][0]["members"].as_array().unwrap().len(), 3);

    set_member(&d, 0, false);
    put_via(&d, 1, "p/web/10.0.0.2:80", "{}");
    // Served all along, under the same name; then the change, via member 1.
    assert!(wait_until(WAIT, || {
        let n = nodes(&e, &name, "p/web/");
        assert!(n.is_some(), "nodes vanished during the failover");
        n.as_deref() == Some(NODE_AB)
    }));
    let s = stats(&e);
    let server = &s["servers"][0];
    assert_eq!(server["active_member"], members[1].as_str(), "{s}");
    assert_eq!(server["failovers"], 1);
    assert_eq!(server["members"][0]["healthy"], false);
    assert_eq!(server["members"][1]["active"], true);
    assert_eq!(s["services"], 1, "no service under another name: {s}");
    let mut logs = Vec::new();
    drain(&e, &mut logs);
    assert_eq!(
        count(&logs, Level::Warn, "keeps failing; now watching"),
        1,
        "{logs:#?}"
    );
    // The index went on with member 1: no restart from 0.
    assert_eq!(
        count(&logs, Level::Warn, "resuming at index"),
        1,
        "{logs:#?}"
    );

    set_member(&d, 0, true);
    assert!(
        wait_until(Duration::from_secs(10), || stats(&e)["servers"][0]
            ["active_member"]
            == members[0].as_str()),
        "{}",
        stats(&e)
    );
    assert_eq!(stats(&e)["servers"][0]["failbacks"], 1);
    d.delete("p/web/10.0.0.2:80", false);
    assert!(wait_until(WAIT, || nodes(&e, &name, "p/web/").as_deref()
        == Some(NODE_A)));
    drain(&e, &mut logs);
    assert_eq!(
        count(&logs, Level::Notice, "is healthy again"),
        1,
        "{logs:#?}"
    );
}

#[test]
fn a_chosen_cluster_name_prefixes_every_service() {
    let d = cluster_double(2, |_| {});
    d.put("p/web/10.0.0.1:80", "{}");
    let e = engine(&urls(&d), "p", r#""cluster":{"name":"consul-prod"},"#);
    assert!(wait_until(WAIT, || nodes(&e, "consul-prod", "p/web/")
        .as_deref()
        == Some(NODE_A)));
    assert!(nodes(&e, &urls(&d)[0], "p/web/").is_none());
}

#[test]
fn without_cluster_each_server_is_its_own_source() {
    let d = cluster_double(2, |_| {});
    d.put("p/web/10.0.0.1:80", "{}");
    let members = urls(&d);
    let e = engine(&members, "p", "");
    for m in &members {
        assert!(wait_until(WAIT, || nodes(&e, m, "p/web/").as_deref() == Some(NODE_A)));
    }
    let s = stats(&e);
    assert_eq!(s["servers"].as_array().unwrap().len(), 2);
    assert!(s["servers"][0].get("members").is_none(), "{s}");
    assert!(s["servers"][0].get("active_member").is_none(), "{s}");
}

#[test]
fn a_stale_member_beyond_max_stale_is_not_used() {
    let d = cluster_double(2, |_| {});
    let members = urls(&d);
    // Member 0 lags 9 s behind its leader (for `?stale` reads).
    d.fault(&format!(
        r#"{{"kind":"follower","last_contact_ms":9000,"known_leader":false,"listener":"{}"}}"#,
        d.addrs[0]
    ));
    d.put("p/web/10.0.0.1:80", "{}");
    let e = engine(
        &members,
        "p",
        r#""cluster":{},"consistency":"stale","max_stale":2,"#,
    );
    let name = members[0].clone();
    assert!(wait_until(WAIT, || nodes(&e, &name, "p/web/").as_deref()
        == Some(NODE_A)));
    let s = stats(&e);
    let server = &s["servers"][0];
    assert!(
        server["errors_by_kind"]["too_stale"].as_u64().unwrap() >= 1,
        "{s}"
    );
    assert!(server["known_leader_false"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(server["active_member"], members[1].as_str(), "{s}");
    let mut logs = Vec::new();
    drain(&e, &mut logs);
    assert!(
        count(
            &logs,
            Level::Warn,
            "above max_stale (2000 ms), was not used"
        ) >= 1,
        "{logs:#?}"
    );
}

#[test]
fn a_stale_answer_within_max_stale_is_used_and_counted() {
    let d = Double::start();
    d.fault(r#"{"kind":"follower","last_contact_ms":300,"known_leader":false}"#);
    d.put("p/web/10.0.0.1:80", "{}");
    let e = engine(&[d.url()], "p", r#""consistency":"stale","max_stale":2,"#);
    assert!(wait_until(WAIT, || nodes(&e, &d.url(), "p/web/")
        .as_deref()
        == Some(NODE_A)));
    let s = stats(&e);
    assert_eq!(s["servers"][0]["errors_by_kind"]["too_stale"], 0, "{s}");
    assert!(wait_until(WAIT, || stats(&e)["servers"][0]
        ["last_contact_ms"]
        == 300));
    assert_eq!(stats(&e)["servers"][0]["no_known_leader"], true);
}

#[test]
fn scope_parameters_reach_consul() {
    let d = Double::start();
    d.put("p/web/10.0.0.1:80", "{}");
    // The double is datacenter dc1: dc1 works, dc2 has no path.
    let e = engine(&[d.url()], "p", r#""dc":"dc1","consistency":"consistent","#);
    assert!(wait_until(WAIT, || nodes(&e, &d.url(), "p/web/")
        .as_deref()
        == Some(NODE_A)));
    for (extra, needle) in [
        (r#""dc":"dc2","#, "No path to datacenter"),
        (
            r#""namespace":"team-a","#,
            "Namespaces are a Consul Enterprise feature",
        ),
        (
            r#""partition":"p1","#,
            "Partitions are a Consul Enterprise feature",
        ),
    ] {
        let e = engine(&[d.url()], "p", extra);
        assert!(
            wait_until(WAIT, || stats(&e)["servers"][0]["last_error"]
                .as_str()
                .is_some_and(|t| t.contains(needle))),
            "{extra}: {}",
            stats(&e)
        );
        assert!(nodes(&e, &d.url(), "p/web/").is_none());
    }
}

fn write_token(path: &std::path::Path, token: &str) {
    // Written beside and renamed into place, as Vault agent does.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_rotated_token_file_is_used_without_losing_data() {
    const OLD: &str = "11111111-old0-4000-8000-000000000001";
    const NEW: &str = "22222222-new0-4000-8000-000000000002";
    let d = Double::start_with(|c| {
        c.token = Some("management-token".into());
        for t in [OLD, NEW] {
            c.read_tokens.push(ckv_consul_double::ReadToken {
                secret: t.into(),
                prefix: b"p/".to_vec(),
            });
        }
    });
    let put = |k: &str| {
        let (s, _) = http(
            d.addr,
            "PUT",
            &format!("/v1/kv/{k}"),
            "{}",
            &[("X-Consul-Token", "management-token")],
        );
        assert_eq!(s, 200);
    };
    put("p/web/10.0.0.1:80");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    write_token(&file, OLD);
    let extra = format!(r#""token_file":"{}","#, file.display());
    let e = engine(&[d.url()], "p", &extra);
    assert!(wait_until(WAIT, || nodes(&e, &d.url(), "p/web/")
        .as_deref()
        == Some(NODE_A)));

    write_token(&file, NEW);
    // The old token is deleted in Consul: only the new one works now.
    d.control(&format!("/_double/acl/revoke?token={OLD}"));
    put("p/web/10.0.0.2:80");
    assert!(wait_until(WAIT, || nodes(&e, &d.url(), "p/web/")
        .as_deref()
        == Some(NODE_AB)));
    // That change may have come through the poll sent with the old token;
    // the next one carries the new token.
    assert!(
        wait_until(WAIT, || stats(&e)["servers"][0]["token_rotations"] == 1),
        "{}",
        stats(&e)
    );
    let mut logs = Vec::new();
    drain(&e, &mut logs);
    assert_eq!(
        count(&logs, Level::Notice, "read a new token"),
        1,
        "{logs:#?}"
    );

    // An empty file keeps the new token (the old one is revoked, so this
    // change arrives only with the new one), with one warning.
    std::fs::write(&file, "").unwrap();
    put("p/web/10.0.0.3:80");
    assert!(wait_until(WAIT, || nodes(&e, &d.url(), "p/web/")
        .is_some_and(|n| n.contains("10.0.0.3"))));
    // A token that Consul does not know: the 403 says a rotation preceded it.
    write_token(&file, "33333333-bad0-4000-8000-000000000003");
    assert!(wait_until(WAIT, || stats(&e)["servers"][0]["last_error"]
        .as_str()
        .is_some_and(|t| t.contains("token read from token_file"))));
    assert!(nodes(&e, &d.url(), "p/web/").is_some_and(|n| n.contains("10.0.0.3")));
    drain(&e, &mut logs);
    assert_eq!(
        count(&logs, Level::Warn, "is empty; keeping the previous token"),
        1
    );
    // No token ever reaches a log line or the stats.
    let all = format!("{logs:?} {}", stats(&e));
    for t in [OLD, NEW, "33333333-bad0"] {
        assert!(!all.contains(t), "{t} leaked");
    }
}

#[test]
fn token_and_token_file_together_are_refused() {
    let e = ckv::config::parse(
        br#"{"servers":["http://127.0.0.1:8500"],"token":"x","token_file":"/run/t"}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("token and token_file are both set"), "{e}");
    // APISIX fills in token = "": that is no token.
    assert!(ckv::config::parse(
        br#"{"servers":["http://127.0.0.1:8500"],"token":"","token_file":"/run/t"}"#
    )
    .is_ok());
}

#[test]
fn an_unusable_token_file_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let json = format!(
        r#"{{"servers":["http://127.0.0.1:8500"],"token_file":"{}","share":{{"enabled":false}}}}"#,
        file.display()
    );
    let config = ckv::config::parse(json.as_bytes()).unwrap();
    let e = ckv::engine::Engine::start(config).err().unwrap();
    assert!(e.contains("token_file") && e.contains("cannot open"), "{e}");
}
