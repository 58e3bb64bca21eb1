//! The configuration's defaults and limits have one definition, the field
//! table in `src/config/fields.rs`. These tests hold its two other readers to
//! it: APISIX's schema (`lua/apisix/discovery/consul_kv/schema.lua`, run with
//! LuaJIT and printed as JSON) and the README's Configuration table.

use std::path::Path;
use std::process::Command;

use ckv::config::fields::{table_json, NOT_IN_APISIX_SCHEMA};
use serde_json::{Map, Value};

/// Where libckv is stricter than APISIX's schema on purpose (see the
/// "Differences from APISIX" part of `src/config/mod.rs`): (path, property).
const STRICTER_THAN_APISIX: &[(&str, &str)] = &[
    ("dump.expire", "minimum"),
    ("default_service.port", "minimum"),
    ("default_service.host", "required"),
    ("default_service.port", "required"),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rust_table() -> Map<String, Value> {
    match table_json() {
        Value::Object(m) => m,
        other => panic!("table_json is not an object: {other}"),
    }
}

fn schema_table() -> Map<String, Value> {
    let out = Command::new("luajit")
        .arg(root().join("tests/config_docs/schema_to_json.lua"))
        .arg(root().join("lua/apisix/discovery/consul_kv/schema.lua"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run luajit ({e}); scripts/install-deps.sh installs it"));
    assert!(
        out.status.success(),
        "luajit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Object(m)) => m,
        other => panic!("schema_to_json printed {other:?}"),
    }
}

fn stricter(path: &str, property: &str) -> bool {
    STRICTER_THAN_APISIX.contains(&(path, property))
}

#[test]
fn schema_lua_defaults_and_limits_equal_rusts() {
    let rust = rust_table();
    let schema = schema_table();
    let mut problems = Vec::new();
    for (path, r) in &rust {
        let Some(s) = schema.get(path) else {
            if !NOT_IN_APISIX_SCHEMA.iter().any(|f| f.path == path) {
                problems.push(format!("{path}: in Rust, not in schema.lua"));
            }
            continue;
        };
        if let Some(t) = s.get("type") {
            if t != &r["type"] {
                problems.push(format!(
                    "{path}: type {t} in schema.lua, {} in Rust",
                    r["type"]
                ));
            }
        }
        for prop in ["default", "minimum", "minLength", "enum"] {
            let (sv, rv) = (s.get(prop), r.get(prop));
            if sv != rv && !(sv.is_none() && stricter(path, prop)) {
                problems.push(format!(
                    "{path}: {prop} {sv:?} in schema.lua, {rv:?} in Rust"
                ));
            }
        }
        // Rust caps every integer (APISIX has no upper limits); a cap the
        // schema does state must be the same.
        if let Some(max) = s.get("maximum") {
            if Some(max) != r.get("maximum") {
                problems.push(format!(
                    "{path}: maximum {max} in schema.lua, {:?} in Rust",
                    r.get("maximum")
                ));
            }
        }
        let (s_req, r_req) = (s.get("required").is_some(), r.get("required").is_some());
        if s_req != r_req && !(r_req && stricter(path, "required")) {
            problems.push(format!(
                "{path}: required {s_req} in schema.lua, {r_req} in Rust"
            ));
        }
    }
    for (path, s) in &schema {
        if rust.contains_key(path) {
            continue;
        }
        // An object: its fields are checked one by one; an object default
        // must list exactly the defaults of its fields.
        let children: Vec<&String> = rust
            .keys()
            .filter(|p| p.starts_with(&format!("{path}.")))
            .collect();
        if children.is_empty() {
            problems.push(format!("{path}: in schema.lua, not in Rust"));
        }
        if let Some(Value::Object(default)) = s.get("default") {
            for child in &children {
                let key = &child[path.len() + 1..];
                if default.get(key) != rust[*child].get("default") {
                    problems.push(format!(
                        "{path}.default.{key}: {:?} in schema.lua, {:?} in Rust",
                        default.get(key),
                        rust[*child].get("default")
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "schema.lua and Rust disagree:\n{}",
        problems.join("\n")
    );
}

/// `(field, default cell)` of each row of the README's Configuration table.
fn readme_rows() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = text
        .split("\n## Configuration\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap_or_else(|| panic!("README has no Configuration section"));
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // "| `field` | default | rule |" splits into ["", field, default, rule, ""].
            let field = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((field.to_string(), cells.get(2)?.to_string()))
        })
        .collect()
}

/// How the README writes a field's default.
fn readme_default(r: &Value) -> String {
    if r.get("required").is_some() {
        return "required".into();
    }
    match r.get("default") {
        None => "none".into(),
        Some(v) => format!("`{v}`"),
    }
}

#[test]
fn readme_defaults_equal_rusts() {
    let rust = rust_table();
    let rows = readme_rows();
    assert!(rows.len() >= rust.len(), "README table too short: {rows:?}");
    let mut problems = Vec::new();
    for (path, r) in &rust {
        let want = readme_default(r);
        match rows.iter().find(|(f, _)| f == path) {
            None => problems.push(format!("{path}: no README row (default {want})")),
            Some((_, got)) if *got != want => {
                problems.push(format!("{path}: README says {got}, Rust {want}"))
            }
            Some(_) => {}
        }
    }
    for (field, _) in &rows {
        let object = rust.keys().any(|p| p.starts_with(&format!("{field}.")));
        if !rust.contains_key(field) && !object {
            problems.push(format!(
                "{field}: README row for a field Rust does not have"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "README and Rust disagree:\n{}",
        problems.join("\n")
    );
}
