//! `/v1/kv/` requests: parsing and validation in Consul's order, faults,
//! ACLs, blocking, and the read/write semantics.

use std::sync::Arc;
use std::time::Instant;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, StatusCode};

use crate::acl::{self, Authz};
use crate::blocking::{self, View, Wake};
use crate::body::{Delivery, Reply};
use crate::faults::{
    FaultKind, NO_LEADER_BODY, RATE_LIMIT_429_BODY, RPC_PREFIX, UNAVAILABLE_503_BODY,
};
use crate::gocompat::{
    self, parse_go_duration, parse_go_uint, parse_uint_error, write_json_string, GoDuration, Query,
};
use crate::http::Action;
use crate::render::{concat_compact, write_entries};
use crate::state::{lock, ListCache, Shared};
use crate::stats::BlockingGuard;
use crate::store::Store;

pub const ALLOW_KV: &str = "OPTIONS,GET,PUT,DELETE";
/// Reads at most this much of an oversized chunked PUT body before giving up.
const BODY_HARD_CAP: usize = 64 << 20;

/// Read-response metadata (`setMeta`).
#[derive(Clone, Copy, Debug)]
struct Meta {
    known_leader: bool,
    last_contact_ms: u64,
}

impl Meta {
    fn apply(&self, reply: &mut Reply, index: u64) {
        reply.set_header("x-consul-index", &index.max(1).to_string());
        reply.set_header(
            "x-consul-knownleader",
            if self.known_leader { "true" } else { "false" },
        );
        reply.set_header("x-consul-lastcontact", &self.last_contact_ms.to_string());
        reply.set_header("x-consul-query-backend", "blocking-query");
    }
}

/// Adds what Consul's `wrap` and gziphandler add to every KV response.
pub fn wrap(shared: &Shared, mut reply: Reply) -> Reply {
    let policy = if shared.cfg.token.is_some() {
        "deny"
    } else {
        "allow"
    };
    reply.set_header("x-consul-default-acl-policy", policy);
    reply.gzip_wrapped = true;
    reply
}

fn bad_request(msg: &str) -> Reply {
    Reply::text(StatusCode::BAD_REQUEST, msg)
}

fn boxed_bad(msg: &str) -> Box<Reply> {
    Box::new(bad_request(msg))
}

fn server_error(msg: impl Into<String>) -> Reply {
    Reply::text(StatusCode::INTERNAL_SERVER_ERROR, msg)
}

/// `strconv.ParseUint` of a query parameter, with Consul's 500 on failure.
fn parse_uint_param(q: &Query, name: &str) -> Result<Option<u64>, Box<Reply>> {
    if !q.has(name) {
        return Ok(None);
    }
    let v = q.get(name);
    parse_go_uint(v)
        .map(Some)
        .map_err(|reason| Box::new(server_error(parse_uint_error(v, reason))))
}

/// `conflictingFlags`.
fn conflicting(q: &Query, flags: &[&str]) -> Option<Reply> {
    if flags.iter().filter(|f| q.has(f)).count() > 1 {
        return Some(bad_request(&format!("Conflicting flags: {}", q.encode())));
    }
    None
}

/// Parsed `parse()` output that matters here.
struct Common {
    token: String,
    wait: Option<GoDuration>,
    min_index: u64,
}

