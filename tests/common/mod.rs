//! Test harness: the Consul double in-process, a blocking HTTP client for it,
//! and an engine with fast timeouts and backoff.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ckv::engine::Engine;
use ckv::log::{Level, Record};

/// A Consul double running on its own runtime.
pub struct Double {
    pub addr: SocketAddr,
    /// Every listener (several with `listen` set by `tweak`).
    pub addrs: Vec<SocketAddr>,
    rt: tokio::runtime::Runtime,
    handle: Option<ckv_consul_double::Handle>,
}

impl Double {
    pub fn start() -> Double {
        Self::start_with(|_| {})
    }

    /// Starts on `addr` (port 0: any free port), after `tweak` edits the config.
    pub fn start_with(tweak: impl FnOnce(&mut ckv_consul_double::Config)) -> Double {
        Self::start_on("127.0.0.1:0".parse().unwrap(), tweak)
    }

    pub fn start_on(
        addr: SocketAddr,
        tweak: impl FnOnce(&mut ckv_consul_double::Config),
    ) -> Double {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut config = ckv_consul_double::Config {
            listen: vec![addr],
            max_wait: Duration::from_secs(1),
            default_wait: Duration::from_secs(1),
            ..Default::default()
        };
        tweak(&mut config);
        let handle = rt.block_on(ckv_consul_double::spawn(config)).unwrap();
        Double {
            addr: handle.addr(),
            addrs: handle.addrs.clone(),
            rt,
            handle: Some(handle),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server (open connections are closed).
    pub fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown());
        }
    }

    pub fn call(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http(self.addr, method, path, body, &[])
    }

    pub fn put(&self, key: &str, value: &str) {
        let (status, body) = self.call("PUT", &format!("/v1/kv/{key}"), value);
        assert_eq!((status, body.as_str()), (200, "true"), "PUT {key}");
    }

    pub fn delete(&self, key: &str, recurse: bool) {
        let q = if recurse { "?recurse" } else { "" };
        let (status, _) = self.call("DELETE", &format!("/v1/kv/{key}{q}"), "");
        assert_eq!(status, 200, "DELETE {key}");
    }

    pub fn fault(&self, spec: &str) {
        let (status, body) = self.call("PUT", "/_double/fault", spec);
        assert_eq!(status, 200, "fault {spec}: {body}");
    }

    pub fn clear_faults(&self) {
        let (status, _) = self.call("DELETE", "/_double/fault", "");
        assert_eq!(status, 200);
    }

    pub fn control(&self, path: &str) -> String {
        let (status, body) = self.call("POST", path, "");
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    pub fn stats(&self) -> serde_json::Value {
        let (_, body) = self.call("GET", "/_double/stats", "");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

/// One HTTP/1.0 exchange; returns status and body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A free loopback port (nothing listens on it when this returns).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A standalone engine on `servers`, with fast timeouts and backoff, plus
/// `extra` JSON fields (e.g. `"token":"x",`).
pub fn engine(servers: &[String], prefix: &str, extra: &str) -> Engine {
    let servers = servers
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(",");
    let json = format!(
        r#"{{"servers":[{servers}],"prefix":"{prefix}",{extra}
            "timeout":{{"connect":200,"read":300,"wait":1}},
            "backoff":{{"initial":20,"max":200}},
            "share":{{"enabled":false}}}}"#
    );
    let config = ckv::config::parse(json.as_bytes()).unwrap();
    Engine::start(config).unwrap()
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub const WAIT: Duration = Duration::from_secs(5);

/// The nodes JSON of `service` on `server` (None when unknown).
pub fn nodes(e: &Engine, server: &str, service_path: &str) -> Option<String> {
    e.snapshot()
        .get(&format!("{server}/v1/kv/{service_path}"))
        .map(|s| s.nodes_json.to_string())
}

/// Log records collected so far (drained from the engine into `into`).
pub fn drain(e: &Engine, into: &mut Vec<Record>) {
    while let Some(r) = e.logs().pop() {
        into.push(r);
    }
}

pub fn count(records: &[Record], level: Level, needle: &str) -> usize {
    records
        .iter()
        .filter(|r| r.level == level && r.message.contains(needle))
        .count()
}

pub fn stats(e: &Engine) -> serde_json::Value {
    serde_json::from_str(&e.stats_json()).unwrap()
}
