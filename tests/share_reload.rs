//! A HUP reload in miniature: the new generation's engines name a new group
//! and the old one as `share.previous_group`. Until the new group has a
//! snapshot they serve the old group's latest one, but only from a directory
//! that passes the trust checks and holds the same configuration, and they
//! never change that directory.

mod common;

use std::path::Path;

use ckv::engine::{Engine, Role};
use ckv::log::Level;
use common::*;

const ONE_NODE: &str = r#"[{"host":"10.0.0.1","port":80,"weight":1}]"#;

fn start(url: &str, prefix: &str, dir: &Path, share: &str) -> Engine {
    let json = format!(
        r#"{{"servers":["{url}"],"prefix":"{prefix}",
            "timeout":{{"connect":200,"read":300,"wait":1}},
            "backoff":{{"initial":20,"max":200}},
            "share":{{"dir":"{}",{share}}}}}"#,
        dir.display()
    );
    Engine::start(ckv::config::parse(json.as_bytes()).unwrap()).unwrap()
}

/// The old generation: one engine of group `old` serving 10.0.0.1 under `p`.
/// Returns it with the double (still running) and the double's URL.
fn old_generation(dir: &Path, old: &str) -> (Engine, Double, String) {
    let d = Double::start();
    let url = d.url();
    d.put("p/web/10.0.0.1:80", "{}");
    let e = start(&url, "p", dir, &format!(r#""group":"{old}""#));
    assert!(wait_until(WAIT, || e.role() == Role::Leader
        && nodes(&e, &url, "p/web/").as_deref() == Some(ONE_NODE)));
    // Served locally first, then written to the group's directory.
    let published = group_dir(dir, old);
    assert!(wait_until(WAIT, || std::fs::read_dir(&published)
        .unwrap()
        .any(|f| f
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("snap."))));
    (e, d, url)
}

fn group_dir(dir: &Path, group: &str) -> std::path::PathBuf {
    dir.join(format!("ckv.{}.{group}", ckv::fsutil::euid()))
}

/// Every entry of a directory with its size and modification time, but
/// for `stats.json` (and its temp files), which the old leader itself keeps
/// rewriting.
fn listing(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("stats.json")
        })
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                m.len(),
                m.modified().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn logs_of(e: &Engine) -> Vec<ckv::log::Record> {
    let mut logs = Vec::new();
    drain(e, &mut logs);
    logs
}

#[test]
fn the_new_group_serves_the_previous_snapshot_while_consul_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (old, d, url) = old_generation(dir.path(), "r1old");
    d.stop();
    let old_dir = group_dir(dir.path(), "r1old");
    let before = listing(&old_dir);
    let share = r#""group":"r1new","previous_group":"r1old""#;
    let a = start(&url, "p", dir.path(), share);
    let b = start(&url, "p", dir.path(), share);
    // From the start, without Consul: both new engines serve the old nodes
    // (b read them from the old group itself, or from its new group if a
    // already led and passed them on).
    for e in [&a, &b] {
        assert_eq!(nodes(e, &url, "p/web/").as_deref(), Some(ONE_NODE));
        let s = stats(e);
        assert_eq!(s["source"], "previous", "{s}");
        assert_eq!(s["ready"], true, "the previous snapshot was synced: {s}");
    }
    let logs = logs_of(&a);
    assert_eq!(
        count(&logs, Level::Notice, "of the previous group in"),
        1,
        "{logs:#?}"
    );
    // They form a group of their own, apart from the old one.
    assert!(wait_until(WAIT, || [a.role(), b.role()].contains(&Role::Leader)));
    assert!(group_dir(dir.path(), "r1new").is_dir());
    assert_eq!(old.role(), Role::Leader, "the old leader keeps its group");
    // Nothing in the old directory was added, removed or rewritten.
    assert_eq!(listing(&old_dir), before);
    // The old generation leaves and removes its directory; the new one
    // keeps serving.
    drop(old);
    assert!(!old_dir.exists());
    for e in [&a, &b] {
        assert_eq!(nodes(e, &url, "p/web/").as_deref(), Some(ONE_NODE));
    }
}

