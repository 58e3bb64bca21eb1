//! The dump file: the last good services, in APISIX's format
//! `{"services":{name:[nodes]},"last_update":unix_s,"expire":s}`, written
//! atomically (temp file, fsync, rename; mode 0600) and loaded at start.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use crate::snapshot::{Service, Snapshot};

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

/// Writes `contents` to `path` so that a crash at any point leaves either the
/// old file or the new one, never a mix.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_replacing(path, contents, true)
}

/// Like [`write_atomic`] without fsync: for files on tmpfs that need to be
/// whole when seen, not durable.
pub fn write_atomic_fast(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_replacing(path, contents, false)
}

fn write_replacing(path: &Path, contents: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("dump path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
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
pub fn load(path: &Path, now: u64, expire: u64) -> Result<(Loaded, Vec<String>), String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Loaded::Missing, vec![])),
        Err(e) => return Err(format!("cannot read dump {}: {e}", path.display())),
    };
    parse(&bytes, now, expire).map_err(|e| format!("dump {} is unusable: {e}", path.display()))
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
    let mut map = HashMap::with_capacity(services.len());
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
        map.insert(
            Arc::<str>::from(name.as_str()),
            Service {
                generation: 1,
                server: u16::MAX,
                node_count: u32::try_from(list.len()).unwrap_or(u32::MAX),
                nodes_json: Arc::from(nodes.to_string()),
            },
        );
    }
    Ok((
        Loaded::Fresh(Snapshot {
            seq: 1,
            services: map,
            from_dump: true,
            synced: false,
        }),
        warnings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        s.services.insert(
            "http://127.0.0.1:8500/v1/kv/upstreams/web/".into(),
            Service {
                generation: 3,
                server: 0,
                node_count: 1,
                nodes_json: r#"[{"host":"10.0.0.1","port":80,"weight":1}]"#.into(),
            },
        );
        s
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.json");
        write_atomic(&path, render(&snapshot(), 1000, 60).as_bytes()).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (loaded, warnings) = load(&path, 1030, 60).unwrap();
        assert!(warnings.is_empty());
        let Loaded::Fresh(s) = loaded else {
            panic!("{loaded:?}")
        };
        assert!(s.from_dump);
        let web = s.get("http://127.0.0.1:8500/v1/kv/upstreams/web/").unwrap();
        assert_eq!(
            &*web.nodes_json,
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
            load(&dir.path().join("nope"), 0, 0).unwrap().0,
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
        assert_eq!(s.services.len(), 1);
        assert_eq!(warnings.len(), 2);
    }

    #[test]
    fn a_failed_write_keeps_the_old_dump() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.json");
        write_atomic(&path, b"old").unwrap();
        // A directory where the temp file would go makes the write fail.
        let blocker = dir
            .path()
            .join(format!(".dump.json.tmp.{}", std::process::id()));
        fs::create_dir(&blocker).unwrap();
        assert!(write_atomic(&path, b"new").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }
}
