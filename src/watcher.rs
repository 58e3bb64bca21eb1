//! One watch per configured server: blocking queries on
//! `GET /v1/kv/{prefix}/?recurse&index=I&wait=Ws`, following the rules of
//! `consul-kv-api.md` §14 (404 is an empty prefix; an index that goes
//! backwards resets to 0; the index is clamped to ≥1; an equal index is no
//! change). Errors back off exponentially with jitter, capped, and reset after
//! a success. Each server has its own index: nothing is shared between them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::config::{Config, Scheme, Server};
use crate::kv::{self, RawEntry};
use crate::log::Level;
use crate::stats::{now_ms, ServerState, ServerStats};

/// Where a watch delivers what it learns. Implemented by the engine; tests
/// implement it to observe a watch alone.
pub trait WatchSink: Send + Sync {
    /// A full, parsed response for `server`. Returns whether anything
    /// changed, or why the response was refused (nothing applied).
    fn apply(&self, server: usize, entries: &[RawEntry<'_>]) -> Result<bool, String>;
    /// The prefix is empty on `server` (Consul answered 404).
    fn apply_empty(&self, server: usize) -> bool;
    fn update_stats(&self, server: usize, f: &mut dyn FnMut(&mut ServerStats));
    fn log(&self, level: Level, message: String);
}

/// Builds the HTTP client for one engine: connect timeout, gzip, no proxy
/// from the environment, optional CA file for https.
pub fn build_client(config: &Config) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(config.timeout.connect)
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(2)
        .gzip(config.gzip)
        .user_agent(concat!("ckv/", env!("CARGO_PKG_VERSION")))
        .use_rustls_tls();
    if let Some(path) = &config.tls_ca_file {
        let pem =
            std::fs::read(path).map_err(|e| format!("tls.ca_file {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("tls.ca_file {}: {e}", path.display()))?;
        for cert in certs {
            b = b.add_root_certificate(cert);
        }
    }
    if !config.tls_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

/// The URL watched on `server`: the prefix with a trailing slash, so that
/// `upstreams` does not also match `upstreams-old/...`.
pub fn watch_url(server: &Server, prefix: &str) -> String {
    format!("{}/v1/kv/{}/", server.url, prefix)
}

/// The index to send next, given the last one and the one just received
/// (`consul-kv-api.md` §14, rules 4 and 5).
pub fn next_index(last: u64, received: u64) -> IndexStep {
    if received < last {
        IndexStep::Reset
    } else if received == last {
        IndexStep::Unchanged
    } else {
        IndexStep::Advance(received.max(1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexStep {
    /// Went backwards (snapshot restore, tombstone reap): read again from 0.
    Reset,
    /// Same index: a timeout or a spurious wake-up; nothing to parse.
    Unchanged,
    Advance(u64),
}

/// The HTTP timeout of a blocking query: longer than Consul may hold it
/// (`wait` plus up to `wait/16` of jitter) plus the read timeout.
pub fn blocking_timeout(wait: Duration, read: Duration) -> Duration {
    wait + wait / 16 + read
}

/// A failed exchange, classified so that a streak of the same failure is
/// logged once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    /// Stable text for "is this the same failure as before".
    pub class: String,
    pub detail: String,
}

impl FetchError {
    fn new(class: impl Into<String>, detail: impl Into<String>) -> Self {
        FetchError {
            class: class.into(),
            detail: detail.into(),
        }
    }
}

#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub index: Option<u64>,
    pub body: Vec<u8>,
    /// `X-Consul-Results-Filtered-By-Acls: true`: the token cannot read
    /// every key under the prefix.
    pub filtered_by_acls: bool,
}

/// One exchange with Consul. Reads at most `max_bytes` of body.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    index: u64,
    wait: Option<Duration>,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Fetched, FetchError> {
    let mut req = client.get(url).timeout(timeout).query(&[("recurse", "")]);
    if let Some(wait) = wait {
        if index > 0 {
            req = req.query(&[
                ("index", index.to_string()),
                ("wait", format!("{}s", wait.as_secs().max(1))),
            ]);
        }
    }
    if !token.is_empty() {
        req = req.header("X-Consul-Token", token);
    }
    let mut resp = req.send().await.map_err(transport_error)?;
    let status = resp.status().as_u16();
    let index = match resp.headers().get("x-consul-index") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    FetchError::new(
                        "bad X-Consul-Index",
                        format!("X-Consul-Index is not an unsigned integer: {v:?}"),
                    )
                })?,
        ),
    };
    let filtered_by_acls = resp
        .headers()
        .get("x-consul-results-filtered-by-acls")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    if let Some(len) = resp.content_length() {
        if len > max_bytes as u64 {
            return Err(too_large(len, max_bytes));
        }
    }
    let mut body = Vec::with_capacity(resp.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > max_bytes {
            return Err(too_large((body.len() + chunk.len()) as u64, max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched {
        status,
        index,
        body,
        filtered_by_acls,
    })
}

fn too_large(len: u64, max: usize) -> FetchError {
    FetchError::new(
        "response too large",
        format!("response body of {len}+ bytes exceeds max_response_bytes ({max})"),
    )
}

fn transport_error(e: reqwest::Error) -> FetchError {
    // reqwest's own text names the URL, which never holds the token (it is
    // sent as a header), so it is safe to log.
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    let class = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "transport"
    };
    FetchError::new(class, detail)
}

/// Error text for a non-200/404 answer, classified as Consul's clients do:
/// by substring, since bodies may carry an `rpc error making call:` prefix.
fn status_error(status: u16, body: &[u8]) -> FetchError {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)])
        .trim()
        .to_string();
    let hint = match status {
        403 if text.contains("ACL not found") => " (the ACL token is unknown to Consul)",
        403 => " (the ACL token lacks key:read on the prefix)",
        429 | 503 => " (Consul is rate limiting)",
        500 if text.contains("No cluster leader") => " (Consul has no leader)",
        _ => "",
    };
    FetchError::new(
        format!("HTTP {status}"),
        format!("HTTP {status}{hint}: {text:?}"),
    )
}

/// A token bucket that keeps a misbehaving server (one that answers blocking
/// queries at once without a change, over and over) from turning the watch
/// into a busy loop. Only such answers spend tokens: a real change is
/// re-requested at once, however fast changes come.
#[derive(Debug)]
struct RateLimit {
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    const BURST: f64 = 8.0;
    const PER_SECOND: f64 = 20.0;