#[test]
fn the_new_leaders_first_answer_replaces_the_previous_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (old, d, url) = old_generation(dir.path(), "r2old");
    let inherited_seq = stats(&old)["generation"].as_u64().unwrap();
    let e = start(
        &url,
        "p",
        dir.path(),
        r#""group":"r2new","previous_group":"r2old""#,
    );
    assert_eq!(nodes(&e, &url, "p/web/").as_deref(), Some(ONE_NODE));
    d.put("p/web/10.0.0.2:80", "{}");
    let two =
        r#"[{"host":"10.0.0.1","port":80,"weight":1},{"host":"10.0.0.2","port":80,"weight":1}]"#;
    assert!(wait_until(WAIT, || e.role() == Role::Leader
        && nodes(&e, &url, "p/web/").as_deref() == Some(two)));
    let s = stats(&e);
    assert_eq!(s["source"], "consul", "{s}");
    assert_eq!(s["role"], "leader", "{s}");
    assert!(
        s["generation"].as_u64().unwrap() > inherited_seq,
        "seeded from the previous snapshot, the new leader counts on: {s}"
    );
}

#[test]
fn a_previous_group_with_another_configuration_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let (_old, d, url) = old_generation(dir.path(), "r3old");
    d.stop();
    // Another prefix: another configuration.
    let e = start(
        &url,
        "q",
        dir.path(),
        r#""group":"r3new","previous_group":"r3old""#,
    );
    let s = stats(&e);
    assert_eq!(s["source"], "none", "{s}");
    assert_eq!(s["services"], 0, "{s}");
    let logs = logs_of(&e);
    assert_eq!(
        count(
            &logs,
            Level::Info,
            "no snapshot of the previous group r3old"
        ),
        1,
        "{logs:#?}"
    );
    assert_eq!(count(&logs, Level::Warn, "previous"), 0, "{logs:#?}");
}

#[test]
fn a_missing_previous_group_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let e = start(
        "http://127.0.0.1:9",
        "p",
        dir.path(),
        r#""group":"r4new","previous_group":"r4gone""#,
    );
    assert_ne!(e.role(), Role::Standalone);
    assert_eq!(stats(&e)["source"], "none");
    let logs = logs_of(&e);
    assert_eq!(
        count(
            &logs,
            Level::Info,
            "no snapshot of the previous group r4gone"
        ),
        1,
        "{logs:#?}"
    );
}

/// A previous directory that is open to others, or a link to one that is
/// not, is refused with a warning naming it, and nothing of it is served.
#[test]
fn an_untrusted_previous_directory_is_ignored_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (old, d, url) = old_generation(dir.path(), "r5old");
    d.stop();
    let old_dir = group_dir(dir.path(), "r5old");
    let mode = |m| std::fs::set_permissions(&old_dir, std::fs::Permissions::from_mode(m)).unwrap();
    mode(0o755);
    let e = start(
        &url,
        "p",
        dir.path(),
        r#""group":"r5new","previous_group":"r5old""#,
    );
    assert_eq!(stats(&e)["source"], "none");
    assert_eq!(e.snapshot().len(), 0);
    let logs = logs_of(&e);
    assert_eq!(
        count(&logs, Level::Warn, "only 0700 is trusted"),
        1,
        "{logs:#?}"
    );
    assert!(logs
        .iter()
        .any(|r| r.message.contains(&*old_dir.to_string_lossy())));
    mode(0o700);

    // A link named like the previous group, to the old group's (trusted)
    // directory: not followed.
    let link = group_dir(dir.path(), "r5link");
    std::os::unix::fs::symlink(&old_dir, &link).unwrap();
    let f = start(
        &url,
        "p",
        dir.path(),
        r#""group":"r5new2","previous_group":"r5link""#,
    );
    assert_eq!(stats(&f)["source"], "none");
    let logs = logs_of(&f);
    assert_eq!(
        count(&logs, Level::Warn, "is not a directory"),
        1,
        "{logs:#?}"
    );
    std::fs::remove_file(&link).unwrap();
    drop(old);
}

/// A FIFO or an oversized file where the newest snapshot should be: the
/// read neither blocks nor allocates, the start goes on without it.
#[test]
fn a_fifo_or_a_huge_file_in_the_previous_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (old, d, url) = old_generation(dir.path(), "r6old");
    d.stop();
    let old_dir = group_dir(dir.path(), "r6old");
    let fifo = old_dir.join("snap.999999");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let e = start(
        &url,
        "p",
        dir.path(),
        r#""group":"r6new","previous_group":"r6old""#,
    );
    assert_eq!(stats(&e)["source"], "none");
    let logs = logs_of(&e);
    assert_eq!(
        count(&logs, Level::Warn, "not a regular file"),
        1,
        "{logs:#?}"
    );
    std::fs::remove_file(&fifo).unwrap();

    // Larger than this configuration's snapshot limit (sparse: no memory).
    let huge = std::fs::File::create(old_dir.join("snap.999998")).unwrap();
    huge.set_len(1 << 32).unwrap();
    drop(huge);
    let f = start(
        &url,
        "p",
        dir.path(),
        r#""group":"r6new2","previous_group":"r6old""#,
    );
    assert_eq!(stats(&f)["source"], "none");
    let logs = logs_of(&f);
    assert_eq!(
        count(&logs, Level::Warn, "more than the limit"),
        1,
        "{logs:#?}"
    );
    drop(old);
}

