//! A small ACL model: one management token (`--token`), optional read-only
//! tokens scoped to a key prefix (`--read-token`, `--list-token`), and the
//! anonymous token with no permissions (default policy `deny`).

use hyper::HeaderMap;

use crate::config::Config;
use crate::gocompat::Query;

pub const ACL_NOT_FOUND: &str = "ACL not found";
/// The built-in anonymous token's AccessorID.
pub const ANONYMOUS_ACCESSOR: &str = "00000000-0000-0000-0000-000000000002";

#[derive(Clone, Debug)]
pub enum Authz {
    /// ACLs disabled: everything is allowed and tokens are ignored.
    Disabled,
    Anonymous,
    Management,
    Reader {
        accessor: String,
        prefix: Vec<u8>,
        /// A `list` rule (read and list) rather than `read`.
        list: bool,
    },
}

/// `parseTokenInternal`: `?token` > `X-Consul-Token` > `Authorization: Bearer`.
pub fn request_token(query: &Query, headers: &HeaderMap) -> String {
    let q = query.get("token");
    if !q.is_empty() {
        return q.to_string();
    }
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    let x = header("x-consul-token");
    if !x.is_empty() {
        return x;
    }
    let auth = header("authorization");
    let parts: Vec<&str> = auth.split(' ').collect();
    if parts.len() > 1 && parts[0].eq_ignore_ascii_case("bearer") {
        let value = parts[1..].join(" ");
        let value = value.trim();
        return value.split(' ').next().unwrap_or("").trim().to_string();
    }
    String::new()
}

/// A fake but stable AccessorID for the n-th read token.
fn accessor_id(n: usize) -> String {
    format!("00000000-0000-4000-8000-{:012x}", n + 1)
}

/// Resolves a token; `Err` means `403 ACL not found`.
pub fn resolve(cfg: &Config, token: &str) -> Result<Authz, &'static str> {
    let Some(master) = cfg.token.as_deref() else {
        return Ok(Authz::Disabled);
    };
    if token.is_empty() {
        return Ok(Authz::Anonymous);
    }
    if token == master {
        return Ok(Authz::Management);
    }
    let tokens = cfg.read_tokens.iter().map(|t| (t, false));
    let tokens = tokens.chain(cfg.list_tokens.iter().map(|t| (t, true)));
    for (i, (rt, list)) in tokens.enumerate() {
        if rt.secret == token {
            return Ok(Authz::Reader {
                accessor: accessor_id(i),
                prefix: rt.prefix.clone(),
                list,
            });
        }
    }
    Err(ACL_NOT_FOUND)
}

impl Authz {
    pub fn enabled(&self) -> bool {
        !matches!(self, Authz::Disabled)
    }

    pub fn can_read(&self, key: &[u8]) -> bool {
        match self {
            Authz::Disabled | Authz::Management => true,
            Authz::Anonymous => false,
            Authz::Reader { prefix, .. } => key.starts_with(prefix),
        }
    }

    /// `key:list` on a prefix (only asked under `enable_key_list_policy`):
    /// a `read` rule does not grant it, a `list` or `write` rule does.
    pub fn can_list(&self, prefix: &[u8]) -> bool {
        match self {
            Authz::Reader {
                prefix: p, list, ..
            } => *list && prefix.starts_with(p),
            _ => self.can_read(prefix),
        }
    }

    pub fn can_write(&self, _key: &[u8]) -> bool {
        matches!(self, Authz::Disabled | Authz::Management)
    }

    /// `PermissionDeniedError.Error()` as Consul 1.14 writes it: the
    /// anonymous token is named by its fixed AccessorID (1.15+ say
    /// "anonymous token lacks permission ..." instead).
    pub fn denied(&self, permission: &str, resource: &[u8]) -> String {
        let res = crate::gocompat::go_quote(&String::from_utf8_lossy(resource));
        let accessor = match self {
            Authz::Reader { accessor, .. } => accessor.as_str(),
            _ => ANONYMOUS_ACCESSOR,
        };
        format!(
            "Permission denied: token with AccessorID '{accessor}' lacks permission '{permission}' on {res}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn token_precedence() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("BEARER  b1 b2"));
        assert_eq!(request_token(&Query::default(), &h), "b1");
        h.insert("x-consul-token", HeaderValue::from_static("x"));
        assert_eq!(request_token(&Query::default(), &h), "x");
        assert_eq!(request_token(&Query::parse(Some("token=q")), &h), "q");
        let mut h2 = HeaderMap::new();
        h2.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(request_token(&Query::default(), &h2), "");
    }
}
