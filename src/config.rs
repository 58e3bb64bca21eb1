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
//! # APISIX fields (`apisix/discovery/consul_kv/schema.lua`)
//!
//! | field | type | default | limits |
//! |---|---|---|---|
//! | `servers` | array of strings | required | at least 1; each `http://host:port` or `https://host:port` (see below); no duplicates |
//! | `token` | string | `""` | no control characters; never shown in errors, `Debug` or stats |
//! | `prefix` | string | `"upstreams"` | leading/trailing `/` removed; then non-empty, no `//`, no control characters, no `?` or `#` |
//! | `weight` | integer | `1` | 1 ..= 4294967295 |
//! | `keepalive` | boolean | `true` | |
//! | `fetch_interval` | integer, seconds | `3` | 1 ..= 2147483 |
//! | `timeout.connect` | integer, ms | `2000` | 1 ..= 2147483647 |
//! | `timeout.read` | integer, ms | `2000` | 1 ..= 2147483647 |
//! | `timeout.wait` | integer, seconds | `60` | 1 ..= 600 (Consul caps a blocking query at 10 minutes) |
//! | `skip_keys` | array of strings | none | at least 1 item when given |
//! | `default_service.host` | string | required if `default_service` | non-empty |
//! | `default_service.port` | integer | required if `default_service` | 1 ..= 65535 |
//! | `default_service.metadata` | object | `{fail_timeout = 1, weight = 1, max_fails = 1}` | those three must be integers; other keys are kept |
//! | `dump.path` | string | required if `dump` | non-empty |
//! | `dump.load_on_init` | boolean | `true` | |
//! | `dump.expire` | integer, seconds | `0` (never) | >= 0 |
//!
//! # ckv-only fields (all optional)
//!
//! | field | type | default | limits |
//! |---|---|---|---|
//! | `tls.ca_file` | string (path to a PEM file) | none (system roots) | non-empty |
//! | `tls.verify` | boolean | `true` | |
//! | `max_response_bytes` | integer | `67108864` (64 MiB) | >= 1024 |
//! | `on_empty_prefix` | `"clear"` or `"keep"` | `"clear"` | |
//! | `gzip` | boolean | `false` | ask Consul for gzip (saves bandwidth, costs CPU on both ends; off for a local agent) |
//! | `backoff.initial` | integer, ms | `1000` | 1 ..= 2147483647 |
//! | `backoff.max` | integer, ms | `30000` | `backoff.initial` ..= 2147483647 |
//! | `share.enabled` | boolean | `true` | |
//! | `share.dir` | string | `"/dev/shm"` | an absolute path |
//! | `share.group` | string (or a non-negative integer) | none (the parent process id) | 1 to 64 characters from `A-Z a-z 0-9 . _ -`, not `.` or `..` |
//!
//! # Servers
//!
//! A server is `http://host:port` or `https://host:port` (APISIX accepts only
//! `http://`). The host is a host name (letters, digits, `-`, `_`, dot-separated
//! labels), an IPv4 address, or a bracketed IPv6 address (`[::1]`). The port
//! is required and in 1 ..= 65535. A path, a trailing `/`, a query, a fragment
//! or user info (`user:pass@`) is refused. Two servers with the same scheme,
//! host (case-insensitive; IPv6 compared as addresses) and port are refused.
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
//! * Upper limits that APISIX lacks (timeouts fit a 32-bit millisecond count,
//!   `timeout.wait` <= 600), `dump.expire` >= 0, and `default_service.host` /
//!   `default_service.port` are required (APISIX would hand out a node without
//!   them and fail later).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Map, Value};

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
    /// Processes with the same group and config share one watch. Default: the
    /// parent process id (the nginx master for nginx workers).
    pub group: Option<String>,
}

/// The parsed configuration, with every default applied.
///
/// `Debug` and `Display` never show the token (see [`Config::redacted_json`]).
#[derive(Clone, PartialEq)]
pub struct Config {
    pub servers: Vec<Server>,
    /// ACL token sent as `X-Consul-Token`. Never logged, dumped or shown in stats.
    pub token: String,
    /// KV prefix without leading or trailing `/` (default `upstreams`).
    pub prefix: String,
    /// Default node weight when the value has none (default 1, minimum 1).
    pub weight: u32,
    /// true: blocking queries; false: poll every `fetch_interval`.
    pub keepalive: bool,
    /// Seconds between polls when `keepalive` is false (default 3, minimum 1).
    pub fetch_interval: Duration,
    pub timeout: Timeouts,
    /// Exact `{prefix}/{service}/` strings whose nodes are ignored.
    pub skip_keys: Vec<String>,
    pub default_service: Option<DefaultService>,
    pub dump: Option<Dump>,
    // ckv-only fields below; all optional.
    /// PEM file of CA certificates for `https://` servers.
    pub tls_ca_file: Option<PathBuf>,
    /// Verify the server certificate for `https://` servers (default true).
    pub tls_verify: bool,
    /// A Consul response larger than this is refused (default 64 MiB).
    pub max_response_bytes: usize,
    pub on_empty_prefix: EmptyPrefixPolicy,
    /// Send `Accept-Encoding: gzip` (default false: the agent is local, and
    /// compressing a 100k-node prefix costs more CPU than the bytes save).
    pub gzip: bool,
    pub backoff: Backoff,
    pub share: Share,
}

/// A refused configuration: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the offending field, e.g. `servers[1]` or `timeout.wait`;
    /// empty for an error about the whole document.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------
// Defaults and limits
// ---------------------------------------------------------------------------

/// Default KV prefix (APISIX).
pub const DEFAULT_PREFIX: &str = "upstreams";
/// Default `max_response_bytes`: 64 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Smallest accepted `max_response_bytes`.
pub const MIN_MAX_RESPONSE_BYTES: usize = 1024;
/// Largest accepted `timeout.wait`, in seconds: Consul caps a blocking query
/// at 10 minutes.
pub const MAX_WAIT_SECS: u64 = 600;
/// Default `share.dir`.
pub const DEFAULT_SHARE_DIR: &str = "/dev/shm";

/// Millisecond values must fit a signed 32-bit count, as nginx and OpenResty
/// socket timeouts do.
const MAX_MS: i128 = i32::MAX as i128;
/// Second values must fit [`MAX_MS`] once turned into milliseconds.
const MAX_SECS: i128 = MAX_MS / 1000;
/// Longest value shown in an error message, in characters.
const SHOW_MAX_CHARS: usize = 60;
/// What `Debug`, `Display` and [`Config::redacted_json`] show for a token.
const REDACTED: &str = "<redacted>";
/// Tokens at least this long are also scrubbed from error and warning text.
const SCRUB_MIN_TOKEN_LEN: usize = 4;

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

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
    let doc: Value = serde_json::from_str(text).map_err(|e| invalid_json(&e))?;
    let Value::Object(map) = &doc else {
        return Err(ConfigError::new("config", "expected a JSON object"));
    };

    // The token (when it is a string) is scrubbed from anything we return, in
    // case it was also pasted into another field.
    let token = match map.get("token") {
        Some(Value::String(t)) => t.as_str(),
        _ => "",
    };
    let mut warnings = Vec::new();
    let _guard = TokenGuard::set(token);
    match parse_config(map, &mut warnings) {
        Ok(config) => {
            for w in &mut warnings {
                scrub(w, token);
            }
            Ok((config, warnings))
        }
        Err(mut e) => {
            scrub(&mut e.message, token);
            scrub(&mut e.field, token);
            Err(e)
        }
    }
}

impl Config {
    /// Same as [`parse`].
    pub fn from_json(json: &[u8]) -> Result<Config, ConfigError> {
        parse(json)
    }

    /// The effective configuration (defaults applied) in the input's shape and
    /// units, with a non-empty token replaced by `"<redacted>"`. For stats and
    /// the control API. With the token put back it parses to an equal `Config`.
    pub fn redacted_json(&self) -> Value {
        let mut out = Map::new();
        out.insert(
            "servers".into(),
            Value::Array(
                self.servers
                    .iter()
                    .map(|s| Value::String(s.url.clone()))
                    .collect(),
            ),
        );
        let token = if self.token.is_empty() { "" } else { REDACTED };
        out.insert("token".into(), json!(token));
        out.insert("prefix".into(), json!(self.prefix));
        out.insert("weight".into(), json!(self.weight));
        out.insert("keepalive".into(), json!(self.keepalive));
        out.insert(
            "fetch_interval".into(),
            json!(self.fetch_interval.as_secs()),
        );
        out.insert(
            "timeout".into(),
            json!({
                "connect": millis(self.timeout.connect),
                "read": millis(self.timeout.read),
                "wait": self.timeout.wait.as_secs(),
            }),
        );
        if !self.skip_keys.is_empty() {
            out.insert("skip_keys".into(), json!(self.skip_keys));
        }
        if let Some(ds) = &self.default_service {
            out.insert(
                "default_service".into(),
                json!({
                    "host": ds.host,
                    "port": ds.port,
                    "metadata": Value::Object(ds.metadata.clone()),
                }),
            );
        }
        if let Some(dump) = &self.dump {
            out.insert(
                "dump".into(),
                json!({
                    "path": dump.path.to_string_lossy(),
                    "load_on_init": dump.load_on_init,
                    "expire": dump.expire,
                }),
            );
        }
        let mut tls = Map::new();
        if let Some(ca) = &self.tls_ca_file {
            tls.insert("ca_file".into(), json!(ca.to_string_lossy()));
        }
        tls.insert("verify".into(), json!(self.tls_verify));
        out.insert("tls".into(), Value::Object(tls));
        out.insert("max_response_bytes".into(), json!(self.max_response_bytes));
        out.insert(
            "on_empty_prefix".into(),
            json!(self.on_empty_prefix.as_str()),
        );
        out.insert("gzip".into(), json!(self.gzip));
        out.insert(
            "backoff".into(),
            json!({
                "initial": millis(self.backoff.initial),
                "max": millis(self.backoff.max),
            }),
        );
        let mut share = Map::new();
        share.insert("enabled".into(), json!(self.share.enabled));
        share.insert("dir".into(), json!(self.share.dir.to_string_lossy()));
        if let Some(group) = &self.share.group {
            share.insert("group".into(), json!(group));
        }
        out.insert("share".into(), Value::Object(share));
        Value::Object(out)
    }

