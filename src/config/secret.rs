//! The ACL token as a type that cannot be shown by accident.
//!
//! `Debug` and `Display` print `<redacted>`, there is no `Serialize`, and the
//! only way to the text is [`Secret::expose`], which a reviewer can grep for.
//! [`Secret::scrub`] removes the token from text that may echo it (a Consul
//! error body, an error message, a refused config value).

use std::fmt;

/// What the token is shown as.
pub const REDACTED: &str = "<redacted>";

/// Tokens shorter than this are never scrubbed: removing every `a` or `ab`
/// from a message would destroy it and hide nothing worth hiding.
pub(crate) const SCRUB_MIN_LEN: usize = 4;

/// A cut text that ends with at least this many characters of the token
/// (or of one of its encodings) has that tail removed.
pub(crate) const SCRUB_MIN_PREFIX: usize = 8;

/// The Consul ACL token (`token`), empty when none is configured.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(token: impl Into<String>) -> Secret {
        Secret(token.into())
    }

    /// The token itself, for the `X-Consul-Token` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `<redacted>` for a token, `""` when there is none (so an operator can
    /// see whether a token arrived at all).
    pub fn shown(&self) -> &'static str {
        if self.0.is_empty() {
            ""
        } else {
            REDACTED
        }
    }

    /// The forms in which the token can appear in text: as-is, escaped inside
    /// a JSON string or by Rust's `{:?}`, and percent-encoded (upper- and
    /// lower-case hex). Empty for a token shorter than [`SCRUB_MIN_LEN`].
    fn forms(&self) -> Vec<String> {
        if self.0.chars().count() < SCRUB_MIN_LEN {
            return Vec::new();
        }
        let mut forms = vec![self.0.clone()];
        let json = serde_json::to_string(&self.0).unwrap_or_default();
        let json = json
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or_default();
        let debug = format!("{:?}", self.0);
        let debug = debug
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or_default();
        for f in [
            json.to_string(),
            debug.to_string(),
            percent_encode(&self.0, false),
            percent_encode(&self.0, true),
        ] {
            if !f.is_empty() && !forms.contains(&f) {
                forms.push(f);
            }
        }
        forms
    }

    /// Whether `text` holds the token in one of its whole forms.
    pub fn appears_in(&self, text: &str) -> bool {
        self.forms().iter().any(|f| text.contains(f.as_str()))
    }

    /// `text` with every occurrence of the token (as-is, JSON-escaped or
    /// percent-encoded) replaced by `<redacted>`, and with a trailing cut
    /// copy (a prefix of at least [`SCRUB_MIN_PREFIX`] characters at the end
    /// of the text, optionally followed by `...` or `…`) replaced too.
    pub fn scrub(&self, text: &str) -> String {
        let forms = self.forms();
        let mut out = text.to_string();
        for f in &forms {
            if out.contains(f.as_str()) {
                out = out.replace(f.as_str(), REDACTED);
            }
        }
        for f in &forms {
            out = scrub_cut_tail(out, f);
        }
        out
    }
}

/// Removes the longest prefix of `form` (>= [`SCRUB_MIN_PREFIX`] characters,
/// shorter than the whole) that ends `text`, before an optional ellipsis.
fn scrub_cut_tail(text: String, form: &str) -> String {
    let (body, ellipsis) = ["...", "\u{2026}", "\""]
        .iter()
        .find_map(|e| text.strip_suffix(e).map(|b| (b, *e)))
        .unwrap_or((text.as_str(), ""));
    let cuts = form
        .char_indices()
        .map(|(i, _)| i)
        .skip(SCRUB_MIN_PREFIX)
        .collect::<Vec<_>>();
    for &end in cuts.iter().rev() {
        if body.ends_with(&form[..end]) {
            let keep = &body[..body.len() - end];
            return format!("{keep}{REDACTED}{ellipsis}");
        }
    }
    text
}

/// RFC 3986 percent-encoding of everything but the unreserved characters,
/// with upper- or lower-case hex digits.
fn percent_encode(s: &str, lower: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else if lower {
            out.push_str(&format!("%{b:02x}"));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.shown(), f)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.shown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "b1gS3cret-70ken/0f\"consul";

    #[test]
    fn debug_and_display_never_show_the_token() {
        let s = Secret::new(TOKEN);
        assert_eq!(format!("{s:?}"), "\"<redacted>\"");
        assert_eq!(s.to_string(), "<redacted>");
        assert_eq!(format!("{:#?}", Some(&s)), "Some(\n    \"<redacted>\",\n)");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
        assert_eq!(s.expose(), TOKEN);
    }

    #[test]
    fn scrub_removes_every_encoding() {
        let s = Secret::new(TOKEN);
        let json = serde_json::to_string(TOKEN).unwrap_or_default();
        let pct = "b1gS3cret-70ken%2F0f%22consul";
        for text in [
            format!("raw {TOKEN} and again {TOKEN}."),
            format!("body: {{\"t\":{json}}}"),
            format!("GET /v1/kv/x?token={pct} 403"),
            "lower b1gS3cret-70ken%2f0f%22consul".to_string(),
            format!("echo: {TOKEN:?}"),
        ] {
            let out = s.scrub(&text);
            assert!(!out.contains("b1gS3cret"), "{text} -> {out}");
            assert!(out.contains(REDACTED), "{out}");
        }
        assert_eq!(s.scrub("nothing here"), "nothing here");
    }

    #[test]
    fn scrub_removes_a_cut_copy_at_the_end() {
        let s = Secret::new(TOKEN);
        assert_eq!(s.scrub("error: b1gS3cret-70k..."), "error: <redacted>...");
        assert_eq!(s.scrub("error: b1gS3cret-70k"), "error: <redacted>");
        assert_eq!(s.scrub("{\"e\":\"b1gS3cret-70\""), "{\"e\":\"<redacted>\"");
        assert_eq!(
            s.scrub("error: b1gS3cre\u{2026}"),
            "error: <redacted>\u{2026}"
        );
        // Fewer than 8 characters of the token are left alone.
        assert_eq!(s.scrub("error: b1gS3cr"), "error: b1gS3cr");
        // A prefix in the middle of the text is not a cut copy.
        assert_eq!(s.scrub("b1gS3cret-70k is fine"), "b1gS3cret-70k is fine");
    }

    #[test]
    fn short_tokens_are_not_scrubbed() {
        let s = Secret::new("abc");
        assert_eq!(s.scrub("abc abc"), "abc abc");
        assert!(!s.appears_in("abc"));
        assert!(Secret::new("abcd").appears_in("xabcdx"));
    }
}

#[cfg(test)]
mod echoed {
    //! Texts a server echoes the token in (red-team D16), moved here from
    //! the watcher when its scrubber became this one.
    use super::*;

    fn scrub_token(token: &str, text: &str) -> String {
        Secret::new(token).scrub(text)
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
