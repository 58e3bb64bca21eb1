//! One exchange with Consul: `GET {prefix}/?recurse[&index=I&wait=Ws]`, and
//! the classification of everything that can go wrong with it.
//!
//! Every piece of text taken from the answer (body, header values) is
//! escaped ([`escape_untrusted`]) and has the token removed before it enters
//! a [`FetchError`], which is what gets logged and stored in `stats()`.

use std::time::Duration;

use crate::config::{Config, Consistency};
use crate::log::{escape_untrusted, excerpt};
use crate::stats::ErrorKinds;

/// How much of an error body is kept for the message.
const ERROR_BODY_SHOWN: usize = 300;
/// How much of an error body is read at all.
const ERROR_BODY_READ: usize = 4096;

/// What to ask one server.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Token and `max_response_bytes` come from here.
    pub config: &'a Config,
    /// The watch URL (see [`super::watch_url`]).
    pub url: &'a str,
    /// Last index adopted; 0 asks without blocking.
    pub index: u64,
    /// `Some`: a blocking query (sent only when `index > 0`).
    pub wait: Option<Duration>,
    /// For the whole exchange, body included.
    pub timeout: Duration,
    /// Further query parameters: consistency, `dc`, `ns`, `partition`
    /// (see [`query_params`]).
    pub query: &'a [(&'static str, String)],
    /// Size of the previous answer's body: a chunked answer (Consul's, above
    /// 2 KiB) says no length, and growing the buffer by doubling would copy
    /// a large body several times.
    pub body_hint: usize,
}

/// The query parameters that `consistency` (unless `force_default`), `dc`,
/// `namespace` and `partition` add to every read.
pub fn query_params(config: &Config, force_default: bool) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    match config.consistency {
        _ if force_default => {}
        Consistency::Default => {}
        Consistency::Stale => q.push(("stale", String::new())),
        Consistency::Consistent => q.push(("consistent", String::new())),
    }
    let scope = &config.scope;
    for (name, value) in [
        ("dc", &scope.dc),
        ("ns", &scope.namespace),
        ("partition", &scope.partition),
    ] {
        if let Some(v) = value {
            q.push((name, v.clone()));
        }
    }
    q
}

/// A usable answer: 200 (entries) or 404 (empty prefix), with Consul's index.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    /// `X-Consul-Index`, always ≥ 1 (answers without one are errors).
    pub index: u64,
    pub body: Vec<u8>,
    /// `X-Consul-Results-Filtered-By-Acls: true`: the token cannot read
    /// every key under the prefix.
    pub filtered_by_acls: bool,
    /// `X-Consul-KnownLeader` (None: absent or not a boolean).
    pub known_leader: Option<bool>,
    /// `X-Consul-LastContact` in milliseconds (None: absent or bad).
    pub last_contact_ms: Option<u64>,
    /// Unix time (µs) at which the headers arrived (`stats().last_change_steps`).
    pub headers_us: u64,
}

/// What kind of failure, as counted per server in `stats()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Transport,
    Timeout,
    Http4xx,
    Http5xx,
    NoLeader,
    NotConsul,
    BadBody,
    TooLarge,
    /// A `stale` answer older than `max_stale`.
    TooStale,
}

impl ErrorKind {
    /// Counts one failure of this kind.
    pub fn count(self, kinds: &mut ErrorKinds) {
        let n = match self {
            ErrorKind::Transport => &mut kinds.transport,
            ErrorKind::Timeout => &mut kinds.timeout,
            ErrorKind::Http4xx => &mut kinds.http_4xx,
            ErrorKind::Http5xx => &mut kinds.http_5xx,
            ErrorKind::NoLeader => &mut kinds.no_leader,
            ErrorKind::NotConsul => &mut kinds.not_consul,
            ErrorKind::BadBody => &mut kinds.bad_body,
            ErrorKind::TooLarge => &mut kinds.too_large,
            ErrorKind::TooStale => &mut kinds.too_stale,
        };
        *n += 1;
    }
}

/// A failed exchange, classified so that a streak of the same failure is
/// logged once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub kind: ErrorKind,
    /// Stable text for "is this the same failure as before".
    pub class: String,
    /// Safe to log: escaped, without the token.
    pub detail: String,
}

impl FetchError {
    pub(crate) fn new(
        kind: ErrorKind,
        class: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        FetchError {
            kind,
            class: class.into(),
            detail: detail.into(),
        }
    }
}