/// `HTTPHandlers.parse`: token, consistency, cache-control, wait/index, plus
/// the CE namespace check of `parseEntMeta`.
fn parse_common(q: &Query, headers: &HeaderMap) -> Result<Common, Box<Reply>> {
    let token = acl::request_token(q, headers);
    if q.has("stale") && q.has("consistent") {
        return Err(boxed_bad(
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ));
    }
    if q.has("cached") && q.has("consistent") {
        return Err(boxed_bad(
            "Cannot specify ?cached with ?consistent, conflicting semantics.",
        ));
    }
    if let Some(ms) = q.value("max_stale") {
        if parse_go_duration(ms).is_none() {
            return Err(boxed_bad(&format!("Invalid max_stale value {ms:?}")));
        }
    }
    if let Some(cc) = headers.get("cache-control") {
        let cc = String::from_utf8_lossy(cc.as_bytes());
        for part in cc.split(',') {
            if let Some(v) = part.trim().strip_prefix("max-age=") {
                if parse_go_uint(v.trim()).is_err() {
                    return Err(boxed_bad("Invalid Cache-Control header."));
                }
            }
        }
    }
    let mut wait = None;
    let w = q.get("wait");
    if !w.is_empty() {
        wait = Some(parse_go_duration(w).ok_or_else(|| bad_request("Invalid wait time"))?);
    }
    let mut min_index = 0;
    let i = q.get("index");
    if !i.is_empty() {
        min_index = parse_go_uint(i).map_err(|_| bad_request("Invalid index"))?;
    }
    if q.has("ns") || headers.contains_key("x-consul-namespace") {
        return Err(boxed_bad(
            "Invalid query parameter: \"ns\" - Namespaces are a Consul Enterprise feature",
        ));
    }
    // CE's `parseEntMetaPartition`: the header first, then a non-empty
    // query parameter.
    if headers
        .get("x-consul-partition")
        .is_some_and(|v| !v.is_empty())
    {
        return Err(boxed_bad(
            "Invalid header: \"X-Consul-Partition\" - Partitions are a Consul Enterprise feature",
        ));
    }
    if !q.get("partition").is_empty() {
        return Err(boxed_bad(
            "Invalid query parameter: \"partition\" - Partitions are a Consul Enterprise feature",
        ));
    }
    Ok(Common {
        token,
        wait,
        min_index,
    })
}

/// Reads a PUT body; `Err(n)` when it is larger than `limit` (n = bytes seen).
async fn read_body(body: Incoming, limit: usize) -> Result<Vec<u8>, usize> {
    let mut body = body;
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= limit {
                buf.extend_from_slice(&data);
            } else if seen > BODY_HARD_CAP {
                break;
            }
        }
    }
    if seen > limit {
        Err(seen)
    } else {
        Ok(buf)
    }
}

fn too_large(n: u64, limit: usize) -> Reply {
    Reply::text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "Request body({n} bytes) too large, max size: {limit} bytes. See \
             https://www.consul.io/docs/agent/config/config-files#kv_max_value_size."
        ),
    )
}

/// The request as the KV endpoint sees it.
pub struct KvRequest {
    pub method: Method,
    pub key: Vec<u8>,
    pub query: Query,
    pub headers: HeaderMap,
    pub body: Incoming,
    pub path: String,
    /// The listener the request came in on.
    pub local: std::net::SocketAddr,
}

pub async fn handle(shared: &Arc<Shared>, req: KvRequest) -> Action {
    shared.stats.kv_request(req.method.as_str(), &req.path);
    match handle_inner(shared, req).await {
        Action::Reply(r) => Action::Reply(wrap(shared, r)),
        other => other,
    }
}

enum Op {
    Get(View),
    Put {
        value: Vec<u8>,
        flags: u64,
        cas: Option<u64>,
    },
    Delete {
        recurse: bool,
        cas: Option<u64>,
    },
}

