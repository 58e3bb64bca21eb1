//! Reading the configuration: APISIX's `config.yaml` (its
//! `discovery.consul_kv` section, with APISIX's `${{VAR}}` substitution) or a
//! JSON document (the section itself, or a whole config holding it).

use std::path::Path;

use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// Largest config file read, in bytes.
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "yaml" | "yml" => Some(Format::Yaml),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn of_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            _ => Format::Yaml,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Json => "json",
        }
    }
}

/// Reads `path` and returns the `discovery.consul_kv` section as JSON.
pub fn load(path: &Path, format: Format) -> Result<Value, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text = String::new();
    use std::io::Read as _;
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "{} is larger than {MAX_CONFIG_BYTES} bytes",
            path.display()
        ));
    }
    let doc = match format {
        Format::Json => serde_json::from_str(&text)
            .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?,
        Format::Yaml => {
            let docs = YamlLoader::load_from_str(&text)
                .map_err(|e| format!("{} is not valid YAML: {e}", path.display()))?;
            let first = docs.into_iter().next().unwrap_or(Yaml::Null);
            let mut value = yaml_to_json(&first).map_err(|e| format!("{}: {e}", path.display()))?;
            substitute_env(&mut value, "").map_err(|e| format!("{}: {e}", path.display()))?;
            value
        }
    };
    section(doc).map_err(|e| format!("{}: {e}", path.display()))
}

/// `discovery.consul_kv` of a whole config, or the document itself when it
/// is already the section (it has `servers`).
fn section(doc: Value) -> Result<Value, String> {
    let Value::Object(mut top) = doc else {
        return Err("expected a mapping at the top level".into());
    };
    if top.contains_key("servers") && !top.contains_key("discovery") {
        return Ok(Value::Object(top));
    }
    match top.remove("discovery") {
        Some(Value::Object(mut d)) => d
            .remove("consul_kv")
            .ok_or_else(|| "discovery has no consul_kv section".to_string()),
        Some(_) => Err("discovery is not a mapping".into()),
        None => Err("no discovery.consul_kv section (and no servers at the top level)".into()),
    }
}

fn yaml_to_json(y: &Yaml) -> Result<Value, String> {
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(text) => {
            let f: f64 = text
                .parse()
                .map_err(|_| format!("unsupported number {text:?}"))?;
            Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| format!("unsupported number {text:?}"))?
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => {
            Value::Array(items.iter().map(yaml_to_json).collect::<Result<_, _>>()?)
        }
        Yaml::Hash(h) => {
            let mut out = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    Yaml::Real(r) => r.clone(),
                    _ => return Err("a mapping key is not a scalar".into()),
                };
                out.insert(key, yaml_to_json(v)?);
            }
            Value::Object(out)
        }
        Yaml::Alias(_) | Yaml::BadValue => return Err("unresolved YAML alias or bad value".into()),
    })
}

/// APISIX's `${{NAME}}` / `${{NAME:=default}}` in string values: replaced
/// from the environment; a value that used a variable and reads as a number
/// or `true`/`false` takes that type, as APISIX's CLI does.
fn substitute_env(v: &mut Value, path: &str) -> Result<(), String> {
    match v {
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                substitute_env(item, &p)?;
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_env(item, &format!("{path}[{i}]"))?;
            }
        }
        Value::String(s) => {
            if let Some(new) = substitute_str(s, path)? {
                *v = if let Ok(i) = new.parse::<i64>() {
                    Value::from(i)
                } else if let Some(n) = new.parse::<f64>().ok().and_then(Number::from_f64) {
                    Value::Number(n)
                } else if new == "true" || new == "false" {
                    Value::Bool(new == "true")
                } else {
                    Value::String(new)
                };
            }
        }
        _ => {}
    }
    Ok(())
}

/// `Some(text)` when a variable was used. Errors name the variable and the
/// field, never the value.
fn substitute_str(s: &str, path: &str) -> Result<Option<String>, String> {
    let mut out = String::new();
    let mut rest = s;
    let mut used = false;
    while let Some(start) = rest.find("${{") {
        let Some(len) = rest[start + 3..].find("}}") else {
            break;
        };
        let inner = rest[start + 3..start + 3 + len].trim();
        let (name, default) = match inner.split_once(":=") {
            Some((n, d)) => (n.trim(), Some(d.trim())),
            None => (inner, None),
        };
        out.push_str(&rest[..start]);
        rest = &rest[start + 3 + len + 2..];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            out.push_str(&format!("${{{{{inner}}}}}"));
            continue;
        }
        match std::env::var(name).ok().or(default.map(str::to_string)) {
            Some(value) => {
                out.push_str(&value);
                used = true;
            }
            None => {
                return Err(format!(
                    "{path}: environment variable {name} is not set (used as ${{{{{name}}}}})"
                ))
            }
        }
    }
    out.push_str(rest);
    Ok(used.then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_of_a_whole_config_or_the_section_itself() {
        let whole = serde_json::json!({"apisix": {}, "discovery": {"consul_kv": {"servers": ["http://a:1"]}}});
        assert_eq!(section(whole).unwrap()["servers"][0], "http://a:1");
        let bare = serde_json::json!({"servers": ["http://a:1"]});
        assert!(section(bare).is_ok());
        assert!(section(serde_json::json!({"discovery": {}}))
            .unwrap_err()
            .contains("consul_kv"));
        assert!(section(serde_json::json!([])).is_err());
    }

    #[test]
    fn env_substitution_as_apisix() {
        std::env::set_var("CKV_CHECK_TEST_PORT", "8500");
        let mut v = serde_json::json!({
            "a": "http://h:${{CKV_CHECK_TEST_PORT}}",
            "b": "${{ CKV_CHECK_TEST_PORT }}",
            "c": "${{CKV_CHECK_UNSET_X:=true}}",
            "d": "plain",
        });
        substitute_env(&mut v, "").unwrap();
        assert_eq!(v["a"], "http://h:8500");
        assert_eq!(v["b"], 8500);
        assert_eq!(v["c"], true);
        assert_eq!(v["d"], "plain");
        let mut v = serde_json::json!({"token": "${{CKV_CHECK_UNSET_Y}}"});
        let e = substitute_env(&mut v, "").unwrap_err();
        assert!(
            e.contains("token") && e.contains("CKV_CHECK_UNSET_Y"),
            "{e}"
        );
    }

    #[test]
    fn yaml_becomes_json() {
        let docs = YamlLoader::load_from_str(
            "discovery:\n  consul_kv:\n    servers: [\"http://127.0.0.1:8500\"]\n    weight: 2\n    keepalive: false\n    x: 1.5\n",
        )
        .unwrap();
        let v = yaml_to_json(&docs[0]).unwrap();
        let s = section(v).unwrap();
        assert_eq!(
            s,
            serde_json::json!({"servers": ["http://127.0.0.1:8500"], "weight": 2, "keepalive": false, "x": 1.5})
        );
    }
}
