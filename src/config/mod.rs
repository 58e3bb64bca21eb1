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
//! * [`token_file`]: the token read from a file, re-read when it changes;
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
pub mod token_file;
mod walk;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

pub use errors::ConfigError;
pub use secret::{Secret, REDACTED};
pub use token_file::TokenFile;

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

/// `cluster`: the configured `servers` are members of one Consul cluster.
/// ckv watches one member at a time and names the services after
/// [`Cluster::name`] (the one entry of [`Config::servers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The configured `servers`, in order of preference.
    pub members: Vec<Server>,
    /// Consecutive failures on the active member before moving to the next.
    pub failover_after: u32,
    /// How often the first member is probed while another one is active;
    /// zero: never fail back.
    pub failback_interval: Duration,
}

/// `consistency`: Consul's read mode, sent as a query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// No parameter: the leader answers.
    Default,
    /// `?stale`: any server answers, possibly behind the leader.
    Stale,
    /// `?consistent`: the leader answers after checking it still leads.
    Consistent,
}

impl Consistency {
    pub(crate) const ALL: [Consistency; 3] = [
        Consistency::Default,
        Consistency::Stale,
        Consistency::Consistent,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Consistency::Default => "default",
            Consistency::Stale => "stale",
            Consistency::Consistent => "consistent",
        }
    }
}

/// `dc`, `namespace`, `partition`: where in Consul the prefix is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub dc: Option<String>,
    /// Sent as `ns` (Consul Enterprise; Consul CE refuses it with a 400).
    pub namespace: Option<String>,
    /// Consul Enterprise; Consul CE refuses it.
    pub partition: Option<String>,
}

/// The parsed configuration, with every default applied (see [`fields`]).
///
/// `Debug` and `Display` never show the token: it is a [`Secret`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The data sources, each naming its services `{url}/v1/kv/...`: the
    /// configured servers, or, with `cluster`, one entry whose `url` is the
    /// cluster's name (its scheme, host and port are the first member's).
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
    /// `cluster`: the servers are members of one cluster (see [`Cluster`]).
    pub cluster: Option<Cluster>,
    pub consistency: Consistency,
    /// With `stale`: an answer whose `X-Consul-LastContact` is above this is
    /// not used (retried elsewhere or with default consistency).
    pub max_stale: Option<Duration>,
    pub scope: Scope,
    /// `token_file`: the token is read from this file and re-read when it
    /// changes (then `token` is empty).
    pub token_file: Option<TokenFile>,
    /// PEM client certificate chain and key for mutual TLS.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// The name the server certificates are verified against, instead of
    /// the host of the URL, and sent as SNI to `https://` servers addressed
    /// by IP (see `watcher::client::member_target`).
    pub tls_server_name: Option<String>,
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

    /// The servers the watch of source `source` may ask, in order of
    /// preference: the cluster's members, or the one server.
    pub fn members(&self, source: usize) -> &[Server] {
        match &self.cluster {
            Some(c) => &c.members,
            None => self
                .servers
                .get(source)
                .map_or(&[][..], std::slice::from_ref),
        }
    }

    /// The token to send now: from `token_file` (re-read if the file
    /// changed) or `token`.
    pub fn current_token(&self) -> Secret {
        match &self.token_file {
            Some(f) => f.current(),
            None => self.token.clone(),
        }
    }

    /// `text` without any token this configuration has used.
    pub fn scrub(&self, text: &str) -> String {
        let text = self.token.scrub(text);
        match &self.token_file {
            Some(f) => f.scrub(&text),
            None => text,
        }
    }
}
