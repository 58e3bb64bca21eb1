//! Re-implementations of the small pieces of Go's standard library whose exact
//! behaviour shows up in Consul's HTTP responses: `time.ParseDuration`,
//! `strconv.ParseUint`, `url.ParseQuery`, `path.Clean` / `ServeMux` path
//! cleaning, `url.URL.String` path escaping, `strconv.Quote` and
//! `encoding/json` string escaping.

use std::time::Duration;

/// A parsed Go duration: signed nanoseconds, as Go's `time.Duration` (int64).
pub type GoDuration = i64;

/// `time.ParseDuration`: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or a bare `0`.
/// A unit is required for every number except the lone `0`.
pub fn parse_go_duration(s: &str) -> Option<GoDuration> {
    let mut rest = s.as_bytes();
    let mut neg = false;
    if let Some((&c, tail)) = rest.split_first() {
        if c == b'-' || c == b'+' {
            neg = c == b'-';
            rest = tail;
        }
    }
    if rest == b"0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        // The next character must be [0-9.].
        if !(rest[0] == b'.' || rest[0].is_ascii_digit()) {
            return None;
        }
        // Integer part.
        let int_len = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut v: u64 = 0;
        for &c in &rest[..int_len] {
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            if v > 1 << 63 {
                return None;
            }
        }
        let pre = int_len > 0;
        rest = &rest[int_len..];
        // Fraction.
        let mut f: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut post = false;
        if rest.first() == Some(&b'.') {
            rest = &rest[1..];
            let frac_len = rest.iter().take_while(|c| c.is_ascii_digit()).count();
            post = frac_len > 0;
            let mut overflow = false;
            for &c in &rest[..frac_len] {
                if overflow {
                    continue;
                }
                match f
                    .checked_mul(10)
                    .and_then(|x| x.checked_add(u64::from(c - b'0')))
                {
                    Some(nf) if nf <= 1 << 63 => {
                        f = nf;
                        scale *= 10.0;
                    }
                    _ => overflow = true,
                }
            }
            rest = &rest[frac_len..];
        }
        if !pre && !post {
            return None;
        }
        // Unit.
        let unit_len = rest
            .iter()
            .take_while(|&&c| c != b'.' && !c.is_ascii_digit())
            .count();
        if unit_len == 0 {
            return None;
        }
        let unit: u64 = match &rest[..unit_len] {
            b"ns" => 1,
            b"us" | b"\xc2\xb5s" | b"\xce\xbcs" => 1_000,
            b"ms" => 1_000_000,
            b"s" => 1_000_000_000,
            b"m" => 60_000_000_000,
            b"h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        if v > (1u64 << 63) / unit {
            return None;
        }
        v *= unit;
        if f > 0 {
            v = v.checked_add((f as f64 * (unit as f64 / scale)) as u64)?;
            if v > 1 << 63 {
                return None;
            }
        }
        total = total.checked_add(v)?;
        if total > 1 << 63 {
            return None;
        }
    }
    if neg {
        Some((total as i128).wrapping_neg() as i64)
    } else if total > i64::MAX as u64 {
        None
    } else {
        Some(total as i64)
    }
}

/// Formats a `Duration` the way the CLI accepts it back (`1500ms`).
pub fn duration_from_nanos(n: GoDuration) -> Duration {
    Duration::from_nanos(n.max(0) as u64)
}

/// `strconv.ParseUint(s, 10, 64)`: ASCII digits only, no sign, no underscores.
pub fn parse_go_uint(s: &str) -> Result<u64, &'static str> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return Err("invalid syntax");
    }
    s.parse::<u64>().map_err(|_| "value out of range")
}

/// The error text of a failed `strconv.ParseUint`, as Consul returns it in a 500.
pub fn parse_uint_error(s: &str, reason: &str) -> String {
    format!("strconv.ParseUint: parsing {}: {}", go_quote(s), reason)
}

/// `strconv.Quote` for the characters that matter here.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `s`. `plus_is_space` is true for query components.
/// Returns `None` on a malformed escape (Go rejects those).
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = hex_val(*b.get(i + 1)?)?;
                let lo = hex_val(*b.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The parsed query string, in order, as `url.ParseQuery` would keep it:
/// pairs with a `;` or a bad escape are dropped.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let mut pairs = Vec::new();
        for part in raw.unwrap_or("").split('&') {
            if part.is_empty() || part.contains(';') {
                continue;
            }
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let (Some(k), Some(v)) = (percent_decode(k, true), percent_decode(v, true)) else {
                continue;
            };
            pairs.push((
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ));
        }
        Query { pairs }
    }

    /// Presence test (`_, ok := query["x"]`).
    pub fn has(&self, key: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == key)
    }

    /// `query.Get(x)`: the first value, or "" when absent.
    pub fn get(&self, key: &str) -> &str {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// The first value if the key is present.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `url.Values.Encode()`: keys sorted, values in order, query-escaped.
    pub fn encode(&self) -> String {
        let mut keys: Vec<&str> = self.pairs.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut out = String::new();
        for k in keys {
            for (_, v) in self.pairs.iter().filter(|(pk, _)| pk == k) {
                if !out.is_empty() {
                    out.push('&');
                }
                out.push_str(&query_escape(k));
                out.push('=');
                out.push_str(&query_escape(v));
            }
        }
        out
    }
}

/// `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(c as char)
            }
            b' ' => out.push('+'),
            c => out.push_str(&format!("%{c:02X}")),
        }
    }
    out
}

