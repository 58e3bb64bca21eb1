//! Two engines of one group in one process, sharing through a temporary
//! share.dir: election, takeover, every publish reaching the follower, and
//! what happens when sharing is not possible (standalone, never failure).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use ckv::engine::{Engine, Role};
use ckv::log::Level;
use common::*;

fn shared_engine(url: &str, prefix: &str, share: &str) -> Result<Engine, String> {
    let json = format!(
        r#"{{"servers":["{url}"],"prefix":"{prefix}",
            "timeout":{{"connect":200,"read":300,"wait":1}},
            "backoff":{{"initial":20,"max":200}},
            "share":{share}}}"#
    );
    Engine::start(ckv::config::parse(json.as_bytes()).unwrap())
}

fn in_group(url: &str, prefix: &str, dir: &Path, group: &str) -> Engine {
    shared_engine(
        url,
        prefix,
        &format!(r#"{{"dir":"{}","group":"{group}"}}"#, dir.display()),
    )
    .unwrap()
}

fn node(i: u32) -> String {
    format!(r#"{{"host":"10.0.0.{i}","port":80,"weight":1}}"#)
}

fn nodes_1_to(n: u32) -> String {
    format!("[{}]", (1..=n).map(node).collect::<Vec<_>>().join(","))
}

/// Waits for one leader and one follower; returns them in that order.
fn elected<'a>(a: &'a Engine, b: &'a Engine) -> (&'a Engine, &'a Engine) {
    assert!(
        wait_until(WAIT, || {
            let roles = [a.role(), b.role()];
            roles.contains(&Role::Leader) && roles.contains(&Role::Follower)
        }),
        "roles {:?} {:?}",
        a.role(),
        b.role()
    );
    if a.role() == Role::Leader {
        (a, b)
    } else {
        (b, a)
    }
}

#[test]
fn one_leader_one_watch_and_the_follower_sees_every_publish() {
    let d = Double::start();
    let url = d.url();
    let dir = tempfile::tempdir().unwrap();
    d.put("p/web/10.0.0.1:80", "{}");
    let a = in_group(&url, "p", dir.path(), "g1");
    let b = in_group(&url, "p", dir.path(), "g1");
    let (leader, follower) = elected(&a, &b);
    assert_eq!(stats(follower)["leader_pid"], std::process::id());
    // Up to 9: the nodes stay in key order (10.0.0.10 would sort first).
    for i in 2..=9 {
        let before = follower
            .generation()
            .load(std::sync::atomic::Ordering::Acquire);
        d.put(&format!("p/web/10.0.0.{i}:80"), "{}");
        let want = nodes_1_to(i);
        assert!(
            wait_until(WAIT, || nodes(follower, &url, "p/web/").as_deref()
                == Some(&*want)),
            "publish {i} reached the follower"
        );
        // The follower serves exactly the leader's snapshot, and moved for it.
        assert_eq!(follower.snapshot().seq, leader.snapshot().seq);
        // Both serve from the shared file, not from private heap copies.
        assert!(follower.snapshot().is_mapped());
        assert!(
            wait_until(WAIT, || leader.snapshot().is_mapped()),
            "the leader serves publish {i} from its file"
        );
        assert_eq!(nodes(leader, &url, "p/web/").as_deref(), Some(&*want));
        assert_ne!(
            follower
                .generation()
                .load(std::sync::atomic::Ordering::Acquire),
            before
        );
    }
    // One watch for the group: a single blocking query on the prefix.
    let polls = &d.stats()["blocking_per_path"]["/v1/kv/p/"];
    assert!(polls.as_u64().unwrap_or(0) <= 1, "{polls}");
    let fs = stats(follower);
    assert_eq!(fs["role"], "follower");
    assert_eq!(fs["ready"], true);
    assert_eq!(fs["stale"], false);
    assert!(fs.get("share_error").is_none());
    // The effective configuration, with the group that was used.
    assert_eq!(fs["config"]["share"]["group"], "g1");
    assert_eq!(fs["config"]["prefix"], "p");
}

#[test]
fn a_follower_takes_over_when_the_leader_stops() {
    let d = Double::start();
    let url = d.url();
    let dir = tempfile::tempdir().unwrap();
    d.put("p/web/10.0.0.1:80", "{}");
    let a = in_group(&url, "p", dir.path(), "g2");
    let b = in_group(&url, "p", dir.path(), "g2");
    let (leader, follower) = elected(&a, &b);
    assert!(wait_until(WAIT, || nodes(follower, &url, "p/web/").is_some()));
    let stopped = Instant::now();
    assert!(leader.shutdown(Duration::from_secs(2)));
    assert!(
        wait_until(Duration::from_secs(2), || follower.role() == Role::Leader),
        "no takeover"
    );
    let took = stopped.elapsed();
    assert!(took < Duration::from_secs(1), "takeover took {took:?}");
    // The new leader watches: a change made now reaches it.
    d.put("p/web/10.0.0.2:80", "{}");
    let want = nodes_1_to(2);
    assert!(wait_until(WAIT, || nodes(follower, &url, "p/web/")
        .as_deref()
        == Some(&*want)));
    let mut logs = Vec::new();
    drain(follower, &mut logs);
    assert_eq!(count(&logs, Level::Notice, "is now the Consul watcher"), 1);
}

#[test]
fn no_group_means_standalone_and_no_directory() {
    let d = Double::start();
    let dir = tempfile::tempdir().unwrap();
    let e = shared_engine(
        &d.url(),
        "p",
        &format!(r#"{{"dir":"{}"}}"#, dir.path().display()),
    )
    .unwrap();
    assert_eq!(e.role(), Role::Standalone);
    let s = stats(&e);
    assert_eq!(s["role"], "standalone");
    assert!(s.get("share_error").is_none(), "{s}");
    // No file to map: the snapshot stays in the heap.
    assert!(!e.snapshot().is_mapped());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// D18: a share.dir that cannot be used means standalone with one warning,
/// never a failed start.
#[test]
fn an_unusable_share_dir_means_standalone_with_a_warning() {
    let d = Double::start();
    let url = d.url();
    d.put("p/web/10.0.0.1:80", "{}");
    let missing = tempfile::tempdir().unwrap().path().join("gone");
    let e = shared_engine(
        &url,
        "p",
        &format!(r#"{{"dir":"{}","group":"g3"}}"#, missing.display()),
    )
    .expect("a missing share.dir must not fail the start");
    assert_eq!(e.role(), Role::Standalone);
    let s = stats(&e);
    assert_eq!(s["role"], "standalone");
    let why = s["share_error"].as_str().unwrap();
    assert!(why.contains(&missing.display().to_string()), "{why}");
    // It watches Consul itself.
    assert!(wait_until(WAIT, || nodes(&e, &url, "p/web/").is_some()));
    let mut logs = Vec::new();
    drain(&e, &mut logs);
    assert_eq!(
        count(&logs, Level::Warn, "not sharing a watch"),
        1,
        "{logs:#?}"
    );
}

/// D1: a group directory someone else could write (here mode 0777) is never
/// trusted: its snapshot is not served, Consul is watched instead.
#[test]
fn a_directory_open_to_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let d = Double::start();
    let url = d.url();
    d.put("p/web/10.0.0.1:80", "{}");
    let dir = tempfile::tempdir().unwrap();
    let planted = dir.path().join(format!("ckv.{}.g4", ckv::fsutil::euid()));
    std::fs::create_dir(&planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = in_group(&url, "p", dir.path(), "g4");
    assert_eq!(e.role(), Role::Standalone);
    let why = stats(&e)["share_error"].as_str().unwrap().to_owned();
    assert!(why.contains("only 0700 is trusted"), "{why}");
    assert!(wait_until(WAIT, || nodes(&e, &url, "p/web/").as_deref()
        == Some(&*nodes_1_to(1))));
    // Nothing was created in the planted directory.
    assert_eq!(std::fs::read_dir(&planted).unwrap().count(), 0);
}

/// The same group with another configuration never shares a watch.
#[test]
fn another_configuration_in_the_same_group_does_not_share() {
    let d = Double::start();
    let url = d.url();
    let dir = tempfile::tempdir().unwrap();
    let a = in_group(&url, "p", dir.path(), "g5");
    let b = in_group(&url, "q", dir.path(), "g5");
    assert!(wait_until(WAIT, || a.role() == Role::Leader
        && b.role() == Role::Leader));
}

/// D20 and `ckv_init` checks: a dump directory that does not exist fails the
/// start with a message naming it.
#[test]
fn a_missing_dump_directory_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope/dump.json");
    let json = format!(
        r#"{{"servers":["http://127.0.0.1:1"],"share":{{"enabled":false}},
            "dump":{{"path":"{}"}}}}"#,
        path.display()
    );
    let err = Engine::start(ckv::config::parse(json.as_bytes()).unwrap()).unwrap_err();
    assert!(err.contains("dump.path") && err.contains("nope"), "{err}");
}

/// A CA file that does not exist fails the start (the client is built in
/// `Engine::start`), instead of a leader that never watches.
#[test]
fn a_missing_ca_file_fails_the_start() {
    let json = r#"{"servers":["https://127.0.0.1:1"],"share":{"enabled":false},
                   "tls":{"ca_file":"/nonexistent/ca.pem"}}"#;
    let err = Engine::start(ckv::config::parse(json.as_bytes()).unwrap()).unwrap_err();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

/// Metrics: the follower renders the leader's figures (only its own
/// propagation histogram differs), and the receive time travelled with the
/// snapshot, so the follower measured its own propagation.
#[test]
fn the_follower_renders_the_leaders_metrics() {
    let d = Double::start();
    let url = d.url();
    let dir = tempfile::tempdir().unwrap();
    d.put("m/web/10.0.0.1:80", "{}");
    let a = in_group(&url, "m", dir.path(), "gm");
    let b = in_group(&url, "m", dir.path(), "gm");
    let (leader, follower) = elected(&a, &b);
    d.put("m/web/10.0.0.2:80", "{}");
    assert!(wait_until(WAIT, || nodes(follower, &url, "m/web/")
        .as_deref()
        .is_some_and(|n| n.contains("10.0.0.2"))));
    assert_ne!(follower.snapshot().received_us, 0);
    assert_eq!(
        follower.snapshot().received_us,
        leader.snapshot().received_us
    );
    let shared_part = |e: &Engine| -> String {
        e.metrics_text()
            .lines()
            .filter(|l| !l.starts_with("ckv_propagation_seconds"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // The leader's stats file is rewritten within 250 ms of a change.
    assert!(
        wait_until(WAIT, || shared_part(leader) == shared_part(follower)),
        "leader:\n{}\nfollower:\n{}",
        shared_part(leader),
        shared_part(follower)
    );
    let text = follower.metrics_text();
    assert!(
        text.contains(&format!("ckv_nodes{{server=\"{url}\"}} 2\n")),
        "{text}"
    );
    // At least the response that brought the nodes (the first read may
    // already have had both).
    assert!(!text.contains("ckv_apply_seconds_count 0\n"), "{text}");
    let own = format!(
        "ckv_propagation_seconds_count{{pid=\"{}\"}} ",
        std::process::id()
    );
    let count: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&own))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(count >= 1, "{text}");
}