async fn handle_inner(shared: &Arc<Shared>, req: KvRequest) -> Action {
    let KvRequest {
        method,
        key,
        query: q,
        headers,
        body,
        local,
        ..
    } = req;
    if method == Method::OPTIONS {
        return Action::Reply(Reply::new(StatusCode::OK).header("allow", ALLOW_KV));
    }
    if method != Method::GET && method != Method::PUT && method != Method::DELETE {
        return Action::Reply(
            Reply::text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed"),
            )
            .header("allow", ALLOW_KV),
        );
    }
    let common = match parse_common(&q, &headers) {
        Ok(c) => c,
        Err(r) => return Action::Reply(*r),
    };
    let pretty = q.has("pretty");

    // Endpoint-level validation, in KVSGet / KVSGetKeys / KVSPut / KVSDelete order.
    let op = if method == Method::GET {
        if q.has("keys") {
            let sep = if q.has("separator") {
                q.get("separator")
            } else {
                q.get("seperator")
            };
            Op::Get(View::Keys(key.clone(), sep.as_bytes().to_vec()))
        } else if q.has("recurse") {
            Op::Get(View::List(key.clone()))
        } else if key.is_empty() {
            return Action::Reply(bad_request("Missing key name"));
        } else {
            Op::Get(View::Key(key.clone()))
        }
    } else if method == Method::PUT {
        if key.is_empty() {
            return Action::Reply(bad_request("Missing key name"));
        }
        if let Some(r) = conflicting(&q, &["cas", "acquire", "release"]) {
            return Action::Reply(r);
        }
        let flags = match parse_uint_param(&q, "flags") {
            Ok(f) => f.unwrap_or(0),
            Err(r) => return Action::Reply(*r),
        };
        let cas = match parse_uint_param(&q, "cas") {
            Ok(c) => c,
            Err(r) => return Action::Reply(*r),
        };
        let limit = shared.cfg.kv_max_value_size;
        let declared = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = declared {
            if n > limit as u64 {
                return Action::Reply(too_large(n, limit));
            }
        }
        let value = match read_body(body, limit).await {
            Ok(v) => v,
            Err(n) => return Action::Reply(too_large(n as u64, limit)),
        };
        Op::Put { value, flags, cas }
    } else {
        let recurse = q.has("recurse");
        if key.is_empty() && !recurse {
            return Action::Reply(bad_request("Missing key name"));
        }
        if let Some(r) = conflicting(&q, &["recurse", "cas"]) {
            return Action::Reply(r);
        }
        let cas = match parse_uint_param(&q, "cas") {
            Ok(c) => c,
            Err(r) => return Action::Reply(*r),
        };
        Op::Delete { recurse, cas }
    };

    // "RPC" stage: datacenter, faults, ACLs, then the operation.
    let dc = q.get("dc");
    if !dc.is_empty() && dc != "dc1" {
        return Action::Reply(server_error("No path to datacenter"));
    }
    let mut meta = Meta {
        known_leader: true,
        last_contact_ms: 0,
    };
    let mut delivery = Delivery::Normal;
    let fault = shared.faults().take(method.as_str(), &key, local);
    if let Some(f) = fault {
        match f.kind {
            FaultKind::NoLeader { delay, prefix_rpc } => {
                if method == Method::GET && q.has("stale") {
                    meta.known_leader = false;
                    meta.last_contact_ms = (f.installed.elapsed().as_millis() as u64).max(1);
                } else {
                    tokio::time::sleep(delay).await;
                    let prefix = if prefix_rpc { RPC_PREFIX } else { "" };
                    return Action::Reply(server_error(format!("{prefix}{NO_LEADER_BODY}")));
                }
            }
            FaultKind::RateLimit429 => {
                return Action::Reply(Reply::text(
                    StatusCode::TOO_MANY_REQUESTS,
                    RATE_LIMIT_429_BODY,
                ))
            }
            FaultKind::Unavailable503 => {
                return Action::Reply(Reply::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    UNAVAILABLE_503_BODY,
                ))
            }
            FaultKind::TruncateBody => delivery = Delivery::Truncate,
            FaultKind::DropConnection => return Action::Drop,
            FaultKind::Slow { delay } => tokio::time::sleep(delay).await,
            FaultKind::Hang => return Action::Hang,
            FaultKind::HeadersThenStall => delivery = Delivery::Stall,
            FaultKind::Stale { last_contact_ms } => {
                meta.known_leader = false;
                meta.last_contact_ms = last_contact_ms;
            }
            // A follower answers `?stale` reads itself; it forwards the
            // others to the leader, which answers as usual.
            FaultKind::Follower {
                last_contact_ms,
                known_leader,
            } => {
                if q.has("stale") {
                    meta.known_leader = known_leader;
                    meta.last_contact_ms = last_contact_ms;
                }
            }
            FaultKind::NotJson => {
                return Action::Reply(bogus(shared, &op, meta, "<html>oops</html>"))
            }
            FaultKind::NotArray => return Action::Reply(bogus(shared, &op, meta, "{\"oops\":1}")),
            FaultKind::WrongTypes => {
                return Action::Reply(bogus(
                    shared,
                    &op,
                    meta,
                    "[{\"LockIndex\":\"0\",\"Key\":12,\"Flags\":-1,\"Value\":5,\
                     \"CreateIndex\":\"x\",\"ModifyIndex\":null}]",
                ))
            }
        }
    }
    if lock(&shared.revoked).contains(&common.token) {
        return Action::Reply(Reply::text(StatusCode::FORBIDDEN, acl::ACL_NOT_FOUND));
    }
    let authz = match acl::resolve(&shared.cfg, &common.token) {
        Ok(a) => a,
        Err(msg) => return Action::Reply(Reply::text(StatusCode::FORBIDDEN, msg)),
    };
    let action = match op {
        Op::Get(view) => read(shared, &view, &authz, &common, meta, pretty, &q).await,
        Op::Put { value, flags, cas } => {
            if !authz.can_write(&key) {
                return Action::Reply(Reply::text(
                    StatusCode::FORBIDDEN,
                    authz.denied("key:write", &key),
                ));
            }
            if q.has("acquire") || q.has("release") {
                // Sessions are not implemented: every session is unknown.
                let s = if q.has("acquire") {
                    q.get("acquire")
                } else {
                    q.get("release")
                };
                let msg = if s.is_empty() {
                    "missing session".to_string()
                } else {
                    format!("invalid session {}", gocompat::go_quote(s))
                };
                return Action::Reply(server_error(msg));
            }
            let out = shared.write().put(&key, value, flags, cas);
            if out.changed {
                shared.notify_change();
            }
            Action::Reply(bool_reply(out.ok, pretty))
        }
        Op::Delete { recurse, cas } => {
            if !authz.can_write(&key) {
                return Action::Reply(Reply::text(
                    StatusCode::FORBIDDEN,
                    authz.denied("key:write", &key),
                ));
            }
            let now = Instant::now();
            let out = if recurse {
                shared.write().delete_tree(&key, now)
            } else {
                shared.write().delete(&key, cas, now)
            };
            if out.changed {
                shared.notify_change();
            }
            Action::Reply(bool_reply(out.ok, pretty))
        }
    };
    match action {
        Action::Reply(mut r) => {
            r.delivery = delivery;
            Action::Reply(r)
        }
        other => other,
    }
}

