//! A deliberately small raw HTTP/1.1 client, so tests can assert exact
//! status codes, header spellings, framing and bodies, and see truncated or
//! dropped responses for what they are.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use ckv_consul_double::{Config, Handle};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Starts an in-process double on 127.0.0.1:0 with short waits.
pub async fn start(tweak: impl FnOnce(&mut Config)) -> Handle {
    let mut cfg = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        max_wait: Duration::from_secs(2),
        default_wait: Duration::from_secs(2),
        start_index: 1000,
        ..Config::default()
    };
    tweak(&mut cfg);
    ckv_consul_double::spawn(cfg).await.expect("start double")
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// Header names exactly as sent on the wire.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// True when the body came with Transfer-Encoding: chunked.
    pub chunked: bool,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a header is present with exactly this spelling.
    pub fn has_exact_header(&self, name: &str) -> bool {
        self.headers.iter().any(|(k, _)| k == name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn index(&self) -> u64 {
        self.header("X-Consul-Index")
            .expect("X-Consul-Index")
            .parse()
            .expect("numeric index")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// How reading a response failed.
#[derive(Debug)]
pub enum ReadError {
    /// The connection closed before a status line.
    Closed,
    /// Headers arrived, then the connection closed before the body ended.
    Truncated {
        resp: Resp,
        expected: usize,
    },
    Io(std::io::Error),
}

pub struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        Conn {
            stream: BufReader::new(TcpStream::connect(addr).await.expect("connect")),
        }
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.expect("write");
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: consul\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        self.write_raw(&bytes).await;
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Resp, ReadError> {
        self.send(method, path, headers, body).await;
        self.read_response(method == "HEAD").await
    }

    /// Reads only the status line and headers.
    pub async fn read_head(&mut self) -> Result<Resp, ReadError> {
        let mut line = String::new();
        let n = self
            .stream
            .read_line(&mut line)
            .await
            .map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            let n = self.stream.read_line(&mut h).await.map_err(ReadError::Io)?;
            if n == 0 {
                return Err(ReadError::Closed);
            }
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').expect("header line");
            headers.push((k.to_string(), v.trim().to_string()));
        }
        Ok(Resp {
            status,
            headers,
            body: Vec::new(),
            chunked: false,
        })
    }

    pub async fn read_response(&mut self, head_only: bool) -> Result<Resp, ReadError> {
        let mut resp = self.read_head().await?;
        if head_only || resp.status == 304 || resp.status == 204 {
            return Ok(resp);
        }
        let te = resp
            .header("Transfer-Encoding")
            .map(str::to_ascii_lowercase);
        if te.as_deref() == Some("chunked") {
            resp.chunked = true;
            loop {
                let mut size = String::new();
                let n = self
                    .stream
                    .read_line(&mut size)
                    .await
                    .map_err(ReadError::Io)?;
                if n == 0 {
                    return Err(ReadError::Truncated {
                        expected: usize::MAX,
                        resp,
                    });
                }
                let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
                if size == 0 {
                    let mut crlf = String::new();
                    self.stream
                        .read_line(&mut crlf)
                        .await
                        .map_err(ReadError::Io)?;
                    break;
                }
                let mut chunk = vec![0; size + 2];
                self.stream
                    .read_exact(&mut chunk)
                    .await
                    .map_err(ReadError::Io)?;
                resp.body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(len) = resp.header("Content-Length") {
            let len: usize = len.parse().expect("content-length");
            let mut buf = vec![0; len];
            let mut got = 0;
            while got < len {
                let n = self
                    .stream
                    .read(&mut buf[got..])
                    .await
                    .map_err(ReadError::Io)?;
                if n == 0 {
                    resp.body = buf[..got].to_vec();
                    return Err(ReadError::Truncated {
                        resp,
                        expected: len,
                    });
                }
                got += n;
            }
            resp.body = buf;
        } else {
            self.stream
                .read_to_end(&mut resp.body)
                .await
                .map_err(ReadError::Io)?;
        }
        Ok(resp)
    }

    /// Whether the server closed the connection (EOF) within `within`.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(within, self.stream.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// One request on a fresh connection.
pub async fn req(addr: SocketAddr, method: &str, path: &str) -> Resp {
    req_h(addr, method, path, &[], None).await
}

pub async fn req_h(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    let mut c = Conn::connect(addr).await;
    c.request(method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"))
}

pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    req(addr, "GET", path).await
}

pub async fn put(addr: SocketAddr, path: &str, body: &[u8]) -> Resp {
    req_h(addr, "PUT", path, &[], Some(body)).await
}

pub async fn delete(addr: SocketAddr, path: &str) -> Resp {
    req(addr, "DELETE", path).await
}

/// A control-API call; returns the JSON answer.
pub async fn control(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> serde_json::Value {
    let r = req_h(addr, method, path, &[], body.map(str::as_bytes)).await;
    assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
    r.json()
}

pub async fn fault(addr: SocketAddr, spec: &str) -> u64 {
    control(addr, "PUT", "/_double/fault", Some(spec)).await["id"]
        .as_u64()
        .expect("fault id")
}

pub async fn stats(addr: SocketAddr) -> serde_json::Value {
    control(addr, "GET", "/_double/stats", None).await
}

/// Asserts the read-meta headers with Go's canonical spelling.
pub fn assert_read_headers(r: &Resp, index: u64) {
    assert_eq!(r.header("X-Consul-Index"), Some(index.to_string().as_str()));
    for h in [
        "X-Consul-Index",
        "X-Consul-Knownleader",
        "X-Consul-Lastcontact",
        "X-Consul-Query-Backend",
        "X-Consul-Default-Acl-Policy",
        "Vary",
    ] {
        assert!(r.has_exact_header(h), "missing {h} in {:?}", r.headers);
    }
    assert_eq!(r.header("X-Consul-Knownleader"), Some("true"));
    assert_eq!(r.header("X-Consul-Lastcontact"), Some("0"));
    assert_eq!(r.header("X-Consul-Query-Backend"), Some("blocking-query"));
    assert_eq!(r.header("Vary"), Some("Accept-Encoding"));
    assert!(r.header("X-Consul-Effective-Consistency").is_none());
}

/// Polls the double's own stats until `field` equals `want` (5 s deadline):
/// how tests know a long poll is blocked, or a connection is gone.
pub async fn wait_stat(addr: SocketAddr, field: &str, want: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = stats(addr).await;
        if s[field] == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{field} never became {want}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until exactly `n` long polls are blocked in the double.
pub async fn wait_blocked(addr: SocketAddr, n: u64) {
    wait_stat(addr, "blocking_in_flight", n).await
}
