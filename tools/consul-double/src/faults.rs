//! Fault injection: what `PUT /_double/fault` installs and how a KV request
//! picks one up.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Body of the 429 a server-side rate limiter answers for reads.
pub const RATE_LIMIT_429_BODY: &str =
    "rate limit exceeded, try again later or against a different server";
/// Body of the 503 a server-side rate limiter answers for leader-only ops.
pub const UNAVAILABLE_503_BODY: &str =
    "rate limit exceeded for operation that can only be performed by the leader, try again later";
pub const NO_LEADER_BODY: &str = "No cluster leader";
pub const RPC_PREFIX: &str = "rpc error making call: ";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// `500 No cluster leader` after `delay`; `?stale` reads still succeed
    /// with `X-Consul-Knownleader: false`.
    NoLeader {
        delay: Duration,
        prefix_rpc: bool,
    },
    RateLimit429,
    Unavailable503,
    /// Declared Content-Length, half the body, then the connection closes.
    TruncateBody,
    /// Connection closed without a response.
    DropConnection,
    /// Delay before handling the request normally.
    Slow {
        delay: Duration,
    },
    /// Never answer.
    Hang,
    /// Status line and headers, then the body never comes.
    HeadersThenStall,
    /// `X-Consul-Knownleader: false`, `X-Consul-Lastcontact: <ms>`.
    Stale {
        last_contact_ms: u64,
    },
    /// A lagging follower: `?stale` reads answer with these headers, other
    /// reads as the leader would (they are forwarded to it).
    Follower {
        last_contact_ms: u64,
        known_leader: bool,
    },
    NotJson,
    NotArray,
    WrongTypes,
}

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::NoLeader { .. } => "no_leader",
            FaultKind::RateLimit429 => "rate_limit_429",
            FaultKind::Unavailable503 => "unavailable_503",
            FaultKind::TruncateBody => "truncate_body",
            FaultKind::DropConnection => "drop_connection",
            FaultKind::Slow { .. } => "slow",
            FaultKind::Hang => "hang",
            FaultKind::HeadersThenStall => "headers_then_stall",
            FaultKind::Stale { .. } => "stale",
            FaultKind::Follower { .. } => "follower",
            FaultKind::NotJson => "not_json",
            FaultKind::NotArray => "not_array",
            FaultKind::WrongTypes => "wrong_types",
        }
    }
}

/// A parsed `PUT /_double/fault` body.
#[derive(Clone, Debug)]
pub struct FaultSpec {
    pub kind: FaultKind,
    /// `None`: until cleared. `Some(0)` is only valid for `drop_connection`.
    pub count: Option<u64>,
    /// Key prefix (the part after `/v1/kv/`) the fault is limited to.
    pub path_prefix: Vec<u8>,
    /// HTTP methods the fault is limited to (upper case); empty = all.
    pub methods: Vec<String>,
    /// The listener the fault is limited to (`None`: all), so that one
    /// listener of a cluster-mode double can behave as one member.
    pub listener: Option<std::net::SocketAddr>,
}

#[derive(Clone, Debug)]
struct Fault {
    id: u64,
    spec: FaultSpec,
    installed: Instant,
    hits: u64,
}

/// The fault a request picked up.
#[derive(Clone, Debug)]
pub struct ActiveFault {
    pub kind: FaultKind,
    pub installed: Instant,
}

#[derive(Debug, Default)]
pub struct FaultTable {
    next_id: u64,
    faults: Vec<Fault>,
}

fn opt_u64(v: &Value, name: &str) -> Result<Option<u64>, String> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("\"{name}\" must be a non-negative integer")),
    }
}

fn opt_bool(v: &Value, name: &str) -> Result<bool, String> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("\"{name}\" must be a boolean")),
    }
}

/// Strips `/v1/kv/` from a path prefix so both spellings work.
pub fn normalize_prefix(p: &str) -> Vec<u8> {
    p.strip_prefix("/v1/kv/").unwrap_or(p).as_bytes().to_vec()
}

/// Parses a `PUT /_double/fault` JSON body.
pub fn parse_spec(body: &[u8]) -> Result<FaultSpec, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    if !v.is_object() {
        return Err("body must be a JSON object".into());
    }
    let kind_name = v
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("missing string field \"kind\"")?;
    let delay = Duration::from_millis(opt_u64(&v, "delay_ms")?.unwrap_or(0));
    let kind = match kind_name {
        "no_leader" => FaultKind::NoLeader {
            delay,
            prefix_rpc: opt_bool(&v, "prefix_rpc")?,
        },
        "rate_limit_429" => FaultKind::RateLimit429,
        "unavailable_503" => FaultKind::Unavailable503,
        "truncate_body" => FaultKind::TruncateBody,
        "drop_connection" => FaultKind::DropConnection,
        "slow" => FaultKind::Slow { delay },
        "hang" => FaultKind::Hang,
        "headers_then_stall" => FaultKind::HeadersThenStall,
        "stale" => FaultKind::Stale {
            last_contact_ms: opt_u64(&v, "last_contact_ms")?.unwrap_or(5000),
        },
        "follower" => FaultKind::Follower {
            last_contact_ms: opt_u64(&v, "last_contact_ms")?.unwrap_or(5000),
            known_leader: match v.get("known_leader") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err("\"known_leader\" must be a boolean".into()),
            },
        },
        "not_json" => FaultKind::NotJson,
        "not_array" => FaultKind::NotArray,
        "wrong_types" => FaultKind::WrongTypes,
        other => return Err(format!("unknown fault kind {other:?}")),
    };
    let count = opt_u64(&v, "count")?;
    if count == Some(0) && kind != FaultKind::DropConnection {
        return Err("\"count\": 0 is only meaningful for drop_connection".into());
    }
    let path_prefix = match v.get("path_prefix") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => normalize_prefix(s),
        Some(_) => return Err("\"path_prefix\" must be a string".into()),
    };
    let methods = match v.get("methods") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|m| {
                m.as_str()
                    .map(str::to_ascii_uppercase)
                    .ok_or_else(|| "\"methods\" must be an array of strings".to_string())
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("\"methods\" must be an array of strings".into()),
    };
    let listener = match v.get("listener") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            s.parse()
                .map_err(|_| format!("\"listener\" must be an ip:port address, got {s:?}"))?,
        ),
        Some(_) => return Err("\"listener\" must be a string".into()),
    };
    Ok(FaultSpec {
        kind,
        count,
        path_prefix,
        methods,
        listener,
    })
}