fn bool_reply(ok: bool, pretty: bool) -> Reply {
    let mut s = if ok { "true" } else { "false" }.to_string();
    if pretty {
        s.push('\n');
    }
    Reply::json(StatusCode::OK, s)
}

/// A 200 with a malformed body (`not_json`, `not_array`, `wrong_types`).
fn bogus(shared: &Shared, op: &Op, meta: Meta, body: &'static str) -> Reply {
    let mut r = Reply::json(StatusCode::OK, body);
    if let Op::Get(view) = op {
        let (index, _) = view.evaluate(&shared.read(), Instant::now());
        meta.apply(&mut r, index);
    }
    r
}

async fn read(
    shared: &Arc<Shared>,
    view: &View,
    authz: &Authz,
    common: &Common,
    meta: Meta,
    pretty: bool,
    q: &Query,
) -> Action {
    match view {
        View::Key(k) if !authz.can_read(k) => {
            return Action::Reply(Reply::text(
                StatusCode::FORBIDDEN,
                authz.denied("key:read", k),
            ));
        }
        View::List(p) | View::Keys(p, _)
            if shared.cfg.acl_key_list_policy && authz.enabled() && !authz.can_list(p) =>
        {
            return Action::Reply(Reply::text(
                StatusCode::FORBIDDEN,
                authz.denied("key:list", p),
            ));
        }
        _ => {}
    }
    if common.min_index > 0 {
        let timeout = blocking::effective_timeout(&shared.cfg, common.wait);
        let path = format!("/v1/kv/{}", String::from_utf8_lossy(view.key()));
        let _guard = BlockingGuard::new(shared.stats.clone(), path);
        if blocking::wait(shared, view, common.min_index, timeout).await == Wake::Drop {
            return Action::Drop;
        }
    }
    let store = shared.read();
    let (index, _) = view.evaluate(&store, Instant::now());
    let mut reply = match view {
        View::List(p) if !pretty => {
            render_list_cached(&store, p, authz, &common.token, &shared.list_cache)
        }
        _ => render(&store, view, authz, pretty, q.has("raw")),
    };
    if reply.filtered && !common.token.is_empty() {
        reply
            .reply
            .set_header("x-consul-results-filtered-by-acls", "true");
    }
    drop(store);
    meta.apply(&mut reply.reply, index);
    Action::Reply(reply.reply)
}

