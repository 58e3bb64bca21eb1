//! One watch per configured server: blocking queries on
//! `GET /v1/kv/{prefix}/?recurse&index=I&wait=Ws`, following the rules of
//! `consul-kv-api.md` §14 (404 is an empty prefix; an index that goes
//! backwards resets to 0; an equal index is no change; an answer without a
//! valid index is not from Consul and is an error). Errors back off
//! exponentially with jitter, capped, and reset after a success; answers
//! that do not advance the index are rate-limited. Each server has its own
//! index: nothing is shared between them, except between the members of a
//! `cluster`, which are one source with one index.
//!
//! * [`client`]: the HTTP client and TLS configuration, built at start;
//! * [`request`]: one exchange and its errors;
//! * [`index`]: the index rules; `limit`: the busy-loop guard;
//! * [`failover`]: which member of a `cluster` is asked, and when to move;

pub mod client;
pub mod failover;
pub mod index;
mod limit;
pub mod request;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::config::{Config, Scheme, Server};
use crate::kv::{self, RawEntry};
use crate::log::{Level, LogClass};
use crate::stats::{now_ms, ServerState, ServerStats};

pub use client::build_client;
pub use index::{blocking_timeout, next_index, IndexStep};
pub use request::{fetch, query_params, ErrorKind, FetchError, Fetched, Request};

use failover::Failover;
use limit::RateLimit;

