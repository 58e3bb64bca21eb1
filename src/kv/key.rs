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

/// The last `b` in `s`, searched byte by byte from the end (the node part
/// after the last `/` is short; `str::rfind` with a `char` goes through a
/// generic searcher and a `memcmp` per candidate).
#[inline]
fn rfind_byte(s: &str, b: u8) -> Option<usize> {
    s.bytes().rposition(|c| c == b)
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
    // `/` is ASCII, so every index found below is a char boundary.
    let Some(slash) = rfind_byte(rest, b'/') else {
        if rest.is_empty() {
            return Ok(None);
        }
        return Err("key has no service path between the prefix and host:port".into());
    };
    let node = rest.get(slash + 1..).unwrap_or_default();
    if node.is_empty() {
        return Ok(None);
    }
    if slash == 0 {
        return Err("empty service name".into());
    }
    let service_path = key.get(..prefix.len() + 1 + slash + 1).unwrap_or_default();
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
        let colon = rfind_byte(node, b':')
            .ok_or_else(|| format!("expected host:port, got \"{}\"", shown(node)))?;
        // `:` is ASCII: both sides are whole text.
        let host = node.get(..colon).unwrap_or_default();
        if host.is_empty() {
            return Err(format!("empty host in \"{}\"", shown(node)));
        }
        if let Some(bad) = host
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')))
        {
            // Every byte before `bad` is ASCII, so `bad` starts a char.
            let c = host
                .get(bad..)
                .and_then(|t| t.chars().next())
                .unwrap_or('?');
            return Err(format!(
                "invalid character {c:?} in host \"{}\"",
                shown(host)
            ));
        }
        (host, node.get(colon + 1..).unwrap_or_default())
    };
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid port \"{}\"", shown(port)));
    }
    // At most five digits: no overflow in a u32.
    let value = port.bytes().fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
    match u16::try_from(value) {
        Ok(p) if p > 0 => Ok((host, p)),
        _ => Err(format!("port {port} out of range 1-65535")),
    }
}