struct Rendered {
    reply: Reply,
    filtered: bool,
}

fn not_found() -> Rendered {
    Rendered {
        reply: Reply::new(StatusCode::NOT_FOUND),
        filtered: false,
    }
}

/// A compact `?recurse` answer: the same bytes as [`render`], from the
/// entries' stored renderings, and served again from `cache` until an entry
/// changes (several watchers of one prefix get one rendering per change).
fn render_list_cached(
    store: &Store,
    prefix: &[u8],
    authz: &Authz,
    token: &str,
    cache: &std::sync::Mutex<ListCache>,
) -> Rendered {
    let version = store.version();
    if let Some((body, filtered)) = lock(cache).get(version, prefix, token) {
        return list_reply(body, filtered);
    }
    let mut filtered = false;
    let visible: Vec<_> = store
        .list(prefix)
        .filter(|(k, _)| {
            let ok = authz.can_read(k);
            filtered |= !ok;
            ok
        })
        .map(|(_, e)| e)
        .collect();
    let body = if visible.is_empty() {
        None
    } else {
        Some(bytes::Bytes::from(concat_compact(&visible)))
    };
    lock(cache).put(version, prefix, token, body.clone(), filtered);
    list_reply(body, filtered)
}

fn list_reply(body: Option<bytes::Bytes>, filtered: bool) -> Rendered {
    match body {
        Some(b) => Rendered {
            reply: Reply::json(StatusCode::OK, b),
            filtered,
        },
        None => Rendered {
            filtered,
            ..not_found()
        },
    }
}

fn render(store: &Store, view: &View, authz: &Authz, pretty: bool, raw: bool) -> Rendered {
    match view {
        View::Key(k) => {
            let Some(e) = store.get(k) else {
                return not_found();
            };
            if raw {
                let v = e.value.clone().unwrap_or_default();
                let mut r = Reply::new(StatusCode::OK)
                    .header("content-type", "text/plain")
                    .header("content-length", &v.len().to_string())
                    .header("x-content-type-options", "nosniff")
                    .header("content-security-policy", "sandbox")
                    .body(v);
                r.explicit_length = true;
                return Rendered {
                    reply: r,
                    filtered: false,
                };
            }
            let mut out = Vec::with_capacity(128);
            write_entries(&mut out, std::iter::once((k.as_slice(), e)), pretty);
            Rendered {
                reply: Reply::json(StatusCode::OK, out),
                filtered: false,
            }
        }
        View::List(p) => {
            let mut filtered = false;
            let visible = store.list(p).filter(|(k, _)| {
                let ok = authz.can_read(k);
                filtered |= !ok;
                ok
            });
            let mut out = Vec::new();
            let n = write_entries(&mut out, visible, pretty);
            if n == 0 {
                return Rendered {
                    filtered,
                    ..not_found()
                };
            }
            Rendered {
                reply: Reply::json(StatusCode::OK, out),
                filtered,
            }
        }
        View::Keys(p, sep) => {
            let mut filtered = false;
            let keys: Vec<&[u8]> = store
                .keys(p, sep)
                .into_iter()
                .filter(|k| {
                    let ok = authz.can_read(k);
                    filtered |= !ok;
                    ok
                })
                .collect();
            if keys.is_empty() && !p.is_empty() {
                return Rendered {
                    filtered,
                    ..not_found()
                };
            }
            let mut out = Vec::with_capacity(keys.len() * 32 + 2);
            write_keys(&mut out, &keys, pretty);
            Rendered {
                reply: Reply::json(StatusCode::OK, out),
                filtered,
            }
        }
    }
}

