//! `servers`: the Consul agents to watch, each `http://host:port` or
//! `https://host:port`, checked in full and without duplicates.
//!
//! The host is a host name (letters, digits, `-`, `_`, dot-separated labels),
//! an IPv4 address, or a bracketed IPv6 address (`[::1]`). The port is
//! required and in 1 ..= 65535. A path, a trailing `/`, a query, a fragment
//! or user info (`user:pass@`) is refused. Two servers with the same scheme,
//! host (case-insensitive; IPv6 compared as addresses) and port are refused.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::errors::{show, show_str, ConfigError};
use super::fields::SERVERS;
use super::reader::{as_array, string, Obj};
use super::secret::REDACTED;
use super::{Scheme, Server};

pub(crate) fn parse_servers(o: &mut Obj<'_>) -> Result<Vec<Server>, ConfigError> {
    const WHAT: &str = "an array of http://host:port or https://host:port strings";
    let Some(v) = o.get(SERVERS.key()) else {
        return Err(ConfigError::new(SERVERS.path, format!("required ({WHAT})")));
    };
    let Some(items) = as_array(v) else {
        return Err(ConfigError::new(
            SERVERS.path,
            format!("expected {WHAT}, got {}", show(v)),
        ));
    };
    if items.is_empty() {
        return Err(ConfigError::new(
            SERVERS.path,
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