/// One exchange. Reads at most `max_response_bytes` of a usable body, and
/// nothing of a body that comes without a valid `X-Consul-Index`.
pub async fn fetch(client: &reqwest::Client, req: &Request<'_>) -> Result<Fetched, FetchError> {
    let config = req.config;
    let mut builder = client
        .get(req.url)
        .timeout(req.timeout)
        .query(&[("recurse", "")]);
    if let Some(wait) = req.wait {
        if req.index > 0 {
            builder = builder.query(&[
                ("index", req.index.to_string()),
                ("wait", format!("{}s", wait.as_secs().max(1))),
            ]);
        }
    }
    if !req.query.is_empty() {
        builder = builder.query(req.query);
    }
    let token = config.current_token();
    if !token.is_empty() {
        let mut value = reqwest::header::HeaderValue::from_str(token.expose()).map_err(|_| {
            FetchError::new(
                ErrorKind::Http4xx,
                "bad token",
                "the token cannot be sent as an HTTP header value",
            )
        })?;
        value.set_sensitive(true);
        builder = builder.header("X-Consul-Token", value);
    }
    let mut resp = builder.send().await.map_err(transport_error)?;
    let headers_us = crate::stats::now_us();
    let status = resp.status().as_u16();
    if status != 200 && status != 404 {
        let body = read_body(&mut resp, ERROR_BODY_READ, 0, false).await?;
        return Err(status_error(config, status, &body));
    }
    let index = consul_index(config, req.url, status, resp.headers())?;
    let filtered_by_acls = resp
        .headers()
        .get("x-consul-results-filtered-by-acls")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let known_leader = match resp.headers().get("x-consul-knownleader") {
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"true") => Some(true),
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"false") => Some(false),
        _ => None,
    };
    let last_contact_ms = resp
        .headers()
        .get("x-consul-lastcontact")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let capacity = body_capacity(
        resp.content_length(),
        req.body_hint,
        config.max_response_bytes,
    );
    let body = read_body(&mut resp, config.max_response_bytes, capacity, true).await?;
    Ok(Fetched {
        status,
        index,
        body,
        filtered_by_acls,
        known_leader,
        last_contact_ms,
        headers_us,
    })
}

/// The `X-Consul-Index` of a 200 or 404. Consul sends it on every KV read and
/// never sends 0 (it clamps to 1): an answer without a valid one comes from
/// something else (a proxy that drops it, a web server at the wrong port),
/// and treating it as data would poll that server without blocking, in a
/// tight loop (red-team D8).
fn consul_index(
    config: &Config,
    url: &str,
    status: u16,
    headers: &reqwest::header::HeaderMap,
) -> Result<u64, FetchError> {
    let problem = match headers.get("x-consul-index") {
        None => "no X-Consul-Index header".to_string(),
        Some(v) => match v.to_str().ok().map(str::trim).map(str::parse::<u64>) {
            Some(Ok(i)) if i > 0 => return Ok(i),
            Some(Ok(_)) => "X-Consul-Index 0".to_string(),
            _ => {
                let raw = String::from_utf8_lossy(v.as_bytes());
                let shown = config.scrub(&excerpt(&raw, 40));
                format!("X-Consul-Index \"{shown}\" is not an unsigned integer")
            }
        },
    };
    Err(FetchError::new(
        ErrorKind::NotConsul,
        "not Consul",
        format!("HTTP {status} with {problem}: not a Consul KV endpoint? (server {url})"),
    ))
}

/// The buffer to read a body into: its declared length, else the previous
/// answer's size and a little more (an answer grows between changes), never
/// more than `max`.
pub(crate) fn body_capacity(content_length: Option<u64>, previous: usize, max: usize) -> usize {
    let expected = match content_length {
        Some(len) => usize::try_from(len).unwrap_or(usize::MAX),
        None => previous.saturating_add(previous / 8),
    };
    expected.min(max)
}