fn write_keys(out: &mut Vec<u8>, keys: &[&[u8]], pretty: bool) {
    out.push(b'[');
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if pretty {
            out.extend_from_slice(b"\n    ");
        }
        write_json_string(out, k);
    }
    if pretty && !keys.is_empty() {
        out.push(b'\n');
    }
    out.push(b']');
    if pretty {
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn fresh(store: &Store, prefix: &[u8], authz: &Authz) -> (Vec<u8>, bool, StatusCode) {
        let r = render(store, &View::List(prefix.to_vec()), authz, false, false);
        (r.reply.body.to_vec(), r.filtered, r.reply.status)
    }

    fn cached(
        store: &Store,
        prefix: &[u8],
        authz: &Authz,
        cache: &Mutex<ListCache>,
    ) -> (bytes::Bytes, bool, StatusCode) {
        let r = render_list_cached(store, prefix, authz, "t", cache);
        (r.reply.body, r.filtered, r.reply.status)
    }

    #[test]
    fn a_cached_list_answer_equals_a_fresh_render_until_an_entry_changes() {
        let mut store = Store::new(10, std::time::Duration::from_secs(60), 1);
        for i in 0..50 {
            let key = format!("p/svc{i}/10.0.0.{i}:80");
            store.put(
                key.as_bytes(),
                format!("{{\"weight\":{i}}}").into_bytes(),
                0,
                None,
            );
        }
        store.put(b"q/other", b"x".to_vec(), 0, None);
        let cache = Mutex::new(ListCache::default());
        let all = Authz::Disabled;
        let (first, filtered, status) = cached(&store, b"p/", &all, &cache);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (first.to_vec(), filtered, status),
            fresh(&store, b"p/", &all)
        );
        let (again, ..) = cached(&store, b"p/", &all, &cache);
        assert_eq!(again.as_ptr(), first.as_ptr(), "served from the cache");

        store.put(b"p/svc7/10.0.0.7:80", b"{\"weight\":99}".to_vec(), 0, None);
        let (after, ..) = cached(&store, b"p/", &all, &cache);
        assert_ne!(after, first);
        assert_eq!(after.to_vec(), fresh(&store, b"p/", &all).0);

        // A token that sees part of the prefix: filtered, and cached apart.
        let reader = Authz::Reader {
            accessor: "a".into(),
            prefix: b"p/svc1".to_vec(),
            list: false,
        };
        let part = render_list_cached(&store, b"p/", &reader, "r", &cache);
        assert!(part.filtered);
        assert_eq!((part.reply.body.to_vec(), part.filtered), {
            let f = fresh(&store, b"p/", &reader);
            (f.0, f.1)
        });
        let (whole, ..) = cached(&store, b"p/", &all, &cache);
        assert_eq!(whole, after);

        // Nothing visible: 404, as a fresh render says.
        let (_, _, status) = cached(&store, b"nothing/", &all, &cache);
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(fresh(&store, b"nothing/", &all).2, StatusCode::NOT_FOUND);
        store.delete_tree(b"p/", Instant::now());
        let (_, _, status) = cached(&store, b"p/", &all, &cache);
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
