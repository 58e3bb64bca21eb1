//! The field table: every configuration field with its default and limits,
//! defined once. The parser reads values through these entries, the docs
//! test compares the README and `schema.lua` against [`table_json`], and
//! nothing else in the crate spells a default or a limit.
//!
//! A new option is one entry here, one field on [`super::Config`], its read
//! in `walk.rs` and its line in `effective.rs` (a test fails if the effective
//! config lacks a field of this table), plus a README row and a `schema.lua`
//! entry (`tests/config_docs.rs` fails until both agree with this table);
//! a ckv-only field that APISIX's schema need not describe is listed in
//! [`NOT_IN_APISIX_SCHEMA`] instead of getting a `schema.lua` entry.
//! `Debug` is derived and the share fingerprint covers the effective config,
//! so neither needs an edit.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::errors::{show, ConfigError};
use super::reader::{int_value, Obj};
use super::{Consistency, EmptyPrefixPolicy};

/// Millisecond values must fit a signed 32-bit count, as nginx and OpenResty
/// socket timeouts do.
pub(crate) const MAX_MS: i128 = i32::MAX as i128;
/// Second values must fit [`MAX_MS`] once turned into milliseconds.
pub(crate) const MAX_SECS: i128 = MAX_MS / 1000;

/// How a field's value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// An integer in `min ..= max`. The message names the maximum only when
    /// `show_max` is set or the value is above it; `note` is added in
    /// parentheses after the rule.
    Int {
        min: i128,
        max: i128,
        show_max: bool,
        note: &'static str,
    },
    Bool,
    /// A string; the walk adds field-specific checks (prefix, host, token).
    Str,
    /// A non-empty string without NUL, used as a file path.
    Path,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// Checked by its own code in the walk; the text is the JSON type.
    Custom(&'static str),
}

/// The value taken when a field is absent or `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfAbsent {
    /// The field must be given (when its parent object is).
    Required,
    /// Absent means "not set" (`Option::None`, an empty list).
    Unset,
    Int(i128),
    Bool(bool),
    Str(&'static str),
}

/// The unit of an integer field, as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Millis,
    Secs,
    Bytes,
}

/// One configuration field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Dotted path from the top of the document, e.g. `timeout.wait`.
    pub path: &'static str,
    pub rule: Rule,
    pub default: IfAbsent,
    pub unit: Unit,
}

const fn int(path: &'static str, min: i128, max: i128, default: IfAbsent, unit: Unit) -> Field {
    Field {
        path,
        rule: Rule::Int {
            min,
            max,
            show_max: false,
            note: "",
        },
        default,
        unit,
    }
}

const fn other(path: &'static str, rule: Rule, default: IfAbsent) -> Field {
    Field {
        path,
        rule,
        default,
        unit: Unit::Count,
    }
}

use IfAbsent::{Required, Unset};

