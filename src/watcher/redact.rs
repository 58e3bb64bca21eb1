//! The token, read in one place, and removed from whatever a server sends
//! back (red-team D16: a proxy or WAF error page that echoes the request
//! headers would otherwise put the token into the error log and `stats()`).
//!
//! CONTRACTS §2: when `config::Secret` lands, `token_of` becomes
//! `config.token.expose()` and the body of `scrub` becomes
//! `config.token.scrub(text)`; nothing else changes.

use crate::config::Config;

/// What replaces the token.
const REDACTED: &str = "<redacted>";
/// A token cut at the end of a truncated text is removed from this length on.
const MIN_CUT_PREFIX: usize = 8;

/// The ACL token sent as `X-Consul-Token` (empty: none).
pub(crate) fn token_of(config: &Config) -> &str {
    &config.token
}

/// `text` without the configured token, in any of its obvious encodings.
pub fn scrub(config: &Config, text: &str) -> String {
    scrub_token(token_of(config), text)
}

/// Removes `token` as-is, JSON- or Debug-escaped and percent-encoded, and a
/// prefix of it (at least [`MIN_CUT_PREFIX`] bytes) that ends the text or
/// comes just before a final `…`, `"` or `...` (a body cut short).
fn scrub_token(token: &str, text: &str) -> String {
    let mut out = text.to_owned();
    if token.is_empty() {
        return out;
    }
    let json = serde_json::to_string(token).unwrap_or_default();
    let json = json.trim_matches('"').to_owned();
    let debug = format!("{token:?}").trim_matches('"').to_owned();
    let forms = [
        token.to_owned(),
        json,
        debug,
        percent_encode(token, false),
        percent_encode(token, true),
    ];
    for form in &forms {
        if !form.is_empty() && out.contains(form.as_str()) {
            out = out.replace(form.as_str(), REDACTED);
        }
    }
    for tail in ["", "…", "\"", "..."] {
        let Some(body) = out.strip_suffix(tail) else {
            continue;
        };
        let cut = (MIN_CUT_PREFIX..token.len())
            .rev()
            .filter(|&n| token.is_char_boundary(n))
            .find(|&n| body.ends_with(&token[..n]));
        if let Some(n) = cut {
            let keep = body.len() - n;
            out = format!("{}{REDACTED}{tail}", &body[..keep]);
            break;
        }
    }
    out
}

/// Percent-encodes every byte outside RFC 3986's unreserved set.
fn percent_encode(s: &str, lower: bool) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else if lower {
            out.push_str(&format!("%{b:02x}"));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "8f14e45f-ceea/467f \"a0e6\"-supersecret";

    #[test]
    fn every_obvious_encoding_is_removed() {
        let json = serde_json::to_string(TOKEN).unwrap();
        let texts = [
            format!("x-consul-token: {TOKEN} | accept: */*"),
            format!("{{\"headers\":{{\"X-Consul-Token\":{json}}}}}"),
            format!("GET /v1/kv/p/?token={}", percent_encode(TOKEN, false)),
            format!("token={}", percent_encode(TOKEN, true)),
            format!("echo: {TOKEN:?}"),
        ];
        for t in &texts {
            let s = scrub_token(TOKEN, t);
            assert!(s.contains(REDACTED), "{t} -> {s}");
            assert!(!s.contains("supersecret"), "{t} -> {s}");
            assert!(!s.contains("8f14e45f"), "{t} -> {s}");
        }
    }

    #[test]
    fn a_token_cut_at_the_end_is_removed() {
        for n in [8, 12, TOKEN.len() - 1] {
            for tail in ["", "…", "\""] {
                let t = format!("body: {}{tail}", &TOKEN[..n]);
                let s = scrub_token(TOKEN, &t);
                assert_eq!(s, format!("body: {REDACTED}{tail}"), "{t}");
            }
        }
        // Shorter than the minimum, or not at the end: left alone.
        assert_eq!(scrub_token(TOKEN, "id 8f14e45"), "id 8f14e45");
        assert_eq!(
            scrub_token(TOKEN, "8f14e45f-ceea and more"),
            "8f14e45f-ceea and more"
        );
    }

    #[test]
    fn no_token_changes_nothing() {
        assert_eq!(scrub_token("", "anything at all"), "anything at all");
    }
}
