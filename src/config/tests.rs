//! The parser's behaviour, field by field: defaults, accepted forms, and
//! the exact error message for each refused value.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;

const TOKEN: &str = "b1gS3cret-70ken-0f-consul";
/// Key for the share fingerprint tests.
const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn ok(json: &str) -> Config {
    match parse(json.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("{json} refused: {e}"),
    }
}

fn ok_warn(json: &str) -> (Config, Vec<String>) {
    match parse_with_warnings(json.as_bytes()) {
        Ok(r) => r,
        Err(e) => panic!("{json} refused: {e}"),
    }
}

fn err(json: &str) -> String {
    match parse(json.as_bytes()) {
        Ok(c) => panic!("{json} accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// A config with one server plus `extra` top-level fields.
fn with(extra: &str) -> String {
    if extra.is_empty() {
        r#"{"servers":["http://127.0.0.1:8500"]}"#.to_string()
    } else {
        format!(r#"{{"servers":["http://127.0.0.1:8500"],{extra}}}"#)
    }
}

fn server_err(url: &str) -> String {
    err(&format!(r#"{{"servers":[{}]}}"#, Value::String(url.into())))
}

#[test]
fn minimal_config_gets_every_default() {
    let (c, warnings) = ok_warn(r#"{"servers":["http://127.0.0.1:8500"]}"#);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        c.servers,
        vec![Server {
            url: "http://127.0.0.1:8500".into(),
            scheme: Scheme::Http,
            host: "127.0.0.1".into(),
            port: 8500,
        }]
    );
    assert_eq!(c.token.expose(), "");
    assert_eq!(c.prefix, "upstreams");
    assert_eq!(c.weight, 1);
    assert!(c.keepalive);
    assert_eq!(c.fetch_interval, Duration::from_secs(3));
    assert_eq!(
        c.timeout,
        Timeouts {
            connect: Duration::from_millis(2000),
            read: Duration::from_millis(2000),
            wait: Duration::from_secs(60),
        }
    );
    assert!(c.skip_keys.is_empty());
    assert_eq!(c.default_service, None);
    assert_eq!(c.dump, None);
    assert_eq!(c.tls_ca_file, None);
    assert!(c.tls_verify);
    assert_eq!(c.max_response_bytes, 67_108_864);
    assert_eq!(c.on_empty_prefix, EmptyPrefixPolicy::Clear);
    assert_eq!(
        c.backoff,
        Backoff {
            initial: Duration::from_millis(1000),
            max: Duration::from_millis(30000),
        }
    );
    assert_eq!(
        c.share,
        Share {
            enabled: true,
            dir: PathBuf::from("/dev/shm"),
            group: None,
            previous_group: None,
        }
    );
    assert_eq!(Config::from_json(with("").as_bytes()), Ok(c));
}

#[test]
fn full_config_is_read() {
    let c = ok(&format!(
        r#"{{
        "servers": ["http://consul-1.local:8500", "https://[::1]:8501", "http://10.0.0.2:8500"],
        "token": "{TOKEN}",
        "prefix": "/gateway/upstreams/",
        "weight": 10,
        "keepalive": false,
        "fetch_interval": 5,
        "timeout": {{"connect": 500, "read": 3000, "wait": 600}},
        "skip_keys": ["gateway/upstreams/legacy/"],
        "default_service": {{"host": "127.0.0.1", "port": 20999,
                             "metadata": {{"weight": 7, "zone": "a"}}}},
        "dump": {{"path": "logs/consul_kv.dump", "load_on_init": false, "expire": 3600}},
        "tls": {{"ca_file": "/etc/ssl/consul-ca.pem", "verify": false}},
        "max_response_bytes": 1024,
        "on_empty_prefix": "keep",
        "backoff": {{"initial": 200, "max": 200}},
        "share": {{"enabled": false, "dir": "/run/ckv", "group": "gw_1"}}
    }}"#
    ));
    assert_eq!(c.servers.len(), 3);
    assert_eq!(c.servers[0].host, "consul-1.local");
    assert_eq!(c.servers[1].scheme, Scheme::Https);
    assert_eq!(c.servers[1].host, "[::1]");
    assert_eq!(c.servers[1].port, 8501);
    assert_eq!(c.servers[1].url, "https://[::1]:8501");
    assert_eq!(c.token.expose(), TOKEN);
    assert_eq!(c.prefix, "gateway/upstreams");
    assert_eq!(c.weight, 10);
    assert!(!c.keepalive);
    assert_eq!(c.fetch_interval, Duration::from_secs(5));
    assert_eq!(c.timeout.connect, Duration::from_millis(500));
    assert_eq!(c.timeout.read, Duration::from_millis(3000));
    assert_eq!(c.timeout.wait, Duration::from_secs(600));
    assert_eq!(c.skip_keys, vec!["gateway/upstreams/legacy/".to_string()]);
    let ds = c.default_service.clone().unwrap_or_else(|| panic!("no ds"));
    assert_eq!(ds.host, "127.0.0.1");
    assert_eq!(ds.port, 20999);
    assert_eq!(
        Value::Object(ds.metadata),
        json!({"fail_timeout": 1, "weight": 7, "max_fails": 1, "zone": "a"})
    );
    assert_eq!(
        c.dump,
        Some(Dump {
            path: PathBuf::from("logs/consul_kv.dump"),
            load_on_init: false,
            expire: 3600,
        })
    );
    assert_eq!(c.tls_ca_file, Some(PathBuf::from("/etc/ssl/consul-ca.pem")));
    assert!(!c.tls_verify);
    assert_eq!(c.max_response_bytes, 1024);
    assert_eq!(c.on_empty_prefix, EmptyPrefixPolicy::Keep);
    assert_eq!(c.backoff.initial, Duration::from_millis(200));
    assert_eq!(c.backoff.max, Duration::from_millis(200));
    assert!(!c.share.enabled);
    assert_eq!(c.share.dir, PathBuf::from("/run/ckv"));
    assert_eq!(c.share.group.as_deref(), Some("gw_1"));
}

#[test]
fn document_errors() {
    assert_eq!(err("[]"), "config: expected a JSON object");
    assert_eq!(err("\"x\""), "config: expected a JSON object");
    assert_eq!(err("null"), "config: expected a JSON object");
    assert_eq!(
        err("{\"servers\": [}"),
        "config: invalid JSON at line 1 column 14: expected value"
    );
    assert_eq!(
        err(""),
        "config: invalid JSON at line 1 column 0: EOF while parsing a value"
    );
    assert!(err("{}\n{}").starts_with("config: invalid JSON at line 2 column 1: "));
    let bad_utf8 = b"{\"servers\":[\"http://h\xff:1\"]}";
    let e = parse(bad_utf8).err().map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("config: invalid UTF-8 at byte offset 21")
    );
    assert_eq!(
        err("{}"),
        "servers: required (an array of http://host:port or https://host:port strings)"
    );
}

#[test]
fn servers_shape() {
    assert_eq!(
        err(r#"{"servers":"http://127.0.0.1:8500"}"#),
        "servers: expected an array of http://host:port or https://host:port strings, \
         got \"http://127.0.0.1:8500\""
    );
    assert_eq!(
        err(r#"{"servers":[]}"#),
        "servers: expected at least one server, got []"
    );
    assert_eq!(
        err(r#"{"servers":{}}"#),
        "servers: expected at least one server, got []"
    );
    assert_eq!(
        err(r#"{"servers":null}"#),
        "servers: required (an array of http://host:port or https://host:port strings)"
    );
    assert_eq!(
        err(r#"{"servers":["http://a:1", 8500]}"#),
        "servers[1]: expected a string, got 8500"
    );
}

#[test]
fn server_url_errors() {
    let e = |url: &str, why: &str| {
        format!(
            "servers[0]: expected http://host:port or https://host:port, got {} ({why})",
            Value::String(url.into())
        )
    };
    assert_eq!(
        err(r#"{"servers":["http://a:1","ftp://x"]}"#),
        r#"servers[1]: expected http://host:port or https://host:port, got "ftp://x""#
    );
    for url in [
        "127.0.0.1:8500",
        "HTTP://a:1",
        "http:/a:1",
        " http://a:1",
        "tcp://a:1",
    ] {
        assert_eq!(
            server_err(url),
            format!(
                "servers[0]: expected http://host:port or https://host:port, got {}",
                Value::String(url.into())
            )
        );
    }
    let cases = [
        ("http://a:8500/", "trailing \"/\" is not allowed"),
        ("http://a:8500/v1", "a path is not allowed"),
        ("http://a:8500//", "a path is not allowed"),
        ("http://a/", "trailing \"/\" is not allowed"),
        ("http://a:8500?dc=x", "a query is not allowed"),
        ("http://a:8500#x", "a fragment is not allowed"),
        ("http://a", "missing port"),
        ("http://a:", "missing port"),
        ("http://[::1]", "missing port"),
        ("http://[::1]:", "missing port"),
        ("http://a:0", "the port must be 1-65535"),
        ("http://a:65536", "the port must be 1-65535"),
        ("http://a:99999999999999999999", "the port must be 1-65535"),
        ("http://a:-1", "the port must be a number"),
        ("http://a:85 00", "the port must be a number"),
        ("http://a:http", "the port must be a number"),
        ("http://", "empty host"),
        ("http://:8500", "empty host"),
        ("https://", "empty host"),
        ("http://[::1:8500", "bad IPv6 address: missing \"]\""),
        ("http://[::g]:8500", "bad IPv6 address"),
        ("http://[]:8500", "bad IPv6 address"),
        ("http://[fe80::1%25eth0]:8500", "bad IPv6 address"),
        ("http://[::1]8500", "unexpected text after \"]\""),
        (
            "http://::1:8500",
            "an IPv6 address must be in brackets, e.g. http://[::1]:8500",
        ),
        ("http://256.0.0.1:8500", "bad IPv4 address"),
        ("http://1.2.3:8500", "bad IPv4 address"),
        ("http://a..b:8500", "bad host name"),
        ("http://-a:8500", "bad host name"),
        ("http://a b:8500", "bad host name"),
        ("http://a.b.:8500", "bad host name"),
        ("http://exa\u{e9}mple:8500", "bad host name"),
    ];
    for (url, why) in cases {
        assert_eq!(server_err(url), e(url, why), "{url}");
    }
    let long = format!("http://{}:1", "a".repeat(64));
    assert!(server_err(&long).ends_with("(bad host name)"));
}

#[test]
fn server_userinfo_is_refused_and_hidden() {
    let msg = server_err("http://admin:hunter2@consul:8500");
    assert_eq!(
        msg,
        "servers[0]: expected http://host:port or https://host:port, \
         got \"http://<redacted>@consul:8500\" (user info is not allowed; use token)"
    );
    assert!(!msg.contains("hunter2"));
    assert!(server_err("http://@consul:8500").contains("user info is not allowed"));
}

#[test]
fn server_forms_accepted() {
    let c = ok(r#"{"servers":[
        "http://localhost:8500", "https://consul.service.consul:443",
        "http://consul_1:1", "http://10.1.2.3:65535", "http://[2001:db8::1]:8500",
        "https://[::ffff:10.0.0.1]:8501", "http://Consul-A.Example.COM:8500"]}"#);
    let got: Vec<(Scheme, &str, u16)> = c
        .servers
        .iter()
        .map(|s| (s.scheme, s.host.as_str(), s.port))
        .collect();
    assert_eq!(
        got,
        vec![
            (Scheme::Http, "localhost", 8500),
            (Scheme::Https, "consul.service.consul", 443),
            (Scheme::Http, "consul_1", 1),
            (Scheme::Http, "10.1.2.3", 65535),
            (Scheme::Http, "[2001:db8::1]", 8500),
            (Scheme::Https, "[::ffff:10.0.0.1]", 8501),
            (Scheme::Http, "Consul-A.Example.COM", 8500),
        ]
    );
    assert_eq!(c.servers[6].url, "http://Consul-A.Example.COM:8500");
}

#[test]
fn duplicate_servers() {
    assert_eq!(
        err(r#"{"servers":["http://a:1","http://b:1","http://a:1"]}"#),
        "servers[2]: duplicate of servers[0]"
    );
    assert_eq!(
        err(r#"{"servers":["http://b:1","http://A:1","http://a:1"]}"#),
        "servers[2]: duplicate of servers[1]"
    );
    assert_eq!(
        err(r#"{"servers":["http://[::1]:1","http://[0:0::1]:1"]}"#),
        "servers[1]: duplicate of servers[0]"
    );
    assert_eq!(
        err(r#"{"servers":["http://a:8500","http://a:08500"]}"#),
        "servers[1]: duplicate of servers[0]"
    );
    // Same host and port over another scheme or port is another server.
    let c = ok(r#"{"servers":["http://a:1","https://a:1","http://a:2"]}"#);
    assert_eq!(c.servers.len(), 3);
}

#[test]
fn prefix_normalization() {
    for (raw, want) in [
        ("upstreams", "upstreams"),
        ("/upstreams", "upstreams"),
        ("upstreams/", "upstreams"),
        ("//upstreams//", "upstreams"),
        ("/a/b/c/", "a/b/c"),
        ("with space", "with space"),
    ] {
        let c = ok(&with(&format!(r#""prefix":{}"#, Value::String(raw.into()))));
        assert_eq!(c.prefix, want, "{raw}");
    }
    assert_eq!(
        err(&with(r#""prefix":"""#)),
        r#"prefix: must not be empty or only "/", got """#
    );
    assert_eq!(
        err(&with(r#""prefix":"///""#)),
        r#"prefix: must not be empty or only "/", got "///""#
    );
    assert_eq!(
        err(&with(r#""prefix":"a//b""#)),
        r#"prefix: must not contain "//", got "a//b""#
    );
    assert_eq!(
        err(&with(r#""prefix":"a\nb""#)),
        r#"prefix: must not contain control characters, got "a\nb""#
    );
    assert_eq!(
        err(&with(r#""prefix":"a\u0000""#)),
        r#"prefix: must not contain control characters, got "a\u0000""#
    );
    assert_eq!(
        err(&with(r#""prefix":"a?recurse""#)),
        r##"prefix: must not contain "?" or "#", got "a?recurse""##
    );
    assert_eq!(
        err(&with(r#""prefix":5"#)),
        "prefix: expected a string, got 5"
    );
}

#[test]
fn integer_fields() {
    // (field, rule shown for a wrong type or a value below the minimum)
    let fields = [
        ("weight", "an integer >= 1"),
        ("fetch_interval", "an integer >= 1"),
        ("max_response_bytes", "an integer >= 1024"),
    ];
    for (field, rule) in fields {
        for bad in [r#""3""#, "true", "1.5", "[]", "{}", "0", "-1"] {
            assert_eq!(
                err(&with(&format!(r#""{field}":{bad}"#))),
                format!("{field}: expected {rule}, got {bad}"),
            );
        }
    }
    assert_eq!(
        err(&with(r#""max_response_bytes":1023"#)),
        "max_response_bytes: expected an integer >= 1024, got 1023"
    );
    // Above maximum.
    assert_eq!(
        err(&with(r#""weight":4294967296"#)),
        "weight: expected an integer from 1 to 4294967295, got 4294967296"
    );
    assert_eq!(
        err(&with(r#""fetch_interval":2147484"#)),
        "fetch_interval: expected an integer from 1 to 2147483, got 2147484"
    );
    assert_eq!(ok(&with(r#""weight":4294967295"#)).weight, u32::MAX);
    // Integral floats as cjson may print them.
    assert_eq!(ok(&with(r#""weight":3.0"#)).weight, 3);
    assert_eq!(
        ok(&with(r#""max_response_bytes":1e6"#)).max_response_bytes,
        1_000_000
    );
    // null is absent.
    assert_eq!(ok(&with(r#""weight":null"#)).weight, 1);
}

#[test]
fn boolean_fields() {
    assert_eq!(
        err(&with(r#""keepalive":"true""#)),
        r#"keepalive: expected a boolean, got "true""#
    );
    assert_eq!(
        err(&with(r#""keepalive":1"#)),
        "keepalive: expected a boolean, got 1"
    );
    assert_eq!(
        err(&with(r#""dump":{"path":"x","load_on_init":"no"}"#)),
        r#"dump.load_on_init: expected a boolean, got "no""#
    );
    assert_eq!(
        err(&with(r#""tls":{"verify":0}"#)),
        "tls.verify: expected a boolean, got 0"
    );
    assert_eq!(
        err(&with(r#""share":{"enabled":"yes"}"#)),
        r#"share.enabled: expected a boolean, got "yes""#
    );
}

#[test]
fn timeout_fields() {
    for key in ["connect", "read"] {
        assert_eq!(
            err(&with(&format!(r#""timeout":{{"{key}":0}}"#))),
            format!("timeout.{key}: expected an integer >= 1, got 0")
        );
        assert_eq!(
            err(&with(&format!(r#""timeout":{{"{key}":"2000"}}"#))),
            format!(r#"timeout.{key}: expected an integer >= 1, got "2000""#)
        );
        assert_eq!(
            err(&with(&format!(r#""timeout":{{"{key}":2147483648}}"#))),
            format!("timeout.{key}: expected an integer from 1 to 2147483647, got 2147483648")
        );
    }
    let wait = "timeout.wait: expected an integer from 1 to 600 \
                (seconds; Consul caps a blocking query at 10 minutes), got";
    assert_eq!(
        err(&with(r#""timeout":{"wait":601}"#)),
        format!("{wait} 601")
    );
    assert_eq!(err(&with(r#""timeout":{"wait":0}"#)), format!("{wait} 0"));
    assert_eq!(
        err(&with(r#""timeout":{"wait":"60s"}"#)),
        format!(r#"{wait} "60s""#)
    );
    assert_eq!(
        err(&with(r#""timeout":5"#)),
        "timeout: expected an object, got 5"
    );
    // Partial timeout objects keep the other defaults; {} and [] are empty.
    let c = ok(&with(r#""timeout":{"wait":1}"#));
    assert_eq!(c.timeout.wait, Duration::from_secs(1));
    assert_eq!(c.timeout.connect, Duration::from_millis(2000));
    assert_eq!(ok(&with(r#""timeout":[]"#)).timeout, ok(&with("")).timeout);
    assert_eq!(ok(&with(r#""timeout":{}"#)).timeout, ok(&with("")).timeout);
}

#[test]
fn token_field() {
    assert_eq!(
        err(&with(r#""token":12345678"#)),
        "token: expected a string, got a number"
    );
    assert_eq!(
        err(&with(r#""token":"abc\r\nX-Evil: 1""#)),
        "token: must not contain control characters"
    );
    assert!(ok(&with(r#""token":null"#)).token.is_empty());
}

#[test]
fn skip_keys_field() {
    assert_eq!(
        err(&with(r#""skip_keys":[]"#)),
        "skip_keys: expected a non-empty array of strings, got []"
    );
    assert_eq!(
        err(&with(r#""skip_keys":"upstreams/a/""#)),
        r#"skip_keys: expected a non-empty array of strings, got "upstreams/a/""#
    );
    assert_eq!(
        err(&with(r#""skip_keys":["upstreams/a/", 1]"#)),
        "skip_keys[1]: expected a string, got 1"
    );
    let (c, w) = ok_warn(&with(
        r#""skip_keys":["upstreams/a/","upstreams/b","other/c/"]"#,
    ));
    assert_eq!(c.skip_keys.len(), 3);
    assert_eq!(
        w,
        vec![
            r#"skip_keys[1]: "upstreams/b" can never match: skip_keys are compared exactly with "upstreams/<service>/""#,
            r#"skip_keys[2]: "other/c/" can never match: skip_keys are compared exactly with "upstreams/<service>/""#,
        ]
    );
}

#[test]
fn default_service_field() {
    let c = ok(&with(r#""default_service":{"host":"127.0.0.1","port":80}"#));
    let ds = c.default_service.unwrap_or_else(|| panic!("none"));
    assert_eq!(
        Value::Object(ds.metadata),
        json!({"fail_timeout": 1, "weight": 1, "max_fails": 1})
    );
    let cases = [
        (r#"{"port":80}"#, "default_service.host: required"),
        (
            r#"{"host":"","port":80}"#,
            r#"default_service.host: expected a non-empty string, got """#,
        ),
        (
            r#"{"host":1,"port":80}"#,
            "default_service.host: expected a string, got 1",
        ),
        (r#"{"host":"h"}"#, "default_service.port: required"),
        (
            r#"{"host":"h","port":0}"#,
            "default_service.port: expected an integer from 1 to 65535, got 0",
        ),
        (
            r#"{"host":"h","port":65536}"#,
            "default_service.port: expected an integer from 1 to 65535, got 65536",
        ),
        (
            r#"{"host":"h","port":"80"}"#,
            r#"default_service.port: expected an integer from 1 to 65535, got "80""#,
        ),
        (
            r#"{"host":"h","port":80,"metadata":"x"}"#,
            r#"default_service.metadata: expected an object, got "x""#,
        ),
        (
            r#"{"host":"h","port":80,"metadata":{"weight":"1"}}"#,
            r#"default_service.metadata.weight: expected an integer, got "1""#,
        ),
        (
            r#"{"host":"h","port":80,"metadata":{"max_fails":1.5}}"#,
            "default_service.metadata.max_fails: expected an integer, got 1.5",
        ),
        (
            r#"{"host":"h","port":80,"metadata":{"fail_timeout":true}}"#,
            "default_service.metadata.fail_timeout: expected an integer, got true",
        ),
        (
            r#""h:80""#,
            r#"default_service: expected an object, got "h:80""#,
        ),
    ];
    for (ds, want) in cases {
        assert_eq!(
            err(&with(&format!(r#""default_service":{ds}"#))),
            want,
            "{ds}"
        );
    }
    // APISIX sets no minimum on the metadata integers.
    let c = ok(&with(
        r#""default_service":{"host":"h","port":1,"metadata":{"weight":0,"max_fails":-1}}"#,
    ));
    let md = c.default_service.map(|d| d.metadata).unwrap_or_default();
    assert_eq!(md.get("weight"), Some(&json!(0)));
    assert_eq!(md.get("max_fails"), Some(&json!(-1)));
}

#[test]
fn dump_field() {
    let c = ok(&with(r#""dump":{"path":"/tmp/d.json"}"#));
    assert_eq!(
        c.dump,
        Some(Dump {
            path: PathBuf::from("/tmp/d.json"),
            load_on_init: true,
            expire: 0,
        })
    );
    let cases = [
        (r#"{}"#, "dump.path: required"),
        (r#"[]"#, "dump.path: required"),
        (r#"{"load_on_init":true}"#, "dump.path: required"),
        (
            r#"{"path":""}"#,
            r#"dump.path: expected a non-empty path without NUL, got """#,
        ),
        (
            r#"{"path":"a\u0000b"}"#,
            r#"dump.path: expected a non-empty path without NUL, got "a\u0000b""#,
        ),
        (r#"{"path":1}"#, "dump.path: expected a string, got 1"),
        (
            r#"{"path":"x","expire":-1}"#,
            "dump.expire: expected an integer >= 0, got -1",
        ),
        (
            r#"{"path":"x","expire":"1h"}"#,
            r#"dump.expire: expected an integer >= 0, got "1h""#,
        ),
        (r#"true"#, "dump: expected an object, got true"),
    ];
    for (d, want) in cases {
        assert_eq!(err(&with(&format!(r#""dump":{d}"#))), want, "{d}");
    }
}

#[test]
fn ckv_only_fields() {
    let cases = [
        (r#""tls":"on""#, r#"tls: expected an object, got "on""#),
        (
            r#""tls":{"ca_file":""}"#,
            r#"tls.ca_file: expected a non-empty path without NUL, got """#,
        ),
        (r#""tls":{"ca_file":5}"#, "tls.ca_file: expected a string, got 5"),
        (
            r#""on_empty_prefix":"drop""#,
            r#"on_empty_prefix: expected "clear" or "keep", got "drop""#,
        ),
        (
            r#""on_empty_prefix":true"#,
            r#"on_empty_prefix: expected "clear" or "keep", got true"#,
        ),
        (
            r#""backoff":{"initial":0}"#,
            "backoff.initial: expected an integer >= 1, got 0",
        ),
        (
            r#""backoff":{"initial":"1s"}"#,
            r#"backoff.initial: expected an integer >= 1, got "1s""#,
        ),
        (
            r#""backoff":{"initial":500,"max":499}"#,
            "backoff.max: expected an integer from backoff.initial (500) to 2147483647, got 499",
        ),
        (
            r#""backoff":{"max":999}"#,
            "backoff.max: expected an integer from backoff.initial (1000) to 2147483647, got 999",
        ),
        (
            r#""backoff":{"initial":40000}"#,
            "backoff.max: expected an integer >= backoff.initial (40000), got 30000 (the default); set backoff.max",
        ),
        (r#""backoff":1000"#, "backoff: expected an object, got 1000"),
        (r#""share":false"#, "share: expected an object, got false"),
        (
            r#""share":{"dir":"shm"}"#,
            r#"share.dir: expected an absolute path, got "shm""#,
        ),
        (
            r#""share":{"dir":""}"#,
            r#"share.dir: expected a non-empty path without NUL, got """#,
        ),
    ];
    for (extra, want) in cases {
        assert_eq!(err(&with(extra)), want, "{extra}");
    }
    let group_rule =
        r#"share.group: expected 1 to 64 characters from A-Z a-z 0-9 . _ - (not "." or ".."), got"#;
    for bad in [
        r#""""#, r#"".""#, r#""..""#, r#""a/b""#, r#""a b""#, "-1", "1.5", "true",
    ] {
        assert_eq!(
            err(&with(&format!(r#""share":{{"group":{bad}}}"#))),
            format!("{group_rule} {bad}")
        );
    }
    let long = "g".repeat(65);
    assert!(err(&with(&format!(r#""share":{{"group":"{long}"}}"#))).starts_with(group_rule));
    // The group before a reload follows the same rule, under its own name.
    let previous_rule = group_rule.replace("share.group", "share.previous_group");
    for bad in [r#""a/b""#, r#"".""#, "true"] {
        assert_eq!(
            err(&with(&format!(r#""share":{{"previous_group":{bad}}}"#))),
            format!("{previous_rule} {bad}")
        );
    }
    assert_eq!(
        ok(&with(r#""share":{"group":"new","previous_group":"old_1"}"#))
            .share
            .previous_group
            .as_deref(),
        Some("old_1")
    );
    assert_eq!(
        ok(&with(r#""share":{"group":1234}"#))
            .share
            .group
            .as_deref(),
        Some("1234")
    );
    assert_eq!(
        ok(&with(r#""backoff":{"initial":40000,"max":40000}"#))
            .backoff
            .max,
        Duration::from_millis(40000)
    );
}

#[test]
fn unknown_fields_warn() {
    let (c, w) = ok_warn(&with(
        r#""timout":{"wait":5},"timeout":{"conect":1},"dump":{"path":"p","expiry":1},
           "default_service":{"host":"h","port":1,"priority":1},
           "tls":{"verify":true},"backoff":{"jitter":true},"share":{"dri":"/x"}"#,
    ));
    assert_eq!(c.timeout.wait, Duration::from_secs(60));
    assert_eq!(
        w,
        vec![
            r#"unknown field "timeout.conect" ignored"#,
            r#"unknown field "default_service.priority" ignored"#,
            r#"unknown field "dump.expiry" ignored"#,
            r#"unknown field "backoff.jitter" ignored"#,
            r#"unknown field "share.dri" ignored"#,
            r#"unknown field "timout" ignored"#,
            "tls is set but no server uses https://; it has no effect",
        ]
    );
    // metadata is free-form: no warnings for its extra keys.
    let (_, w) = ok_warn(&with(
        r#""default_service":{"host":"h","port":1,"metadata":{"zone":"a"}}"#,
    ));
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn long_values_are_truncated() {
    let long = "x".repeat(500);
    let msg = err(&with(&format!(r#""weight":"{long}""#)));
    assert_eq!(
        msg,
        format!(
            "weight: expected an integer >= 1, got \"{}...",
            "x".repeat(56)
        )
    );
    let shown = msg.trim_start_matches("weight: expected an integer >= 1, got ");
    assert_eq!(shown.chars().count(), 60);
    // Multi-byte characters are cut on a character boundary.
    let msg = err(&with(&format!(r#""weight":"{}""#, "é".repeat(100))));
    assert!(msg.ends_with("é..."));
}

#[test]
fn token_never_leaks() {
    let json = format!(r#"{{"servers":["http://127.0.0.1:8500"],"token":"{TOKEN}","prefix":"x"}}"#);
    let c = ok(&json);
    assert_eq!(c.token.expose(), TOKEN);
    let debug = format!("{c:?}");
    assert!(!debug.contains(TOKEN), "{debug}");
    assert!(debug.contains("<redacted>"));
    let display = c.to_string();
    assert!(!display.contains(TOKEN), "{display}");
    let redacted = c.redacted_json();
    assert_eq!(redacted["token"], json!("<redacted>"));
    assert!(!redacted.to_string().contains(TOKEN));

    // Pasted into other fields, the token is scrubbed from errors and warnings.
    for extra in [
        format!(r#""weight":"{TOKEN}""#),
        format!(r#""prefix":"a//{TOKEN}""#),
        format!(r#""skip_keys":[{{"{TOKEN}":1}}]"#),
        format!(r#""share":{{"group":"{TOKEN}/x"}}"#),
    ] {
        let json = format!(r#"{{"servers":["http://127.0.0.1:8500"],"token":"{TOKEN}",{extra}}}"#);
        let e = parse(json.as_bytes())
            .err()
            .unwrap_or_else(|| panic!("accepted"));
        assert!(!e.to_string().contains(TOKEN), "{e}");
        assert!(!format!("{e:?}").contains(TOKEN), "{e:?}");
    }
    let json = format!(r#"{{"servers":["http://127.0.0.1:8500"],"token":"{TOKEN}","{TOKEN}":1}}"#);
    let (_, w) = ok_warn(&json);
    assert_eq!(w, vec![r#"unknown field "<redacted>" ignored"#]);
    let json = format!(r#"{{"servers":["http://127.0.0.1:8500/{TOKEN}"],"token":"{TOKEN}"}}"#);
    assert!(!err(&json).contains(TOKEN));

    // An empty token is shown as empty.
    let c = ok(&with(""));
    assert_eq!(c.redacted_json()["token"], json!(""));
    assert!(format!("{c:?}").contains("token: \"\""));
}

#[test]
fn redacted_json_round_trips() {
    let c = ok(r#"{
        "servers": ["http://a:1", "https://[::1]:2"],
        "token": "t0ken", "prefix": "/p/", "weight": 2, "keepalive": false,
        "fetch_interval": 9, "timeout": {"connect": 1, "read": 2, "wait": 3},
        "skip_keys": ["p/x/"],
        "default_service": {"host": "h", "port": 8, "metadata": {"zone": "z"}},
        "dump": {"path": "d", "expire": 5},
        "tls": {"ca_file": "/ca.pem"},
        "max_response_bytes": 2048, "on_empty_prefix": "keep",
        "backoff": {"initial": 10, "max": 20},
        "share": {"dir": "/run", "group": "g", "previous_group": "g0"}
    }"#);
    let mut j = c.redacted_json();
    assert_eq!(j["prefix"], json!("p"));
    assert_eq!(j["timeout"], json!({"connect": 1, "read": 2, "wait": 3}));
    assert_eq!(j["backoff"], json!({"initial": 10, "max": 20}));
    j["token"] = json!("t0ken");
    let (again, w) = ok_warn(&j.to_string());
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(again, c);

    // Defaults are rendered too, and parse back to the same config.
    let d = ok(&with(""));
    let j = d.redacted_json();
    assert_eq!(
        j,
        json!({
            "servers": ["http://127.0.0.1:8500"],
            "token": "",
            "prefix": "upstreams",
            "weight": 1,
            "keepalive": true,
            "fetch_interval": 3,
            "timeout": {"connect": 2000, "read": 2000, "wait": 60},
            "skip_keys": null,
            "default_service": null,
            "dump": null,
            "tls": {"ca_file": null, "verify": true, "cert_file": null, "key_file": null, "server_name": null},
            "max_response_bytes": 67108864,
            "on_empty_prefix": "clear",
            "gzip": false,
            "backoff": {"initial": 1000, "max": 30000},
            "share": {"enabled": true, "dir": "/dev/shm", "group": null, "previous_group": null},
            "cluster": null,
            "consistency": "default",
            "max_stale": null,
            "dc": null,
            "namespace": null,
            "partition": null,
            "token_file": null,
        })
    );
    assert_eq!(ok(&j.to_string()), d);
}

/// The value at a dotted path of the effective config (`Null` if missing).
fn at<'v>(j: &'v Value, path: &str) -> &'v Value {
    path.split('.').fold(j, |v, k| &v[k])
}

#[test]
fn redacted_json_has_every_field_of_the_table() {
    let full = ok(r#"{
        "servers": ["https://a:1"], "token": "t0ken-t0ken", "skip_keys": ["upstreams/x/"],
        "default_service": {"host": "h", "port": 8},
        "dump": {"path": "d"}, "share": {"group": "g", "previous_group": "p"},
        "tls": {"ca_file": "/ca.pem", "cert_file": "/c.pem", "key_file": "/k.pem", "server_name": "consul"},
        "cluster": {"name": "prod"}, "consistency": "stale", "max_stale": 5,
        "dc": "dc2", "namespace": "ns1", "partition": "p1"
    }"#)
    .redacted_json();
    let defaults = ok(&with("")).redacted_json();
    for f in fields::ALL {
        if f.path == fields::TOKEN_FILE.path {
            // Excludes `token`: checked below.
            continue;
        }
        assert!(!at(&full, f.path).is_null(), "{} missing", f.path);
        let want = match f.default {
            fields::IfAbsent::Int(n) => json!(n as i64),
            fields::IfAbsent::Bool(b) => json!(b),
            fields::IfAbsent::Str(s) => json!(s),
            fields::IfAbsent::Required | fields::IfAbsent::Unset => continue,
        };
        // Fields inside an unset object have no effective value.
        if f.path.starts_with("default_service.")
            || f.path.starts_with("dump.")
            || f.path.starts_with("cluster.")
        {
            assert_eq!(at(&full, f.path), &want, "{}", f.path);
        } else {
            assert_eq!(at(&defaults, f.path), &want, "{}", f.path);
        }
    }
    assert_eq!(full["token"], json!("<redacted>"));
    assert!(!full.to_string().contains("t0ken-t0ken"));
    let with_file = ok(&with(r#""token_file":"/run/consul/token""#)).redacted_json();
    assert_eq!(with_file["token_file"], json!("/run/consul/token"));
}

#[test]
fn share_fingerprint_is_stable_and_watch_sensitive() {
    let base = with("");
    let h = ok(&base).share_fingerprint(KEY);
    assert_eq!(h, ok(&base).share_fingerprint(KEY));
    // Same config written differently (defaults spelled out, key order,
    // prefix slashes, unwatched fields) hashes the same.
    let same = [
        r#"{"prefix":"/upstreams/","servers":["http://127.0.0.1:8500"],"weight":1}"#,
        r#"{"servers":["http://127.0.0.1:8500"],"timeout":{"wait":60},"keepalive":true}"#,
        r#"{"servers":["http://127.0.0.1:8500"],"dump":{"path":"x"}}"#,
        r#"{"servers":["http://127.0.0.1:8500"],"share":{"group":"other"}}"#,
        r#"{"servers":["http://127.0.0.1:8500"],"default_service":{"host":"h","port":1}}"#,
    ];
    for json in same {
        assert_eq!(ok(json).share_fingerprint(KEY), h, "{json}");
    }
    let changed = [
        with(r#""token":"t""#),
        with(r#""prefix":"other""#),
        with(r#""weight":2"#),
        with(r#""keepalive":false"#),
        with(r#""fetch_interval":4"#),
        with(r#""timeout":{"connect":1}"#),
        with(r#""timeout":{"read":1}"#),
        with(r#""timeout":{"wait":1}"#),
        with(r#""skip_keys":["upstreams/a/"]"#),
        with(r#""tls":{"ca_file":"/ca"}"#),
        with(r#""tls":{"verify":false}"#),
        with(r#""max_response_bytes":2048"#),
        with(r#""on_empty_prefix":"keep""#),
        with(r#""backoff":{"initial":2}"#),
        with(r#""backoff":{"max":2000}"#),
        r#"{"servers":["http://127.0.0.1:8501"]}"#.to_string(),
        r#"{"servers":["https://127.0.0.1:8500"]}"#.to_string(),
        r#"{"servers":["http://127.0.0.1:8500","http://b:1"]}"#.to_string(),
        r#"{"servers":["http://127.0.0.1:8500","http://b:1"],"cluster":{}}"#.to_string(),
        with(r#""consistency":"stale""#),
        with(r#""dc":"dc2""#),
        with(r#""namespace":"n""#),
        with(r#""partition":"p""#),
        with(r#""token_file":"/run/t""#),
        with(r#""tls":{"server_name":"consul"}"#),
    ];
    let mut seen = vec![h];
    for json in &changed {
        let hc = ok(json).share_fingerprint(KEY);
        assert!(!seen.contains(&hc), "{json} collides");
        seen.push(hc);
    }
    // Server order is part of the identity (server indexes are shared).
    assert_ne!(
        ok(r#"{"servers":["http://a:1","http://b:1"]}"#).share_fingerprint(KEY),
        ok(r#"{"servers":["http://b:1","http://a:1"]}"#).share_fingerprint(KEY)
    );
    // Field boundaries are unambiguous.
    assert_ne!(
        ok(&with(r#""skip_keys":["a/","b/"]"#)).share_fingerprint(KEY),
        ok(&with(r#""skip_keys":["a/b/"]"#)).share_fingerprint(KEY)
    );
}

#[test]
fn share_fingerprint_is_keyed() {
    // Another key gives another fingerprint for the same config, so a
    // fingerprint seen by others says nothing about the token without the key.
    let a = ok(&with(r#""token":"Winter2026!""#));
    assert_ne!(
        a.share_fingerprint(KEY),
        a.share_fingerprint(b"another key")
    );
    // The token matters, but only through the keyed hash.
    let b = ok(&with(r#""token":"Summer2026!""#));
    assert_ne!(a.share_fingerprint(KEY), b.share_fingerprint(KEY));
}

#[test]
fn empty_lua_tables_from_cjson() {
    // cjson encodes an empty Lua table as {} by default.
    assert_eq!(
        err(r#"{"servers":{}}"#),
        "servers: expected at least one server, got []"
    );
    assert_eq!(ok(&with(r#""share":[]"#)).share, ok(&with("")).share);
    assert_eq!(ok(&with(r#""backoff":[]"#)).backoff, ok(&with("")).backoff);
    let c = ok(&with(
        r#""default_service":{"host":"h","port":1,"metadata":[]}"#,
    ));
    assert_eq!(c.default_service.map(|d| d.metadata.len()), Some(3));
}

#[test]
fn metadata_numbers_survive_the_effective_config() {
    // Found by fuzz/fuzz_targets/config.rs: free-form metadata numbers must
    // parse back from redacted_json to the same value (serde_json's
    // float_roundtrip), or the effective config shown in stats lies.
    let c = ok(&with(
        r#""default_service":{"host":"h","port":1,"metadata":{"a":1.33333333333333332000,
            "b":5555555555555555555555555555555555555555555555555555555555555555551}}"#,
    ));
    let again = ok(&c.redacted_json().to_string());
    assert_eq!(again, c);
}

#[test]
fn cluster_field() {
    let c = ok(r#"{"servers":["http://a:1","https://b:2"],"cluster":{}}"#);
    let cluster = c.cluster.as_ref().unwrap();
    // One source, named after the first server, so that APISIX's
    // service_name values stay valid.
    assert_eq!(c.servers.len(), 1);
    assert_eq!(c.servers[0].url, "http://a:1");
    assert_eq!(cluster.members.len(), 2);
    assert_eq!(cluster.failover_after, 3);
    assert_eq!(cluster.failback_interval, Duration::from_secs(30));
    assert_eq!(c.members(0), &cluster.members[..]);
    // cjson encodes an empty Lua table as an empty array.
    assert!(
        ok(r#"{"servers":["http://a:1","http://b:1"],"cluster":[]}"#)
            .cluster
            .is_some()
    );

    let c = ok(r#"{"servers":["http://a:1","http://b:1"],
            "cluster":{"name":"consul-prod","failover_after":1,"failback_interval":0}}"#);
    assert_eq!(c.servers[0].url, "consul-prod");
    assert_eq!(
        c.cluster.as_ref().unwrap().failback_interval,
        Duration::ZERO
    );

    // Without cluster: every server is its own source, as before.
    let c = ok(r#"{"servers":["http://a:1","http://b:1"]}"#);
    assert!(c.cluster.is_none());
    assert_eq!(c.servers.len(), 2);
    assert_eq!(c.members(1), &c.servers[1..2]);

    let two = r#""servers":["http://a:1","http://b:1"]"#;
    for (cluster, want) in [
        (
            r#"{"name":""}"#,
            r#"cluster.name: expected 1 to 255 printable ASCII characters without spaces, not ending in "/", got """#,
        ),
        (
            r#"{"name":"a b"}"#,
            r#"cluster.name: expected 1 to 255 printable ASCII characters without spaces, not ending in "/", got "a b""#,
        ),
        (
            r#"{"name":"x/"}"#,
            r#"cluster.name: expected 1 to 255 printable ASCII characters without spaces, not ending in "/", got "x/""#,
        ),
        (
            r#"{"failover_after":0}"#,
            "cluster.failover_after: expected an integer >= 1, got 0",
        ),
        (
            r#"{"failback_interval":-1}"#,
            "cluster.failback_interval: expected an integer >= 0, got -1",
        ),
        ("true", "cluster: expected an object, got true"),
    ] {
        assert_eq!(
            err(&format!(r#"{{{two},"cluster":{cluster}}}"#)),
            want,
            "{cluster}"
        );
    }
    let (_, w) = ok_warn(&with(r#""cluster":{}"#));
    assert!(w.iter().any(|w| w.contains("no other member")), "{w:?}");
}

#[test]
fn consistency_and_scope_fields() {
    let c = ok(&with(
        r#""consistency":"stale","max_stale":5,"dc":"dc-2","namespace":"team.a","partition":"p_1""#,
    ));
    assert_eq!(c.consistency, Consistency::Stale);
    assert_eq!(c.max_stale, Some(Duration::from_secs(5)));
    assert_eq!(c.scope.dc.as_deref(), Some("dc-2"));
    assert_eq!(c.scope.namespace.as_deref(), Some("team.a"));
    assert_eq!(c.scope.partition.as_deref(), Some("p_1"));
    assert_eq!(ok(&with("")).consistency, Consistency::Default);
    for (extra, want) in [
        (
            r#""consistency":"leader""#,
            r#"consistency: expected "default" or "stale" or "consistent", got "leader""#,
        ),
        (
            r#""max_stale":0"#,
            "max_stale: expected an integer >= 1, got 0",
        ),
        (
            r#""dc":"a/b""#,
            r#"dc: expected 1 to 64 characters from A-Z a-z 0-9 . _ -, got "a/b""#,
        ),
        (
            r#""namespace":"""#,
            r#"namespace: expected 1 to 64 characters from A-Z a-z 0-9 . _ -, got """#,
        ),
        (r#""partition":5"#, "partition: expected a string, got 5"),
    ] {
        assert_eq!(err(&with(extra)), want, "{extra}");
    }
    let (_, w) = ok_warn(&with(r#""max_stale":5"#));
    assert!(
        w.iter()
            .any(|w| w.contains("max_stale is set but consistency")),
        "{w:?}"
    );
}

#[test]
fn token_file_field() {
    let c = ok(&with(r#""token_file":"/run/consul/token""#));
    assert_eq!(
        c.token_file.as_ref().map(|f| f.path().to_path_buf()),
        Some(PathBuf::from("/run/consul/token"))
    );
    assert!(c.token.is_empty());
    assert_eq!(
        err(&with(r#""token":"abc","token_file":"/t""#)),
        "token_file: token and token_file are both set; give one of them"
    );
    assert_eq!(
        err(&with(r#""token_file":"""#)),
        r#"token_file: expected a non-empty path without NUL, got """#
    );
}

#[test]
fn the_fingerprint_does_not_see_the_token_files_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let write = |t: &str| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(&path, t).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    write("first-token-value");
    let c = ok(&with(&format!(r#""token_file":"{}""#, path.display())));
    let f = c.token_file.as_ref().unwrap();
    f.load().unwrap();
    let before = c.share_fingerprint(KEY);
    write("second-token-value-longer");
    assert_eq!(c.current_token().expose(), "second-token-value-longer");
    assert_eq!(
        c.share_fingerprint(KEY),
        before,
        "a rotation must not split a share group"
    );
    let shown = format!("{c:?} {c} {}", c.redacted_json());
    assert!(!shown.contains("token-value"), "{shown}");
    assert_eq!(
        c.scrub("x second-token-value-longer first-token-value"),
        "x <redacted> <redacted>"
    );
}
