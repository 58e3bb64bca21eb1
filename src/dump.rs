//! The dump file: the last good services, in APISIX's format
//! `{"services":{name:[nodes]},"last_update":unix_s,"expire":s}`, written
//! atomically (temp file, fsync, rename; mode 0600) and loaded at start.
//! Loading reads at most a size derived from the configuration and only a
//! regular file.

use std::fs;
use std::path::Path;

use crate::snapshot::{Meta, Name, ServiceRef, Snapshot};

/// Renders the dump for `snapshot`.
pub fn render(snapshot: &Snapshot, last_update: u64, expire: u64) -> String {
    let mut out = String::with_capacity(64);
    out.push_str("{\"services\":");
    out.push_str(&snapshot.all_nodes_json());
    out.push_str(&format!(
        ",\"last_update\":{last_update},\"expire\":{expire}}}"
    ));
    out
}

/// Writes the dump atomically and durably, under the temp-file rules of
/// [`crate::fsutil`] (random name, `O_EXCL`, no link followed), and removes
/// temp files an earlier writer left when it was killed mid-write.
pub fn write(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let result = crate::fsutil::write_atomic(path, contents);
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(fd) = crate::fsutil::open_dir(dir) {
            crate::fsutil::remove_temp_files(&fd, &[name]);
        }
    }
    result
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    Fresh(Snapshot),
    /// `last_update + expire` is in the past.
    Expired {
        last_update: u64,
        expire: u64,
    },
    Missing,
}

/// Reads and checks a dump. `now` is unix seconds; `expire` is the
/// configured `dump.expire` (as APISIX, the configuration decides, not the
/// file; 0 never expires). Nodes that are not objects
/// with a string `host` and an integer `port` make their service invalid; such
/// services are left out and named in the returned warnings.
pub fn load(
    path: &Path,
    now: u64,
    expire: u64,
    max_bytes: u64,
) -> Result<(Loaded, Vec<String>), String> {
    let bytes = match read_limited(path, max_bytes) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Loaded::Missing, vec![])),
        Err(e) => return Err(format!("cannot read dump {}: {e}", path.display())),
    };
    parse(&bytes, now, expire).map_err(|e| format!("dump {} is unusable: {e}", path.display()))
}

/// Reads a regular file of at most `max_bytes` (a FIFO or device in its place
/// neither blocks nor streams forever).
fn read_limited(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > max_bytes {
        return Err(std::io::Error::other(format!(
            "{} bytes, more than the limit of {max_bytes}",
            meta.len()
        )));
    }
    let mut out = Vec::new();
    f.take(max_bytes).read_to_end(&mut out)?;
    Ok(out)
}