    /// A stable 64-bit FNV-1a hash of every field that affects watching
    /// (servers in order, token, prefix, weight, keepalive, fetch_interval,
    /// timeouts, skip_keys, tls, max_response_bytes, on_empty_prefix,
    /// backoff). Processes whose configs hash equal can share one watch.
    /// `default_service`, `dump` and `share` are not included.
    pub fn config_hash(&self) -> u64 {
        fnv1a64(self.canonical_watch_string().as_bytes())
    }

    /// The canonical text hashed by [`Config::config_hash`]: `name=len:value;`
    /// items, so that no two different configs give the same text.
    fn canonical_watch_string(&self) -> String {
        let mut c = Canon(String::new());
        c.item("v", "1");
        c.item("servers", &self.servers.len().to_string());
        for s in &self.servers {
            c.item("server", &s.url);
        }
        c.item("token", &self.token);
        c.item("prefix", &self.prefix);
        c.item("weight", &self.weight.to_string());
        c.item("keepalive", bool_str(self.keepalive));
        c.item(
            "fetch_interval_ms",
            &millis(self.fetch_interval).to_string(),
        );
        c.item("connect_ms", &millis(self.timeout.connect).to_string());
        c.item("read_ms", &millis(self.timeout.read).to_string());
        c.item("wait_ms", &millis(self.timeout.wait).to_string());
        c.item("skip_keys", &self.skip_keys.len().to_string());
        for k in &self.skip_keys {
            c.item("skip_key", k);
        }
        match &self.tls_ca_file {
            Some(ca) => c.item("ca_file", &ca.to_string_lossy()),
            None => c.item("ca_file-none", ""),
        }
        c.item("tls_verify", bool_str(self.tls_verify));
        c.item("max_response_bytes", &self.max_response_bytes.to_string());
        c.item("on_empty_prefix", self.on_empty_prefix.as_str());
        c.item("gzip", bool_str(self.gzip));
        c.item(
            "backoff_initial_ms",
            &millis(self.backoff.initial).to_string(),
        );
        c.item("backoff_max_ms", &millis(self.backoff.max).to_string());
        c.0
    }
}

impl EmptyPrefixPolicy {
    /// The configuration spelling: `"clear"` or `"keep"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EmptyPrefixPolicy::Clear => "clear",
            EmptyPrefixPolicy::Keep => "keep",
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = if self.token.is_empty() { "" } else { REDACTED };
        f.debug_struct("Config")
            .field("servers", &self.servers)
            .field("token", &token)
            .field("prefix", &self.prefix)
            .field("weight", &self.weight)
            .field("keepalive", &self.keepalive)
            .field("fetch_interval", &self.fetch_interval)
            .field("timeout", &self.timeout)
            .field("skip_keys", &self.skip_keys)
            .field("default_service", &self.default_service)
            .field("dump", &self.dump)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_verify", &self.tls_verify)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("on_empty_prefix", &self.on_empty_prefix)
            .field("gzip", &self.gzip)
            .field("backoff", &self.backoff)
            .field("share", &self.share)
            .finish()
    }
}

/// Compact JSON of [`Config::redacted_json`], for logs.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.redacted_json())
    }
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------
// The document walk
// ---------------------------------------------------------------------------

fn parse_config(
    map: &Map<String, Value>,
    warnings: &mut Vec<String>,
) -> Result<Config, ConfigError> {
    let mut o = Obj::new(map, "");

    let servers = parse_servers(&mut o)?;
    let token = match o.get("token") {
        None => String::new(),
        Some(Value::String(t)) => {
            if t.chars().any(char::is_control) {
                return Err(ConfigError::new(
                    "token",
                    "must not contain control characters",
                ));
            }
            t.clone()
        }
        // Never show the value: it may be the secret.
        Some(v) => {
            return Err(ConfigError::new(
                "token",
                format!("expected a string, got {}", type_name(v)),
            ))
        }
    };
    let prefix = match o.get("prefix") {
        None => DEFAULT_PREFIX.to_string(),
        Some(v) => normalize_prefix(string(v, "prefix")?)?,
    };
    let weight = opt_int(&mut o, "weight", Some(1), i128::from(u32::MAX), false)?.unwrap_or(1);
    let keepalive = opt_bool(&mut o, "keepalive")?.unwrap_or(true);
    let fetch_interval = opt_int(&mut o, "fetch_interval", Some(1), MAX_SECS, false)?.unwrap_or(3);
    let timeout = parse_timeouts(&mut o, warnings)?;
    let skip_keys = parse_skip_keys(&mut o, &prefix, warnings)?;
    let default_service = parse_default_service(&mut o, warnings)?;
    let dump = parse_dump(&mut o, warnings)?;
    let (tls_ca_file, tls_verify, tls_given) = parse_tls(&mut o, warnings)?;
    let max_response_bytes = opt_int(
        &mut o,
        "max_response_bytes",
        Some(MIN_MAX_RESPONSE_BYTES as i128),
        (usize::MAX as i128).min(i128::from(i64::MAX)),
        false,
    )?
    .map_or(DEFAULT_MAX_RESPONSE_BYTES, to_usize);
    let on_empty_prefix = match o.get("on_empty_prefix") {
        None => EmptyPrefixPolicy::Clear,
        Some(Value::String(s)) if s == "clear" => EmptyPrefixPolicy::Clear,
        Some(Value::String(s)) if s == "keep" => EmptyPrefixPolicy::Keep,
        Some(v) => {
            return Err(ConfigError::new(
                "on_empty_prefix",
                format!("expected \"clear\" or \"keep\", got {}", show(v)),
            ))
        }
    };
    let gzip = opt_bool(&mut o, "gzip")?.unwrap_or(false);
    let backoff = parse_backoff(&mut o, warnings)?;
    let share = parse_share(&mut o, warnings)?;
    o.finish(warnings);

    if tls_given && !servers.iter().any(|s| s.scheme == Scheme::Https) {
        warnings.push("tls is set but no server uses https://; it has no effect".to_string());
    }

    Ok(Config {
        servers,
        token,
        prefix,
        weight: to_u32(weight),
        keepalive,
        fetch_interval: Duration::from_secs(to_u64(fetch_interval)),
        timeout,
        skip_keys,
        default_service,
        dump,
        tls_ca_file,
        tls_verify,
        max_response_bytes,
        on_empty_prefix,
        gzip,
        backoff,
        share,
    })
}

fn parse_servers(o: &mut Obj<'_>) -> Result<Vec<Server>, ConfigError> {
    const WHAT: &str = "an array of http://host:port or https://host:port strings";
    let Some(v) = o.get("servers") else {
        return Err(ConfigError::new("servers", format!("required ({WHAT})")));
    };
    let Some(items) = as_array(v) else {
        return Err(ConfigError::new(
            "servers",
            format!("expected {WHAT}, got {}", show(v)),
        ));
    };
    if items.is_empty() {
        return Err(ConfigError::new(
            "servers",
            "expected at least one server, got []",
        ));
    }
    let mut servers: Vec<Server> = Vec::with_capacity(items.len());
    // (scheme, normalized host, port) of each server so far, in order.
    let mut seen: Vec<(Scheme, String, u16)> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("servers[{i}]");
        let s = string(item, &path)?;
        let (server, key) = parse_server(s, &path)?;
        if let Some(first) = seen.iter().position(|k| *k == key) {
            return Err(ConfigError::new(
                path,
                format!("duplicate of servers[{first}]"),
            ));
        }
        seen.push(key);
        servers.push(server);
    }
    Ok(servers)
}

