//! The effective configuration as JSON (defaults applied, token redacted),
//! and the keyed fingerprint that decides which processes may share a watch.

use std::fmt;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::Config;

/// Fields that do not change what a shared watch fetches: each process
/// applies them itself (`default_service`), only the leader uses them
/// (`dump`), or they name the group (`share`).
const NOT_SHARED: &[&str] = &["default_service", "dump", "share", "token"];

/// Version of the fingerprint input; bump it when its meaning changes.
const FINGERPRINT_DOMAIN: &[u8] = b"ckv share fingerprint v1\0";

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Config {
    /// The effective configuration in the input's shape and units: every
    /// field, with defaults applied and `null` for an unset optional field,
    /// and a non-empty token shown as `"<redacted>"`. For stats and logs.
    /// With the token put back it parses to an equal `Config`.
    pub fn redacted_json(&self) -> Value {
        let servers: Vec<&str> = self.members_or_servers().map(|s| s.url.as_str()).collect();
        let cluster = self.cluster.as_ref().map(|c| {
            json!({
                "name": self.servers.first().map(|s| s.url.as_str()),
                "failover_after": c.failover_after,
                "failback_interval": c.failback_interval.as_secs(),
            })
        });
        let skip_keys = if self.skip_keys.is_empty() {
            Value::Null
        } else {
            json!(self.skip_keys)
        };
        let default_service = self.default_service.as_ref().map(|ds| {
            json!({
                "host": ds.host,
                "port": ds.port,
                "metadata": Value::Object(ds.metadata.clone()),
            })
        });
        let dump = self.dump.as_ref().map(|d| {
            json!({
                "path": d.path.to_string_lossy(),
                "load_on_init": d.load_on_init,
                "expire": d.expire,
            })
        });
        json!({
            "servers": servers,
            "token": self.token.shown(),
            "prefix": self.prefix,
            "weight": self.weight,
            "keepalive": self.keepalive,
            "fetch_interval": self.fetch_interval.as_secs(),
            "timeout": {
                "connect": millis(self.timeout.connect),
                "read": millis(self.timeout.read),
                "wait": self.timeout.wait.as_secs(),
            },
            "skip_keys": skip_keys,
            "default_service": default_service,
            "dump": dump,
            "tls": {
                "ca_file": self.tls_ca_file.as_ref().map(|p| p.to_string_lossy()),
                "verify": self.tls_verify,
                "cert_file": self.tls_cert_file.as_ref().map(|p| p.to_string_lossy()),
                "key_file": self.tls_key_file.as_ref().map(|p| p.to_string_lossy()),
                "server_name": self.tls_server_name,
            },
            "max_response_bytes": self.max_response_bytes,
            "on_empty_prefix": self.on_empty_prefix.as_str(),
            "gzip": self.gzip,
            "backoff": {
                "initial": millis(self.backoff.initial),
                "max": millis(self.backoff.max),
            },
            "share": {
                "enabled": self.share.enabled,
                "dir": self.share.dir.to_string_lossy(),
                "group": self.share.group,
                "previous_group": self.share.previous_group,
            },
            "cluster": cluster,
            "consistency": self.consistency.as_str(),
            "max_stale": self.max_stale.map(|d| d.as_secs()),
            "dc": self.scope.dc,
            "namespace": self.scope.namespace,
            "partition": self.scope.partition,
            "token_file": self.token_file.as_ref().map(|f| f.path().to_string_lossy()),
        })
    }

    /// The configured `servers`: the cluster's members, or the sources.
    fn members_or_servers(&self) -> impl Iterator<Item = &super::Server> {
        match &self.cluster {
            Some(c) => c.members.iter(),
            None => self.servers.iter(),
        }
    }

    /// A 128-bit fingerprint of everything that decides what a shared watch
    /// fetches (every field of [`Config::redacted_json`] except
    /// `default_service`, `dump` and `share`, plus the token), keyed by `key`
    /// (the instance's secret, e.g. its nonce): HMAC-SHA-256 cut to 16
    /// bytes. With `token_file`, the file's path takes part and its content
    /// does not, so that a rotation never makes two processes of one
    /// instance stop sharing (they read the same file). Without the key nothing about the token can be learned from it,
    /// so it may appear in a name others can list. Processes with equal
    /// fingerprints under the same key may share one watch.
    pub fn share_fingerprint(&self, key: &[u8]) -> [u8; 16] {
        let mut view = match self.redacted_json() {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        view.retain(|k, _| !NOT_SHARED.contains(&k.as_str()));
        // serde_json's map is ordered, so the text is canonical.
        let text = Value::Object(view).to_string();
        let hmac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        let mut ctx = ring::hmac::Context::with_key(&hmac_key);
        ctx.update(FINGERPRINT_DOMAIN);
        ctx.update(&(text.len() as u64).to_le_bytes());
        ctx.update(text.as_bytes());
        ctx.update(self.token.expose().as_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag.as_ref()[..16]);
        out
    }
}

/// Compact JSON of [`Config::redacted_json`], for logs.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.redacted_json())
    }
}
