//! bytes → config::parse_with_warnings.
//!
//! Invariants: no panic; on success `redacted_json()`, with the token put
//! back, parses to an equal `Config` with the same `share_fingerprint`; a
//! token of at
//! least 4 characters (shorter ones are not scrubbed, by design) never appears
//! in error or warning text, raw or JSON-escaped.
#![no_main]

use ckv::config::parse_with_warnings;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const REDACTED: &str = "<redacted>";

fn token_of(data: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(data).ok()?;
    v.get("token")?.as_str().map(str::to_owned)
}

/// Whether `text` shows `token`. A token that is itself part of
/// "<redacted>" is found in every scrubbed text, so it is not checked.
fn leaks(text: &str, token: &str) -> bool {
    if token.chars().count() < 4 || REDACTED.contains(token) {
        return false;
    }
    if text.contains(token) {
        return true;
    }
    // As an error message would show it inside a JSON string.
    let escaped = serde_json::to_string(token).unwrap();
    let inner = &escaped[1..escaped.len() - 1];
    inner != token && text.contains(inner)
}

fuzz_target!(|data: &[u8]| {
    let token = token_of(data);
    match parse_with_warnings(data) {
        Ok((config, warnings)) => {
            if let Some(t) = &token {
                for w in &warnings {
                    assert!(!leaks(w, t), "token {t:?} in warning {w:?}");
                }
                assert_eq!(config.token.expose(), t);
            }
            // Debug, Display and redacted_json must show the token no more
            // often than they do for the same config without a token (a
            // token may also be part of, say, the prefix).
            let mut blank = config.clone();
            blank.token = ckv::config::Secret::default();
            let views = |c: &ckv::config::Config| format!("{c:?} {c} {}", c.redacted_json());
            if !config.token.is_empty() && !REDACTED.contains(config.token.expose()) {
                let (with, without) = (views(&config), views(&blank));
                let t = config.token.expose();
                assert!(
                    with.matches(t).count() <= without.matches(t).count(),
                    "token {t:?} shown by Debug/Display/redacted_json: {with}"
                );
            }
            let mut red = config.redacted_json();
            red["token"] = Value::String(config.token.expose().to_owned());
            let text = red.to_string();
            // Re-parsing may warn (redacted_json always writes "tls"), so
            // warnings are not compared.
            let (again, _) = parse_with_warnings(text.as_bytes())
                .unwrap_or_else(|e| panic!("redacted_json does not re-parse: {e}\n{text}"));
            assert!(
                again == config,
                "re-parse differs:\n{config:?}\n{again:?}\n{text}"
            );
            assert_eq!(again.share_fingerprint(b"k"), config.share_fingerprint(b"k"));
        }
        Err(e) => {
            if let Some(t) = &token {
                let text = e.to_string();
                assert!(!leaks(&text, t), "token {t:?} in error {text:?}");
            }
        }
    }
});