impl FaultSpec {
    /// Whether a request with this method and key is subject to the fault.
    pub fn matches(&self, method: &str, key: &[u8], local: std::net::SocketAddr) -> bool {
        self.listener.map_or(true, |l| l == local)
            && key.starts_with(&self.path_prefix)
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
    }
}

impl FaultTable {
    /// Installs a fault; returns its id. A `count` of 0 is not stored.
    pub fn add(&mut self, spec: FaultSpec) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        if spec.count != Some(0) {
            self.faults.push(Fault {
                id,
                spec,
                installed: Instant::now(),
                hits: 0,
            });
        }
        id
    }

    /// The oldest fault matching the request, consuming one of its `count`.
    pub fn take(
        &mut self,
        method: &str,
        key: &[u8],
        local: std::net::SocketAddr,
    ) -> Option<ActiveFault> {
        let pos = self
            .faults
            .iter()
            .position(|f| f.spec.matches(method, key, local))?;
        let f = &mut self.faults[pos];
        f.hits += 1;
        let active = ActiveFault {
            kind: f.spec.kind.clone(),
            installed: f.installed,
        };
        if let Some(c) = f.spec.count.as_mut() {
            *c -= 1;
            if *c == 0 {
                self.faults.remove(pos);
            }
        }
        Some(active)
    }

    /// Whether a `no_leader` fault is active (for `/v1/status/leader`).
    pub fn no_leader(&self) -> bool {
        self.faults
            .iter()
            .any(|f| matches!(f.spec.kind, FaultKind::NoLeader { .. }))
    }

    /// Clears one fault (by id) or all; returns how many were removed.
    pub fn clear(&mut self, id: Option<u64>) -> usize {
        let before = self.faults.len();
        match id {
            Some(id) => self.faults.retain(|f| f.id != id),
            None => self.faults.clear(),
        }
        before - self.faults.len()
    }

    pub fn to_json(&self) -> Value {
        Value::Array(
            self.faults
                .iter()
                .map(|f| {
                    json!({
                        "id": f.id,
                        "kind": f.spec.kind.name(),
                        "remaining": f.spec.count,
                        "path_prefix": String::from_utf8_lossy(&f.spec.path_prefix),
                        "methods": f.spec.methods,
                        "listener": f.spec.listener.map(|l| l.to_string()),
                        "hits": f.hits,
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_and_prefix() {
        let mut t = FaultTable::default();
        let spec = parse_spec(br#"{"kind":"rate_limit_429","count":2,"path_prefix":"/v1/kv/a/"}"#)
            .unwrap();
        t.add(spec);
        let l = "127.0.0.1:8500".parse().unwrap();
        assert!(t.take("GET", b"b/x", l).is_none());
        assert!(t.take("GET", b"a/x", l).is_some());
        assert!(t.take("PUT", b"a/y", l).is_some());
        assert!(t.take("GET", b"a/x", l).is_none());
    }

    #[test]
    fn a_fault_can_target_one_listener() {
        let mut t = FaultTable::default();
        let spec = parse_spec(
            br#"{"kind":"follower","listener":"127.0.0.1:8502","last_contact_ms":9000}"#,
        )
        .unwrap();
        t.add(spec);
        assert!(t
            .take("GET", b"a", "127.0.0.1:8501".parse().unwrap())
            .is_none());
        let f = t
            .take("GET", b"a", "127.0.0.1:8502".parse().unwrap())
            .unwrap();
        assert_eq!(
            f.kind,
            FaultKind::Follower {
                last_contact_ms: 9000,
                known_leader: true
            }
        );
        assert!(parse_spec(br#"{"kind":"follower","listener":"nope"}"#).is_err());
    }

    #[test]
    fn rejects_bad_specs() {
        assert!(parse_spec(b"{}").is_err());
        assert!(parse_spec(br#"{"kind":"nope"}"#).is_err());
        assert!(parse_spec(br#"{"kind":"slow","delay_ms":-1}"#).is_err());
        assert!(parse_spec(br#"{"kind":"slow","count":0}"#).is_err());
        assert!(parse_spec(br#"{"kind":"drop_connection","count":0}"#).is_ok());
    }
}
