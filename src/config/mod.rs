//! The configuration `ckv_init` takes: APISIX's `discovery.consul_kv` schema
//! (same names, defaults and limits) plus a few optional ckv-only fields.
//!
//! The input is the `discovery.consul_kv` table of APISIX's `config.yaml`,
//! encoded as JSON by the Lua side (`cjson`). [`parse`] turns it into a
//! [`Config`] with every default applied; [`parse_with_warnings`] also returns
//! the warnings to log (unknown fields, `skip_keys` that can never match, ...).
//!
//! Parsing is strict: every refused value yields a [`ConfigError`] that names
//! the field path and the rule, e.g.
//! `servers[1]: expected http://host:port or https://host:port, got "ftp://x"`.
//! Array indexes in field paths are 0-based, as in JSON.
//!
//! Where things are:
//! * [`fields`]: every field's default and limits, defined once (the README
//!   table and `schema.lua` are tested against it);
//! * `walk.rs`: reading the document into a [`Config`];
//! * `servers.rs`: server URLs;
//! * `errors.rs`: [`ConfigError`] and how refused values are shown;
//! * [`secret`]: the token type, which no `Debug`, log or hash can show;
//! * `effective.rs`: the effective config as JSON, and the fingerprint that
//!   decides which processes may share a watch.
//!
//! # Differences from APISIX's JSON schema
//!
//! * Unknown fields are ignored as in APISIX (its schema has no
//!   `additionalProperties = false`), but each one yields a warning.
//! * `null` is treated like an absent field, so the default applies.
//! * An empty array is accepted where an object is expected and an empty object
//!   where an array is expected: `cjson` cannot tell the two apart for an empty
//!   Lua table.
//! * An integer may arrive as a JSON number with a zero fraction (`3.0`, `1e3`).
//! * Server URLs are checked in full and may be `https://` (see `servers.rs`).
//! * Upper limits that APISIX lacks (timeouts fit a 32-bit millisecond count,
//!   `timeout.wait` <= 600), `dump.expire` >= 0, and `default_service.host` /
//!   `default_service.port` are required (APISIX would hand out a node without
//!   them and fail later).

mod effective;
mod errors;
pub mod fields;
mod reader;
pub mod secret;
mod servers;
mod walk;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

pub use errors::ConfigError;
pub use secret::{Secret, REDACTED};

/// One Consul agent to watch. Each server is an independent data source:
/// its services are named after its URL, as in APISIX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The URL exactly as configured (`http://127.0.0.1:8500`), used to build
    /// service names `{url}/v1/kv/{prefix}/{service}/`.
    pub url: String,
    pub scheme: Scheme,
    /// Host as written in the URL (an IPv6 literal keeps its brackets).
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// `timeout`: connect and read in milliseconds, wait in seconds (APISIX units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub wait: Duration,
}

/// `default_service`: answered for a service that is not in Consul.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultService {
    pub host: String,
    pub port: u16,
    /// `metadata` as given, with APISIX's defaults filled in
    /// (`fail_timeout` 1, `weight` 1, `max_fails` 1).
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// `dump`: persist the last good services to a file and load it at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    pub path: PathBuf,
    pub load_on_init: bool,
    /// Seconds; 0 means the dump never expires.
    pub expire: u64,
}

/// What to do when the whole prefix disappears from a server (Consul answers 404).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyPrefixPolicy {
    /// The server's services are removed (Consul's state is the truth).
    Clear,
    /// The server's last services are kept and a warning is logged.
    Keep,
}

impl EmptyPrefixPolicy {
    pub(crate) const ALL: [EmptyPrefixPolicy; 2] =
        [EmptyPrefixPolicy::Clear, EmptyPrefixPolicy::Keep];

    /// The configuration spelling: `"clear"` or `"keep"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EmptyPrefixPolicy::Clear => "clear",
            EmptyPrefixPolicy::Keep => "keep",
        }
    }
}

/// Retry backoff after a failed request: `initial`, doubled per failure with
/// jitter, capped at `max`, reset after a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

/// How processes of one nginx instance share a single watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// false: this process watches Consul itself (standalone programs, tests).
    pub enabled: bool,
    /// Directory for the shared segment and the leader lock (default `/dev/shm`).
    pub dir: PathBuf,
    /// Processes with the same group and config share one watch.
    pub group: Option<String>,
    /// The group before a reload: read-only source of the first snapshot.
    pub previous_group: Option<String>,
}

/// The parsed configuration, with every default applied (see [`fields`]).
///
/// `Debug` and `Display` never show the token: it is a [`Secret`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub servers: Vec<Server>,
    /// ACL token sent as `X-Consul-Token`. Never logged, dumped, hashed
    /// without a key, or shown in stats.
    pub token: Secret,
    /// KV prefix without leading or trailing `/`.
    pub prefix: String,
    /// Default node weight when the value has none.
    pub weight: u32,
    /// true: blocking queries; false: poll every `fetch_interval`.
    pub keepalive: bool,
    /// Time between polls when `keepalive` is false.
    pub fetch_interval: Duration,
    pub timeout: Timeouts,
    /// Exact `{prefix}/{service}/` strings whose nodes are ignored.
    pub skip_keys: Vec<String>,
    pub default_service: Option<DefaultService>,
    pub dump: Option<Dump>,
    // ckv-only fields below; all optional.
    /// PEM file of CA certificates for `https://` servers.
    pub tls_ca_file: Option<PathBuf>,
    /// Verify the server certificate for `https://` servers.
    pub tls_verify: bool,
    /// A Consul response larger than this is refused.
    pub max_response_bytes: usize,
    pub on_empty_prefix: EmptyPrefixPolicy,
    /// Send `Accept-Encoding: gzip` (off by default: the agent is local, and
    /// compressing a 100k-node prefix costs more CPU than the bytes save).
    pub gzip: bool,
    pub backoff: Backoff,
    pub share: Share,
}

/// Parses the JSON configuration (the `discovery.consul_kv` table as `cjson`
/// encodes it). Warnings are dropped; use [`parse_with_warnings`] to log them.
pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
    parse_with_warnings(json).map(|(config, _)| config)
}

/// Parses the JSON configuration and returns it with the warnings the caller
/// should log, such as `unknown field "timout" ignored`.
pub fn parse_with_warnings(json: &[u8]) -> Result<(Config, Vec<String>), ConfigError> {
    let text = std::str::from_utf8(json).map_err(|e| {
        ConfigError::new(
            "config",
            format!("invalid UTF-8 at byte offset {}", e.valid_up_to()),
        )
    })?;
    let doc: Value = serde_json::from_str(text).map_err(|e| errors::invalid_json(&e))?;
    let Value::Object(map) = &doc else {
        return Err(ConfigError::new("config", "expected a JSON object"));
    };

    // The token (when it is a string) is scrubbed from anything we return, in
    // case it was also pasted into another field.
    let token = match map.get(fields::TOKEN.key()) {
        Some(Value::String(t)) => Secret::new(t.as_str()),
        _ => Secret::default(),
    };
    let mut warnings = Vec::new();
    let _guard = errors::TokenGuard::set(&token);
    match walk::parse_config(map, &mut warnings) {
        Ok(config) => {
            let warnings = warnings.iter().map(|w| token.scrub(w)).collect();
            Ok((config, warnings))
        }
        Err(e) => Err(e.scrubbed(&token)),
    }
}

impl Config {
    /// Same as [`parse`].
    pub fn from_json(json: &[u8]) -> Result<Config, ConfigError> {
        parse(json)
    }
}