/// Where a watch delivers what it learns. Implemented by the engine; tests
/// implement it to observe a watch alone.
pub trait WatchSink: Send + Sync {
    /// A full, parsed response for `server`. Returns whether anything
    /// changed, or why the response was refused (nothing applied).
    fn apply(&self, server: usize, entries: &[RawEntry<'_>]) -> Result<bool, String>;
    /// The prefix is empty on `server` (Consul answered 404).
    fn apply_empty(&self, server: usize) -> bool;
    /// A whole response from `server` is in, not yet parsed (metrics: where
    /// apply time and propagation start); its headers came at `headers_us`.
    fn received(&self, _server: usize, _headers_us: u64) {}
    fn update_stats(&self, server: usize, f: &mut dyn FnMut(&mut ServerStats));
    /// An answer of `body_bytes` and what was parsed from it were dropped
    /// (the engine may give the memory back to the OS).
    fn answer_dropped(&self, _body_bytes: usize) {}
    fn log(&self, level: Level, message: String);
    /// A message that a server can make repeat without bound: rate-limited
    /// per class by the engine ([`crate::log::LogQueue::push_limited`]).
    fn log_limited(&self, class: LogClass, level: Level, message: String) {
        let _ = class;
        self.log(level, message);
    }
}

/// The URL watched on `server`: the prefix with a trailing slash, so that
/// `upstreams` does not also match `upstreams-old/...`.
pub fn watch_url(server: &Server, prefix: &str) -> String {
    format!("{}/v1/kv/{}/", server.url, prefix)
}

/// Records that the watch of `server` cannot start or run: `state =
/// "failed"` with `last_error` (the caller retries, with backoff).
pub fn mark_failed(sink: &dyn WatchSink, server: usize, error: &str) {
    sink.update_stats(server, &mut |s| {
        s.state = ServerState::Failed;
        s.last_error = Some(error.to_owned());
        s.last_error_ms = now_ms();
    });
}

/// What an answer did to the watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// The index moved forward: ask again at once.
    Advanced,
    /// Same index, or one that went back: the next request is rate-limited.
    Stalled,
}

/// Runs the watch of source `server` (`config.servers[server]`) until
/// `stop` turns true. With `cluster`, the watch asks one member at a time
/// (see [`failover`]).
pub async fn run(
    server: usize,
    config: Arc<Config>,
    client: reqwest::Client,
    sink: Arc<dyn WatchSink>,
    mut stop: watch::Receiver<bool>,
) {
    let members = config.members(server).to_vec();
    if members.is_empty() {
        mark_failed(&*sink, server, "no such server in the configuration");
        return;
    }
    let urls: Vec<String> = members
        .iter()
        .map(|m| watch_url(m, &config.prefix))
        .collect();
    // Where each member's requests go (see `client::member_target`); the
    // logs and stats keep naming the members by their URLs.
    let mut targets = Vec::with_capacity(members.len());
    for (m, display) in members.iter().zip(&urls) {
        let (c, base) = client::member_target(&config, m, &client).unwrap_or_else(|e| {
            sink.log(
                Level::Err,
                format!("ckv: {}: {e}; not sending tls.server_name as SNI", m.url),
            );
            (client.clone(), m.url.clone())
        });
        let fetch_url = format!("{base}{}", &display[m.url.len()..]);
        targets.push((c, base, fetch_url));
    }
    let mut failover = Failover::new(&config, members.len());
    let mut backoff = Backoff::new(config.backoff.initial, config.backoff.max);
    let mut limiter = RateLimit::new();
    let mut stalled = false;
    let mut watch = WatchState::default();
    let mut streak: Option<(FetchError, Instant)> = None;
    // Until then, reads use default consistency: a `stale` answer was older
    // than `max_stale`.
    let mut stale_holdoff: Option<Instant> = None;
    let mut token_rotations_at_success = token_rotations(&config).0;
    let blocking = config.keepalive;
    let wait = config.timeout.wait;
    let probe_timeout = config.timeout.connect + config.timeout.read;
    failover.publish(&*sink, server, &urls);
    announce(&*sink, &config, &members[0], &urls[0]);

    loop {
        if *stop.borrow() {
            break;
        }
        let pause = if stalled {
            limiter.take()
        } else {
            Duration::ZERO
        };
        if !pause.is_zero() && sleep_or_stop(pause, &mut stop).await {
            break;
        }
        let active = failover.active;
        let url = urls[active].clone();
        let index = watch.index;
        let (timeout, wait_arg) = if blocking && index > 0 {
            (blocking_timeout(wait, config.timeout.read), Some(wait))
        } else {
            (config.timeout.connect + config.timeout.read, None)
        };
        let force_default = stale_holdoff.is_some_and(|t| Instant::now() < t);
        let query = query_params(&config, force_default);
        let (member_client, _, fetch_url) = &targets[active];
        let req = Request {
            config: &config,
            url: fetch_url,
            index,
            wait: wait_arg,
            timeout,
            query: &query,
            body_hint: watch.last_body_bytes,
        };
        sink.update_stats(server, &mut |s| s.requests_total += 1);
        let probing = failover.may_fail_back();
        let result = tokio::select! {
            r = fetch(member_client, &req) => Some(r),
            _ = stop.changed() => break,
            _ = failover.first_is_back(&targets[0].0, &targets[0].1, probe_timeout), if probing => None,
        };
        log_token_messages(&*sink, server, &config);
        let Some(result) = result else {
            // The first member answered a probe: return to it, keeping the
            // index (the members share one Raft log).
            failover.switch(&*sink, server, &urls, 0, watch.kept, "is healthy again");
            watch.index = watch.kept;
            continue;
        };
        let result = result.and_then(|f| check_freshness(&config, server, f, &*sink));
        let body_bytes = result.as_ref().map_or(0, |f| f.body.len());
        let outcome = result.and_then(|f| watch.handle(server, f, &*sink, &config));
        // The body and everything parsed from it are freed now.
        sink.answer_dropped(body_bytes);
        let next_pause = match outcome {
            Ok(progress) => {
                stalled = progress == Progress::Stalled;
                let failures = backoff.failures();
                backoff.reset();
                failover.succeeded(active);
                token_rotations_at_success = token_rotations(&config).0;
                let state = if blocking {
                    ServerState::Watching
                } else {
                    ServerState::Polling
                };
                let members_now = failover.members_json(&urls);
                sink.update_stats(server, &mut |s| {
                    s.state = state;
                    s.consecutive_errors = 0;
                    s.last_success_ms = now_ms();
                    if let Some(m) = &members_now {
                        s.members.clone_from(m);
                    }
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
            Err(err) if err.kind == ErrorKind::TooStale => {
                // Not a failure of the member: ask again at once, with
                // default consistency (the leader answers), on the next
                // member of a cluster.
                stalled = true;
                stale_holdoff = Some(Instant::now() + STALE_HOLDOFF);
                let detail = err.detail.clone();
                sink.update_stats(server, &mut |s| {
                    err.kind.count(&mut s.errors_by_kind);
                    s.last_error = Some(detail.clone());
                    s.last_error_ms = now_ms();
                });
                sink.log_limited(
                    LogClass::Retry,
                    Level::Warn,
                    format!(
                        "ckv: {url}: {}; asking with default consistency for the next {}s",
                        err.detail,
                        STALE_HOLDOFF.as_secs()
                    ),
                );
                if failover.len() > 1 {
                    let next = (active + 1) % failover.len();
                    failover.switch(
                        &*sink,
                        server,
                        &urls,
                        next,
                        watch.index,
                        "answered too stale",
                    );
                }
                Duration::ZERO
            }
            Err(mut err) => {
                stalled = false;
                if err.class == "HTTP 403" {
                    if let (n, Some(ago)) = token_rotations(&config) {
                        if n != token_rotations_at_success {
                            err.detail.push_str(&format!(
                                "; the token read from token_file {:.0}s ago is refused (not known to Consul yet, or without key:read on the prefix)",
                                ago.as_secs_f64()
                            ));
                        }
                    }
                }
                let delay = backoff.next_delay();
                let same = streak.as_ref().is_some_and(|(e, _)| e.class == err.class);
                let level = if same { Level::Debug } else { Level::Err };
                sink.log_limited(
                    LogClass::Retry,
                    level,
                    format!(
                        "ckv: {url}: {}; keeping the last good nodes, retry {} in {:.1}s",
                        err.detail,
                        backoff.failures(),
                        delay.as_secs_f64()
                    ),
                );
                let detail = err.detail.clone();
                let kind = err.kind;
                failover.failed(active, &detail);
                let members_now = failover.members_json(&urls);
                sink.update_stats(server, &mut |s| {
                    s.state = ServerState::Backoff;
                    s.errors_total += 1;
                    kind.count(&mut s.errors_by_kind);
                    s.consecutive_errors = s.consecutive_errors.saturating_add(1);
                    s.last_error_ms = now_ms();
                    s.last_error = Some(detail.clone());
                    if let Some(m) = &members_now {
                        s.members.clone_from(m);
                    }
                });
                if !same {
                    streak = Some((err, Instant::now()));
                }
                // A failed request may have missed changes: read afresh.
                watch.index = 0;
                if let Some(next) = failover.next_after_failure() {
                    // The index of one member is valid on the others.
                    failover.switch(&*sink, server, &urls, next, watch.kept, "keeps failing");
                    watch.index = watch.kept;
                    Duration::ZERO
                } else {
                    delay
                }
            }
        };
        if !next_pause.is_zero() && sleep_or_stop(next_pause, &mut stop).await {
            break;
        }
    }
    sink.update_stats(server, &mut |s| s.state = ServerState::Stopped);
}

/// After a `stale` answer older than `max_stale`, reads use default
/// consistency for this long before trying `stale` again.
const STALE_HOLDOFF: Duration = Duration::from_secs(30);

/// How many tokens `token_file` has read since start, and how long ago the
/// last rotation was.
fn token_rotations(config: &Config) -> (u64, Option<Duration>) {
    config
        .token_file
        .as_ref()
        .map_or((0, None), |f| f.rotations())
}

/// Logs what reading `token_file` had to say (rotations, unusable files).
fn log_token_messages(sink: &dyn WatchSink, server: usize, config: &Config) {
    let Some(f) = &config.token_file else {
        return;
    };
    let messages = f.take_messages();
    if messages.is_empty() {
        return;
    }
    for (warning, line) in messages {
        let level = if warning { Level::Warn } else { Level::Notice };
        sink.log(level, line);
    }
    let rotations = f.rotations().0;
    sink.update_stats(server, &mut |s| s.token_rotations = rotations);
}

/// Counts `X-Consul-KnownLeader: false`, and refuses a `stale` answer
/// older than `max_stale`.
fn check_freshness(
    config: &Config,
    server: usize,
    fetched: Fetched,
    sink: &dyn WatchSink,
) -> Result<Fetched, FetchError> {
    let no_leader = fetched.known_leader == Some(false);
    let contact = fetched.last_contact_ms.unwrap_or(0);
    let mut newly = false;
    sink.update_stats(server, &mut |s| {
        newly = no_leader && !s.no_known_leader;
        s.no_known_leader = no_leader;
        s.last_contact_ms = contact;
        if no_leader {
            s.known_leader_false += 1;
        }
    });
    if newly {
        sink.log(
            Level::Warn,
            format!(
                "ckv: {}: Consul answered X-Consul-KnownLeader: false (last contact with a leader {contact} ms ago); its data may be behind",
                config.servers[server].url
            ),
        );
    }
    if let Some(max) = config.max_stale {
        let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        if config.consistency == crate::config::Consistency::Stale && contact > max_ms {
            return Err(FetchError::new(
                ErrorKind::TooStale,
                "too stale",
                format!(
                    "a stale answer with X-Consul-LastContact {contact} ms, above max_stale ({max_ms} ms), was not used"
                ),
            ));
        }
    }
    Ok(fetched)
}

/// The first lines of a watch: what is watched, and how.
fn announce(sink: &dyn WatchSink, config: &Config, target: &Server, url: &str) {
    if target.scheme == Scheme::Https && config.tls_ca_file.is_none() && config.tls_verify {
        sink.log(
            Level::Info,
            format!(
                "ckv: {} uses https with the built-in web PKI roots",
                target.url
            ),
        );
    }
    let how = if config.keepalive {
        format!("blocking queries, wait {}s", config.timeout.wait.as_secs())
    } else {
        format!("polling every {}s", config.fetch_interval.as_secs())
    };
    sink.log(Level::Info, format!("ckv: watching {url} ({how})"));
}

/// The index of one watch and whether it is in a streak of resets.
#[derive(Debug, Default)]
struct WatchState {
    index: u64,
    /// The last index adopted, kept through errors: where a cluster's watch
    /// resumes on another member.
    kept: u64,
    /// Index resets since the last answer that advanced: logged once.
    resetting: bool,
    /// Body size of the last answer (the next one is read into a buffer of
    /// about this size).
    last_body_bytes: usize,
}

impl WatchState {
    /// Applies one answer. Errors leave the served data untouched.
    fn handle(
        &mut self,
        server: usize,
        fetched: Fetched,
        sink: &dyn WatchSink,
        config: &Config,
    ) -> Result<Progress, FetchError> {
        sink.received(server, fetched.headers_us);
        let Fetched {
            status,
            index: received,
            body,
            filtered_by_acls,
            ..
        } = fetched;
        let bytes = body.len() as u64;
        self.last_body_bytes = body.len();
        let mut newly_filtered = false;
        sink.update_stats(server, &mut |s| {
            s.last_response_bytes = bytes;
            newly_filtered = filtered_by_acls && !s.filtered_by_acls;
            s.filtered_by_acls = filtered_by_acls;
        });
        if newly_filtered {
            sink.log_limited(
                LogClass::HiddenKeys,
                Level::Warn,
                format!(
                    "ckv: {}: Consul hid some keys under {}/ from this ACL token (X-Consul-Results-Filtered-By-Acls); their nodes are missing",
                    config.servers[server].url, config.prefix
                ),
            );
        }
        let from_zero = self.index == 0;
        let step = if from_zero {
            // First read, or after a reset: whatever came is the state.
            IndexStep::Advance(received)
        } else {
            next_index(self.index, received)
        };
        if step == IndexStep::Unchanged {
            self.resetting = false;
            return Ok(Progress::Stalled);
        }
        let changed = if status == 404 {
            sink.apply_empty(server)
        } else {
            let bad_body = |e: String| {
                let detail = config.scrub(&crate::log::escape_untrusted(&e));
                FetchError::new(ErrorKind::BadBody, "bad response body", detail)
            };
            let entries = kv::parse_response(&body).map_err(|e| bad_body(e.0))?;
            sink.apply(server, &entries).map_err(bad_body)?
        };
        let progress = match step {
            IndexStep::Advance(i) => {
                self.index = i;
                // The re-read after a reset does not end the streak; a
                // blocking answer that moves forward does.
                if !from_zero {
                    self.resetting = false;
                }
                Progress::Advanced
            }
            IndexStep::Reset | IndexStep::Unchanged => {
                if !std::mem::replace(&mut self.resetting, true) {
                    sink.log(
                        Level::Info,
                        format!(
                            "ckv: {}: X-Consul-Index went back from {} to {received}; reading the prefix again",
                            config.servers[server].url, self.index
                        ),
                    );
                }
                sink.update_stats(server, &mut |s| s.index_resets += 1);
                self.index = 0;
                Progress::Stalled
            }
        };
        let adopted = self.index;
        self.kept = adopted;
        sink.update_stats(server, &mut |s| {
            s.last_index = adopted;
            if changed {
                s.last_change_ms = now_ms();
            }
        });
        Ok(progress)
    }
}

/// Sleeps; returns true when asked to stop meanwhile.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}