/// Reload after reload with Consul down: each new leader passes the
/// inherited snapshot into its own group, so a worker that joins later, and
/// the generation after, still have it once the first generation is gone.
#[test]
fn the_inherited_snapshot_is_passed_on_through_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let (first, d, url) = old_generation(dir.path(), "r7g1");
    d.stop();
    let second = start(
        &url,
        "p",
        dir.path(),
        r#""group":"r7g2","previous_group":"r7g1""#,
    );
    assert!(wait_until(WAIT, || second.role() == Role::Leader));
    drop(first);
    assert!(!group_dir(dir.path(), "r7g1").exists());
    // Joins the second group after the first one is gone.
    let late = start(
        &url,
        "p",
        dir.path(),
        r#""group":"r7g2","previous_group":"r7g1""#,
    );
    assert_eq!(late.role(), Role::Follower);
    assert_eq!(nodes(&late, &url, "p/web/").as_deref(), Some(ONE_NODE));
    assert!(
        wait_until(WAIT, || stats(&late)["source"] == "previous"),
        "{}",
        stats(&late)
    );
    let third = start(
        &url,
        "p",
        dir.path(),
        r#""group":"r7g3","previous_group":"r7g2""#,
    );
    assert_eq!(nodes(&third, &url, "p/web/").as_deref(), Some(ONE_NODE));
    assert_eq!(stats(&third)["source"], "previous");
}

/// A reload onto this release while the previous generation is an older
/// release: its file in an older layout (`CKVSNAP1`, `CKVSNAP2`) is read
/// (decoded into the heap) and served.
#[test]
fn a_previous_release_snapshot_file_is_inherited() {
    use ckv::shared::{codec_v1, codec_v2};
    use ckv::snapshot::{Meta, Name, ServiceRef};
    type Encode = fn(&Meta, &ServiceRef<'_>) -> Vec<u8>;
    let layouts: [(&str, Encode); 2] = [
        ("r8", |m, s| codec_v1::encode(m, &[*s], true)),
        ("r9", |m, s| codec_v2::encode(m, &[*s])),
    ];
    for (group, encode) in layouts {
        let (old_group, new_group) = (format!("{group}old"), format!("{group}new"));
        let dir = tempfile::tempdir().unwrap();
        let (old, d, url) = old_generation(dir.path(), &old_group);
        d.stop();
        let name = format!("{url}/v1/kv/p/web/");
        let two = r#"[{"host":"10.0.0.1","port":80,"weight":1},{"host":"10.0.0.2","port":80,"weight":1}]"#;
        let web = ServiceRef {
            name: Name::whole(&name),
            generation: 500,
            server: 0,
            node_count: 2,
            nodes_json: two,
        };
        let meta = Meta {
            seq: 500,
            synced: true,
            ..Meta::default()
        };
        // Newer than anything the old leader wrote, in the old layout.
        let file = group_dir(dir.path(), &old_group).join("snap.500");
        std::fs::write(&file, encode(&meta, &web)).unwrap();
        let e = start(
            &url,
            "p",
            dir.path(),
            &format!(r#""group":"{new_group}","previous_group":"{old_group}""#),
        );
        assert_eq!(nodes(&e, &url, "p/web/").as_deref(), Some(two), "{group}");
        let s = stats(&e);
        assert_eq!(s["source"], "previous", "{group}: {s}");
        assert_eq!(s["generation"], 500, "{group}: {s}");
        // Decoded into the heap; once this leader has passed it on into its
        // own group (in the current format) it may already serve it from
        // that file.
        if e.snapshot().is_mapped() {
            let mine = std::fs::read(group_dir(dir.path(), &new_group).join("snap.500")).unwrap();
            assert!(
                mine.starts_with(b"CKVSNAP3"),
                "{group}: re-published in the current format"
            );
        }
        drop(e);
        drop(old);
    }
}