pub fn parse(bytes: &[u8], now: u64, expire: u64) -> Result<(Loaded, Vec<String>), String> {
    use serde_json::Value;
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    let services = doc
        .get("services")
        .and_then(Value::as_object)
        .ok_or("no \"services\" object")?;
    let last_update = doc
        .get("last_update")
        .and_then(Value::as_u64)
        .ok_or("no integer \"last_update\"")?;
    if expire != 0 && last_update.saturating_add(expire) < now {
        return Ok((
            Loaded::Expired {
                last_update,
                expire,
            },
            vec![],
        ));
    }
    let mut warnings = Vec::new();
    let mut kept = Vec::with_capacity(services.len());
    for (name, nodes) in services {
        let Some(list) = nodes.as_array() else {
            warnings.push(format!(
                "service {name:?}: nodes are not an array, left out"
            ));
            continue;
        };
        let valid = list.iter().all(|n| {
            n.get("host").is_some_and(Value::is_string)
                && n.get("port")
                    .and_then(Value::as_u64)
                    .is_some_and(|p| (1..=65535).contains(&p))
        });
        if !valid {
            warnings.push(format!(
                "service {name:?}: a node lacks host or port, left out"
            ));
            continue;
        }
        let node_count = u32::try_from(list.len()).unwrap_or(u32::MAX);
        kept.push((name.as_str(), nodes.to_string(), node_count));
    }
    let meta = Meta {
        seq: 1,
        from_dump: true,
        synced: false,
        received_us: 0,
    };
    let services = kept.iter().map(|(name, json, node_count)| ServiceRef {
        name: Name::whole(name),
        generation: 1,
        server: u16::MAX,
        node_count: *node_count,
        nodes_json: json,
    });
    Ok((Loaded::Fresh(Snapshot::new(meta, services)), warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn snapshot() -> Snapshot {
        let web = ServiceRef {
            name: Name::whole("http://127.0.0.1:8500/v1/kv/upstreams/web/"),
            generation: 3,
            server: 0,
            node_count: 1,
            nodes_json: r#"[{"host":"10.0.0.1","port":80,"weight":1}]"#,
        };
        Snapshot::new(Meta::default(), [web])
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.json");
        write(&path, render(&snapshot(), 1000, 60).as_bytes()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (loaded, warnings) = load(&path, 1030, 60, 1 << 20).unwrap();
        assert!(warnings.is_empty());
        let Loaded::Fresh(s) = loaded else {
            panic!("{loaded:?}")
        };
        assert!(s.from_dump);
        let web = s.get("http://127.0.0.1:8500/v1/kv/upstreams/web/").unwrap();
        assert_eq!(
            web.nodes_json,
            r#"[{"host":"10.0.0.1","port":80,"weight":1}]"#
        );
        // No temp file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn expiry_follows_the_file() {
        // The configured expire decides, whatever the file says.
        let text = render(&snapshot(), 1000, 3600);
        assert!(matches!(
            parse(text.as_bytes(), 1060, 60).unwrap().0,
            Loaded::Fresh(_)
        ));
        assert!(matches!(
            parse(text.as_bytes(), 1061, 60).unwrap().0,
            Loaded::Expired {
                last_update: 1000,
                expire: 60
            }
        ));
        assert!(matches!(
            parse(text.as_bytes(), u64::MAX, 0).unwrap().0,
            Loaded::Fresh(_)
        ));
    }

    #[test]
    fn missing_and_corrupt_dumps() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load(&dir.path().join("nope"), 0, 0, 1 << 20).unwrap().0,
            Loaded::Missing
        ));
        for bad in [&b"{"[..], b"[]", b"{\"services\":[]}", b"{\"services\":{}}"] {
            assert!(
                parse(bad, 0, 0).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let (loaded, warnings) = parse(
            br#"{"services":{"a":[{"host":"h","port":1}],"b":[{"host":1}],"c":{}},"last_update":5}"#,
            0,
            0,
        )
        .unwrap();
        let Loaded::Fresh(s) = loaded else { panic!() };
        assert_eq!(s.len(), 1);
        assert_eq!(warnings.len(), 2);
    }

    #[test]
    fn a_failed_write_keeps_the_old_dump() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.json");
        write(&path, b"old").unwrap();
        // A directory where the dump would go makes the rename fail.
        let blocked = dir.path().join("blocked");
        fs::create_dir_all(blocked.join("dump.json/x")).unwrap();
        assert!(write(&blocked.join("dump.json"), b"new").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(
            fs::read_dir(&blocked).unwrap().count(),
            1,
            "temp file removed"
        );
    }

    #[test]
    fn planted_links_are_never_written_through() {
        // D20: a writable dump directory with the old predictable temp name
        // pointing at a victim file.
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("dump.json");
        std::os::unix::fs::symlink(
            &victim,
            dir.path()
                .join(format!(".dump.json.tmp.{}", std::process::id())),
        )
        .unwrap();
        write(&path, b"{}").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read(&path).unwrap(), b"{}");
        // Leftover temp names of this dump are cleaned up (links included).
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn oversized_or_special_dumps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.json");
        write(&path, render(&snapshot(), 1000, 0).as_bytes()).unwrap();
        let err = load(&path, 0, 0, 10).unwrap_err();
        assert!(err.contains("more than the limit"), "{err}");
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::RUSR).unwrap();
        let err = load(&fifo, 0, 0, 1 << 20).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
