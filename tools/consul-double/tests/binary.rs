//! The binary: flags, ready line, seed and pid files, SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_ckv-consul-double");

fn spawn(args: &[&str]) -> (Child, SocketAddr, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn binary");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("ready line");
    let addr = line
        .trim()
        .strip_prefix("ckv-consul-double listening on ")
        .unwrap_or_else(|| panic!("unexpected ready line {line:?}"))
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .expect("address");
    (child, addr, line)
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        assert!(t.elapsed() < within, "did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn ready_line_seed_pid_file_and_sigterm_with_blocked_reads() {
    let dir = std::env::temp_dir().join(format!("ckv-double-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let seed = dir.join("seed.json");
    let pid = dir.join("pid");
    std::fs::write(&seed, r#"{"app/a":"1","app/b":"2"}"#).unwrap();
    let (mut child, addr, line) = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--max-wait",
        "30s",
        "--start-index",
        "5000",
        "--seed-file",
        seed.to_str().unwrap(),
        "--pid-file",
        pid.to_str().unwrap(),
    ]);
    assert!(line.ends_with('\n') && line.lines().count() == 1);
    assert_eq!(
        std::fs::read_to_string(&pid).unwrap().trim(),
        child.id().to_string()
    );
    let r = get(addr, "/v1/kv/app/?recurse").await;
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    assert!(r.index() > 5000 && r.index() <= 5003);
    // A long poll is in flight when SIGTERM arrives: exit promptly anyway.
    let mut c = Conn::connect(addr).await;
    c.send(
        "GET",
        &format!("/v1/kv/app/?recurse&index={}&wait=30s", r.index()),
        &[],
        None,
    )
    .await;
    wait_blocked(addr, 1).await;
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(c.closed_within(Duration::from_secs(1)).await);
    assert!(!pid.exists(), "pid file removed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn acl_flags_and_short_waits_from_the_command_line() {
    let (mut child, addr, _) = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--token",
        "T",
        "--max-wait",
        "200ms",
    ]);
    assert_eq!(get(addr, "/v1/kv/x").await.status, 403);
    let r = req_h(addr, "GET", "/v1/kv/x", &[("X-Consul-Token", "T")], None).await;
    assert_eq!(r.status, 404);
    // No --default-wait: the default wait is capped to --max-wait.
    let t = Instant::now();
    req_h(
        addr,
        "GET",
        &format!("/v1/kv/x?index={}", r.index()),
        &[("X-Consul-Token", "T")],
        None,
    )
    .await;
    assert!(t.elapsed() < Duration::from_secs(1));
    sigterm(&child);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(5)).code(),
        Some(0)
    );
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["--max-wait", "5"][..],
        &["--listen", "127.0.0.1:0", "--max-wait", "5"],
        &["--listen", "127.0.0.1:0", "--bogus"],
    ] {
        let out = Command::new(BIN).args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
    }
    let out = Command::new(BIN).arg("--help").output().expect("run");
    assert_eq!(out.status.code(), Some(0));
}
