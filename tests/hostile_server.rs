//! The watcher against servers that are not (quite) Consul: answers without
//! `X-Consul-Index` (red-team D8 and the "404 from a web server" finding),
//! hostile keys and bodies (D9, D10, D11), echoed tokens (D16), error kinds
//! per server, and a bad `tls.ca_file` (checked at start).
//!
//! The double cannot produce most of these answers, so a tiny HTTP/1.1
//! server here answers every request with what a test tells it, counting
//! the requests it sees.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ckv::engine::Engine;
use ckv::log::{Level, Record};
use common::{drain, nodes, stats, wait_until, Double, WAIT};

/// What the server sees of a request.
struct Seen {
    /// Request line, e.g. `GET /v1/kv/p/?recurse HTTP/1.1`.
    line: String,
    /// Header lines as received.
    headers: Vec<String>,
    /// 0 for the first request.
    n: usize,
}

type Responder = dyn Fn(&Seen) -> Vec<u8> + Send + Sync;

/// A keep-alive HTTP/1.1 server on loopback, one thread per connection.
struct RawServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl RawServer {
    fn start(respond: impl Fn(&Seen) -> Vec<u8> + Send + Sync + 'static) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let respond: Arc<Responder> = Arc::new(respond);
        let (r, s) = (requests.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Acquire) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (r, s, respond) = (r.clone(), s.clone(), respond.clone());
                thread::spawn(move || serve(conn, &r, &s, &*respond));
            }
        });
        RawServer {
            addr,
            requests,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(conn: TcpStream, count: &AtomicUsize, stop: &AtomicBool, respond: &Responder) {
    let mut out = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || stop.load(Ordering::Acquire) {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            headers.push(h.trim_end().to_string());
        }
        let n = count.fetch_add(1, Ordering::AcqRel);
        let seen = Seen {
            line: line.trim_end().to_string(),
            headers,
            n,
        };
        if out.write_all(&respond(&seen)).is_err() {
            return;
        }
    }
}