/// Parses one server URL; also returns the key used to find duplicates.
fn parse_server(s: &str, path: &str) -> Result<(Server, (Scheme, String, u16)), ConfigError> {
    let fail = |reason: Option<&str>| {
        let mut msg = format!(
            "expected http://host:port or https://host:port, got {}",
            show_str(&hide_userinfo(s))
        );
        if let Some(r) = reason {
            msg.push_str(" (");
            msg.push_str(r);
            msg.push(')');
        }
        ConfigError::new(path, msg)
    };

    let (scheme, rest) = if let Some(r) = s.strip_prefix("http://") {
        (Scheme::Http, r)
    } else if let Some(r) = s.strip_prefix("https://") {
        (Scheme::Https, r)
    } else {
        return Err(fail(None));
    };

    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err(fail(Some("user info is not allowed; use token")));
    }
    if tail == "/" {
        return Err(fail(Some("trailing \"/\" is not allowed")));
    }
    if tail.starts_with('/') {
        return Err(fail(Some("a path is not allowed")));
    }
    if tail.starts_with('?') {
        return Err(fail(Some("a query is not allowed")));
    }
    if tail.starts_with('#') {
        return Err(fail(Some("a fragment is not allowed")));
    }
    if authority.is_empty() {
        return Err(fail(Some("empty host")));
    }

    let (host, key_host, port_str) = if let Some(inner_and_rest) = authority.strip_prefix('[') {
        let Some(close) = inner_and_rest.find(']') else {
            return Err(fail(Some("bad IPv6 address: missing \"]\"")));
        };
        let inner = &inner_and_rest[..close];
        let after = &inner_and_rest[close + 1..];
        let Ok(addr) = inner.parse::<Ipv6Addr>() else {
            return Err(fail(Some("bad IPv6 address")));
        };
        let port_str = if after.is_empty() {
            return Err(fail(Some("missing port")));
        } else if let Some(p) = after.strip_prefix(':') {
            p
        } else {
            return Err(fail(Some("unexpected text after \"]\"")));
        };
        (&authority[..close + 2], addr.to_string(), port_str)
    } else {
        let Some(colon) = authority.rfind(':') else {
            return Err(fail(Some("missing port")));
        };
        let host = &authority[..colon];
        if host.contains(':') {
            return Err(fail(Some(
                "an IPv6 address must be in brackets, e.g. http://[::1]:8500",
            )));
        }
        if host.is_empty() {
            return Err(fail(Some("empty host")));
        }
        if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            if host.parse::<Ipv4Addr>().is_err() {
                return Err(fail(Some("bad IPv4 address")));
            }
        } else if !is_hostname(host) {
            return Err(fail(Some("bad host name")));
        }
        (host, host.to_ascii_lowercase(), &authority[colon + 1..])
    };

    if port_str.is_empty() {
        return Err(fail(Some("missing port")));
    }
    if !port_str.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail(Some("the port must be a number")));
    }
    let port = match port_str.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => p as u16,
        _ => return Err(fail(Some("the port must be 1-65535"))),
    };

    let server = Server {
        url: s.to_string(),
        scheme,
        host: host.to_string(),
        port,
    };
    Ok((server, (scheme, key_host, port)))
}

/// Dot-separated labels of letters, digits, `-` and `_`, each 1..=63 long and
/// not starting or ending with `-`; at most 253 characters in all.
fn is_hostname(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `http://user:pass@host:1` → `http://<redacted>@host:1`, so a password in
/// a refused URL is not echoed.
fn hide_userinfo(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_string();
    };
    let rest = &s[scheme_end + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{}://{REDACTED}{}", &s[..scheme_end], &rest[at..]),
        None => s.to_string(),
    }
}

fn normalize_prefix(raw: &str) -> Result<String, ConfigError> {
    let p = raw.trim_matches('/');
    let fail = |why: &str| {
        Err(ConfigError::new(
            "prefix",
            format!("{why}, got {}", show_str(raw)),
        ))
    };
    if p.is_empty() {
        return fail("must not be empty or only \"/\"");
    }
    if p.contains("//") {
        return fail("must not contain \"//\"");
    }
    if p.chars().any(char::is_control) {
        return fail("must not contain control characters");
    }
    if p.contains(['?', '#']) {
        return fail("must not contain \"?\" or \"#\"");
    }
    Ok(p.to_string())
}

fn parse_timeouts(o: &mut Obj<'_>, warnings: &mut Vec<String>) -> Result<Timeouts, ConfigError> {
    let mut t = Timeouts {
        connect: Duration::from_millis(2000),
        read: Duration::from_millis(2000),
        wait: Duration::from_secs(60),
    };
    let Some(mut sub) = o.object("timeout")? else {
        return Ok(t);
    };
    if let Some(ms) = opt_int(&mut sub, "connect", Some(1), MAX_MS, false)? {
        t.connect = Duration::from_millis(to_u64(ms));
    }
    if let Some(ms) = opt_int(&mut sub, "read", Some(1), MAX_MS, false)? {
        t.read = Duration::from_millis(to_u64(ms));
    }
    if let Some(v) = sub.get("wait") {
        let max = MAX_WAIT_SECS as i128;
        match int_value(v) {
            Some(n) if (1..=max).contains(&n) => t.wait = Duration::from_secs(to_u64(n)),
            _ => {
                return Err(ConfigError::new(
                    "timeout.wait",
                    format!(
                        "expected an integer from 1 to {max} (seconds; Consul caps a blocking query at 10 minutes), got {}",
                        show(v)
                    ),
                ))
            }
        }
    }
    sub.finish(warnings);
    Ok(t)
}

fn parse_skip_keys(
    o: &mut Obj<'_>,
    prefix: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, ConfigError> {
    let Some(v) = o.get("skip_keys") else {
        return Ok(Vec::new());
    };
    let items = match as_array(v) {
        Some(items) if !items.is_empty() => items,
        _ => {
            return Err(ConfigError::new(
                "skip_keys",
                format!("expected a non-empty array of strings, got {}", show(v)),
            ))
        }
    };
    let want = format!("{prefix}/");
    let mut keys = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("skip_keys[{i}]");
        let k = string(item, &path)?;
        if !(k.starts_with(&want) && k.ends_with('/') && k.len() > want.len()) {
            warnings.push(format!(
                "{path}: {} can never match: skip_keys are compared exactly with \"{prefix}/<service>/\"",
                show_str(k)
            ));
        }
        keys.push(k.to_string());
    }
    Ok(keys)
}

