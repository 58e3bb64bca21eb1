//! What APISIX 3.8.0's `apisix/discovery/consul_kv/init.lua` makes of one
//! server's keys, rule for rule:
//!
//! * the key must match `"(" .. prefix .. "/.*/)([a-zA-Z0-9.]+):([0-9]+)"`
//!   with `ngx.re.match` (PCRE, unanchored, greedy `.*`; the prefix is pasted
//!   in unescaped, so it is itself a pattern); capture 1 is the service path,
//!   2 the host, 3 the port (`tonumber`, so `0080` is 80 and 99999 stays);
//! * capture 1 listed in `skip_keys` (exact string) drops the key;
//! * an empty or null value drops it; the value is `ngx.decode_base64`'d and
//!   `cjson`-decoded, a failure drops it;
//! * `check_status` equal to `false` or `"false"` drops it;
//! * the node is `{host, port, weight = metadata.weight or default}`: every
//!   other field (`priority`, `max_fails`, `fail_timeout`, `metadata`) is lost;
//! * a value that decodes to a number, boolean or `null` makes the Lua code
//!   index a non-table: the timer raises an error and nothing from that
//!   response is applied.
//!
//! At request time `core.schema.discovery_nodes` checks the whole list
//! (`weight` an integer >= 0, `port` an integer >= 1): one bad node makes
//! every request to the service fail with "invalid nodes format".

use std::collections::HashSet;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use regex::Regex;
use serde_json::Value;

/// The rules of one APISIX configuration.
#[derive(Debug)]
pub struct ApisixRules {
    pattern: Regex,
    /// The prefix as written in the config (APISIX does not normalise it).
    pub prefix: String,
    skip_keys: HashSet<String>,
    default_weight: u32,
}

/// What APISIX makes of one key.
#[derive(Debug, Clone, PartialEq)]
pub enum ApisixKey {
    Node(ApisixNode),
    Skipped(String),
    /// The value makes APISIX's timer raise a Lua error.
    LuaError(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApisixNode {
    pub service_path: String,
    pub host: String,
    /// `tonumber` of the digits: may be 0 or above 65535.
    pub port: u64,
    /// `metadata.weight or default`, as decoded (may be a string, null, ...).
    pub weight: Value,
    /// Text before and after the part the pattern matched (unanchored).
    pub ignored_before: String,
    pub ignored_after: String,
    /// Fields of the value APISIX does not pass on.
    pub dropped_fields: Vec<String>,
}

impl ApisixNode {
    /// Why `core.schema.discovery_nodes` refuses this node, if it does.
    pub fn schema_error(&self) -> Option<String> {
        if self.port < 1 {
            return Some(format!("port {} is below 1", self.port));
        }
        match &self.weight {
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.fract() != 0.0 => Some(format!("weight {n} is not an integer")),
                Some(f) if f < 0.0 => Some(format!("weight {n} is below 0")),
                _ => None,
            },
            other => Some(format!("weight {other} is not an integer")),
        }
    }

    /// The weight as an integer when APISIX's schema accepts it.
    pub fn weight_int(&self) -> Option<i64> {
        let f = self.weight.as_f64()?;
        (f.fract() == 0.0 && f >= 0.0 && f <= i64::MAX as f64).then_some(f as i64)
    }
}

/// `ngx.decode_base64`: standard alphabet; reading stops at the first `=`;
/// padding optional; trailing bits not checked.
const NGX_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

fn ngx_decode_base64(text: &str) -> Option<Vec<u8>> {
    let data = text.split('=').next().unwrap_or("");
    if data.len() % 4 == 1 {
        return None;
    }
    NGX_BASE64.decode(data).ok()
}

impl ApisixRules {
    pub fn new(prefix: &str, skip_keys: &[String], default_weight: u32) -> Result<Self, String> {
        let source = format!("({prefix}/.*/)([a-zA-Z0-9.]+):([0-9]+)");
        let pattern = Regex::new(&source).map_err(|e| {
            format!(
                "prefix {prefix:?} makes APISIX's key pattern {source:?}, which this tool cannot evaluate: {e}"
            )
        })?;
        Ok(ApisixRules {
            pattern,
            prefix: prefix.to_string(),
            skip_keys: skip_keys.iter().cloned().collect(),
            default_weight,
        })
    }