/// Reads the body into a buffer of `capacity` bytes (it grows if needed), at
/// most `max` bytes; over that, an error when `strict` (a usable body must
/// be whole), else the text is cut.
async fn read_body(
    resp: &mut reqwest::Response,
    max: usize,
    capacity: usize,
    strict: bool,
) -> Result<Vec<u8>, FetchError> {
    if let Some(len) = resp.content_length() {
        if strict && len > max as u64 {
            return Err(too_large(len, max));
        }
    }
    let hint = resp.content_length().unwrap_or(0).min(max as u64) as usize;
    let mut body = Vec::with_capacity(hint.max(capacity).min(max));
    while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > max {
            if strict {
                return Err(too_large((body.len() + chunk.len()) as u64, max));
            }
            body.extend_from_slice(&chunk[..max - body.len()]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn too_large(len: u64, max: usize) -> FetchError {
    FetchError::new(
        ErrorKind::TooLarge,
        "response too large",
        format!("response body of {len}+ bytes exceeds max_response_bytes ({max})"),
    )
}

fn transport_error(e: reqwest::Error) -> FetchError {
    // reqwest's text names our URL (the token goes in a header, never in the
    // URL); the sources may quote the peer (TLS alerts, HTTP parse errors),
    // so the whole text is escaped.
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    let detail = escape_untrusted(&detail).into_owned();
    let (kind, class) = if e.is_timeout() {
        (ErrorKind::Timeout, "timeout")
    } else if e.is_connect() {
        (ErrorKind::Transport, "connect")
    } else if e.is_body() || e.is_decode() {
        // A body cut short or a broken gzip stream (reqwest reports both as
        // decoding errors): the bytes did not arrive whole.
        (ErrorKind::Transport, "body")
    } else {
        (ErrorKind::Transport, "transport")
    };
    FetchError::new(kind, class, detail)
}

/// Error text for a non-200/404 answer, classified as Consul's clients do:
/// by substring, since bodies may carry an `rpc error making call:` prefix.
pub(crate) fn status_error(config: &Config, status: u16, body: &[u8]) -> FetchError {
    // The token goes first, from the whole body, so that a cut cannot
    // leave a piece of it behind.
    let text = config.scrub(String::from_utf8_lossy(body).trim());
    let shown = excerpt(&text, ERROR_BODY_SHOWN);
    let (kind, hint) = match status {
        403 if text.contains("ACL not found") => {
            (ErrorKind::Http4xx, " (the ACL token is unknown to Consul)")
        }
        403 => (
            ErrorKind::Http4xx,
            " (the ACL token lacks key:read on the prefix)",
        ),
        429 => (ErrorKind::Http4xx, " (Consul is rate limiting)"),
        503 => (ErrorKind::Http5xx, " (Consul is rate limiting)"),
        500 if text.contains("No cluster leader") => {
            (ErrorKind::NoLeader, " (Consul has no leader)")
        }
        300..=399 => (
            ErrorKind::NotConsul,
            " (a redirect: not a Consul KV endpoint?)",
        ),
        400..=499 => (ErrorKind::Http4xx, ""),
        500..=599 => (ErrorKind::Http5xx, ""),
        _ => (ErrorKind::NotConsul, ""),
    };
    FetchError::new(
        kind,
        format!("HTTP {status}"),
        format!("HTTP {status}{hint}: \"{shown}\""),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(token: &str) -> Config {
        let json =
            format!(r#"{{"servers":["http://127.0.0.1:8500"],"prefix":"p","token":"{token}"}}"#);
        crate::config::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn a_chunked_body_is_read_into_a_buffer_sized_from_the_previous_answer() {
        // Declared length wins; without one, the last size plus 1/8.
        assert_eq!(body_capacity(Some(100), 13_000_000, 64 << 20), 100);
        assert_eq!(body_capacity(None, 8_000_000, 64 << 20), 9_000_000);
        assert_eq!(body_capacity(None, 0, 64 << 20), 0);
        // Never above max_response_bytes, whatever the server declares.
        assert_eq!(body_capacity(None, 60 << 20, 64 << 20), 64 << 20);
        assert_eq!(body_capacity(Some(u64::MAX), 0, 1 << 20), 1 << 20);
    }

    #[test]
    fn query_params_follow_the_config() {
        // None of the new fields: nothing is added to the request.
        assert!(query_params(&config(""), false).is_empty());
        let c = crate::config::parse(
            br#"{"servers":["http://127.0.0.1:8500"],"consistency":"stale",
                 "dc":"dc2","namespace":"team","partition":"p1"}"#,
        )
        .unwrap();
        let q = query_params(&c, false);
        assert_eq!(
            q,
            vec![
                ("stale", String::new()),
                ("dc", "dc2".into()),
                ("ns", "team".into()),
                ("partition", "p1".into())
            ]
        );
        // After a too-stale answer: the scope stays, the mode goes.
        assert_eq!(query_params(&c, true).len(), 3);
        let c = crate::config::parse(
            br#"{"servers":["http://127.0.0.1:8500"],"consistency":"consistent"}"#,
        )
        .unwrap();
        assert_eq!(query_params(&c, false), vec![("consistent", String::new())]);
    }

    #[test]
    fn status_errors_are_classified_by_substring() {
        let c = config("");
        let e = status_error(&c, 500, b"rpc error making call: No cluster leader");
        assert!(e.detail.contains("no leader"), "{}", e.detail);
        assert_eq!(e.kind, ErrorKind::NoLeader);
        let e = status_error(&c, 403, b"ACL not found");
        assert!(e.detail.contains("unknown to Consul"));
        assert_eq!(e.kind, ErrorKind::Http4xx);
        assert_eq!(status_error(&c, 429, b"x").class, "HTTP 429");
        assert_eq!(status_error(&c, 502, b"x").kind, ErrorKind::Http5xx);
        assert_eq!(status_error(&c, 301, b"").kind, ErrorKind::NotConsul);
    }

    #[test]
    fn error_bodies_are_escaped_and_scrubbed() {
        let token = "8f14e45f-ceea-467f-a0e6-supersecret";
        let c = config(token);
        let body = format!("Forbidden\n[emerg] forged\u{1b}[31m x-consul-token: {token}");
        let e = status_error(&c, 403, body.as_bytes());
        assert!(!e.detail.contains(token), "{}", e.detail);
        assert!(
            !e.detail.contains('\n') && !e.detail.contains('\u{1b}'),
            "{}",
            e.detail
        );
        assert!(
            e.detail.contains("Forbidden\\n[emerg] forged\\x1b[31m"),
            "{}",
            e.detail
        );
        // A token cut by the 300-byte limit leaves no piece behind.
        let body = format!("{}{token}", "x".repeat(ERROR_BODY_SHOWN - 12));
        let e = status_error(&c, 500, body.as_bytes());
        assert!(!e.detail.contains("8f14e45f-ce"), "{}", e.detail);
    }
}