fn parse_default_service(
    o: &mut Obj<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<DefaultService>, ConfigError> {
    let Some(mut sub) = o.object("default_service")? else {
        return Ok(None);
    };
    let host = match sub.get("host") {
        None => return Err(ConfigError::new("default_service.host", "required")),
        Some(v) => string(v, "default_service.host")?,
    };
    if host.is_empty() {
        return Err(ConfigError::new(
            "default_service.host",
            "expected a non-empty string, got \"\"",
        ));
    }
    let port = match opt_int(&mut sub, "port", Some(1), 65535, true)? {
        None => return Err(ConfigError::new("default_service.port", "required")),
        Some(p) => p as u16,
    };
    let mut metadata = match sub.get("metadata") {
        None => Map::new(),
        Some(v) => match as_object(v) {
            Some(m) => m.clone(),
            None => {
                return Err(ConfigError::new(
                    "default_service.metadata",
                    format!("expected an object, got {}", show(v)),
                ))
            }
        },
    };
    for key in ["fail_timeout", "weight", "max_fails"] {
        let n = match metadata.get(key) {
            None | Some(Value::Null) => 1,
            Some(v) => match int_value(v).and_then(|n| i64::try_from(n).ok()) {
                Some(n) => n,
                None => {
                    return Err(ConfigError::new(
                        format!("default_service.metadata.{key}"),
                        format!("expected an integer, got {}", show(v)),
                    ))
                }
            },
        };
        metadata.insert(key.to_string(), Value::from(n));
    }
    sub.finish(warnings);
    Ok(Some(DefaultService {
        host: host.to_string(),
        port,
        metadata,
    }))
}

fn parse_dump(o: &mut Obj<'_>, warnings: &mut Vec<String>) -> Result<Option<Dump>, ConfigError> {
    let Some(mut sub) = o.object("dump")? else {
        return Ok(None);
    };
    let path = match sub.get("path") {
        None => return Err(ConfigError::new("dump.path", "required")),
        Some(v) => path_string(v, "dump.path")?,
    };
    let load_on_init = opt_bool(&mut sub, "load_on_init")?.unwrap_or(true);
    let expire = opt_int(&mut sub, "expire", Some(0), i128::from(i64::MAX), false)?.unwrap_or(0);
    sub.finish(warnings);
    Ok(Some(Dump {
        path: PathBuf::from(path),
        load_on_init,
        expire: to_u64(expire),
    }))
}

fn parse_tls(
    o: &mut Obj<'_>,
    warnings: &mut Vec<String>,
) -> Result<(Option<PathBuf>, bool, bool), ConfigError> {
    let Some(mut sub) = o.object("tls")? else {
        return Ok((None, true, false));
    };
    let ca_file = match sub.get("ca_file") {
        None => None,
        Some(v) => Some(PathBuf::from(path_string(v, "tls.ca_file")?)),
    };
    let verify = opt_bool(&mut sub, "verify")?.unwrap_or(true);
    sub.finish(warnings);
    Ok((ca_file, verify, true))
}

fn parse_backoff(o: &mut Obj<'_>, warnings: &mut Vec<String>) -> Result<Backoff, ConfigError> {
    let (mut initial, mut max, mut max_given) = (1000, 30000, false);
    if let Some(mut sub) = o.object("backoff")? {
        if let Some(ms) = opt_int(&mut sub, "initial", Some(1), MAX_MS, false)? {
            initial = ms;
        }
        if let Some(v) = sub.get("max") {
            match int_value(v) {
                Some(ms) if (initial..=MAX_MS).contains(&ms) => {
                    max = ms;
                    max_given = true;
                }
                _ => {
                    return Err(ConfigError::new(
                        "backoff.max",
                        format!(
                        "expected an integer from backoff.initial ({initial}) to {MAX_MS}, got {}",
                        show(v)
                    ),
                    ))
                }
            }
        }
        sub.finish(warnings);
    }
    if !max_given && max < initial {
        return Err(ConfigError::new(
            "backoff.max",
            format!(
                "expected an integer >= backoff.initial ({initial}), got {max} (the default); set backoff.max"
            ),
        ));
    }
    Ok(Backoff {
        initial: Duration::from_millis(to_u64(initial)),
        max: Duration::from_millis(to_u64(max)),
    })
}

fn parse_share(o: &mut Obj<'_>, warnings: &mut Vec<String>) -> Result<Share, ConfigError> {
    let mut share = Share {
        enabled: true,
        dir: PathBuf::from(DEFAULT_SHARE_DIR),
        group: None,
    };
    let Some(mut sub) = o.object("share")? else {
        return Ok(share);
    };
    if let Some(enabled) = opt_bool(&mut sub, "enabled")? {
        share.enabled = enabled;
    }
    if let Some(v) = sub.get("dir") {
        let dir = path_string(v, "share.dir")?;
        if !dir.starts_with('/') {
            return Err(ConfigError::new(
                "share.dir",
                format!("expected an absolute path, got {}", show(v)),
            ));
        }
        share.dir = PathBuf::from(dir);
    }
    if let Some(v) = sub.get("group") {
        let group = match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(_) => int_value(v).filter(|n| *n >= 0).map(|n| n.to_string()),
            _ => None,
        };
        let valid = |g: &str| {
            (1..=64).contains(&g.len())
                && g != "."
                && g != ".."
                && g.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        };
        match group {
            Some(g) if valid(&g) => share.group = Some(g),
            _ => {
                return Err(ConfigError::new(
                    "share.group",
                    format!(
                        "expected 1 to 64 characters from A-Z a-z 0-9 . _ - (not \".\" or \"..\"), got {}",
                        show(v)
                    ),
                ))
            }
        }
    }
    sub.finish(warnings);
    Ok(share)
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// An object being read: remembers the keys asked for, so that the others can
/// be reported as unknown.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
    seen: Vec<&'static str>,
}

