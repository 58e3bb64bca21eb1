//! Everything this tool takes from the ckv library, in one place: config
//! parsing, the token, the parsing rules and the model that turns a Consul
//! response into services. When the library's API moves, only this file
//! changes.

use std::borrow::Cow;

use ckv::config::{self, Config, EmptyPrefixPolicy, Scheme};
use ckv::kv::{self, Field, Outcome, RawEntry, Rules};
use ckv::model::ServerModel;

pub use ckv::VERSION;

/// The configuration as ckv reads it, with its warnings.
pub fn parse_config(json: &[u8]) -> Result<(Config, Vec<String>), String> {
    config::parse_with_warnings(json).map_err(|e| e.to_string())
}

/// The token, for the `X-Consul-Token` header only: `token`, or the
/// content of `token_file` (read once, with ckv's own checks).
pub fn token_of(c: &Config) -> Result<String, String> {
    if let Some(f) = &c.token_file {
        f.load()?;
    }
    Ok(c.current_token().expose().to_string())
}

/// Removes the token from a text that is about to be printed (a server's
/// error body could echo it).
pub fn redact(c: &Config, text: &str) -> String {
    c.scrub(text)
}

/// What ckv does with one entry: a node (service path and node object), or
/// why not. `Ignored` is a folder key.
#[derive(Debug, Clone, PartialEq)]
pub enum CkvKey {
    Node {
        service_path: String,
        node: serde_json::Value,
    },
    Dropped(String),
    Ignored,
    Malformed(String),
}

/// One server's result in ckv: per key, and the services the model builds.
#[derive(Debug)]
pub struct CkvView {
    pub keys: Vec<CkvKey>,
    /// Full service name (`{url}/v1/kv/{path}`) and its node objects, sorted
    /// by name.
    pub services: Vec<(String, Vec<serde_json::Value>)>,
    /// The model refused the response whole (every entry malformed).
    pub refused: bool,
}

fn rules(c: &Config) -> Rules {
    Rules {
        prefix: c.prefix.clone(),
        skip_keys: c.skip_keys.clone(),
        default_weight: c.weight,
    }
}

/// Runs ckv's parser and model on the entries of one server's read.
/// `entries` holds `(key, base64 value)` pairs under `{prefix}/`, in the
/// order Consul sent them.
pub fn evaluate(c: &Config, url: &str, entries: &[(String, Option<String>)]) -> CkvView {
    let rules = rules(c);
    let raw: Vec<RawEntry<'_>> = entries
        .iter()
        .map(|(k, v)| RawEntry {
            key: Field::Ok(Cow::Borrowed(k.as_str())),
            value: match v {
                Some(v) => Field::Ok(Cow::Borrowed(v.as_str())),
                None => Field::Null,
            },
            modify_index: Field::Ok(1),
        })
        .collect();
    let keys = raw
        .iter()
        .map(|e| match kv::parse_entry(key_str(e), &e.value, &rules) {
            Outcome::Node { service_path, json } => CkvKey::Node {
                service_path: service_path.to_string(),
                node: serde_json::from_str(&json).unwrap_or(serde_json::Value::Null),
            },
            Outcome::Dropped(why) => CkvKey::Dropped(why.to_string()),
            Outcome::Ignored => CkvKey::Ignored,
            Outcome::Malformed(why) => CkvKey::Malformed(why),
        })
        .collect();
    let mut model = ServerModel::new(0, url, rules);
    let refused = model.apply(&raw, 1).is_err();
    let mut services: Vec<(String, Vec<serde_json::Value>)> = model
        .services()
        .map(|(name, s)| {
            let nodes = serde_json::from_str(&s.nodes_json).unwrap_or_default();
            (name.to_string(), nodes)
        })
        .collect();
    services.sort_by(|a, b| a.0.cmp(&b.0));
    CkvView {
        keys,
        services,
        refused,
    }
}

fn key_str<'a>(e: &'a RawEntry<'_>) -> &'a str {
    match &e.key {
        Field::Ok(k) => k,
        _ => "",
    }
}

/// The settings the report needs, in plain types.
#[derive(Debug, Clone)]
pub struct Settings {
    pub servers: Vec<ServerSettings>,
    pub prefix: String,
    pub skip_keys: Vec<String>,
    pub weight: u32,
    pub clears_on_empty_prefix: bool,
    pub default_service: Option<(String, u16)>,
    pub connect_timeout: std::time::Duration,
    pub read_timeout: std::time::Duration,
    pub max_response_bytes: usize,
    pub tls_ca_file: Option<std::path::PathBuf>,
    pub tls_verify: bool,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub url: String,
    pub https: bool,
}

pub fn settings(c: &Config) -> Settings {
    Settings {
        servers: c
            .servers
            .iter()
            .map(|s| ServerSettings {
                url: s.url.clone(),
                https: s.scheme == Scheme::Https,
            })
            .collect(),
        prefix: c.prefix.clone(),
        skip_keys: c.skip_keys.clone(),
        weight: c.weight,
        clears_on_empty_prefix: c.on_empty_prefix == EmptyPrefixPolicy::Clear,
        default_service: c.default_service.as_ref().map(|d| (d.host.clone(), d.port)),
        connect_timeout: c.timeout.connect,
        read_timeout: c.timeout.read,
        max_response_bytes: c.max_response_bytes,
        tls_ca_file: c.tls_ca_file.clone(),
        tls_verify: c.tls_verify,
    }
}

/// Text from Consul made safe to print: ckv's own escaping.
pub fn escape_untrusted(text: &str) -> Cow<'_, str> {
    ckv::log::escape_untrusted(text)
}