/// `url.URL{Path: p}.EscapedPath()` for a path without a RawPath.
pub fn escape_path(p: &[u8]) -> String {
    let mut out = String::with_capacity(p.len());
    for &c in p {
        match c {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'$'
            | b'&'
            | b'+'
            | b','
            | b'/'
            | b':'
            | b';'
            | b'='
            | b'@' => out.push(c as char),
            c => out.push_str(&format!("%{c:02X}")),
        }
    }
    out
}

/// Go's `path.Clean` for a rooted path.
fn path_clean(p: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for seg in p.split(|&c| c == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = Vec::with_capacity(p.len());
    for s in parts {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

/// `net/http`'s `cleanPath`: what `ServeMux` redirects to when it differs
/// from the request path.
pub fn clean_path(p: &[u8]) -> Vec<u8> {
    if p.is_empty() {
        return b"/".to_vec();
    }
    let mut rooted = Vec::with_capacity(p.len() + 1);
    if p[0] != b'/' {
        rooted.push(b'/');
    }
    rooted.extend_from_slice(p);
    let mut np = path_clean(&rooted);
    if rooted.last() == Some(&b'/') && np != b"/" {
        np.push(b'/');
    }
    np
}

/// `unicode.IsPrint` approximation without Unicode tables: rejects control
/// characters, every space other than U+0020, line/paragraph separators,
/// common format characters, surrogates and private-use code points.
pub fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    !matches!(u,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB | 0xE000..=0xF8FF | 0xF0000..=0x10FFFF)
}

/// Appends `s` as a JSON string the way Go's `encoding/json` writes it
/// (HTML-safe escaping, invalid UTF-8 replaced byte by byte with U+FFFD).
pub fn write_json_string(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for chunk in s.utf8_chunks() {
        let valid = chunk.valid();
        let bytes = valid.as_bytes();
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            let esc: Option<&[u8]> = match c {
                b'"' => Some(b"\\\""),
                b'\\' => Some(b"\\\\"),
                b'\n' => Some(b"\\n"),
                b'\r' => Some(b"\\r"),
                b'\t' => Some(b"\\t"),
                0x08 => Some(b"\\b"),
                0x0c => Some(b"\\f"),
                _ => None,
            };
            if let Some(e) = esc {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(e);
                i += 1;
                start = i;
            } else if c < 0x20 || c == b'<' || c == b'>' || c == b'&' {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xf)]);
                i += 1;
                start = i;
            } else if c == 0xE2
                && bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xA8) | Some(0xA9))
            {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(if bytes[i + 2] == 0xA8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                i += 3;
                start = i;
            } else {
                i += 1;
            }
        }
        out.extend_from_slice(&bytes[start..]);
        for _ in chunk.invalid() {
            out.extend_from_slice(b"\\ufffd");
        }
    }
    out.push(b'"');
}

/// Go's `htmlEscape` used by `http.Redirect`.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("5s"), Some(5_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_go_duration("250ms"), Some(250_000_000));
        assert_eq!(parse_go_duration("-1s"), Some(-1_000_000_000));
        assert_eq!(parse_go_duration("10\u{b5}s"), Some(10_000));
        assert_eq!(parse_go_duration(".5s"), Some(500_000_000));
        assert_eq!(parse_go_duration("30"), None);
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("s"), None);
        assert_eq!(parse_go_duration("1d"), None);
        assert_eq!(parse_go_duration("."), None);
        assert_eq!(parse_go_duration("1e3s"), None);
        assert_eq!(parse_go_duration("99999999999999999999s"), None);
        assert_eq!(parse_go_duration("3000000h"), None);
    }

    #[test]
    fn uints() {
        assert_eq!(parse_go_uint("0012"), Ok(12));
        assert!(parse_go_uint("+1").is_err());
        assert!(parse_go_uint("-1").is_err());
        assert_eq!(
            parse_go_uint("18446744073709551616"),
            Err("value out of range")
        );
        assert_eq!(
            parse_uint_error("x", "invalid syntax"),
            "strconv.ParseUint: parsing \"x\": invalid syntax"
        );
    }

    #[test]
    fn queries() {
        let q = Query::parse(Some("recurse&b=1&a=x+y&a=2&bad=%zz&semi=1;2"));
        assert!(q.has("recurse"));
        assert_eq!(q.get("a"), "x y");
        assert!(!q.has("bad"));
        assert!(!q.has("semi"));
        assert_eq!(q.encode(), "a=x+y&a=2&b=1&recurse=");
    }

    #[test]
    fn paths() {
        assert_eq!(clean_path(b"/v1/kv//a"), b"/v1/kv/a");
        assert_eq!(clean_path(b"/v1/kv/a/../b/"), b"/v1/kv/b/");
        assert_eq!(clean_path(b"/v1/kv/./a"), b"/v1/kv/a");
        assert_eq!(clean_path(b"/v1/kv/"), b"/v1/kv/");
        assert_eq!(clean_path(b"/v1/kv/a/."), b"/v1/kv/a");
        assert_eq!(escape_path(b"/v1/kv/a b?"), "/v1/kv/a%20b%3F");
    }

    #[test]
    fn json_strings() {
        let mut out = Vec::new();
        write_json_string(&mut out, b"a<b>&\"\\\n\x01\xff\xe2\x80\xa8z");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""a\u003cb\u003e\u0026\"\\\n\u0001\ufffd\u2028z""#
        );
    }
}