    fn new() -> Self {
        RateLimit {
            tokens: Self::BURST,
            last: Instant::now(),
        }
    }

    /// How long to wait before the next request.
    fn take(&mut self) -> Duration {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * Self::PER_SECOND).min(Self::BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Duration::ZERO
        } else {
            let wait = (1.0 - self.tokens) / Self::PER_SECOND;
            self.tokens = 0.0;
            self.last = now + Duration::from_secs_f64(wait);
            Duration::from_secs_f64(wait)
        }
    }
}

/// Runs the watch of `config.servers[server]` until `stop` turns true.
pub async fn run(
    server: usize,
    config: Arc<Config>,
    client: reqwest::Client,
    sink: Arc<dyn WatchSink>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(target) = config.servers.get(server).cloned() else {
        return;
    };
    let url = watch_url(&target, &config.prefix);
    let mut backoff = Backoff::new(config.backoff.initial, config.backoff.max);
    let mut limiter = RateLimit::new();
    // The last answer came back without a change (timeout, spurious wake-up,
    // or a server that ignores `index`).
    let mut unchanged = false;
    let mut index: u64 = 0;
    let mut streak: Option<(FetchError, Instant)> = None;
    let blocking = config.keepalive;
    let wait = config.timeout.wait;
    if target.scheme == Scheme::Https && config.tls_ca_file.is_none() && config.tls_verify {
        sink.log(
            Level::Info,
            format!(
                "ckv: {} uses https with the built-in web PKI roots",
                target.url
            ),
        );
    }
    sink.log(
        Level::Info,
        format!(
            "ckv: watching {url} ({})",
            if blocking {
                format!("blocking queries, wait {}s", wait.as_secs())
            } else {
                format!("polling every {}s", config.fetch_interval.as_secs())
            }
        ),
    );

    loop {
        if *stop.borrow() {
            break;
        }
        let pause = if unchanged {
            limiter.take()
        } else {
            Duration::ZERO
        };
        if !pause.is_zero() && sleep_or_stop(pause, &mut stop).await {
            break;
        }
        let (timeout, wait_arg) = if blocking && index > 0 {
            (blocking_timeout(wait, config.timeout.read), Some(wait))
        } else {
            (config.timeout.connect + config.timeout.read, None)
        };
        sink.update_stats(server, &mut |s| s.requests_total += 1);
        let result = tokio::select! {
            r = fetch(&client, &url, config.token.expose(), index, wait_arg, timeout, config.max_response_bytes) => r,
            _ = stop.changed() => break,
        };
        let outcome = result.and_then(|f| handle(server, &mut index, f, &*sink, &config));
        let next_pause = match outcome {
            Ok(changed_index) => {
                unchanged = !changed_index;
                let failures = backoff.failures();
                backoff.reset();
                let state = if blocking {
                    ServerState::Watching
                } else {
                    ServerState::Polling
                };
                sink.update_stats(server, &mut |s| {
                    s.state = state;
                    s.consecutive_errors = 0;
                    s.last_success_ms = now_ms();
                });
                if let Some((err, since)) = streak.take() {
                    sink.log(
                        Level::Notice,
                        format!(
                            "ckv: {url} recovered after {} failed attempts over {:.1}s (last: {})",
                            failures,
                            since.elapsed().as_secs_f64(),
                            err.detail
                        ),
                    );
                }
                if blocking {
                    Duration::ZERO
                } else {
                    config.fetch_interval
                }
            }
            Err(err) => {
                unchanged = false;
                let delay = backoff.next_delay();
                let same = streak.as_ref().is_some_and(|(e, _)| e.class == err.class);
                let level = if same { Level::Debug } else { Level::Err };
                sink.log(
                    level,
                    format!(
                        "ckv: {url}: {}; keeping the last good nodes, retry {} in {:.1}s",
                        err.detail,
                        backoff.failures(),
                        delay.as_secs_f64()
                    ),
                );
                let detail = err.detail.clone();
                sink.update_stats(server, &mut |s| {
                    s.state = ServerState::Backoff;
                    s.errors_total += 1;
                    s.consecutive_errors = s.consecutive_errors.saturating_add(1);
                    s.last_error_ms = now_ms();
                    s.last_error = Some(detail.clone());
                });
                if !same {
                    streak = Some((err, Instant::now()));
                }
                // A failed request may have missed changes: read afresh.
                index = 0;
                delay
            }
        };
        if !next_pause.is_zero() && sleep_or_stop(next_pause, &mut stop).await {
            break;
        }
    }
    sink.update_stats(server, &mut |s| s.state = ServerState::Stopped);
}

