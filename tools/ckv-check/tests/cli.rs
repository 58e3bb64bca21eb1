//! Runs the `ckv-check` binary against a seeded Consul double (in-process,
//! on an ephemeral port) and checks its findings, exit codes and output.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

struct Double {
    addr: SocketAddr,
    rt: tokio::runtime::Runtime,
    handle: Option<ckv_consul_double::Handle>,
}

impl Double {
    fn start(seed: &[(&str, &str)], token: Option<&str>) -> Double {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let config = ckv_consul_double::Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            token: token.map(str::to_string),
            seed: seed
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            ..Default::default()
        };
        let handle = rt.block_on(ckv_consul_double::spawn(config)).unwrap();
        Double {
            addr: handle.addr(),
            rt,
            handle: Some(handle),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

fn ckv_check(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_ckv-check"))
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ckv-check-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An APISIX config.yaml with a consul_kv section.
fn apisix_yaml(servers: &[String], extra: &str) -> String {
    let list = servers
        .iter()
        .map(|s| format!("      - \"{s}\"\n"))
        .collect::<String>();
    format!(
        "apisix:\n  node_listen: 9080\ndeployment:\n  role: traditional\ndiscovery:\n  consul_kv:\n    servers:\n{list}    timeout:\n      connect: 1000\n      read: 1000\n{extra}"
    )
}

/// Every finding (server- and service-level) of a JSON report, as
/// (kind, key) pairs.
fn findings(report: &Value) -> Vec<(String, Option<String>, bool)> {
    let mut out = Vec::new();
    for s in report["servers"].as_array().unwrap() {
        let all = s["findings"].as_array().unwrap().iter().chain(
            s["services"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|svc| svc["findings"].as_array().unwrap().iter()),
        );
        for f in all {
            out.push((
                f["kind"].as_str().unwrap().to_string(),
                f["key"].as_str().map(str::to_string),
                f["difference"].as_bool().unwrap(),
            ));
        }
    }
    out
}

fn has(report: &Value, kind: &str, key: Option<&str>) -> bool {
    findings(report)
        .iter()
        .any(|(k, kk, _)| k == kind && kk.as_deref() == key)
}

fn service<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["servers"][0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"].as_str().unwrap().ends_with(name))
        .unwrap_or_else(|| panic!("no service {name} in {report:#}"))
}

const TOKEN: &str = "5e3c1a2b-token-never-printed-9f8e";

fn every_class_seed() -> Vec<(&'static str, &'static str)> {
    vec![
        ("upstreams/web/", ""),
        (
            "upstreams/web/10.0.0.1:80",
            r#"{"weight":1,"max_fails":2,"fail_timeout":1}"#,
        ),
        ("upstreams/web/10.0.0.2:80abc", r#"{"weight":1}"#),
        ("upstreams/web/10.0.0.5:80", r#"{"check_status":false}"#),
        ("upstreams/web/api-1_b.internal:8080", r#"{"weight":2}"#),
        ("upstreams/web/[2001:db8::1]:8080", r#"{"weight":1}"#),
        ("upstreams/str/10.0.0.3:80", r#"{"weight":"3"}"#),
        ("upstreams/str/10.0.0.13:80", r#"{"weight":3}"#),
        (
            "upstreams/prio/10.0.0.4:80",
            r#"{"weight":2,"priority":-1}"#,
        ),
        ("upstreams/team/a/hello/10.0.0.6:80", r#"{"weight":4}"#),
        ("upstreams/skipped/10.0.0.7:80", r#"{"weight":1}"#),
        ("upstreams/default/10.0.0.8:80", "{}"),
        ("upstreams-old/web/10.0.0.9:80", "{}"),
        ("upstreams/deep/10.0.0.10:80/b/api-1:90", "{}"),
    ]
}

#[test]
fn every_class_of_difference_is_found_and_explained() {
    let double = Double::start(&every_class_seed(), Some(TOKEN));
    let dir = tmpdir("classes");
    let extra = format!(
        "    token: \"{TOKEN}\"\n    weight: 5\n    skip_keys:\n      - \"upstreams/skipped/\"\n    default_service:\n      host: \"127.0.0.1\"\n      port: 20999\n"
    );
    let cfg = write(&dir, "config.yaml", &apisix_yaml(&[double.url()], &extra));
    let cfg = cfg.to_str().unwrap();

    let run = ckv_check(&["--config", cfg, "--json"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    assert_eq!(r["ckv_check"], 1);
    assert_eq!(r["result"], "differ");
    assert_eq!(r["config"]["format"], "yaml");
    for (kind, key) in [
        ("skipped_by_ckv", "upstreams/web/10.0.0.2:80abc"),
        ("newly_accepted", "upstreams/web/api-1_b.internal:8080"),
        ("newly_accepted", "upstreams/web/[2001:db8::1]:8080"),
        ("skipped_by_ckv", "upstreams/str/10.0.0.3:80"),
        ("unusable_in_apisix", "upstreams/str/10.0.0.3:80"),
        ("priority", "upstreams/prio/10.0.0.4:80"),
        ("extra_fields", "upstreams/web/10.0.0.1:80"),
        ("service", "upstreams/deep/10.0.0.10:80/b/api-1:90"),
    ] {
        assert!(
            has(&r, kind, Some(key)),
            "{kind} {key} missing: {:#?}",
            findings(&r)
        );
    }
    // Keys both leave out are not differences.
    for key in [
        "upstreams/web/10.0.0.5:80",
        "upstreams/skipped/10.0.0.7:80",
        "upstreams/web/",
        "upstreams-old/web/10.0.0.9:80",
    ] {
        assert!(
            findings(&r)
                .iter()
                .all(|(_, k, _)| k.as_deref() != Some(key)),
            "{key} should agree: {:#?}",
            findings(&r)
        );
    }
    // Nested paths and the default weight (5) agree.
    let nested = service(&r, "/upstreams/team/a/hello/");
    assert_eq!(nested["agree"], true);
    assert_eq!(nested["ckv"][0]["weight"], 4);
    let dflt = service(&r, "/upstreams/default/");
    assert_eq!(dflt["agree"], true);
    assert_eq!(dflt["apisix"][0]["weight"], 5);
    // What each side serves for the mixed service.
    let web = service(&r, "/upstreams/web/");
    assert_eq!(web["agree"], false);
    let hosts = |side: &str| -> Vec<String> {
        web[side]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["host"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(hosts("apisix"), ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(
        hosts("ckv"),
        ["10.0.0.1", "[2001:db8::1]", "api-1_b.internal"]
    );
    assert_eq!(service(&r, "/upstreams/prio/")["ckv"][0]["priority"], -1);
    // default_service behaviour is stated.
    let notes = r["notes"].as_array().unwrap();
    assert!(notes.iter().any(|n| n["kind"] == "default_service"
        && n["text"].as_str().unwrap().contains("127.0.0.1:20999")
        && n["text"].as_str().unwrap().contains("worker 0")));
    assert!(!run.stdout.contains(TOKEN) && !run.stderr.contains(TOKEN));

    // Text output: one explained line per difference, token absent.
    let text = ckv_check(&[cfg, "--verbose"]);
    assert_eq!(text.code, 1, "{}", text.stderr);
    assert!(
        text.stdout
            .contains("- upstreams/web/10.0.0.2:80abc: skipped by ckv"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("ignoring \"abc\" after the port"),
        "{}",
        text.stdout
    );
    assert!(text
        .stdout
        .contains("+ upstreams/web/api-1_b.internal:8080: newly served by ckv"));
    assert!(text.stdout.contains("host contains '-'"), "{}", text.stdout);
    assert!(text.stdout.contains("IPv6 literal"));
    assert!(text.stdout.contains("invalid nodes format"));
    assert!(text.stdout.contains("priority -1 reaches ckv's balancer"));
    assert!(
        text.stdout
            .contains("result: 9 differences, 5 of 7 services differ (exit 1)"),
        "{}",
        text.stdout
    );
    // --verbose: both readings of every key.
    assert!(text.stdout.contains("    upstreams/web/10.0.0.5:80\n      APISIX: skipped: check_status is false\n      ckv:    dropped: check_status is false"), "{}", text.stdout);
    assert!(!text.stdout.contains(TOKEN) && !text.stderr.contains(TOKEN));
}

#[test]
fn agreeing_keys_exit_0_with_json_config() {
    let double = Double::start(
        &[
            ("upstreams/web/10.0.0.1:80", r#"{"weight":1}"#),
            ("upstreams/web/10.0.0.2:80", "{}"),
            (
                "upstreams/api/v1/10.0.0.3:81",
                r#"{"weight":3,"check_status":true}"#,
            ),
        ],
        None,
    );
    let dir = tmpdir("agree");
    let cfg = write(
        &dir,
        "consul_kv.json",
        &format!(
            r#"{{"servers":["{}"],"timeout":{{"connect":1000,"read":1000}}}}"#,
            double.url()
        ),
    );
    let run = ckv_check(&["--json", cfg.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    assert_eq!(r["result"], "agree");
    assert_eq!(r["config"]["format"], "json");
    assert_eq!(r["servers"][0]["services"].as_array().unwrap().len(), 2);
    let text = ckv_check(&[cfg.to_str().unwrap()]);
    assert_eq!(text.code, 0);
    assert!(
        text.stdout.contains("agree on 2 services (exit 0)"),
        "{}",
        text.stdout
    );

    // The same config as YAML given with --format (no extension) agrees too.
    let yaml = write(&dir, "conf", &apisix_yaml(&[double.url()], ""));
    let run = ckv_check(&["--format", "yaml", yaml.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
}

#[test]
fn empty_prefix_states_both_behaviours() {
    let double = Double::start(&[("other/web/10.0.0.1:80", "{}")], None);
    let dir = tmpdir("empty");
    let cfg = write(&dir, "config.yaml", &apisix_yaml(&[double.url()], ""));
    let run = ckv_check(&["--json", cfg.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    assert_eq!(r["servers"][0]["status"], 404);
    let f = &r["servers"][0]["findings"][0];
    assert_eq!(f["kind"], "empty_prefix");
    assert!(f["text"]
        .as_str()
        .unwrap()
        .contains("retries after 1, 4, 16, 64"));
    assert!(f["text"]
        .as_str()
        .unwrap()
        .contains("on_empty_prefix \"clear\""));
}

#[test]
fn a_response_ckv_refuses_whole_is_a_difference() {
    // Every key is malformed for ckv; APISIX serves both.
    let double = Double::start(
        &[
            ("upstreams/web/10.0.0.1:80x", "{}"),
            ("upstreams/web/10.0.0.2:80y", "{}"),
        ],
        None,
    );
    let dir = tmpdir("refused");
    let cfg = write(&dir, "config.yaml", &apisix_yaml(&[double.url()], ""));
    let r = ckv_check(&["--json", cfg.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(has(&r.json(), "response_refused_by_ckv", None));
    assert!(has(&r.json(), "missing_in_ckv", None));
}

#[test]
fn a_value_that_breaks_apisix_is_reported() {
    let double = Double::start(
        &[
            ("upstreams/web/10.0.0.1:80", "{}"),
            ("upstreams/web/10.0.0.2:80", "7"),
        ],
        None,
    );
    let dir = tmpdir("luaerr");
    let cfg = write(&dir, "config.yaml", &apisix_yaml(&[double.url()], ""));
    let r = ckv_check(&["--json", cfg.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let r = r.json();
    assert!(has(
        &r,
        "apisix_lua_error",
        Some("upstreams/web/10.0.0.2:80")
    ));
    assert_eq!(service(&r, "/upstreams/web/")["apisix"], Value::Null);
}

#[test]
fn control_characters_from_consul_are_escaped() {
    let double = Double::start(&[("upstreams/we\u{1b}[31mb/a-b:80", "{}")], None);
    let dir = tmpdir("escape");
    let cfg = write(&dir, "config.yaml", &apisix_yaml(&[double.url()], ""));
    let text = ckv_check(&[cfg.to_str().unwrap(), "--verbose"]);
    assert_eq!(text.code, 1, "{}", text.stdout);
    assert!(!text.stdout.contains('\u{1b}'), "{:?}", text.stdout);
    assert!(text.stdout.contains("\\x1b[31m"), "{}", text.stdout);
    let json = ckv_check(&[cfg.to_str().unwrap(), "--json"]);
    assert!(!json.stdout.contains('\u{1b}'));
    assert!(json.json()["servers"][0]["keys"][0]["key"]
        .as_str()
        .unwrap()
        .contains('\u{1b}'));
}

#[test]
fn errors_exit_2_with_a_clear_message_and_no_token() {
    let dir = tmpdir("errors");
    // Nothing listens on this port.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cfg = write(
        &dir,
        "config.yaml",
        &apisix_yaml(
            &[format!("http://{closed}")],
            &format!("    token: {TOKEN}\n"),
        ),
    );
    for args in [
        vec![cfg.to_str().unwrap()],
        vec![cfg.to_str().unwrap(), "--json", "--verbose"],
    ] {
        let r = ckv_check(&args);
        assert_eq!(r.code, 2, "{}", r.stdout);
        assert!(r.stderr.contains(&closed.to_string()), "{}", r.stderr);
        assert!(r.stderr.contains("cannot read the prefix"), "{}", r.stderr);
        assert!(!r.stdout.contains(TOKEN) && !r.stderr.contains(TOKEN));
    }

    // A wrong token: Consul answers 403.
    let double = Double::start(
        &[("upstreams/web/10.0.0.1:80", "{}")],
        Some("the-real-management-token"),
    );
    let cfg = write(
        &dir,
        "wrong.yaml",
        &apisix_yaml(&[double.url()], &format!("    token: \"{TOKEN}\"\n")),
    );
    let r = ckv_check(&["--verbose", cfg.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(r.stderr.contains("HTTP 403"), "{}", r.stderr);
    assert!(!r.stdout.contains(TOKEN) && !r.stderr.contains(TOKEN));

    // Bad YAML, a missing section, a config ckv refuses (the token pasted
    // into another field too), a missing file, bad arguments.
    let bad_yaml = write(&dir, "bad.yaml", "discovery: [unclosed\n");
    let no_section = write(&dir, "none.yaml", "apisix:\n  node_listen: 9080\n");
    let refused = write(
        &dir,
        "refused.json",
        &format!(r#"{{"servers":["ftp://{TOKEN}"],"token":"{TOKEN}"}}"#),
    );
    for (args, want) in [
        (vec![bad_yaml.to_str().unwrap()], "not valid YAML"),
        (vec![no_section.to_str().unwrap()], "no discovery.consul_kv"),
        (vec![refused.to_str().unwrap()], "servers[0]"),
        (
            vec!["/nonexistent/config.yaml"],
            "cannot read /nonexistent/config.yaml",
        ),
        (vec!["--format", "toml", "x"], "expected yaml or json"),
        (vec![], "no config file"),
    ] {
        let r = ckv_check(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stdout);
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
        assert!(
            !r.stdout.contains(TOKEN) && !r.stderr.contains(TOKEN),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn token_from_the_environment_as_apisix_substitutes_it() {
    let double = Double::start(&[("upstreams/web/10.0.0.1:80", "{}")], Some(TOKEN));
    let dir = tmpdir("env");
    let cfg = write(
        &dir,
        "config.yaml",
        &apisix_yaml(
            &[double.url()],
            "    token: \"${{CKV_CHECK_TEST_TOKEN}}\"\n",
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ckv-check"))
        .args([cfg.to_str().unwrap(), "--verbose"])
        .env("CKV_CHECK_TEST_TOKEN", TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains(TOKEN));
    let r = ckv_check(&[cfg.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("CKV_CHECK_TEST_TOKEN is not set"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_prefix_with_slashes_is_used_verbatim_by_apisix() {
    let double = Double::start(&[("upstreams/web/10.0.0.1:80", "{}")], None);
    let dir = tmpdir("prefix");
    let cfg = write(
        &dir,
        "config.yaml",
        &apisix_yaml(&[double.url()], "    prefix: \"upstreams/\"\n"),
    );
    let run = ckv_check(&["--json", cfg.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    assert_eq!(r["config"]["prefix"], "upstreams");
    assert_eq!(r["config"]["apisix_prefix"], "upstreams/");
    assert!(r["notes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["kind"] == "prefix" && n["difference"] == true));
    assert!(has(&r, "newly_accepted", Some("upstreams/web/10.0.0.1:80")));
}

#[test]
fn one_unreachable_server_is_an_error_but_the_others_are_reported() {
    let double = Double::start(&[("upstreams/web/10.0.0.1:80", "{}")], None);
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tmpdir("two");
    let cfg = write(
        &dir,
        "config.yaml",
        &apisix_yaml(&[double.url(), format!("http://{closed}")], ""),
    );
    let run = ckv_check(&["--json", cfg.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    let r = run.json();
    assert_eq!(r["result"], "error");
    assert_eq!(r["servers"][0]["services"][0]["agree"], true);
    assert!(r["servers"][1]["error"]
        .as_str()
        .unwrap()
        .contains(&closed.to_string()));
}
