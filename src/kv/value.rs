//! Values: a JSON object whose `weight`, `max_fails`, `fail_timeout`,
//! `priority` and `metadata` are checked and copied into the node object
//! without building a JSON tree.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{shown, Outcome, ParsedKey};
use crate::log::excerpt;

/// A value whose JSON nests deeper than this is malformed: its node is
/// dropped, so that no single key makes its service (nested once more in
/// `all_nodes()` and the dump) too deep for cjson or the dump loader.
pub(crate) const MAX_VALUE_DEPTH: usize = 32;

/// The fields of a value that matter, borrowed as raw JSON text: checked
/// and copied into the node without building a JSON tree. Other fields are
/// ignored.
#[derive(Deserialize)]
struct NodeValue<'a> {
    #[serde(borrow, default)]
    weight: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_fails: Option<&'a RawValue>,
    #[serde(borrow, default)]
    fail_timeout: Option<&'a RawValue>,
    #[serde(borrow, default)]
    priority: Option<&'a RawValue>,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow, default)]
    check_status: Option<&'a RawValue>,
}

pub(super) fn node_from_value(key: &ParsedKey<'_>, decoded: &[u8], default_weight: u32) -> Outcome {
    if json_depth_exceeds(decoded, MAX_VALUE_DEPTH) {
        return Outcome::Malformed(format!("value nests deeper than {MAX_VALUE_DEPTH} levels"));
    }
    let first = decoded.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(decoded) {
            Ok(_) => Outcome::Malformed("value is not a JSON object".into()),
            Err(e) => Outcome::Malformed(format!(
                "value is not valid JSON: {}",
                shown(&e.to_string())
            )),
        };
    }
    let v: NodeValue<'_> = match serde_json::from_slice(decoded) {
        Ok(v) => v,
        Err(e) => {
            return Outcome::Malformed(format!(
                "value is not valid JSON: {}",
                shown(&e.to_string())
            ))
        }
    };
    if let Some(c) = v.check_status {
        if matches!(c.get(), "false" | "\"false\"") {
            return Outcome::Dropped("check_status is false");
        }
    }
    let weight = match v.weight.map(RawValue::get) {
        None | Some("null") => u64::from(default_weight),
        Some(w) if w.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
            match whole_number(w) {
                Some(n) if n <= i32::MAX as u64 => n,
                _ => {
                    return Outcome::Malformed(format!(
                        "weight must be an integer from 0 to 2147483647, got {}",
                        short(w)
                    ))
                }
            }
        }
        Some(w) => {
            return Outcome::Malformed(format!("weight must be an integer, got {}", short(w)))
        }
    };
    // Hosts are ASCII letters, digits, '.', '-', '_', or a bracketed IPv6
    // literal, so they need no JSON escaping.
    let mut out = String::with_capacity(64);
    out.push_str("{\"host\":\"");
    out.push_str(key.host);
    out.push_str("\",\"port\":");
    out.push_str(&key.port.to_string());
    out.push_str(",\"weight\":");
    out.push_str(&weight.to_string());
    for (name, raw, want) in [
        ("max_fails", v.max_fails, Want::NonNegInt),
        ("fail_timeout", v.fail_timeout, Want::NonNegNumber),
        ("priority", v.priority, Want::Int),
    ] {
        if let Some(raw) = raw.map(RawValue::get) {
            if want.accepts(raw) {
                push_field(&mut out, name, raw);
            }
        }
    }
    if let Some(raw) = v.metadata.map(RawValue::get) {
        if Want::Object.accepts(raw) {
            if let Err(reason) = check_metadata(raw) {
                return Outcome::Malformed(reason);
            }
            push_field(&mut out, "metadata", raw);
        }
    }
    out.push('}');
    Outcome::Node {
        service_path: key.service_path.into(),
        json: out.into_boxed_str(),
    }
}

/// A JSON number that is a whole, non-negative integer: `3`, or `3.0` /
/// `3e0` as some writers emit it (cjson, and so APISIX, read those as 3).
fn whole_number(text: &str) -> Option<u64> {
    if let Ok(n) = text.parse::<u64>() {
        return Some(n);
    }
    let f: f64 = text.parse().ok()?;
    (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f <= f64::from(u32::MAX)).then_some(f as u64)
}

fn push_field(out: &mut String, name: &str, json: &str) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":");
    out.push_str(json);
}

/// Checks `metadata` as the consumers' strict decoders will read it: a raw
/// value is only checked for JSON syntax, and may hold what they refuse (a
/// lone UTF-16 surrogate escape such as `"\ud800"`, a number out of range),
/// which would make the whole service undecodable in Lua and the dump
/// unloadable. The text is passed on as written. Depth is already bounded
/// by [`MAX_VALUE_DEPTH`].
fn check_metadata(raw: &str) -> Result<(), String> {
    serde_json::from_str::<serde_json::Value>(raw)
        .map(drop)
        .map_err(|e| format!("metadata is not valid JSON: {}", shown(&e.to_string())))
}

/// Whether arrays and objects in `json` nest deeper than `max` (brackets
/// inside strings do not count). A linear scan, no recursion.
pub fn json_depth_exceeds(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// What an optional field must be to be passed on (otherwise it is left
/// out, as APISIX's module ignored these fields entirely).
#[derive(Clone, Copy)]
enum Want {
    NonNegInt,
    NonNegNumber,
    Int,
    Object,
}

impl Want {
    /// `raw` is valid JSON text (checked by serde_json).
    fn accepts(self, raw: &str) -> bool {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        match self {
            Want::NonNegInt => digits(raw) && raw.parse::<u64>().is_ok(),
            Want::Int => digits(raw.strip_prefix('-').unwrap_or(raw)) && raw.parse::<i64>().is_ok(),
            Want::NonNegNumber => {
                raw.starts_with(|c: char| c.is_ascii_digit())
                    && raw.parse::<f64>().is_ok_and(|f| f.is_finite() && f >= 0.0)
            }
            Want::Object => raw.starts_with('{'),
        }
    }
}

fn short(raw: &str) -> Cow<'_, str> {
    excerpt(raw, 40)
}
