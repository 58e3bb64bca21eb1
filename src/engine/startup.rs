//! What happens once, in `Engine::start`: checks that fail `ckv_init`,
//! joining the group (or falling back to standalone), the first snapshot.

use std::path::Path;

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

/// Joins the configured group. `(None, None)`: not sharing by choice (no
/// `share.group`, or `share.enabled = false`); `(None, Some(why))`: sharing
/// was asked for and is not possible, so this process runs standalone.
pub fn join_group(config: &Config) -> (Option<Group>, Option<String>) {
    let share = &config.share;
    let Some(name) = share.group.as_deref().filter(|_| share.enabled) else {
        return (None, None);
    };
    let limits = Limits {
        snapshot_bytes: snapshot_limit(config),
        stats_bytes: (1 << 20) + 65536 * config.servers.len() as u64,
    };
    Group::remove_dead_groups(&share.dir, &group::dir_name(name, 0));
    match Group::join(&share.dir, name, config_fingerprint(config, name), limits) {
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

/// At start: the leader's current snapshot if there is one, else the dump
/// file when `dump.load_on_init` is set.
pub fn load_initial(shared: &Shared) {
    if let Some(group) = shared.group.load_full() {
        match group.read_latest() {
            Ok(Some((seq, bytes))) => match codec::decode(&bytes, None) {
                Ok(s) => {
                    shared.publish_local(s);
                    return;
                }
                Err(e) => shared.log(Level::Err, format!("ckv: shared snapshot {seq}: {e}")),
            },
            Ok(None) => {}
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
                    s.services.len(),
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
