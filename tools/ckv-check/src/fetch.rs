//! One non-blocking read of a server's prefix: `GET /v1/kv/{prefix}?recurse`.

use std::time::Duration;

use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};

/// What the server answered.
#[derive(Debug)]
pub struct Read {
    pub status: u16,
    pub index: Option<u64>,
    pub filtered_by_acls: bool,
    /// `(key, base64 value)` in the order received; empty on 404.
    pub entries: Vec<(String, Option<String>)>,
    pub bytes: usize,
}

#[derive(Debug)]
pub struct Request<'a> {
    pub url: &'a str,
    pub prefix: &'a str,
    pub token: &'a str,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_bytes: usize,
    pub ca_file: Option<&'a std::path::Path>,
    pub verify: bool,
}

/// The path read: without a trailing slash, so it covers both APISIX's read
/// (`/v1/kv/{prefix}`) and ckv's (`/v1/kv/{prefix}/`).
pub fn path_of(prefix: &str) -> String {
    format!("/v1/kv/{prefix}?recurse")
}

/// Reads the prefix. Errors name the server and what failed, never the token.
pub fn read(req: &Request<'_>) -> Result<Read, String> {
    let mut tls = TlsConfig::builder().disable_verification(!req.verify);
    if let Some(path) = req.ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("tls.ca_file {}: {e}", path.display()))?;
        let mut certs = Vec::new();
        for item in parse_pem(&pem) {
            match item {
                Ok(PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => return Err(format!("tls.ca_file {}: {e}", path.display())),
            }
        }
        if certs.is_empty() {
            return Err(format!(
                "tls.ca_file {}: no certificate in the file",
                path.display()
            ));
        }
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(req.connect_timeout))
        .timeout_recv_response(Some(req.read_timeout))
        .timeout_recv_body(Some(req.read_timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .tls_config(tls.build())
        .user_agent(concat!("ckv-check/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let url = format!("{}{}", req.url, path_of(req.prefix));
    let mut call = agent.get(&url);
    if !req.token.is_empty() {
        call = call.header("X-Consul-Token", req.token);
    }
    let mut resp = call
        .call()
        .map_err(|e| format!("{}: {}", req.url, describe(&e)))?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let index = header("X-Consul-Index").and_then(|v| v.parse().ok());
    let filtered_by_acls = header("X-Consul-Results-Filtered-By-Acls").as_deref() == Some("true");
    let body = resp
        .body_mut()
        .with_config()
        .limit(req.max_bytes as u64)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => format!(
                "{}: the response is larger than max_response_bytes ({} bytes); ckv would refuse it",
                req.url, req.max_bytes
            ),
            e => format!("{}: reading the response: {}", req.url, describe(&e)),
        })?;
    let bytes = body.len();
    match status {
        200 => {}
        404 => {
            return Ok(Read {
                status,
                index,
                filtered_by_acls,
                entries: Vec::new(),
                bytes,
            })
        }
        _ => {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)])
                .trim()
                .to_string();
            let hint = match status {
                403 => {
                    " (the ACL token is unknown, or lacks key:read/key:list on the prefix \
                     without its trailing slash, which is what APISIX reads)"
                }
                401 => " (authentication required)",
                _ => "",
            };
            return Err(format!("{}: HTTP {status}{hint}: {text:?}", req.url));
        }
    }
    let entries = parse_body(&body).map_err(|e| format!("{}: {e}", req.url))?;
    Ok(Read {
        status,
        index,
        filtered_by_acls,
        entries,
        bytes,
    })
}

/// The `Key` and `Value` of each element of a `?recurse` answer.
fn parse_body(body: &[u8]) -> Result<Vec<(String, Option<String>)>, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the response is not valid JSON: {e}"))?;
    let serde_json::Value::Array(items) = doc else {
        return Err("the response is not a JSON array".into());
    };
    Ok(items
        .iter()
        .map(|item| {
            let key = item
                .get("Key")
                .and_then(|k| k.as_str())
                .unwrap_or("")
                .to_string();
            let value = item
                .get("Value")
                .and_then(|v| v.as_str())
                .map(str::to_string);
            (key, value)
        })
        .collect())
}

fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t})"),
        ureq::Error::Io(io) => format!("cannot connect or read: {io}"),
        ureq::Error::HostNotFound => "host not found".into(),
        e => e.to_string(),
    }
}
