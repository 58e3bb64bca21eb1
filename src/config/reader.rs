//! Reading the JSON document: objects that remember which keys were asked
//! for (the rest are reported as unknown), and the lenient shapes `cjson`
//! produces (empty tables, integral floats).

use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::errors::{show, show_str, ConfigError};

/// An object being read: remembers the keys asked for, so that the others can
/// be reported as unknown.
pub(crate) struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
    seen: Vec<&'static str>,
}

impl<'a> Obj<'a> {
    pub(crate) fn new(map: &'a Map<String, Value>, path: &str) -> Obj<'a> {
        Obj {
            map,
            path: path.to_string(),
            seen: Vec::new(),
        }
    }

    pub(crate) fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`; `null` counts as absent.
    pub(crate) fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.push(key);
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    /// A nested object (absent → `None`).
    pub(crate) fn object(&mut self, key: &'static str) -> Result<Option<Obj<'a>>, ConfigError> {
        let path = self.path(key);
        match self.get(key) {
            None => Ok(None),
            Some(v) => match as_object(v) {
                Some(m) => Ok(Some(Obj::new(m, &path))),
                None => Err(ConfigError::new(
                    path,
                    format!("expected an object, got {}", show(v)),
                )),
            },
        }
    }

    /// Warns about every key that was never asked for.
    pub(crate) fn finish(self, warnings: &mut Vec<String>) {
        for key in self.map.keys() {
            if !self.seen.contains(&key.as_str()) {
                warnings.push(format!(
                    "unknown field {} ignored",
                    show_str(&self.path(key))
                ));
            }
        }
    }
}

fn empty_map() -> &'static Map<String, Value> {
    static EMPTY: OnceLock<Map<String, Value>> = OnceLock::new();
    EMPTY.get_or_init(Map::new)
}

/// An object, or an empty array (an empty Lua table encoded by `cjson`).
pub(crate) fn as_object(v: &Value) -> Option<&Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m),
        Value::Array(a) if a.is_empty() => Some(empty_map()),
        _ => None,
    }
}

/// An array, or an empty object (an empty Lua table encoded by `cjson`).
pub(crate) fn as_array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) => Some(a),
        Value::Object(m) if m.is_empty() => Some(&[]),
        _ => None,
    }
}

/// An integer, also from a JSON number with a zero fraction (`3.0`, `1e3`).
pub(crate) fn int_value(v: &Value) -> Option<i128> {
    let Value::Number(n) = v else {
        return None;
    };
    if let Some(i) = n.as_i64() {
        return Some(i128::from(i));
    }
    if let Some(u) = n.as_u64() {
        return Some(i128::from(u));
    }
    match n.as_f64() {
        // 2^64: beyond every limit used here, and exact in f64.
        Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 18_446_744_073_709_551_616.0 => {
            Some(f as i128)
        }
        _ => None,
    }
}

pub(crate) fn string<'v>(v: &'v Value, path: &str) -> Result<&'v str, ConfigError> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(ConfigError::new(
            path,
            format!("expected a string, got {}", show(v)),
        )),
    }
}

/// A non-empty string without NUL, usable as a file path.
pub(crate) fn path_string<'v>(v: &'v Value, path: &str) -> Result<&'v str, ConfigError> {
    let s = string(v, path)?;
    if s.is_empty() || s.contains('\0') {
        return Err(ConfigError::new(
            path,
            format!("expected a non-empty path without NUL, got {}", show(v)),
        ));
    }
    Ok(s)
}