/// A full HTTP/1.1 response with a Content-Length.
fn response(status: &str, headers: &[(&str, String)], body: &str) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A KV array body of `(key, value)` pairs.
fn kv_body(entries: &[(String, String)]) -> String {
    let items: Vec<String> = entries
        .iter()
        .map(|(k, v)| {
            format!(
                r#"{{"LockIndex":0,"Key":{},"Flags":0,"Value":"{}","CreateIndex":5,"ModifyIndex":9}}"#,
                serde_json::to_string(k).unwrap(),
                b64(v)
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

const BACKOFF_INITIAL_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 1000;

/// A standalone engine on `url` with backoff 100 ms .. 1 s, plus `extra`
/// JSON fields (each followed by a comma).
fn engine(url: &str, extra: &str) -> Engine {
    let json = format!(
        r#"{{"servers":["{url}"],"prefix":"p",{extra}
            "timeout":{{"connect":300,"read":500,"wait":1}},
            "backoff":{{"initial":{BACKOFF_INITIAL_MS},"max":{BACKOFF_MAX_MS}}},
            "share":{{"enabled":false}}}}"#
    );
    Engine::start(ckv::config::parse(json.as_bytes()).unwrap()).unwrap()
}

/// The most requests a server may see in `window` when every answer fails:
/// the first, then one after each backoff delay, each delay at least half
/// of `min(max, initial * 2^n)`.
fn backoff_allows(window: Duration) -> usize {
    let mut spent = Duration::ZERO;
    let mut requests = 1;
    for n in 0.. {
        let ceiling = (BACKOFF_INITIAL_MS << n.min(20)).min(BACKOFF_MAX_MS);
        spent += Duration::from_millis(ceiling / 2);
        if spent > window {
            break;
        }
        requests += 1;
    }
    requests
}

fn records_of(e: &Engine) -> Vec<Record> {
    let mut r = Vec::new();
    drain(e, &mut r);
    r
}

fn assert_printable(records: &[Record]) {
    for r in records {
        assert!(
            !r.message
                .chars()
                .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')),
            "control character reached a record: {:?}",
            r.message
        );
    }
}

/// Runs a server that never sends a valid index for 5 s and checks what it
/// saw and what the operator is told.
fn not_consul_is_backed_off(respond: Canned, extra: &str, problem: &str) {
    let server = RawServer::start(respond);
    let started = Instant::now();
    let e = engine(&server.url(), extra);
    // The observation window is the measurement itself.
    let window = Duration::from_secs(5);
    thread::sleep(window.saturating_sub(started.elapsed()));
    let seen = server.requests();
    let allowed = backoff_allows(window);
    eprintln!("{problem}: {seen} requests in 5 s (backoff allows {allowed})");
    assert!(
        (3..=allowed).contains(&seen),
        "{problem}: {seen} requests in 5 s, the backoff allows {allowed}"
    );
    let logs = records_of(&e);
    let errors: Vec<_> = logs
        .iter()
        .filter(|r| r.level == Level::Err && r.message.contains("not a Consul KV endpoint?"))
        .collect();
    assert_eq!(errors.len(), 1, "one error per streak: {logs:#?}");
    assert!(errors[0].message.contains(problem), "{}", errors[0].message);
    assert!(
        errors[0].message.contains(&server.url()),
        "names the server"
    );
    let s = stats(&e);
    let s = &s["servers"][0];
    assert_eq!(s["state"], "backoff");
    assert!(s["last_error"]
        .as_str()
        .unwrap()
        .contains("not a Consul KV endpoint?"));
    assert!(
        s["errors_by_kind"]["not_consul"].as_u64().unwrap() >= 2,
        "{s}"
    );
    assert_eq!(e.snapshot().seq, 0, "nothing from it is served");
}

#[test]
fn a_404_without_index_is_not_polled_in_a_tight_loop() {
    not_consul_is_backed_off(
        |_| response("404 Not Found", &[], "404 page not found"),
        "",
        "HTTP 404 with no X-Consul-Index header",
    );
}

#[test]
fn an_index_of_zero_is_not_polled_in_a_tight_loop() {
    not_consul_is_backed_off(
        |_| response("200 OK", &[("X-Consul-Index", "0".into())], "[]"),
        "",
        "HTTP 200 with X-Consul-Index 0",
    );
}

#[test]
fn a_missing_index_is_an_error_when_polling_too() {
    not_consul_is_backed_off(
        |_| response("200 OK", &[], "[]"),
        r#""keepalive":false,"fetch_interval":1,"#,
        "HTTP 200 with no X-Consul-Index header",
    );
}

#[test]
fn an_index_that_keeps_going_back_is_rate_limited_and_logged_once() {
    // A plain read gets index 100; a blocking one gets 50: every blocking
    // answer is a reset.
    let server = RawServer::start(|seen| {
        let index = if seen.line.contains("index=") {
            50
        } else {
            100
        };
        let body = kv_body(&[("p/web/10.0.0.1:80".into(), "{}".into())]);
        response("200 OK", &[("X-Consul-Index", index.to_string())], &body)
    });
    let started = Instant::now();
    let e = engine(&server.url(), "");
    let window = Duration::from_secs(2);
    thread::sleep(window.saturating_sub(started.elapsed()));
    let seen = server.requests();
    // Two requests per reset; the re-read after a reset waits for the
    // limiter (burst 8, then 5 per second).
    let allowed = 2 * (8 + 5 * 2) + 4;
    eprintln!("index going back: {seen} requests in 2 s (allowed {allowed})");
    assert!(
        seen <= allowed,
        "{seen} requests in 2 s (allowed {allowed})"
    );
    assert!(seen >= 4, "{seen}");
    let logs = records_of(&e);
    let resets = logs
        .iter()
        .filter(|r| r.message.contains("X-Consul-Index went back"))
        .count();
    assert_eq!(resets, 1, "logged once per streak: {logs:#?}");
    assert!(stats(&e)["servers"][0]["index_resets"].as_u64().unwrap() >= 2);
    assert_eq!(
        nodes(&e, &server.url(), "p/web/").as_deref(),
        Some(r#"[{"host":"10.0.0.1","port":80,"weight":1}]"#)
    );
}

#[test]
fn control_characters_from_consul_never_reach_a_record() {
    let evil: Vec<(String, String)> = [
        "p/web/x\n2026-12-01T16:00:00 [emerg] 1#1: FORGED LINE\u{1b}]0;owned\u{7}",
        "p/web/nul\0byte:80",
        "p/web/01 00:00:00 [emerg] 1#1: FORGED\u{1b}[31mRED\u{1b}[0m:80",
        "p/web/ls\u{2028}ps\u{2029}:80",
        "p/web/c1\u{85}\u{9b}:80",
        "p/web/[::1\r\n]:80",
        "p/web\u{1b}[2J/10.0.0.9:8\u{7f}0",
    ]
    .iter()
    .map(|k| (k.to_string(), "{}".to_string()))
    .chain([(
        "p/web/10.0.0.1:80".to_string(),
        "{\"weight\":\n[\u{1b}]}".to_string(),
    )])
    .chain([(
        format!("p/web/{}\u{1b}[2J:80", "A".repeat(100_000)),
        "{}".to_string(),
    )])
    .chain([("p/web/10.0.0.2:80".to_string(), "{}".to_string())])
    .collect();
    let body = kv_body(&evil);
    let server = RawServer::start(move |seen| {
        if seen.n == 0 {
            response("200 OK", &[("X-Consul-Index", "7".into())], &body)
        } else {
            // Then an error whose body tries the same.
            response(
                "500 Internal Server Error",
                &[],
                "boom\n2026-12-01 [emerg] forged\u{1b}[31m\0",
            )
        }
    });
    let e = engine(&server.url(), "");
    let mut logs = Vec::new();
    assert!(wait_until(WAIT, || {
        drain(&e, &mut logs);
        logs.iter().any(|r| r.message.contains("HTTP 500"))
    }));
    drain(&e, &mut logs);
    assert_printable(&logs);
    let longest = logs.iter().map(|r| r.message.len()).max().unwrap();
    assert!(longest < 1024, "a 100 KB key makes a {longest}-byte record");
    let skipped = logs
        .iter()
        .filter(|r| r.level == Level::Warn && r.message.contains("skipped key"))
        .count();
    assert_eq!(skipped, evil.len() - 1, "{logs:#?}");
    assert!(logs
        .iter()
        .any(|r| r.message.contains("FORGED LINE\\x1b]0;owned\\x07")));
    assert!(stats(&e)["servers"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("boom\\n2026-12-01 [emerg] forged\\x1b[31m"));
}

#[test]
fn a_storm_of_changing_malformed_keys_writes_a_bounded_number_of_records() {
    // Every answer: a new index and 3,000 malformed keys with new values.
    let server = RawServer::start(|seen| {
        let entries: Vec<(String, String)> = (0..3000)
            .map(|i| {
                (
                    format!("p/web/bad host {i}:80"),
                    format!("{{\"v\":{}}}", seen.n),
                )
            })
            .chain([("p/web/10.0.0.1:80".to_string(), "{}".to_string())])
            .collect();
        let index = (seen.n + 1).to_string();
        response("200 OK", &[("X-Consul-Index", index)], &kv_body(&entries))
    });
    let e = engine(&server.url(), "");
    let started = Instant::now();
    let window = Duration::from_secs(5);
    let mut logs = Vec::new();
    while started.elapsed() < window {
        drain(&e, &mut logs);
        thread::sleep(Duration::from_millis(20));
    }
    drain(&e, &mut logs);
    let answers = server.requests();
    eprintln!(
        "storm: {} records for {answers} answers of 3,000 malformed keys",
        logs.len()
    );
    assert!(answers >= 5, "the storm ran: {answers} answers");
    // Burst 20, then about one a second, each with its suppressed count.
    assert!(
        logs.len() <= 100,
        "{} records for {answers} answers: {:#?}",
        logs.len(),
        &logs[..logs.len().min(60)]
    );
    let skipped = logs
        .iter()
        .filter(|r| r.message.contains("skipped"))
        .count();
    assert!(skipped >= 20, "{logs:#?}");
    assert!(
        logs.iter().any(|r| r
            .message
            .contains("similar messages suppressed (malformed keys)")),
        "{logs:#?}"
    );
    assert_eq!(stats(&e)["servers"][0]["malformed_entries"], 3000);
}

#[test]
fn one_deep_value_does_not_poison_its_service_all_nodes_or_the_dump() {
    let d = Double::start();
    // As in the red-team report: `metadata` nested 1,500 objects deep.
    let deep = format!(
        r#"{{"metadata":{}1{}}}"#,
        r#"{"a":"#.repeat(1500),
        "}".repeat(1500)
    );
    d.put("p/web/10.0.0.1:80", "{}");
    d.put("p/web/10.0.0.2:80", r#"{"metadata":{"lane":"a"}}"#);
    d.put("p/web/10.0.0.3:80", &deep);
    d.put("p/api/10.0.1.1:80", "{}");
    let e = engine(&d.url(), "");
    let url = d.url();
    assert!(wait_until(WAIT, || e.snapshot().len() == 2));
    let web = nodes(&e, &url, "p/web/").unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&web).expect("web decodes");
    assert_eq!(parsed.as_array().unwrap().len(), 2, "{web}");
    let snap = e.snapshot();
    let all: serde_json::Value =
        serde_json::from_str(&snap.all_nodes_json()).expect("all_nodes decodes");
    assert_eq!(all.as_object().unwrap().len(), 2);
    let dump = ckv::dump::render(&snap, 1000, 0);
    let (loaded, _) = ckv::dump::parse(dump.as_bytes(), 1000, 0).expect("the dump loads");
    assert!(matches!(loaded, ckv::dump::Loaded::Fresh(s) if s.len() == 2));
    let logs = records_of(&e);
    assert!(
        logs.iter().any(
            |r| r.message.contains("p/web/10.0.0.3:80") && r.message.contains("deeper than 32")
        ),
        "{logs:#?}"
    );
}

const TOKEN: &str = "8f14e45f-ceea-467f-a0e6-supersecret";

/// Echoes the request headers, as some proxy and WAF error pages do.
fn echo_headers(seen: &Seen) -> String {
    format!("Forbidden. Request was: {}", seen.headers.join(" | "))
}

#[test]
fn a_token_echoed_by_the_server_is_never_logged_or_stored() {
    let server = RawServer::start(|seen| {
        match seen.n % 3 {
            0 => response("403 Forbidden", &[], &echo_headers(seen)),
            // The echo in a header value, and in a 200 body's key.
            1 => response(
                "200 OK",
                &[("X-Consul-Index", format!("x-consul-token {TOKEN}"))],
                "[]",
            ),
            _ => {
                let key = format!("p/web/{}:80", echo_headers(seen));
                let body = kv_body(&[(key, "{}".into())]);
                response("200 OK", &[("X-Consul-Index", "9".into())], &body)
            }
        }
    });
    let e = engine(&server.url(), &format!(r#""token":"{TOKEN}","#));
    assert!(wait_until(Duration::from_secs(10), || server.requests() >= 6));
    let logs = records_of(&e);
    assert!(logs
        .iter()
        .any(|r| r.message.contains("Forbidden. Request was")));
    assert!(
        logs.iter().any(|r| r.message.contains("<redacted>")),
        "{logs:#?}"
    );
    for r in &logs {
        assert!(
            !r.message.contains("supersecret"),
            "token in a record: {}",
            r.message
        );
        assert!(
            !r.message.contains("8f14e45f-ceea"),
            "token in a record: {}",
            r.message
        );
    }
    let s = e.stats_json();
    assert!(!s.contains("supersecret"), "token in stats: {s}");
}

/// A fixed answer.
type Canned = fn(&Seen) -> Vec<u8>;

#[test]
fn errors_are_counted_by_kind() {
    let cases: [(&str, Canned); 6] = [
        ("no_leader", |_| {
            response(
                "500 Internal Server Error",
                &[],
                "rpc error making call: No cluster leader",
            )
        }),
        ("http_5xx", |_| {
            response("503 Service Unavailable", &[], "rate limit exceeded")
        }),
        ("http_4xx", |_| {
            response("403 Forbidden", &[], "ACL not found")
        }),
        ("not_consul", |_| {
            response("301 Moved Permanently", &[("Location", "/x".into())], "")
        }),
        ("bad_body", |_| {
            response("200 OK", &[("X-Consul-Index", "3".into())], "<html>")
        }),
        ("too_large", |_| {
            let body = format!("[{}]", " ".repeat(4096));
            response("200 OK", &[("X-Consul-Index", "3".into())], &body)
        }),
    ];
    for (kind, respond) in cases {
        let server = RawServer::start(respond);
        let e = engine(&server.url(), r#""max_response_bytes":2048,"#);
        assert!(
            wait_until(WAIT, || stats(&e)["servers"][0]["errors_total"]
                .as_u64()
                .unwrap()
                >= 2),
            "{kind}"
        );
        let s = stats(&e);
        let by_kind = &s["servers"][0]["errors_by_kind"];
        let total: u64 = by_kind
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(by_kind[kind], total, "{kind}: {by_kind}");
        assert!(total >= 2, "{kind}: {by_kind}");
    }
    // Nothing listens: transport.
    let addr = common::free_addr();
    let e = engine(&format!("http://{addr}"), "");
    assert!(wait_until(WAIT, || {
        stats(&e)["servers"][0]["errors_by_kind"]["transport"]
            .as_u64()
            .unwrap()
            >= 2
    }));
}

fn ca_config(path: &std::path::Path) -> ckv::config::Config {
    let json = format!(
        r#"{{"servers":["https://127.0.0.1:8501"],"prefix":"p","tls":{{"ca_file":{}}},"share":{{"enabled":false}}}}"#,
        serde_json::to_string(&path.to_string_lossy()).unwrap()
    );
    ckv::config::parse(json.as_bytes()).unwrap()
}

#[test]
fn a_bad_ca_file_fails_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    let bad_pem = dir.path().join("bad.pem");
    std::fs::write(
        &bad_pem,
        "-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let bad_der = dir.path().join("bad-der.pem");
    std::fs::write(
        &bad_der,
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let cases = [
        (dir.path().join("missing.pem"), "cannot open"),
        (garbage, "no certificates found"),
        (bad_pem, "bad PEM"),
        (bad_der, "not valid"),
        (dir.path().to_path_buf(), "not a regular file"),
    ];
    for (path, why) in cases {
        let config = ca_config(&path);
        let err = ckv::watcher::build_client(&config).unwrap_err();
        assert!(err.contains(&*path.to_string_lossy()), "{err}");
        assert!(err.contains(why), "{path:?}: {err}");
        let err = Engine::start(config).unwrap_err();
        assert!(
            err.contains(&*path.to_string_lossy()) && err.contains(why),
            "{err}"
        );
    }
    let good = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/test-ca.pem");
    ckv::watcher::build_client(&ca_config(&good)).unwrap();
    let e = Engine::start(ca_config(&good)).unwrap();
    assert!(e.shutdown(Duration::from_secs(2)));
}

#[test]
fn a_fifo_as_ca_file_does_not_hang_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("ca.pem");
    let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let config = ca_config(&fifo);
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(ckv::watcher::build_client(&config).map(drop));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("build_client returned");
    let err = result.unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");
    // Unblock the thread on old code (it would wait for a writer).
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo);
}

use std::os::unix::fs::OpenOptionsExt as _;

/// A sink that only records stats, to watch `run` alone.
#[derive(Default)]
struct StatsSink(parking_lot::Mutex<ckv::stats::ServerStats>);

impl ckv::watcher::WatchSink for StatsSink {
    fn apply(&self, _: usize, _: &[ckv::kv::RawEntry<'_>]) -> Result<bool, String> {
        Ok(false)
    }
    fn apply_empty(&self, _: usize) -> bool {
        false
    }
    fn update_stats(&self, _: usize, f: &mut dyn FnMut(&mut ckv::stats::ServerStats)) {
        f(&mut self.0.lock());
    }
    fn log(&self, _: Level, _: String) {}
}

#[test]
fn a_watch_that_cannot_run_is_marked_failed() {
    let sink = Arc::new(StatsSink::default());
    ckv::watcher::mark_failed(&*sink, 0, "tls.ca_file /x: cannot open: No such file");
    {
        let s = sink.0.lock();
        assert_eq!(s.state, ckv::stats::ServerState::Failed);
        assert!(s.last_error.as_deref().unwrap().contains("tls.ca_file /x"));
        let json = serde_json::to_value(&*s).unwrap();
        assert_eq!(json["state"], "failed");
    }
    let sink = Arc::new(StatsSink::default());
    let config = Arc::new(ca_config(std::path::Path::new("/nonexistent")));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let client = reqwest::Client::new();
    rt.block_on(ckv::watcher::run(7, config, client, sink.clone(), stop_rx));
    assert_eq!(sink.0.lock().state, ckv::stats::ServerState::Failed);
}

fn data(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// An https server (certificate for 127.0.0.1 from `tests/data/test-ca.pem`)
/// answering every request with one node.
fn tls_server(rt: &tokio::runtime::Runtime) -> SocketAddr {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let certs = CertificateDer::pem_file_iter(data("test-server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(data("test-server-key.pem")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let body = kv_body(&[("p/web/10.0.0.1:80".into(), "{}".into())]);
    let answer = response("200 OK", &[("X-Consul-Index", "5".into())], &body);
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, answer) = (acceptor.clone(), answer.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        if tls.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn https_trusts_the_ca_file_and_only_it() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = tls_server(&rt);
    let url = format!("https://{addr}");
    let with_ca = |name: &str| {
        let path = serde_json::to_string(&data(name).to_string_lossy()).unwrap();
        engine(&url, &format!(r#""tls":{{"ca_file":{path}}},"#))
    };
    let trusted = with_ca("test-ca.pem");
    assert!(wait_until(WAIT, || nodes(&trusted, &url, "p/web/")
        .as_deref()
        == Some(r#"[{"host":"10.0.0.1","port":80,"weight":1}]"#)));
    let other = with_ca("other-ca.pem");
    assert!(wait_until(WAIT, || {
        stats(&other)["servers"][0]["errors_by_kind"]["transport"]
            .as_u64()
            .unwrap()
            >= 1
    }));
    let s = stats(&other);
    let err = s["servers"][0]["last_error"].as_str().unwrap();
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(other.snapshot().is_empty());
    // The built-in web PKI roots do not vouch for a private CA either.
    let web_pki = engine(&url, "");
    assert!(wait_until(WAIT, || {
        stats(&web_pki)["servers"][0]["errors_total"]
            .as_u64()
            .unwrap()
            >= 1
    }));
    assert!(web_pki.snapshot().is_empty());
}
