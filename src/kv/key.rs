//! Keys: `{prefix}/{service path}/{host}:{port}`, with host names, IPv4 or
//! bracketed IPv6 literals.

use std::net::Ipv6Addr;

use super::shown;

/// Where the node part of a key starts, and the node's host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey<'k> {
    pub service_path: &'k str,
    pub host: &'k str,
    pub port: u16,
}

/// Splits `{prefix}/{service path}/{host}:{port}`.
///
/// `Ok(None)` is a folder key (ends with `/`). The service path keeps the
/// prefix and the trailing slash, exactly as APISIX captures it.
pub fn parse_key<'k>(key: &'k str, prefix: &str) -> Result<Option<ParsedKey<'k>>, String> {
    let rest = key
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(|| format!("key is not under prefix \"{prefix}/\""))?;
    let Some(slash) = rest.rfind('/') else {
        if rest.is_empty() {
            return Ok(None);
        }
        return Err("key has no service path between the prefix and host:port".into());
    };
    let node = &rest[slash + 1..];
    if node.is_empty() {
        return Ok(None);
    }
    if slash == 0 {
        return Err("empty service name".into());
    }
    let service_path = &key[..prefix.len() + 1 + slash + 1];
    let (host, port) = split_host_port(node)?;
    Ok(Some(ParsedKey {
        service_path,
        host,
        port,
    }))
}

fn split_host_port(node: &str) -> Result<(&str, u16), String> {
    let (host, port) = if node.starts_with('[') {
        let end = node
            .find(']')
            .ok_or_else(|| format!("unterminated IPv6 literal in \"{}\"", shown(node)))?;
        let inner = &node[1..end];
        if inner.parse::<Ipv6Addr>().is_err() {
            return Err(format!("invalid IPv6 address \"{}\"", shown(inner)));
        }
        let port = node[end + 1..]
            .strip_prefix(':')
            .ok_or_else(|| format!("missing :port after \"{}\"", shown(&node[..=end])))?;
        (&node[..=end], port)
    } else {
        let colon = node
            .rfind(':')
            .ok_or_else(|| format!("expected host:port, got \"{}\"", shown(node)))?;
        let host = &node[..colon];
        if host.is_empty() {
            return Err(format!("empty host in \"{}\"", shown(node)));
        }
        if let Some(c) = host
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(format!(
                "invalid character {c:?} in host \"{}\"",
                shown(host)
            ));
        }
        (host, &node[colon + 1..])
    };
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid port \"{}\"", shown(port)));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host, p)),
        _ => Err(format!("port {port} out of range 1-65535")),
    }
}