    /// APISIX's reading of one key and its base64 value.
    pub fn evaluate(&self, key: &str, value: Option<&str>) -> ApisixKey {
        if key.is_empty() {
            return ApisixKey::Skipped("empty key".into());
        }
        let Some(caps) = self.pattern.captures(key) else {
            return ApisixKey::Skipped(self.why_no_match(key));
        };
        let (Some(whole), Some(sn), Some(host), Some(port)) =
            (caps.get(0), caps.get(1), caps.get(2), caps.get(3))
        else {
            return ApisixKey::Skipped(self.why_no_match(key));
        };
        if self.skip_keys.contains(sn.as_str()) {
            return ApisixKey::Skipped(format!("service path {:?} is in skip_keys", sn.as_str()));
        }
        let value = match value {
            Some(v) if !v.is_empty() => v,
            _ => return ApisixKey::Skipped("empty value".into()),
        };
        let Some(decoded) = ngx_decode_base64(value) else {
            return ApisixKey::Skipped("value is not valid base64".into());
        };
        let metadata: Value = match serde_json::from_slice(&decoded) {
            Ok(v) => v,
            Err(e) => return ApisixKey::Skipped(format!("value is not valid JSON: {e}")),
        };
        let (weight, dropped_fields) = match &metadata {
            Value::Object(o) => {
                if matches!(o.get("check_status"), Some(Value::Bool(false)))
                    || o.get("check_status").and_then(Value::as_str) == Some("false")
                {
                    return ApisixKey::Skipped("check_status is false".into());
                }
                let weight = match o.get("weight") {
                    None | Some(Value::Bool(false)) => Value::from(self.default_weight),
                    Some(w) => w.clone(),
                };
                let dropped = o
                    .keys()
                    .filter(|k| !matches!(k.as_str(), "weight" | "check_status"))
                    .cloned()
                    .collect();
                (weight, dropped)
            }
            // A Lua string indexes the string library (nil fields); a table
            // from an array has no such fields: both get the default weight.
            Value::String(_) | Value::Array(_) => (Value::from(self.default_weight), Vec::new()),
            Value::Number(_) | Value::Bool(_) | Value::Null => {
                let kind = match metadata {
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    _ => "null",
                };
                return ApisixKey::LuaError(format!(
                    "value is {kind}: APISIX indexes it as a table and its timer raises a Lua error"
                ));
            }
        };
        ApisixKey::Node(ApisixNode {
            service_path: sn.as_str().to_string(),
            host: host.as_str().to_string(),
            port: port.as_str().parse::<u64>().unwrap_or(u64::MAX),
            weight,
            ignored_before: key[..whole.start()].to_string(),
            ignored_after: key[whole.end()..].to_string(),
            dropped_fields,
        })
    }

    /// A one-line reason why the key pattern does not match.
    fn why_no_match(&self, key: &str) -> String {
        let under = format!("{}/", self.prefix);
        let Some(rest) = key.strip_prefix(&under) else {
            return format!("key is not under {under:?}");
        };
        let Some((path, node)) = rest.rsplit_once('/') else {
            return "no service path between the prefix and host:port".into();
        };
        if node.is_empty() {
            return "folder key (ends with /)".into();
        }
        if path.is_empty() {
            return "empty service name".into();
        }
        if node.starts_with('[') {
            return "IPv6 literal: the host pattern [a-zA-Z0-9.]+ allows no brackets or ':'".into();
        }
        let host = node.rsplit_once(':').map_or(node, |(h, _)| h);
        if let Some(c) = host.chars().find(|c| matches!(c, '-' | '_')) {
            return format!(
                "host contains {c:?}: the host pattern [a-zA-Z0-9.]+ does not allow it"
            );
        }
        if !node.contains(':') {
            return "no :port after the host".into();
        }
        "key does not match APISIX's pattern (host [a-zA-Z0-9.]+, port [0-9]+)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn rules() -> ApisixRules {
        ApisixRules::new("upstreams", &["upstreams/skip/".to_string()], 1).unwrap()
    }

    fn node(key: &str, value: &str) -> ApisixKey {
        rules().evaluate(key, Some(&STANDARD.encode(value)))
    }

