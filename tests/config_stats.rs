//! `stats()` shows the effective configuration, complete and without the token.

use std::time::Duration;

use ckv::engine::Engine;
use serde_json::{json, Value};

const TOKEN: &str = "st4ts-must-n0t-show-this";

#[test]
fn stats_show_the_effective_config_without_the_token() {
    // Port 1 on loopback refuses at once; no Consul is needed to read stats.
    let json = format!(
        r#"{{"servers":["http://127.0.0.1:1"],"token":"{TOKEN}","timeout":{{"read":1500}},
            "share":{{"enabled":false}}}}"#
    );
    let engine = Engine::start(ckv::config::parse(json.as_bytes()).unwrap()).unwrap();
    let text = engine.stats_json();
    assert!(engine.shutdown(Duration::from_secs(5)));
    assert!(!text.contains(TOKEN), "{text}");
    let stats: Value = serde_json::from_str(&text).unwrap();
    let config = &stats["config"];
    assert_eq!(config["token"], json!("<redacted>"));
    assert_eq!(
        config["timeout"],
        json!({"connect": 2000, "read": 1500, "wait": 60})
    );
    assert_eq!(config["prefix"], json!("upstreams"));
    assert_eq!(config["share"]["enabled"], json!(false));
    // Every top-level field is there, set or not.
    for field in [
        "skip_keys",
        "default_service",
        "dump",
        "tls",
        "backoff",
        "gzip",
    ] {
        assert!(config.get(field).is_some(), "{field} missing: {config}");
    }
}
