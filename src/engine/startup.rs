//! What happens once, in `Engine::start`: checks that fail `ckv_init`,
//! joining the group (or falling back to standalone), the first snapshot.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::state::Shared;
use crate::config::Config;
use crate::dump;
use crate::log::Level;
use crate::shared::{codec, group, Group, Limits};

/// The dump's directory must exist and be writable by this process.
pub fn check_dump_dir(config: &Config) -> Result<(), String> {
    let Some(d) = &config.dump else {
        return Ok(());
    };
    let dir = match d.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    crate::fsutil::check_writable_dir(dir).map_err(|e| {
        format!(
            "dump.path: cannot write into directory {}: {e}",
            dir.display()
        )
    })
}

/// The largest snapshot or dump a process reads: what the servers can send
/// (`max_response_bytes` each), with room for the rendering.
pub fn snapshot_limit(config: &Config) -> u64 {
    let servers = config.servers.len().max(1) as u64;
    (config.max_response_bytes as u64)
        .saturating_mul(2)
        .saturating_mul(servers)
        .saturating_add(1 << 20)
}

/// Decides which processes of one group may share a watch: a fingerprint of
/// the configuration keyed by the group (for the Lua binding, a secret
/// nonce), so the token enters only through a keyed hash. It is stored,
/// salted once more, inside the private directory, never in its name.
pub fn config_fingerprint(config: &Config, group: &str) -> u64 {
    let full = config.share_fingerprint(group.as_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&full[..8]);
    u64::from_le_bytes(head)
}

fn read_limits(config: &Config) -> Limits {
    Limits {
        snapshot_bytes: snapshot_limit(config),
        stats_bytes: (1 << 20) + 65536 * config.servers.len() as u64,
    }
}

/// Joins the configured group. `(None, None)`: not sharing by choice (no
/// `share.group`, or `share.enabled = false`); `(None, Some(why))`: sharing
/// was asked for and is not possible, so this process runs standalone.
pub fn join_group(config: &Config) -> (Option<Group>, Option<String>) {
    let share = &config.share;
    let Some(name) = share.group.as_deref().filter(|_| share.enabled) else {
        return (None, None);
    };
    // The previous generation's directory is its own to remove.
    let keep: Vec<&str> = std::iter::once(name)
        .chain(share.previous_group.as_deref())
        .collect();
    Group::remove_dead_groups(&share.dir, &keep);
    match Group::join(
        &share.dir,
        name,
        config_fingerprint(config, name),
        read_limits(config),
    ) {
        Ok(g) => (Some(g), None),
        Err(e) => (
            None,
            Some(format!(
                "share.dir {} (group {name}): {e}",
                share.dir.display()
            )),
        ),
    }
}

/// At start: the leader's current snapshot if there is one, else the
/// previous group's (after a reload), else the dump file when
/// `dump.load_on_init` is set.
pub fn load_initial(shared: &Shared) {
    if let Some(group) = shared.group.load_full() {
        match group.read_latest() {
            Ok(Some((seq, map))) => match codec::open(map) {
                Ok(s) => {
                    shared.publish_local(s);
                    return;
                }
                Err(e) => shared.log(Level::Err, format!("ckv: shared snapshot {seq}: {e}")),
            },
            Ok(None) => {
                if inherit_previous(shared) {
                    return;
                }
            }
            Err(e) => shared.log(
                Level::Err,
                format!(
                    "ckv: cannot read shared snapshot in {}: {e}",
                    group.dir().display()
                ),
            ),
        }
    }
    let Some(d) = &shared.config.dump else { return };
    if !d.load_on_init {
        return;
    }
    let now = crate::stats::now_ms() / 1000;
    match dump::load(&d.path, now, d.expire, snapshot_limit(&shared.config)) {
        Ok((dump::Loaded::Fresh(s), warnings)) => {
            for w in warnings {
                shared.log(Level::Warn, format!("ckv: dump {}: {w}", d.path.display()));
            }
            shared.log(
                Level::Notice,
                format!(
                    "ckv: loaded {} services ({} nodes) from dump {}",
                    s.len(),
                    s.node_count(),
                    d.path.display()
                ),
            );
            shared.publish_local(s);
        }
        Ok((
            dump::Loaded::Expired {
                last_update,
                expire,
            },
            _,
        )) => shared.log(
            Level::Info,
            format!(
                "ckv: dump {} expired (written at {last_update}, expire {expire}s), ignored",
                d.path.display()
            ),
        ),
        Ok((dump::Loaded::Missing, _)) => shared.log(
            Level::Info,
            format!("ckv: no dump at {} yet", d.path.display()),
        ),
        Err(e) => shared.log(Level::Err, format!("ckv: {e}; ignored")),
    }
}

/// After a reload, while the new group has nothing yet: serves the newest
/// snapshot of the group this instance had before (`share.previous_group`),
/// so the new workers answer from their first request and keep answering
/// if Consul is down. Only a previous directory that passes the same trust
/// checks as our own, with the same configuration, is used: the
/// fingerprint there is keyed by the previous group, so ours is computed
/// under that key to compare. Returns true when a snapshot was taken.
fn inherit_previous(shared: &Shared) -> bool {
    let config = &shared.config;
    let Some(previous) = config.share.previous_group.as_deref() else {
        return false;
    };
    if config.share.group.as_deref() == Some(previous) {
        return false;
    }
    let fingerprint = config_fingerprint(config, previous);
    match group::read_previous(
        &config.share.dir,
        previous,
        fingerprint,
        read_limits(config),
    ) {
        Ok(Some(found)) => match codec::open(found.bytes) {
            Ok(s) => {
                shared.log(
                    Level::Notice,
                    format!(
                        "ckv: serving snapshot {} ({} services, {} nodes) of the previous group in {} until this group's first Consul answer",
                        found.seq,
                        s.len(),
                        s.node_count(),
                        found.path.display()
                    ),
                );
                let seq = s.seq;
                shared.publish_local(s);
                shared.inherited_seq.store(seq, Ordering::Release);
                true
            }
            Err(e) => {
                shared.log(
                    Level::Warn,
                    format!(
                        "ckv: previous group's snapshot {} in {} is unusable: {e}; ignored",
                        found.seq,
                        found.path.display()
                    ),
                );
                false
            }
        },
        Ok(None) => {
            shared.log(
                Level::Info,
                format!(
                    "ckv: no snapshot of the previous group {previous} with this configuration in {}",
                    config.share.dir.display()
                ),
            );
            false
        }
        Err(e) => {
            shared.log(
                Level::Warn,
                format!("ckv: not using the previous group's snapshot: {e}"),
            );
            false
        }
    }
}