    #[test]
    fn greedy_service_path_and_unanchored_end() {
        let ApisixKey::Node(n) = node("upstreams/a/b/c/10.0.0.1:80", "{}") else {
            panic!()
        };
        assert_eq!(
            (n.service_path.as_str(), n.host.as_str()),
            ("upstreams/a/b/c/", "10.0.0.1")
        );
        let ApisixKey::Node(n) = node("upstreams/web/10.0.0.1:80abc", "{}") else {
            panic!()
        };
        assert_eq!((n.port, n.ignored_after.as_str()), (80, "abc"));
        // The pattern backtracks to an earlier slash: text after the port
        // may itself contain a slash.
        let ApisixKey::Node(n) = node("upstreams/web/10.0.0.1:80/extra", "{}") else {
            panic!()
        };
        assert_eq!(
            (n.service_path.as_str(), n.ignored_after.as_str()),
            ("upstreams/web/", "/extra")
        );
    }

    #[test]
    fn unanchored_start_finds_the_prefix_inside_another_key() {
        let ApisixKey::Node(n) = node("upstreams2/upstreams/web/10.0.0.1:80", "{}") else {
            panic!()
        };
        assert_eq!(
            (n.service_path.as_str(), n.ignored_before.as_str()),
            ("upstreams/web/", "upstreams2/")
        );
    }

    #[test]
    fn hostnames_ipv6_and_folders_do_not_match() {
        for (key, why) in [
            ("upstreams/web/api-1.internal:80", "'-'"),
            ("upstreams/web/api_1:80", "'_'"),
            ("upstreams/web/[2001:db8::1]:80", "IPv6"),
            ("upstreams/web/", "folder"),
            ("upstreams/10.0.0.1:80", "no service path"),
        ] {
            match node(key, "{}") {
                ApisixKey::Skipped(r) => assert!(r.contains(why), "{key}: {r}"),
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn value_rules() {
        let ApisixKey::Node(n) = node("upstreams/w/1.1.1.1:80", r#"{"weight":"3","priority":1}"#)
        else {
            panic!()
        };
        assert_eq!(n.weight, Value::from("3"));
        assert!(n.schema_error().unwrap().contains("not an integer"));
        assert_eq!(n.dropped_fields, vec!["priority".to_string()]);
        let ApisixKey::Node(n) = node("upstreams/w/1.1.1.1:80", r#"{"weight":false}"#) else {
            panic!()
        };
        assert_eq!(n.weight, Value::from(1));
        let ApisixKey::Node(n) = node("upstreams/w/1.1.1.1:80", r#"{"weight":3.0}"#) else {
            panic!()
        };
        assert_eq!((n.weight_int(), n.schema_error()), (Some(3), None));
        assert!(matches!(
            node("upstreams/w/1.1.1.1:80", r#"{"check_status":"false"}"#),
            ApisixKey::Skipped(_)
        ));
        assert!(matches!(
            node("upstreams/skip/1.1.1.1:80", "{}"),
            ApisixKey::Skipped(_)
        ));
        assert!(matches!(
            node("upstreams/w/1.1.1.1:80", "7"),
            ApisixKey::LuaError(_)
        ));
        assert!(matches!(
            node("upstreams/w/1.1.1.1:80", "[1]"),
            ApisixKey::Node(_)
        ));
        assert!(matches!(
            node("upstreams/w/1.1.1.1:80", "nope"),
            ApisixKey::Skipped(_)
        ));
        assert!(matches!(
            rules().evaluate("upstreams/w/1.1.1.1:80", None),
            ApisixKey::Skipped(_)
        ));
        let ApisixKey::Node(n) = node("upstreams/w/1.1.1.1:0080", "{}") else {
            panic!()
        };
        assert_eq!(n.port, 80);
        let ApisixKey::Node(n) = node("upstreams/w/1.1.1.1:0", "{}") else {
            panic!()
        };
        assert!(n.schema_error().is_some());
    }

    #[test]
    fn nginx_base64_stops_at_padding_and_accepts_none() {
        assert_eq!(ngx_decode_base64("e30=").as_deref(), Some(&b"{}"[..]));
        assert_eq!(ngx_decode_base64("e30").as_deref(), Some(&b"{}"[..]));
        assert_eq!(
            ngx_decode_base64("e30=garbage").as_deref(),
            Some(&b"{}"[..])
        );
        assert_eq!(ngx_decode_base64("e"), None);
        assert_eq!(ngx_decode_base64("e3!0"), None);
    }

    #[test]
    fn prefix_is_a_pattern() {
        let r = ApisixRules::new("up.streams", &[], 1).unwrap();
        assert!(matches!(
            r.evaluate("upXstreams/w/1.1.1.1:80", Some("e30=")),
            ApisixKey::Node(_)
        ));
        assert!(ApisixRules::new("up(streams", &[], 1).is_err());
    }
}
