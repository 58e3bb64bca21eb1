//! The token, read in one place, and removed from whatever a server sends
//! back (red-team D16: a proxy or WAF error page that echoes the request
//! headers would otherwise put the token into the error log and `stats()`).
//! Both go through [`crate::config::Secret`], the one implementation.

use crate::config::Config;

/// The ACL token to send as `X-Consul-Token` now (empty: none): `token`,
/// or the content of `token_file`, re-read when the file changed.
pub(crate) fn token_of(config: &Config) -> crate::config::Secret {
    config.current_token()
}

/// `text` without the configured token (with `token_file`, without every
/// token read so far), in any of its obvious encodings.
pub fn scrub(config: &Config, text: &str) -> String {
    config.scrub(text)
}

#[cfg(test)]
mod tests {
    use crate::config::{Secret, REDACTED};

    fn scrub_token(token: &str, text: &str) -> String {
        Secret::new(token).scrub(text)
    }

    fn percent_encode(s: &str, lower: bool) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    char::from(b).to_string()
                } else if lower {
                    format!("%{b:02x}")
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

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