/// Applies one answer. Errors leave the served data untouched.
fn handle(
    server: usize,
    index: &mut u64,
    fetched: Fetched,
    sink: &dyn WatchSink,
    config: &Config,
) -> Result<bool, FetchError> {
    let Fetched {
        status,
        index: received,
        body,
        filtered_by_acls,
    } = fetched;
    if status != 200 && status != 404 {
        return Err(status_error(status, &body));
    }
    let bytes = body.len() as u64;
    let mut newly_filtered = false;
    sink.update_stats(server, &mut |s| {
        s.last_response_bytes = bytes;
        newly_filtered = filtered_by_acls && !s.filtered_by_acls;
        s.filtered_by_acls = filtered_by_acls;
    });
    if newly_filtered {
        sink.log(
            Level::Warn,
            format!(
                "ckv: {}: Consul hid some keys under {}/ from this ACL token (X-Consul-Results-Filtered-By-Acls); their nodes are missing",
                config.servers[server].url, config.prefix
            ),
        );
    }
    let step = match received {
        // First read, or after a reset: whatever came is the state.
        Some(r) if *index == 0 => IndexStep::Advance(r.max(1)),
        Some(r) => next_index(*index, r),
        // Without an index we cannot block; apply and poll again later.
        None => IndexStep::Reset,
    };
    if step == IndexStep::Unchanged {
        return Ok(false);
    }
    let changed = if status == 404 {
        sink.apply_empty(server)
    } else {
        let entries =
            kv::parse_response(&body).map_err(|e| FetchError::new("bad response body", e.0))?;
        sink.apply(server, &entries)
            .map_err(|e| FetchError::new("bad response body", e))?
    };
    match step {
        IndexStep::Advance(i) => *index = i,
        IndexStep::Reset => {
            if received.is_some() && *index > 0 {
                sink.log(
                    Level::Info,
                    format!(
                        "ckv: {}: X-Consul-Index went back from {} to {}; reading the prefix again",
                        config.servers[server].url,
                        *index,
                        received.unwrap_or(0)
                    ),
                );
                sink.update_stats(server, &mut |s| s.index_resets += 1);
            }
            *index = 0;
        }
        IndexStep::Unchanged => {}
    }
    let adopted = *index;
    sink.update_stats(server, &mut |s| {
        s.last_index = adopted;
        if changed {
            s.last_change_ms = now_ms();
        }
    });
    Ok(true)
}

/// Sleeps; returns true when asked to stop meanwhile.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rules() {
        assert_eq!(next_index(0, 5), IndexStep::Advance(5));
        assert_eq!(next_index(5, 5), IndexStep::Unchanged);
        assert_eq!(next_index(5, 9), IndexStep::Advance(9));
        assert_eq!(next_index(9, 3), IndexStep::Reset);
        // Consul never sends 0, but a broken proxy might: a reset.
        assert_eq!(next_index(9, 0), IndexStep::Reset);
    }

    #[test]
    fn blocking_timeout_exceeds_consul_hold() {
        let wait = Duration::from_secs(60);
        let read = Duration::from_millis(2000);
        let t = blocking_timeout(wait, read);
        assert!(t > wait * 17 / 16);
        assert_eq!(t, Duration::from_millis(60_000 + 3_750 + 2_000));
    }

    #[test]
    fn status_errors_are_classified_by_substring() {
        let e = status_error(500, b"rpc error making call: No cluster leader");
        assert!(e.detail.contains("no leader"), "{}", e.detail);
        let e = status_error(403, b"ACL not found");
        assert!(e.detail.contains("unknown to Consul"));
        assert_eq!(status_error(429, b"x").class, "HTTP 429");
    }

    #[test]
    fn rate_limit_allows_a_burst_then_spaces_requests() {
        let mut r = RateLimit::new();
        for _ in 0..8 {
            assert_eq!(r.take(), Duration::ZERO);
        }
        let d = r.take();
        assert!(
            d > Duration::ZERO && d <= Duration::from_millis(51),
            "{d:?}"
        );
    }
}
