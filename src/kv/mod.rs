//! Parsing what Consul returns for `GET /v1/kv/{prefix}?recurse`: the response
//! body, each key (`{prefix}/{service path}/{host}:{port}`) and each value
//! (base64 of a JSON object such as `{"weight":1,"max_fails":2}`).
//!
//! A response that is not a JSON array is refused whole. A single bad entry is
//! reported as [`Outcome::Malformed`] with its reason and the rest still
//! applies. Reasons quote key and value text escaped and cut (they end up
//! in the error log).
//!
//! * this file: the types of a parsed response, and one entry;
//! * `scan.rs`: the response body (a JSON array of entries);
//! * `key.rs`: `{prefix}/{service path}/{host}:{port}`;
//! * `value.rs`: the JSON value, turned into APISIX's node object.

mod key;
mod scan;
mod value;

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use crate::log::excerpt;

pub use key::{parse_key, ParsedKey};
pub use value::json_depth_exceeds;

use value::node_from_value;

/// Consul sends standard padded base64; accept unpadded too, since some
/// tools that write KV through other paths strip padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A response body that cannot be used at all. Nothing is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseError(pub String);

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One element of the response array, with loosely typed fields so that a
/// single entry with a wrong type does not spoil the whole response.
#[derive(Debug, Default, Clone)]
pub struct RawEntry<'a> {
    pub key: Field<Cow<'a, str>>,
    pub value: Field<Cow<'a, str>>,
    pub modify_index: Field<u64>,
}

/// A field as found in the JSON: absent, null, of the expected type, or not.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Field<T> {
    #[default]
    Absent,
    Null,
    Ok(T),
    WrongType(&'static str),
}

/// Parses a whole `?recurse` response body. The body must be a JSON array;
/// elements that are not objects become entries whose key is `WrongType`.
/// Keys and values without escapes are borrowed from `body`.
pub fn parse_response(body: &[u8]) -> Result<Vec<RawEntry<'_>>, ResponseError> {
    scan::parse_response(body)
}

/// The start of a body, for the "not a JSON array" reason.
fn preview(body: &[u8]) -> String {
    let n = body.len().min(40);
    String::from_utf8_lossy(&body[..n]).into_owned()
}

/// What one KV entry contributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A node of service `service_path` (`{prefix}/{svc}/`), rendered as a
    /// JSON object in APISIX's node shape.
    Node {
        service_path: Box<str>,
        json: Box<str>,
    },
    /// Deliberately left out: `check_status: false`, or a `skip_keys` match.
    Dropped(&'static str),
    /// Not a node and not an error: a folder key such as `upstreams/web/`.
    Ignored,
    /// Bad key or value; the reason is logged once.
    Malformed(String),
}

/// Rules for turning keys and values into nodes.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Prefix without surrounding slashes, e.g. `upstreams`.
    pub prefix: String,
    pub skip_keys: Vec<String>,
    pub default_weight: u32,
}

/// Key or value text as it may appear in a reason: escaped, and cut.
fn shown(text: &str) -> Cow<'_, str> {
    excerpt(text, 200)
}

/// Turns one entry's key and value into an [`Outcome`].
pub fn parse_entry(key: &str, value: &Field<Cow<'_, str>>, rules: &Rules) -> Outcome {
    let parsed = match parse_key(key, &rules.prefix) {
        Ok(Some(p)) => p,
        Ok(None) => return Outcome::Ignored,
        Err(e) => return Outcome::Malformed(e),
    };
    if rules.skip_keys.iter().any(|s| s == parsed.service_path) {
        return Outcome::Dropped("service listed in skip_keys");
    }
    let encoded = match value {
        Field::Ok(v) if !v.is_empty() => v,
        Field::Ok(_) | Field::Null | Field::Absent => {
            return Outcome::Malformed("empty value".into())
        }
        Field::WrongType(t) => return Outcome::Malformed(format!("Value is {t}, not a string")),
    };
    DECODED.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        if let Err(e) = BASE64.decode_vec(encoded.as_bytes(), &mut buf) {
            return Outcome::Malformed(format!("Value is not valid base64: {e}"));
        }
        node_from_value(&parsed, &buf, rules.default_weight)
    })
}