impl<'a> Obj<'a> {
    fn new(map: &'a Map<String, Value>, path: &str) -> Obj<'a> {
        Obj {
            map,
            path: path.to_string(),
            seen: Vec::new(),
        }
    }

    fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`; `null` counts as absent.
    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.push(key);
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// A nested object (absent → `None`).
    fn object(&mut self, key: &'static str) -> Result<Option<Obj<'a>>, ConfigError> {
        let path = self.path(key);
        match self.get(key) {
            None => Ok(None),
            Some(v) => match as_object(v) {
                Some(m) => Ok(Some(Obj::new(m, &path))),
                None => Err(ConfigError::new(
                    path,
                    format!("expected an object, got {}", show(v)),
                )),
            },
        }
    }

    /// Warns about every key that was never asked for.
    fn finish(self, warnings: &mut Vec<String>) {
        for key in self.map.keys() {
            if !self.seen.contains(&key.as_str()) {
                warnings.push(format!(
                    "unknown field {} ignored",
                    show_str(&self.path(key))
                ));
            }
        }
    }
}

fn empty_map() -> &'static Map<String, Value> {
    static EMPTY: OnceLock<Map<String, Value>> = OnceLock::new();
    EMPTY.get_or_init(Map::new)
}

/// An object, or an empty array (an empty Lua table encoded by `cjson`).
fn as_object(v: &Value) -> Option<&Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m),
        Value::Array(a) if a.is_empty() => Some(empty_map()),
        _ => None,
    }
}

/// An array, or an empty object (an empty Lua table encoded by `cjson`).
fn as_array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) => Some(a),
        Value::Object(m) if m.is_empty() => Some(&[]),
        _ => None,
    }
}

/// An integer, also from a JSON number with a zero fraction (`3.0`, `1e3`).
fn int_value(v: &Value) -> Option<i128> {
    let Value::Number(n) = v else {
        return None;
    };
    if let Some(i) = n.as_i64() {
        return Some(i128::from(i));
    }
    if let Some(u) = n.as_u64() {
        return Some(i128::from(u));
    }
    match n.as_f64() {
        // 2^64: beyond every limit used here, and exact in f64.
        Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 18_446_744_073_709_551_616.0 => {
            Some(f as i128)
        }
        _ => None,
    }
}

/// Reads an optional integer field in `min ..= max`. The message says
/// `expected an integer >= min` unless `show_max` or the value is too large.
fn opt_int(
    o: &mut Obj<'_>,
    key: &'static str,
    min: Option<i128>,
    max: i128,
    show_max: bool,
) -> Result<Option<i128>, ConfigError> {
    let path = o.path(key);
    let Some(v) = o.get(key) else {
        return Ok(None);
    };
    let n = int_value(v);
    match n {
        Some(n) if n <= max && min.map_or(true, |m| n >= m) => Ok(Some(n)),
        _ => {
            let too_big = n.is_some_and(|n| n > max);
            let rule = match min {
                Some(m) if show_max || too_big => format!("an integer from {m} to {max}"),
                Some(m) => format!("an integer >= {m}"),
                None if show_max || too_big => format!("an integer <= {max}"),
                None => "an integer".to_string(),
            };
            Err(ConfigError::new(
                path,
                format!("expected {rule}, got {}", show(v)),
            ))
        }
    }
}

fn opt_bool(o: &mut Obj<'_>, key: &'static str) -> Result<Option<bool>, ConfigError> {
    let path = o.path(key);
    match o.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(ConfigError::new(
            path,
            format!("expected a boolean, got {}", show(v)),
        )),
    }
}

fn string<'v>(v: &'v Value, path: &str) -> Result<&'v str, ConfigError> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(ConfigError::new(
            path,
            format!("expected a string, got {}", show(v)),
        )),
    }
}

/// A non-empty string without NUL, usable as a file path.
fn path_string<'v>(v: &'v Value, path: &str) -> Result<&'v str, ConfigError> {
    let s = string(v, path)?;
    if s.is_empty() || s.contains('\0') {
        return Err(ConfigError::new(
            path,
            format!("expected a non-empty path without NUL, got {}", show(v)),
        ));
    }
    Ok(s)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

thread_local! {
    /// The token of the document being parsed, so that [`show`] can hide a
    /// value that contains it (pasted into another field) before the value
    /// is escaped or cut, which would defeat the scrubbing of the final text.
    static PARSING_TOKEN: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

struct TokenGuard;

impl TokenGuard {
    fn set(token: &str) -> TokenGuard {
        PARSING_TOKEN.with(|t| *t.borrow_mut() = token.to_string());
        TokenGuard
    }
}

impl Drop for TokenGuard {
    fn drop(&mut self) {
        PARSING_TOKEN.with(|t| t.borrow_mut().clear());
    }
}

/// Compact JSON of a value for an error message, cut to [`SHOW_MAX_CHARS`].
fn show(v: &Value) -> String {
    let text = serde_json::to_string(v).unwrap_or_else(|_| type_name(v).to_string());
    let holds_token = PARSING_TOKEN.with(|t| {
        let token = t.borrow();
        if token.len() < SCRUB_MIN_TOKEN_LEN {
            return false;
        }
        let escaped = serde_json::to_string(token.as_str()).unwrap_or_default();
        let escaped = escaped.trim_matches('"');
        text.contains(token.as_str()) || text.contains(escaped)
    });
    if holds_token {
        return format!("\"{REDACTED}\"");
    }
    truncate(text)
}

fn show_str(s: &str) -> String {
    show(&Value::String(s.to_string()))
}

fn truncate(text: String) -> String {
    if text.chars().count() <= SHOW_MAX_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(SHOW_MAX_CHARS - 3).collect();
    cut.push_str("...");
    cut
}

fn invalid_json(e: &serde_json::Error) -> ConfigError {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let what = full.strip_suffix(&suffix).unwrap_or(&full);
    ConfigError::new(
        "config",
        format!(
            "invalid JSON at line {} column {}: {what}",
            e.line(),
            e.column()
        ),
    )
}

fn scrub(text: &mut String, token: &str) {
    if token.len() >= SCRUB_MIN_TOKEN_LEN && text.contains(token) {
        *text = text.replace(token, REDACTED);
    }
}

// Range-checked before these are called; the fallbacks are never taken.
fn to_u64(n: i128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn to_u32(n: i128) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn to_usize(n: i128) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

struct Canon(String);

impl Canon {
    fn item(&mut self, name: &str, value: &str) {
        use std::fmt::Write as _;
        let _ = write!(self.0, "{name}={}:{value};", value.len());
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "b1gS3cret-70ken-0f-consul";

    fn ok(json: &str) -> Config {
        match parse(json.as_bytes()) {
            Ok(c) => c,
            Err(e) => panic!("{json} refused: {e}"),
        }
    }

    fn ok_warn(json: &str) -> (Config, Vec<String>) {
        match parse_with_warnings(json.as_bytes()) {
            Ok(r) => r,
            Err(e) => panic!("{json} refused: {e}"),
        }
    }

    fn err(json: &str) -> String {
        match parse(json.as_bytes()) {
            Ok(c) => panic!("{json} accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// A config with one server plus `extra` top-level fields.
    fn with(extra: &str) -> String {
        if extra.is_empty() {
            r#"{"servers":["http://127.0.0.1:8500"]}"#.to_string()
        } else {
            format!(r#"{{"servers":["http://127.0.0.1:8500"],{extra}}}"#)
        }
    }

    fn server_err(url: &str) -> String {
        err(&format!(r#"{{"servers":[{}]}}"#, Value::String(url.into())))
    }

    #[test]
    fn minimal_config_gets_every_default() {
        let (c, warnings) = ok_warn(r#"{"servers":["http://127.0.0.1:8500"]}"#);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            c.servers,
            vec![Server {
                url: "http://127.0.0.1:8500".into(),
                scheme: Scheme::Http,
                host: "127.0.0.1".into(),
                port: 8500,
            }]
        );
        assert_eq!(c.token, "");
        assert_eq!(c.prefix, "upstreams");
        assert_eq!(c.weight, 1);
        assert!(c.keepalive);
        assert_eq!(c.fetch_interval, Duration::from_secs(3));
        assert_eq!(
            c.timeout,
            Timeouts {
                connect: Duration::from_millis(2000),
                read: Duration::from_millis(2000),
                wait: Duration::from_secs(60),
            }
        );
        assert!(c.skip_keys.is_empty());
        assert_eq!(c.default_service, None);
        assert_eq!(c.dump, None);
        assert_eq!(c.tls_ca_file, None);
        assert!(c.tls_verify);
        assert_eq!(c.max_response_bytes, 67_108_864);
        assert_eq!(c.on_empty_prefix, EmptyPrefixPolicy::Clear);
        assert_eq!(
            c.backoff,
            Backoff {
                initial: Duration::from_millis(1000),
                max: Duration::from_millis(30000),
            }
        );
        assert_eq!(
            c.share,
            Share {
                enabled: true,
                dir: PathBuf::from("/dev/shm"),
                group: None,
            }
        );
        assert_eq!(Config::from_json(with("").as_bytes()), Ok(c));
    }

    #[test]
    fn full_config_is_read() {
        let c = ok(&format!(
            r#"{{
            "servers": ["http://consul-1.local:8500", "https://[::1]:8501", "http://10.0.0.2:8500"],
            "token": "{TOKEN}",
            "prefix": "/gateway/upstreams/",
            "weight": 10,
            "keepalive": false,
            "fetch_interval": 5,
            "timeout": {{"connect": 500, "read": 3000, "wait": 600}},
            "skip_keys": ["gateway/upstreams/legacy/"],
            "default_service": {{"host": "127.0.0.1", "port": 20999,
                                 "metadata": {{"weight": 7, "zone": "a"}}}},
            "dump": {{"path": "logs/consul_kv.dump", "load_on_init": false, "expire": 3600}},
            "tls": {{"ca_file": "/etc/ssl/consul-ca.pem", "verify": false}},
            "max_response_bytes": 1024,
            "on_empty_prefix": "keep",
            "backoff": {{"initial": 200, "max": 200}},
            "share": {{"enabled": false, "dir": "/run/ckv", "group": "gw_1"}}
        }}"#
        ));
        assert_eq!(c.servers.len(), 3);
        assert_eq!(c.servers[0].host, "consul-1.local");
        assert_eq!(c.servers[1].scheme, Scheme::Https);
        assert_eq!(c.servers[1].host, "[::1]");
        assert_eq!(c.servers[1].port, 8501);
        assert_eq!(c.servers[1].url, "https://[::1]:8501");
        assert_eq!(c.token, TOKEN);
        assert_eq!(c.prefix, "gateway/upstreams");
        assert_eq!(c.weight, 10);
        assert!(!c.keepalive);
        assert_eq!(c.fetch_interval, Duration::from_secs(5));
        assert_eq!(c.timeout.connect, Duration::from_millis(500));
        assert_eq!(c.timeout.read, Duration::from_millis(3000));
        assert_eq!(c.timeout.wait, Duration::from_secs(600));
        assert_eq!(c.skip_keys, vec!["gateway/upstreams/legacy/".to_string()]);
        let ds = c.default_service.clone().unwrap_or_else(|| panic!("no ds"));
        assert_eq!(ds.host, "127.0.0.1");
        assert_eq!(ds.port, 20999);
        assert_eq!(
            Value::Object(ds.metadata),
            json!({"fail_timeout": 1, "weight": 7, "max_fails": 1, "zone": "a"})
        );
        assert_eq!(
            c.dump,
            Some(Dump {
                path: PathBuf::from("logs/consul_kv.dump"),
                load_on_init: false,
                expire: 3600,
            })
        );
        assert_eq!(c.tls_ca_file, Some(PathBuf::from("/etc/ssl/consul-ca.pem")));
        assert!(!c.tls_verify);
        assert_eq!(c.max_response_bytes, 1024);
        assert_eq!(c.on_empty_prefix, EmptyPrefixPolicy::Keep);
        assert_eq!(c.backoff.initial, Duration::from_millis(200));
        assert_eq!(c.backoff.max, Duration::from_millis(200));
        assert!(!c.share.enabled);
        assert_eq!(c.share.dir, PathBuf::from("/run/ckv"));
        assert_eq!(c.share.group.as_deref(), Some("gw_1"));
    }

    #[test]
    fn document_errors() {
        assert_eq!(err("[]"), "config: expected a JSON object");
        assert_eq!(err("\"x\""), "config: expected a JSON object");
        assert_eq!(err("null"), "config: expected a JSON object");
        assert_eq!(
            err("{\"servers\": [}"),
            "config: invalid JSON at line 1 column 14: expected value"
        );
        assert_eq!(
            err(""),
            "config: invalid JSON at line 1 column 0: EOF while parsing a value"
        );
        assert!(err("{}\n{}").starts_with("config: invalid JSON at line 2 column 1: "));
        let bad_utf8 = b"{\"servers\":[\"http://h\xff:1\"]}";
        let e = parse(bad_utf8).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("config: invalid UTF-8 at byte offset 21")
        );
        assert_eq!(
            err("{}"),
            "servers: required (an array of http://host:port or https://host:port strings)"
        );
    }

    #[test]
    fn servers_shape() {
        assert_eq!(
            err(r#"{"servers":"http://127.0.0.1:8500"}"#),
            "servers: expected an array of http://host:port or https://host:port strings, \
             got \"http://127.0.0.1:8500\""
        );
        assert_eq!(
            err(r#"{"servers":[]}"#),
            "servers: expected at least one server, got []"
        );
        assert_eq!(
            err(r#"{"servers":{}}"#),
            "servers: expected at least one server, got []"
        );
        assert_eq!(
            err(r#"{"servers":null}"#),
            "servers: required (an array of http://host:port or https://host:port strings)"
        );
        assert_eq!(
            err(r#"{"servers":["http://a:1", 8500]}"#),
            "servers[1]: expected a string, got 8500"
        );
    }

    #[test]
    fn server_url_errors() {
        let e = |url: &str, why: &str| {
            format!(
                "servers[0]: expected http://host:port or https://host:port, got {} ({why})",
                Value::String(url.into())
            )
        };
        assert_eq!(
            err(r#"{"servers":["http://a:1","ftp://x"]}"#),
            r#"servers[1]: expected http://host:port or https://host:port, got "ftp://x""#
        );
        for url in [
            "127.0.0.1:8500",
            "HTTP://a:1",
            "http:/a:1",
            " http://a:1",
            "tcp://a:1",
        ] {
            assert_eq!(
                server_err(url),
                format!(
                    "servers[0]: expected http://host:port or https://host:port, got {}",
                    Value::String(url.into())
                )
            );
        }
        let cases = [
            ("http://a:8500/", "trailing \"/\" is not allowed"),
            ("http://a:8500/v1", "a path is not allowed"),
            ("http://a:8500//", "a path is not allowed"),
            ("http://a/", "trailing \"/\" is not allowed"),
            ("http://a:8500?dc=x", "a query is not allowed"),
            ("http://a:8500#x", "a fragment is not allowed"),
            ("http://a", "missing port"),
            ("http://a:", "missing port"),
            ("http://[::1]", "missing port"),
            ("http://[::1]:", "missing port"),
            ("http://a:0", "the port must be 1-65535"),
            ("http://a:65536", "the port must be 1-65535"),
            ("http://a:99999999999999999999", "the port must be 1-65535"),
            ("http://a:-1", "the port must be a number"),
            ("http://a:85 00", "the port must be a number"),
            ("http://a:http", "the port must be a number"),
            ("http://", "empty host"),
            ("http://:8500", "empty host"),
            ("https://", "empty host"),
            ("http://[::1:8500", "bad IPv6 address: missing \"]\""),
            ("http://[::g]:8500", "bad IPv6 address"),
            ("http://[]:8500", "bad IPv6 address"),
            ("http://[fe80::1%25eth0]:8500", "bad IPv6 address"),
            ("http://[::1]8500", "unexpected text after \"]\""),
            (
                "http://::1:8500",
                "an IPv6 address must be in brackets, e.g. http://[::1]:8500",
            ),
            ("http://256.0.0.1:8500", "bad IPv4 address"),
            ("http://1.2.3:8500", "bad IPv4 address"),
            ("http://a..b:8500", "bad host name"),
            ("http://-a:8500", "bad host name"),
            ("http://a b:8500", "bad host name"),
            ("http://a.b.:8500", "bad host name"),
            ("http://exa\u{e9}mple:8500", "bad host name"),
        ];
        for (url, why) in cases {
            assert_eq!(server_err(url), e(url, why), "{url}");
        }
        let long = format!("http://{}:1", "a".repeat(64));
        assert!(server_err(&long).ends_with("(bad host name)"));
    }

    #[test]
    fn server_userinfo_is_refused_and_hidden() {
        let msg = server_err("http://admin:hunter2@consul:8500");
        assert_eq!(
            msg,
            "servers[0]: expected http://host:port or https://host:port, \
             got \"http://<redacted>@consul:8500\" (user info is not allowed; use token)"
        );
        assert!(!msg.contains("hunter2"));
        assert!(server_err("http://@consul:8500").contains("user info is not allowed"));
    }

    #[test]
    fn server_forms_accepted() {
        let c = ok(r#"{"servers":[
            "http://localhost:8500", "https://consul.service.consul:443",
            "http://consul_1:1", "http://10.1.2.3:65535", "http://[2001:db8::1]:8500",
            "https://[::ffff:10.0.0.1]:8501", "http://Consul-A.Example.COM:8500"]}"#);
        let got: Vec<(Scheme, &str, u16)> = c
            .servers
            .iter()
            .map(|s| (s.scheme, s.host.as_str(), s.port))
            .collect();
        assert_eq!(
            got,
            vec![
                (Scheme::Http, "localhost", 8500),
                (Scheme::Https, "consul.service.consul", 443),
                (Scheme::Http, "consul_1", 1),
                (Scheme::Http, "10.1.2.3", 65535),
                (Scheme::Http, "[2001:db8::1]", 8500),
                (Scheme::Https, "[::ffff:10.0.0.1]", 8501),
                (Scheme::Http, "Consul-A.Example.COM", 8500),
            ]
        );
        assert_eq!(c.servers[6].url, "http://Consul-A.Example.COM:8500");
    }

    #[test]
    fn duplicate_servers() {
        assert_eq!(
            err(r#"{"servers":["http://a:1","http://b:1","http://a:1"]}"#),
            "servers[2]: duplicate of servers[0]"
        );
        assert_eq!(
            err(r#"{"servers":["http://b:1","http://A:1","http://a:1"]}"#),
            "servers[2]: duplicate of servers[1]"
        );
        assert_eq!(
            err(r#"{"servers":["http://[::1]:1","http://[0:0::1]:1"]}"#),
            "servers[1]: duplicate of servers[0]"
        );
        assert_eq!(
            err(r#"{"servers":["http://a:8500","http://a:08500"]}"#),
            "servers[1]: duplicate of servers[0]"
        );
        // Same host and port over another scheme or port is another server.
        let c = ok(r#"{"servers":["http://a:1","https://a:1","http://a:2"]}"#);
        assert_eq!(c.servers.len(), 3);
    }

    #[test]
    fn prefix_normalization() {
        for (raw, want) in [
            ("upstreams", "upstreams"),
            ("/upstreams", "upstreams"),
            ("upstreams/", "upstreams"),
            ("//upstreams//", "upstreams"),
            ("/a/b/c/", "a/b/c"),
            ("with space", "with space"),
        ] {
            let c = ok(&with(&format!(r#""prefix":{}"#, Value::String(raw.into()))));
            assert_eq!(c.prefix, want, "{raw}");
        }
        assert_eq!(
            err(&with(r#""prefix":"""#)),
            r#"prefix: must not be empty or only "/", got """#
        );
        assert_eq!(
            err(&with(r#""prefix":"///""#)),
            r#"prefix: must not be empty or only "/", got "///""#
        );
        assert_eq!(
            err(&with(r#""prefix":"a//b""#)),
            r#"prefix: must not contain "//", got "a//b""#
        );
        assert_eq!(
            err(&with(r#""prefix":"a\nb""#)),
            r#"prefix: must not contain control characters, got "a\nb""#
        );
        assert_eq!(
            err(&with(r#""prefix":"a\u0000""#)),
            r#"prefix: must not contain control characters, got "a\u0000""#
        );
        assert_eq!(
            err(&with(r#""prefix":"a?recurse""#)),
            r##"prefix: must not contain "?" or "#", got "a?recurse""##
        );
        assert_eq!(
            err(&with(r#""prefix":5"#)),
            "prefix: expected a string, got 5"
        );
    }

    #[test]
    fn integer_fields() {
        // (field, rule shown for a wrong type or a value below the minimum)
        let fields = [
            ("weight", "an integer >= 1"),
            ("fetch_interval", "an integer >= 1"),
            ("max_response_bytes", "an integer >= 1024"),
        ];
        for (field, rule) in fields {
            for bad in [r#""3""#, "true", "1.5", "[]", "{}", "0", "-1"] {
                assert_eq!(
                    err(&with(&format!(r#""{field}":{bad}"#))),
                    format!("{field}: expected {rule}, got {bad}"),
                );
            }
        }
        assert_eq!(
            err(&with(r#""max_response_bytes":1023"#)),
            "max_response_bytes: expected an integer >= 1024, got 1023"
        );
        // Above maximum.
        assert_eq!(
            err(&with(r#""weight":4294967296"#)),
            "weight: expected an integer from 1 to 4294967295, got 4294967296"
        );
        assert_eq!(
            err(&with(r#""fetch_interval":2147484"#)),
            "fetch_interval: expected an integer from 1 to 2147483, got 2147484"
        );
        assert_eq!(ok(&with(r#""weight":4294967295"#)).weight, u32::MAX);
        // Integral floats as cjson may print them.
        assert_eq!(ok(&with(r#""weight":3.0"#)).weight, 3);
        assert_eq!(
            ok(&with(r#""max_response_bytes":1e6"#)).max_response_bytes,
            1_000_000
        );
        // null is absent.
        assert_eq!(ok(&with(r#""weight":null"#)).weight, 1);
    }

    #[test]
    fn boolean_fields() {
        assert_eq!(
            err(&with(r#""keepalive":"true""#)),
            r#"keepalive: expected a boolean, got "true""#
        );
        assert_eq!(
            err(&with(r#""keepalive":1"#)),
            "keepalive: expected a boolean, got 1"
        );
        assert_eq!(
            err(&with(r#""dump":{"path":"x","load_on_init":"no"}"#)),
            r#"dump.load_on_init: expected a boolean, got "no""#
        );
        assert_eq!(
            err(&with(r#""tls":{"verify":0}"#)),
            "tls.verify: expected a boolean, got 0"
        );
        assert_eq!(
            err(&with(r#""share":{"enabled":"yes"}"#)),
            r#"share.enabled: expected a boolean, got "yes""#
        );
    }

    #[test]
    fn timeout_fields() {
        for key in ["connect", "read"] {
            assert_eq!(
                err(&with(&format!(r#""timeout":{{"{key}":0}}"#))),
                format!("timeout.{key}: expected an integer >= 1, got 0")
            );
            assert_eq!(
                err(&with(&format!(r#""timeout":{{"{key}":"2000"}}"#))),
                format!(r#"timeout.{key}: expected an integer >= 1, got "2000""#)
            );
            assert_eq!(
                err(&with(&format!(r#""timeout":{{"{key}":2147483648}}"#))),
                format!("timeout.{key}: expected an integer from 1 to 2147483647, got 2147483648")
            );
        }
        let wait = "timeout.wait: expected an integer from 1 to 600 \
                    (seconds; Consul caps a blocking query at 10 minutes), got";
        assert_eq!(
            err(&with(r#""timeout":{"wait":601}"#)),
            format!("{wait} 601")
        );
        assert_eq!(err(&with(r#""timeout":{"wait":0}"#)), format!("{wait} 0"));
        assert_eq!(
            err(&with(r#""timeout":{"wait":"60s"}"#)),
            format!(r#"{wait} "60s""#)
        );
        assert_eq!(
            err(&with(r#""timeout":5"#)),
            "timeout: expected an object, got 5"
        );
        // Partial timeout objects keep the other defaults; {} and [] are empty.
        let c = ok(&with(r#""timeout":{"wait":1}"#));
        assert_eq!(c.timeout.wait, Duration::from_secs(1));
        assert_eq!(c.timeout.connect, Duration::from_millis(2000));
        assert_eq!(ok(&with(r#""timeout":[]"#)).timeout, ok(&with("")).timeout);
        assert_eq!(ok(&with(r#""timeout":{}"#)).timeout, ok(&with("")).timeout);
    }

    #[test]
    fn token_field() {
        assert_eq!(
            err(&with(r#""token":12345678"#)),
            "token: expected a string, got a number"
        );
        assert_eq!(
            err(&with(r#""token":"abc\r\nX-Evil: 1""#)),
            "token: must not contain control characters"
        );
        assert_eq!(ok(&with(r#""token":null"#)).token, "");
    }

    #[test]
    fn skip_keys_field() {
        assert_eq!(
            err(&with(r#""skip_keys":[]"#)),
            "skip_keys: expected a non-empty array of strings, got []"
        );
        assert_eq!(
            err(&with(r#""skip_keys":"upstreams/a/""#)),
            r#"skip_keys: expected a non-empty array of strings, got "upstreams/a/""#
        );
        assert_eq!(
            err(&with(r#""skip_keys":["upstreams/a/", 1]"#)),
            "skip_keys[1]: expected a string, got 1"
        );
        let (c, w) = ok_warn(&with(
            r#""skip_keys":["upstreams/a/","upstreams/b","other/c/"]"#,
        ));
        assert_eq!(c.skip_keys.len(), 3);
        assert_eq!(
            w,
            vec![
                r#"skip_keys[1]: "upstreams/b" can never match: skip_keys are compared exactly with "upstreams/<service>/""#,
                r#"skip_keys[2]: "other/c/" can never match: skip_keys are compared exactly with "upstreams/<service>/""#,
            ]
        );
    }

    #[test]
    fn default_service_field() {
        let c = ok(&with(r#""default_service":{"host":"127.0.0.1","port":80}"#));
        let ds = c.default_service.unwrap_or_else(|| panic!("none"));
        assert_eq!(
            Value::Object(ds.metadata),
            json!({"fail_timeout": 1, "weight": 1, "max_fails": 1})
        );
        let cases = [
            (r#"{"port":80}"#, "default_service.host: required"),
            (
                r#"{"host":"","port":80}"#,
                r#"default_service.host: expected a non-empty string, got """#,
            ),
            (
                r#"{"host":1,"port":80}"#,
                "default_service.host: expected a string, got 1",
            ),
            (r#"{"host":"h"}"#, "default_service.port: required"),
            (
                r#"{"host":"h","port":0}"#,
                "default_service.port: expected an integer from 1 to 65535, got 0",
            ),
            (
                r#"{"host":"h","port":65536}"#,
                "default_service.port: expected an integer from 1 to 65535, got 65536",
            ),
            (
                r#"{"host":"h","port":"80"}"#,
                r#"default_service.port: expected an integer from 1 to 65535, got "80""#,
            ),
            (
                r#"{"host":"h","port":80,"metadata":"x"}"#,
                r#"default_service.metadata: expected an object, got "x""#,
            ),
            (
                r#"{"host":"h","port":80,"metadata":{"weight":"1"}}"#,
                r#"default_service.metadata.weight: expected an integer, got "1""#,
            ),
            (
                r#"{"host":"h","port":80,"metadata":{"max_fails":1.5}}"#,
                "default_service.metadata.max_fails: expected an integer, got 1.5",
            ),
            (
                r#"{"host":"h","port":80,"metadata":{"fail_timeout":true}}"#,
                "default_service.metadata.fail_timeout: expected an integer, got true",
            ),
            (
                r#""h:80""#,
                r#"default_service: expected an object, got "h:80""#,
            ),
        ];
        for (ds, want) in cases {
            assert_eq!(
                err(&with(&format!(r#""default_service":{ds}"#))),
                want,
                "{ds}"
            );
        }
        // APISIX sets no minimum on the metadata integers.
        let c = ok(&with(
            r#""default_service":{"host":"h","port":1,"metadata":{"weight":0,"max_fails":-1}}"#,
        ));
        let md = c.default_service.map(|d| d.metadata).unwrap_or_default();
        assert_eq!(md.get("weight"), Some(&json!(0)));
        assert_eq!(md.get("max_fails"), Some(&json!(-1)));
    }

    #[test]
    fn dump_field() {
        let c = ok(&with(r#""dump":{"path":"/tmp/d.json"}"#));
        assert_eq!(
            c.dump,
            Some(Dump {
                path: PathBuf::from("/tmp/d.json"),
                load_on_init: true,
                expire: 0,
            })
        );
        let cases = [
            (r#"{}"#, "dump.path: required"),
            (r#"[]"#, "dump.path: required"),
            (r#"{"load_on_init":true}"#, "dump.path: required"),
            (
                r#"{"path":""}"#,
                r#"dump.path: expected a non-empty path without NUL, got """#,
            ),
            (
                r#"{"path":"a\u0000b"}"#,
                r#"dump.path: expected a non-empty path without NUL, got "a\u0000b""#,
            ),
            (r#"{"path":1}"#, "dump.path: expected a string, got 1"),
            (
                r#"{"path":"x","expire":-1}"#,
                "dump.expire: expected an integer >= 0, got -1",
            ),
            (
                r#"{"path":"x","expire":"1h"}"#,
                r#"dump.expire: expected an integer >= 0, got "1h""#,
            ),
            (r#"true"#, "dump: expected an object, got true"),
        ];
        for (d, want) in cases {
            assert_eq!(err(&with(&format!(r#""dump":{d}"#))), want, "{d}");
        }
    }

    #[test]
    fn ckv_only_fields() {
        let cases = [
            (r#""tls":"on""#, r#"tls: expected an object, got "on""#),
            (
                r#""tls":{"ca_file":""}"#,
                r#"tls.ca_file: expected a non-empty path without NUL, got """#,
            ),
            (r#""tls":{"ca_file":5}"#, "tls.ca_file: expected a string, got 5"),
            (
                r#""on_empty_prefix":"drop""#,
                r#"on_empty_prefix: expected "clear" or "keep", got "drop""#,
            ),
            (
                r#""on_empty_prefix":true"#,
                r#"on_empty_prefix: expected "clear" or "keep", got true"#,
            ),
            (
                r#""backoff":{"initial":0}"#,
                "backoff.initial: expected an integer >= 1, got 0",
            ),
            (
                r#""backoff":{"initial":"1s"}"#,
                r#"backoff.initial: expected an integer >= 1, got "1s""#,
            ),
            (
                r#""backoff":{"initial":500,"max":499}"#,
                "backoff.max: expected an integer from backoff.initial (500) to 2147483647, got 499",
            ),
            (
                r#""backoff":{"max":999}"#,
                "backoff.max: expected an integer from backoff.initial (1000) to 2147483647, got 999",
            ),
            (
                r#""backoff":{"initial":40000}"#,
                "backoff.max: expected an integer >= backoff.initial (40000), got 30000 (the default); set backoff.max",
            ),
            (r#""backoff":1000"#, "backoff: expected an object, got 1000"),
            (r#""share":false"#, "share: expected an object, got false"),
            (
                r#""share":{"dir":"shm"}"#,
                r#"share.dir: expected an absolute path, got "shm""#,
            ),
            (
                r#""share":{"dir":""}"#,
                r#"share.dir: expected a non-empty path without NUL, got """#,
            ),
        ];
        for (extra, want) in cases {
            assert_eq!(err(&with(extra)), want, "{extra}");
        }
        let group_rule = r#"share.group: expected 1 to 64 characters from A-Z a-z 0-9 . _ - (not "." or ".."), got"#;
        for bad in [
            r#""""#, r#"".""#, r#""..""#, r#""a/b""#, r#""a b""#, "-1", "1.5", "true",
        ] {
            assert_eq!(
                err(&with(&format!(r#""share":{{"group":{bad}}}"#))),
                format!("{group_rule} {bad}")
            );
        }
        let long = "g".repeat(65);
        assert!(err(&with(&format!(r#""share":{{"group":"{long}"}}"#))).starts_with(group_rule));
        assert_eq!(
            ok(&with(r#""share":{"group":1234}"#))
                .share
                .group
                .as_deref(),
            Some("1234")
        );
        assert_eq!(
            ok(&with(r#""backoff":{"initial":40000,"max":40000}"#))
                .backoff
                .max,
            Duration::from_millis(40000)
        );
    }

    #[test]
    fn unknown_fields_warn() {
        let (c, w) = ok_warn(&with(
            r#""timout":{"wait":5},"timeout":{"conect":1},"dump":{"path":"p","expiry":1},
               "default_service":{"host":"h","port":1,"priority":1},
               "tls":{"verify":true},"backoff":{"jitter":true},"share":{"dri":"/x"}"#,
        ));
        assert_eq!(c.timeout.wait, Duration::from_secs(60));
        assert_eq!(
            w,
            vec![
                r#"unknown field "timeout.conect" ignored"#,
                r#"unknown field "default_service.priority" ignored"#,
                r#"unknown field "dump.expiry" ignored"#,
                r#"unknown field "backoff.jitter" ignored"#,
                r#"unknown field "share.dri" ignored"#,
                r#"unknown field "timout" ignored"#,
                "tls is set but no server uses https://; it has no effect",
            ]
        );
        // metadata is free-form: no warnings for its extra keys.
        let (_, w) = ok_warn(&with(
            r#""default_service":{"host":"h","port":1,"metadata":{"zone":"a"}}"#,
        ));
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn long_values_are_truncated() {
        let long = "x".repeat(500);
        let msg = err(&with(&format!(r#""weight":"{long}""#)));
        assert_eq!(
            msg,
            format!(
                "weight: expected an integer >= 1, got \"{}...",
                "x".repeat(56)
            )
        );
        let shown = msg.trim_start_matches("weight: expected an integer >= 1, got ");
        assert_eq!(shown.chars().count(), 60);
        // Multi-byte characters are cut on a character boundary.
        let msg = err(&with(&format!(r#""weight":"{}""#, "é".repeat(100))));
        assert!(msg.ends_with("é..."));
    }

    #[test]
    fn token_never_leaks() {
        let json =
            format!(r#"{{"servers":["http://127.0.0.1:8500"],"token":"{TOKEN}","prefix":"x"}}"#);
        let c = ok(&json);
        assert_eq!(c.token, TOKEN);
        let debug = format!("{c:?}");
        assert!(!debug.contains(TOKEN), "{debug}");
        assert!(debug.contains("<redacted>"));
        let display = c.to_string();
        assert!(!display.contains(TOKEN), "{display}");
        let redacted = c.redacted_json();
        assert_eq!(redacted["token"], json!("<redacted>"));
        assert!(!redacted.to_string().contains(TOKEN));

        // Pasted into other fields, the token is scrubbed from errors and warnings.
        for extra in [
            format!(r#""weight":"{TOKEN}""#),
            format!(r#""prefix":"a//{TOKEN}""#),
            format!(r#""skip_keys":[{{"{TOKEN}":1}}]"#),
            format!(r#""share":{{"group":"{TOKEN}/x"}}"#),
        ] {
            let json =
                format!(r#"{{"servers":["http://127.0.0.1:8500"],"token":"{TOKEN}",{extra}}}"#);
            let e = parse(json.as_bytes())
                .err()
                .unwrap_or_else(|| panic!("accepted"));
            assert!(!e.to_string().contains(TOKEN), "{e}");
            assert!(!format!("{e:?}").contains(TOKEN), "{e:?}");
        }
        let json =
            format!(r#"{{"servers":["http://127.0.0.1:8500"],"token":"{TOKEN}","{TOKEN}":1}}"#);
        let (_, w) = ok_warn(&json);
        assert_eq!(w, vec![r#"unknown field "<redacted>" ignored"#]);
        let json = format!(r#"{{"servers":["http://127.0.0.1:8500/{TOKEN}"],"token":"{TOKEN}"}}"#);
        assert!(!err(&json).contains(TOKEN));

        // An empty token is shown as empty.
        let c = ok(&with(""));
        assert_eq!(c.redacted_json()["token"], json!(""));
        assert!(format!("{c:?}").contains("token: \"\""));
    }

    #[test]
    fn redacted_json_round_trips() {
        let c = ok(r#"{
            "servers": ["http://a:1", "https://[::1]:2"],
            "token": "t0ken", "prefix": "/p/", "weight": 2, "keepalive": false,
            "fetch_interval": 9, "timeout": {"connect": 1, "read": 2, "wait": 3},
            "skip_keys": ["p/x/"],
            "default_service": {"host": "h", "port": 8, "metadata": {"zone": "z"}},
            "dump": {"path": "d", "expire": 5},
            "tls": {"ca_file": "/ca.pem"},
            "max_response_bytes": 2048, "on_empty_prefix": "keep",
            "backoff": {"initial": 10, "max": 20},
            "share": {"dir": "/run", "group": "g"}
        }"#);
        let mut j = c.redacted_json();
        assert_eq!(j["prefix"], json!("p"));
        assert_eq!(j["timeout"], json!({"connect": 1, "read": 2, "wait": 3}));
        assert_eq!(j["backoff"], json!({"initial": 10, "max": 20}));
        j["token"] = json!("t0ken");
        let (again, w) = ok_warn(&j.to_string());
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(again, c);

        // Defaults are rendered too, and parse back to the same config.
        let d = ok(&with(""));
        let j = d.redacted_json();
        assert_eq!(
            j,
            json!({
                "servers": ["http://127.0.0.1:8500"],
                "token": "",
                "prefix": "upstreams",
                "weight": 1,
                "keepalive": true,
                "fetch_interval": 3,
                "timeout": {"connect": 2000, "read": 2000, "wait": 60},
                "tls": {"verify": true},
                "max_response_bytes": 67108864,
                "on_empty_prefix": "clear",
                "gzip": false,
                "backoff": {"initial": 1000, "max": 30000},
                "share": {"enabled": true, "dir": "/dev/shm"},
            })
        );
        assert_eq!(ok(&j.to_string()), d);
    }

    #[test]
    fn config_hash_is_stable_and_watch_sensitive() {
        let base = with("");
        let h = ok(&base).config_hash();
        assert_eq!(h, ok(&base).config_hash());
        // Same config written differently (defaults spelled out, key order,
        // prefix slashes, unwatched fields) hashes the same.
        let same = [
            r#"{"prefix":"/upstreams/","servers":["http://127.0.0.1:8500"],"weight":1}"#,
            r#"{"servers":["http://127.0.0.1:8500"],"timeout":{"wait":60},"keepalive":true}"#,
            r#"{"servers":["http://127.0.0.1:8500"],"dump":{"path":"x"}}"#,
            r#"{"servers":["http://127.0.0.1:8500"],"share":{"group":"other"}}"#,
            r#"{"servers":["http://127.0.0.1:8500"],"default_service":{"host":"h","port":1}}"#,
        ];
        for json in same {
            assert_eq!(ok(json).config_hash(), h, "{json}");
        }
        let changed = [
            with(r#""token":"t""#),
            with(r#""prefix":"other""#),
            with(r#""weight":2"#),
            with(r#""keepalive":false"#),
            with(r#""fetch_interval":4"#),
            with(r#""timeout":{"connect":1}"#),
            with(r#""timeout":{"read":1}"#),
            with(r#""timeout":{"wait":1}"#),
            with(r#""skip_keys":["upstreams/a/"]"#),
            with(r#""tls":{"ca_file":"/ca"}"#),
            with(r#""tls":{"verify":false}"#),
            with(r#""max_response_bytes":2048"#),
            with(r#""on_empty_prefix":"keep""#),
            with(r#""backoff":{"initial":2}"#),
            with(r#""backoff":{"max":2000}"#),
            r#"{"servers":["http://127.0.0.1:8501"]}"#.to_string(),
            r#"{"servers":["https://127.0.0.1:8500"]}"#.to_string(),
            r#"{"servers":["http://127.0.0.1:8500","http://b:1"]}"#.to_string(),
        ];
        let mut seen = vec![h];
        for json in &changed {
            let hc = ok(json).config_hash();
            assert!(!seen.contains(&hc), "{json} collides");
            seen.push(hc);
        }
        // Server order is part of the identity (server indexes are shared).
        assert_ne!(
            ok(r#"{"servers":["http://a:1","http://b:1"]}"#).config_hash(),
            ok(r#"{"servers":["http://b:1","http://a:1"]}"#).config_hash()
        );
        // Field boundaries are unambiguous.
        assert_ne!(
            ok(&with(r#""skip_keys":["a/","b/"]"#)).config_hash(),
            ok(&with(r#""skip_keys":["a/b/"]"#)).config_hash()
        );
    }

    #[test]
    fn fnv1a64_reference_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn empty_lua_tables_from_cjson() {
        // cjson encodes an empty Lua table as {} by default.
        assert_eq!(
            err(r#"{"servers":{}}"#),
            "servers: expected at least one server, got []"
        );
        assert_eq!(ok(&with(r#""share":[]"#)).share, ok(&with("")).share);
        assert_eq!(ok(&with(r#""backoff":[]"#)).backoff, ok(&with("")).backoff);
        let c = ok(&with(
            r#""default_service":{"host":"h","port":1,"metadata":[]}"#,
        ));
        assert_eq!(c.default_service.map(|d| d.metadata.len()), Some(3));
    }
}