/// Defines each field as a `pub const` and lists them all in [`ALL`], so
/// that a field cannot be defined without being documented and tested.
macro_rules! fields {
    ($($(#[$doc:meta])* $name:ident = $field:expr;)*) => {
        $($(#[$doc])* pub const $name: Field = $field;)*
        /// Every field, in documentation order.
        pub const ALL: &[Field] = &[$($name),*];
    };
}

fields! {
    SERVERS = other("servers", Rule::Custom("array"), Required);
    TOKEN = other("token", Rule::Str, IfAbsent::Str(""));
    PREFIX = other("prefix", Rule::Str, IfAbsent::Str("upstreams"));
    WEIGHT = int("weight", 1, u32::MAX as i128, IfAbsent::Int(1), Unit::Count);
    KEEPALIVE = other("keepalive", Rule::Bool, IfAbsent::Bool(true));
    FETCH_INTERVAL = int("fetch_interval", 1, MAX_SECS, IfAbsent::Int(3), Unit::Secs);
    TIMEOUT_CONNECT = int("timeout.connect", 1, MAX_MS, IfAbsent::Int(2000), Unit::Millis);
    TIMEOUT_READ = int("timeout.read", 1, MAX_MS, IfAbsent::Int(2000), Unit::Millis);
    TIMEOUT_WAIT = Field {
        path: "timeout.wait",
        rule: Rule::Int {
            min: 1,
            max: 600,
            show_max: true,
            note: "seconds; Consul caps a blocking query at 10 minutes",
        },
        default: IfAbsent::Int(60),
        unit: Unit::Secs,
    };
    SKIP_KEYS = other("skip_keys", Rule::Custom("array"), Unset);
    DEFAULT_SERVICE_HOST = other("default_service.host", Rule::Str, Required);
    DEFAULT_SERVICE_PORT = Field {
        path: "default_service.port",
        rule: Rule::Int {
            min: 1,
            max: 65535,
            show_max: true,
            note: "",
        },
        default: Required,
        unit: Unit::Count,
    };
    /// `metadata` keys other than these three pass through unchecked.
    DEFAULT_SERVICE_FAIL_TIMEOUT = other(
        "default_service.metadata.fail_timeout",
        Rule::Custom("integer"),
        IfAbsent::Int(1),
    );
    DEFAULT_SERVICE_WEIGHT = other(
        "default_service.metadata.weight",
        Rule::Custom("integer"),
        IfAbsent::Int(1),
    );
    DEFAULT_SERVICE_MAX_FAILS = other(
        "default_service.metadata.max_fails",
        Rule::Custom("integer"),
        IfAbsent::Int(1),
    );
    DUMP_PATH = other("dump.path", Rule::Path, Required);
    DUMP_LOAD_ON_INIT = other("dump.load_on_init", Rule::Bool, IfAbsent::Bool(true));
    /// 0 means the dump never expires.
    DUMP_EXPIRE = int("dump.expire", 0, i64::MAX as i128, IfAbsent::Int(0), Unit::Secs);
    TLS_CA_FILE = other("tls.ca_file", Rule::Path, Unset);
    TLS_VERIFY = other("tls.verify", Rule::Bool, IfAbsent::Bool(true));
    MAX_RESPONSE_BYTES = int(
        "max_response_bytes",
        1024,
        // usize on 64-bit, capped so that the value also fits an i64.
        if (usize::MAX as i128) < i64::MAX as i128 {
            usize::MAX as i128
        } else {
            i64::MAX as i128
        },
        IfAbsent::Int(64 * 1024 * 1024),
        Unit::Bytes,
    );
    ON_EMPTY_PREFIX = other(
        "on_empty_prefix",
        Rule::OneOf(&[
            EmptyPrefixPolicy::ALL[0].as_str(),
            EmptyPrefixPolicy::ALL[1].as_str(),
        ]),
        IfAbsent::Str(EmptyPrefixPolicy::Clear.as_str()),
    );
    GZIP = other("gzip", Rule::Bool, IfAbsent::Bool(false));
    BACKOFF_INITIAL = int("backoff.initial", 1, MAX_MS, IfAbsent::Int(1000), Unit::Millis);
    /// Also at least `backoff.initial`, checked by the walk.
    BACKOFF_MAX = int("backoff.max", 1, MAX_MS, IfAbsent::Int(30000), Unit::Millis);
    SHARE_ENABLED = other("share.enabled", Rule::Bool, IfAbsent::Bool(true));
    /// Also an absolute path, checked by the walk.
    SHARE_DIR = other("share.dir", Rule::Path, IfAbsent::Str("/dev/shm"));
    SHARE_GROUP = other("share.group", Rule::Custom("string"), Unset);
    /// The group this instance had before a reload (set by the Lua binding):
    /// its snapshot is served until the new group has one. ckv-only.
    SHARE_PREVIOUS_GROUP = other("share.previous_group", Rule::Custom("string"), Unset);
    /// Unset: the first server's URL (so APISIX service names stay valid).
    CLUSTER_NAME = other("cluster.name", Rule::Str, Unset);
    CLUSTER_FAILOVER_AFTER = int("cluster.failover_after", 1, 1000, IfAbsent::Int(3), Unit::Count);
    /// 0: never fail back to the first member.
    CLUSTER_FAILBACK_INTERVAL = int(
        "cluster.failback_interval",
        0,
        MAX_SECS,
        IfAbsent::Int(30),
        Unit::Secs
    );
    CONSISTENCY = other(
        "consistency",
        Rule::OneOf(&[
            Consistency::ALL[0].as_str(),
            Consistency::ALL[1].as_str(),
            Consistency::ALL[2].as_str(),
        ]),
        IfAbsent::Str(Consistency::Default.as_str()),
    );
    /// Unset: any staleness is accepted.
    MAX_STALE = int("max_stale", 1, MAX_SECS, Unset, Unit::Secs);
    DC = other("dc", Rule::Str, Unset);
    NAMESPACE = other("namespace", Rule::Str, Unset);
    PARTITION = other("partition", Rule::Str, Unset);
    TOKEN_FILE = other("token_file", Rule::Path, Unset);
    TLS_CERT_FILE = other("tls.cert_file", Rule::Path, Unset);
    TLS_KEY_FILE = other("tls.key_file", Rule::Path, Unset);
    TLS_SERVER_NAME = other("tls.server_name", Rule::Str, Unset);
}

/// ckv-only fields that APISIX's schema (`schema.lua`) does not describe:
/// its `discovery.consul_kv` schema allows unknown properties, so the
/// drop-in accepts them as they are, and libckv checks them.
pub const NOT_IN_APISIX_SCHEMA: &[Field] = &[
    CLUSTER_NAME,
    CLUSTER_FAILOVER_AFTER,
    CLUSTER_FAILBACK_INTERVAL,
    CONSISTENCY,
    MAX_STALE,
    DC,
    NAMESPACE,
    PARTITION,
    TOKEN_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    TLS_SERVER_NAME,
];

/// The three `metadata` integers APISIX fills in.
pub(crate) const DEFAULT_SERVICE_METADATA: [Field; 3] = [
    DEFAULT_SERVICE_FAIL_TIMEOUT,
    DEFAULT_SERVICE_WEIGHT,
    DEFAULT_SERVICE_MAX_FAILS,
];

impl Field {
    /// The last path segment: the key inside the parent object.
    pub fn key(&self) -> &'static str {
        let path: &'static str = self.path;
        path.rsplit('.').next().unwrap_or(path)
    }

    /// The integer default (0 for a field without one; the table test checks
    /// that every integer field with a default has an integer one).
    pub fn default_int(&self) -> i128 {
        match self.default {
            IfAbsent::Int(n) => n,
            _ => 0,
        }
    }

    pub fn default_bool(&self) -> bool {
        matches!(self.default, IfAbsent::Bool(true))
    }

    pub fn default_str(&self) -> &'static str {
        match self.default {
            IfAbsent::Str(s) => s,
            _ => "",
        }
    }

    fn limits(&self) -> (i128, i128, bool, &'static str) {
        match self.rule {
            Rule::Int {
                min,
                max,
                show_max,
                note,
            } => (min, max, show_max, note),
            _ => (i128::MIN, i128::MAX, false, ""),
        }
    }

    /// The rule as an error message states it: `an integer >= 1`,
    /// `an integer from 1 to 600 (seconds; ...)`.
    pub fn int_rule(&self, too_big: bool) -> String {
        let (min, max, show_max, note) = self.limits();
        let mut rule = if show_max || too_big {
            format!("an integer from {min} to {max}")
        } else {
            format!("an integer >= {min}")
        };
        if !note.is_empty() {
            rule = format!("{rule} ({note})");
        }
        rule
    }

    /// Reads an integer field of `o` (which must be the field's parent);
    /// `None` when absent or `null`.
    pub(crate) fn read_int(&self, o: &mut Obj<'_>) -> Result<Option<i128>, ConfigError> {
        let Some(v) = o.get(self.key()) else {
            return Ok(None);
        };
        let (min, max, _, _) = self.limits();
        match int_value(v) {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            n => Err(ConfigError::new(
                self.path,
                format!(
                    "expected {}, got {}",
                    self.int_rule(n.is_some_and(|n| n > max)),
                    show(v)
                ),
            )),
        }
    }

    /// An integer field, or its default.
    pub(crate) fn int(&self, o: &mut Obj<'_>) -> Result<i128, ConfigError> {
        Ok(self.read_int(o)?.unwrap_or(self.default_int()))
    }

    /// An integer field of [`Unit::Millis`] or [`Unit::Secs`], or its default.
    pub(crate) fn duration(&self, o: &mut Obj<'_>) -> Result<Duration, ConfigError> {
        let n = u64::try_from(self.int(o)?).unwrap_or(u64::MAX);
        Ok(match self.unit {
            Unit::Millis => Duration::from_millis(n),
            _ => Duration::from_secs(n),
        })
    }

    /// The default of an integer field as a [`Duration`].
    pub fn default_duration(&self) -> Duration {
        let n = u64::try_from(self.default_int()).unwrap_or(u64::MAX);
        match self.unit {
            Unit::Millis => Duration::from_millis(n),
            _ => Duration::from_secs(n),
        }
    }

    /// A boolean field, or its default.
    pub(crate) fn bool(&self, o: &mut Obj<'_>) -> Result<bool, ConfigError> {
        match o.get(self.key()) {
            None => Ok(self.default_bool()),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(ConfigError::new(
                self.path,
                format!("expected a boolean, got {}", show(v)),
            )),
        }
    }

    /// This entry as JSON, in the shape the docs tests compare.
    fn to_json(self) -> Value {
        let mut out = Map::new();
        let kind = match self.rule {
            Rule::Int { .. } => "integer",
            Rule::Bool => "boolean",
            Rule::Str | Rule::Path | Rule::OneOf(_) => "string",
            Rule::Custom(t) => t,
        };
        out.insert("type".into(), json!(kind));
        match self.default {
            Required => {
                out.insert("required".into(), json!(true));
            }
            Unset => {}
            IfAbsent::Int(n) => {
                out.insert("default".into(), json!(n as i64));
            }
            IfAbsent::Bool(b) => {
                out.insert("default".into(), json!(b));
            }
            IfAbsent::Str(s) => {
                out.insert("default".into(), json!(s));
            }
        }
        match self.rule {
            Rule::Int { min, max, .. } => {
                out.insert("minimum".into(), json!(min as i64));
                out.insert("maximum".into(), json!(max as i64));
            }
            Rule::Path => {
                out.insert("minLength".into(), json!(1));
            }
            Rule::OneOf(values) => {
                out.insert("enum".into(), json!(values));
            }
            _ => {}
        }
        let unit = match self.unit {
            Unit::Count => None,
            Unit::Millis => Some("ms"),
            Unit::Secs => Some("s"),
            Unit::Bytes => Some("bytes"),
        };
        if let Some(u) = unit {
            out.insert("unit".into(), json!(u));
        }
        Value::Object(out)
    }
}

/// The whole table as `{path: {type, default | required, minimum, maximum,
/// minLength, enum, unit}}`, for the tests that keep the README and
/// `schema.lua` in step with Rust.
#[doc(hidden)]
pub fn table_json() -> Value {
    Value::Object(
        ALL.iter()
            .map(|f| (f.path.to_string(), f.to_json()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let mut paths: Vec<&str> = ALL.iter().map(|f| f.path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), ALL.len(), "duplicate path");
        for f in ALL {
            match (f.rule, f.default) {
                (Rule::Int { min, max, .. }, IfAbsent::Int(d)) => {
                    assert!(min <= d && d <= max, "{}: default out of range", f.path)
                }
                (Rule::Int { .. }, Required | Unset) => {}
                (Rule::Bool, IfAbsent::Bool(_) | Unset) => {}
                (Rule::Str | Rule::Path, IfAbsent::Str(_) | Required | Unset) => {}
                (Rule::OneOf(values), IfAbsent::Str(d)) => {
                    assert!(values.contains(&d), "{}", f.path)
                }
                (Rule::Custom(_), _) => {}
                other => panic!("{}: default does not fit the rule: {other:?}", f.path),
            }
            assert!(!f.key().is_empty() && !f.key().contains('.'));
        }
    }

    #[test]
    fn rules_read_as_today() {
        assert_eq!(WEIGHT.int_rule(false), "an integer >= 1");
        assert_eq!(WEIGHT.int_rule(true), "an integer from 1 to 4294967295");
        assert_eq!(
            TIMEOUT_WAIT.int_rule(false),
            "an integer from 1 to 600 (seconds; Consul caps a blocking query at 10 minutes)"
        );
        assert_eq!(TIMEOUT_WAIT.default_duration(), Duration::from_secs(60));
        assert_eq!(BACKOFF_MAX.default_duration(), Duration::from_millis(30000));
        assert_eq!(table_json()["weight"]["maximum"], json!(4294967295_i64));
    }
}