thread_local! {
    /// Reused for every value's base64 decoding: no allocation per key.
    static DECODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::value::MAX_VALUE_DEPTH;
    use super::*;

    fn rules() -> Rules {
        Rules {
            prefix: "upstreams".into(),
            skip_keys: vec!["upstreams/skipped/".into()],
            default_weight: 7,
        }
    }

    fn b64(s: &str) -> Field<Cow<'static, str>> {
        Field::Ok(Cow::Owned(
            base64::engine::general_purpose::STANDARD.encode(s),
        ))
    }

    fn node(key: &str, value: &str) -> Outcome {
        parse_entry(key, &b64(value), &rules())
    }

    #[test]
    fn keys_split_like_apisix() {
        let k = parse_key("upstreams/webpages/127.0.0.1:8000", "upstreams")
            .unwrap()
            .unwrap();
        assert_eq!(k.service_path, "upstreams/webpages/");
        assert_eq!((k.host, k.port), ("127.0.0.1", 8000));
        let k = parse_key("upstreams/web/team/hello/10.0.0.1:80", "upstreams")
            .unwrap()
            .unwrap();
        assert_eq!(k.service_path, "upstreams/web/team/hello/");
    }

    #[test]
    fn hostnames_and_ipv6_parse() {
        let k = parse_key("upstreams/web/api-1_b.internal:8080", "upstreams")
            .unwrap()
            .unwrap();
        assert_eq!((k.host, k.port), ("api-1_b.internal", 8080));
        let k = parse_key("upstreams/web/[2001:db8::1]:8080", "upstreams")
            .unwrap()
            .unwrap();
        assert_eq!((k.host, k.port), ("[2001:db8::1]", 8080));
    }

    #[test]
    fn folder_keys_are_ignored() {
        assert_eq!(parse_key("upstreams/web/", "upstreams"), Ok(None));
        assert_eq!(parse_key("upstreams/", "upstreams"), Ok(None));
    }

    #[test]
    fn bad_keys_are_malformed_with_reason() {
        let cases = [
            ("other/web/1.1.1.1:80", "not under prefix"),
            ("upstreamsX/web/1.1.1.1:80", "not under prefix"),
            ("upstreams/1.1.1.1:80", "no service path"),
            ("upstreams/web/1.1.1.1", "expected host:port"),
            ("upstreams/web/1.1.1.1:", "invalid port"),
            ("upstreams/web/1.1.1.1:0", "out of range"),
            ("upstreams/web/1.1.1.1:65536", "out of range"),
            ("upstreams/web/1.1.1.1:80x", "invalid port"),
            ("upstreams/web/:80", "empty host"),
            ("upstreams/web/a b:80", "invalid character"),
            ("upstreams/web/[2001:db8::1:80", "unterminated"),
            ("upstreams/web/[zz::1]:80", "invalid IPv6"),
            ("upstreams/web/[::1]80", "missing :port"),
        ];
        for (key, want) in cases {
            match parse_key(key, "upstreams") {
                Err(e) => assert!(e.contains(want), "{key}: {e} does not mention {want}"),
                Ok(k) => panic!("{key} parsed as {k:?}"),
            }
        }
    }

    #[test]
    fn value_fields_are_kept_in_order() {
        let out = node(
            "upstreams/web/1.2.3.4:80",
            r#"{"metadata":{"lane":"a"},"priority":-1,"fail_timeout":1.5,"max_fails":2,"weight":3}"#,
        );
        assert_eq!(
            out,
            Outcome::Node {
                service_path: "upstreams/web/".into(),
                json: r#"{"host":"1.2.3.4","port":80,"weight":3,"max_fails":2,"fail_timeout":1.5,"priority":-1,"metadata":{"lane":"a"}}"#.into(),
            }
        );
    }

    #[test]
    fn default_weight_applies_and_zero_weight_is_kept() {
        let Outcome::Node { json, .. } = node("upstreams/web/1.2.3.4:80", "{}") else {
            panic!()
        };
        assert_eq!(&*json, r#"{"host":"1.2.3.4","port":80,"weight":7}"#);
        let Outcome::Node { json, .. } = node("upstreams/web/1.2.3.4:80", r#"{"weight":0}"#) else {
            panic!()
        };
        assert!(json.contains("\"weight\":0"));
    }

    #[test]
    fn check_status_false_drops_the_node() {
        assert!(matches!(
            node("upstreams/web/1.2.3.4:80", r#"{"check_status":false}"#),
            Outcome::Dropped(_)
        ));
        assert!(matches!(
            node("upstreams/web/1.2.3.4:80", r#"{"check_status":"false"}"#),
            Outcome::Dropped(_)
        ));
        assert!(matches!(
            node("upstreams/web/1.2.3.4:80", r#"{"check_status":true}"#),
            Outcome::Node { .. }
        ));
    }

    #[test]
    fn skip_keys_match_the_service_path_exactly() {
        assert!(matches!(
            node("upstreams/skipped/1.2.3.4:80", "{}"),
            Outcome::Dropped(_)
        ));
        assert!(matches!(
            node("upstreams/skipped/more/1.2.3.4:80", "{}"),
            Outcome::Node { .. }
        ));
    }

    #[test]
    fn bad_values_are_malformed_with_reason() {
        let r = rules();
        let key = "upstreams/web/1.2.3.4:80";
        let cases: Vec<(Field<Cow<str>>, &str)> = vec![
            (Field::Null, "empty value"),
            (Field::Absent, "empty value"),
            (Field::Ok(Cow::Borrowed("")), "empty value"),
            (Field::WrongType("a number"), "Value is a number"),
            (Field::Ok(Cow::Borrowed("!!!")), "not valid base64"),
            (b64("not json"), "not valid JSON"),
            (b64("[1]"), "not a JSON object"),
            (b64(r#"{"weight":"3"}"#), "weight must be an integer"),
            (b64(r#"{"weight":-1}"#), "weight must be an integer from 0"),
            (b64(r#"{"weight":1.5}"#), "weight must be an integer from 0"),
            (
                b64(r#"{"weight":-2.0}"#),
                "weight must be an integer from 0",
            ),
            (
                b64(r#"{"weight":3e10}"#),
                "weight must be an integer from 0",
            ),
        ];
        for (value, want) in cases {
            match parse_entry(key, &value, &r) {
                Outcome::Malformed(e) => assert!(e.contains(want), "{value:?}: {e}"),
                other => panic!("{value:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn whole_number_weights_in_float_notation_are_accepted() {
        // cjson (so APISIX) reads 3.0 as 3; a writer that emits floats must
        // not lose its nodes on the switch to ckv.
        let r = rules();
        for (text, want) in [("3.0", 3), ("2e0", 2), ("0.0", 0), ("7", 7)] {
            let value = b64(&format!(r#"{{"weight":{text}}}"#));
            match parse_entry("upstreams/web/1.2.3.4:80", &value, &r) {
                Outcome::Node { json, .. } => {
                    assert!(
                        json.contains(&format!("\"weight\":{want}")),
                        "{text}: {json}"
                    )
                }
                other => panic!("{text} gave {other:?}"),
            }
        }
    }

    #[test]
    fn key_text_in_reasons_is_escaped() {
        let cases = [
            "upstreams/web/x\n2026-12-01 [emerg] forged\u{1b}]0;owned\u{7}",
            "upstreams/web/nul\0byte:80",
            "upstreams/web/01 [emerg] x\u{1b}[31mRED:80",
            "upstreams/web/[::1\n]:80",
            "upstreams/web/[\u{2028}",
            "upstreams/web/h:8\r0",
        ];
        for key in cases {
            let Err(reason) = parse_key(key, "upstreams") else {
                panic!("{key:?} parsed")
            };
            assert!(
                !reason.chars().any(|c| c.is_control() || c == '\u{2028}'),
                "{key:?}: {reason:?}"
            );
        }
    }

    #[test]
    fn deep_values_are_malformed_and_shallow_ones_pass() {
        let deep = |n: usize| format!(r#"{{"metadata":{}1{}}}"#, "[".repeat(n), "]".repeat(n));
        // The value object is level 1, metadata's arrays the rest.
        let ok = node("upstreams/web/1.2.3.4:80", &deep(MAX_VALUE_DEPTH - 1));
        assert!(matches!(ok, Outcome::Node { .. }), "{ok:?}");
        for n in [MAX_VALUE_DEPTH, 1500, 100_000] {
            match node("upstreams/web/1.2.3.4:80", &deep(n)) {
                Outcome::Malformed(r) => assert!(r.contains("deeper than 32"), "{r}"),
                other => panic!("depth {n}: {other:?}"),
            }
        }
        let unknown = format!(r#"{{"other":{}{}}}"#, "{\"a\":".repeat(40), "}".repeat(40));
        assert!(matches!(
            node("upstreams/web/1.2.3.4:80", &unknown),
            Outcome::Malformed(_)
        ));
        // Brackets inside strings do not count.
        let text = format!(r#"{{"metadata":{{"s":"{}"}}}}"#, "[{".repeat(100));
        assert!(matches!(
            node("upstreams/web/1.2.3.4:80", &text),
            Outcome::Node { .. }
        ));
        assert!(!json_depth_exceeds(br#"{"a":"\"[[[[["}"#, 1));
    }

    #[test]
    fn metadata_strict_decoders_refuse_is_malformed() {
        for bad in [
            r#"{"metadata":{"a":"\ud800"}}"#,
            r#"{"metadata":{"a":1e400}}"#,
        ] {
            match node("upstreams/web/1.2.3.4:80", bad) {
                Outcome::Malformed(r) => assert!(r.contains("metadata"), "{r}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let Outcome::Node { json, .. } = node(
            "upstreams/web/1.2.3.4:80",
            r#"{"metadata":{"z":"\u003c","a":[1,2]}}"#,
        ) else {
            panic!()
        };
        assert!(
            json.ends_with(r#""metadata":{"z":"\u003c","a":[1,2]}}"#),
            "{json}"
        );
    }

    #[test]
    fn mistyped_optional_fields_are_left_out() {
        let Outcome::Node { json, .. } = node(
            "upstreams/web/1.2.3.4:80",
            r#"{"max_fails":"2","fail_timeout":-1,"priority":"x","metadata":[1]}"#,
        ) else {
            panic!()
        };
        assert_eq!(&*json, r#"{"host":"1.2.3.4","port":80,"weight":7}"#);
    }

    #[test]
    fn response_must_be_an_array() {
        assert!(parse_response(b"<html>oops</html>").is_err());
        assert!(parse_response(b"{\"oops\":1}")
            .unwrap_err()
            .0
            .contains("not a JSON array"));
        assert!(parse_response(b"[{\"Key\":\"a\"}").is_err());
        assert!(parse_response(b"[] x").is_err());
        assert_eq!(parse_response(b"[]").unwrap().len(), 0);
    }

    #[test]
    fn entries_with_wrong_types_are_kept_as_such() {
        let body = br#"[{"Key":1,"Value":null,"ModifyIndex":"7"},
                        {"LockIndex":0,"Key":"upstreams/a/1.1.1.1:80","Flags":0,"Value":"e30=","CreateIndex":5,"ModifyIndex":9},
                        "oops", {"Key":"k\u003c","Value":{"x":1},"ModifyIndex":-1}]"#;
        let e = parse_response(body).unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].key, Field::WrongType("a number"));
        assert_eq!(e[0].value, Field::Null);
        assert_eq!(e[0].modify_index, Field::WrongType("a string"));
        assert_eq!(e[1].key, Field::Ok(Cow::Borrowed("upstreams/a/1.1.1.1:80")));
        assert_eq!(e[1].modify_index, Field::Ok(9));
        assert_eq!(e[2].key, Field::WrongType("entry is not a JSON object"));
        assert_eq!(e[3].key, Field::Ok(Cow::Owned("k<".into())));
        assert_eq!(e[3].value, Field::WrongType("an object"));
        assert_eq!(e[3].modify_index, Field::WrongType("a negative number"));
    }
}
