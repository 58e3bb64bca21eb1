//! The non-Consul control API under `/_double/`: faults, snapshots,
//! restores, resets, tombstone reaps, spurious wake-ups, bulk writes,
//! connection control and counters. See README.md for each endpoint.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use crate::body::Reply;
use crate::faults::{normalize_prefix, parse_spec, FaultKind};
use crate::gocompat::{parse_go_uint, Query};
use crate::http::{Action, ConnCtx};
use crate::state::{lock, CloseSignal, DropSignal, Shared};

fn ok(v: Value) -> Action {
    Action::Reply(Reply::json(StatusCode::OK, v.to_string()))
}

fn err(status: StatusCode, msg: impl Into<String>) -> Action {
    Action::Reply(Reply::text(status, msg))
}

fn method_not_allowed(m: &Method, allow: &str) -> Action {
    Action::Reply(
        Reply::text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {m} not allowed"),
        )
        .header("allow", allow),
    )
}

async fn body_bytes(body: Incoming) -> Result<Vec<u8>, Action> {
    body.collect()
        .await
        .map(|c| c.to_bytes().to_vec())
        .map_err(|e| err(StatusCode::BAD_REQUEST, format!("reading body: {e}")))
}

fn name_param(q: &Query) -> String {
    match q.get("name") {
        "" => "default".to_string(),
        n => n.to_string(),
    }
}

pub async fn handle(shared: &Arc<Shared>, conn: &ConnCtx, req: Request<Incoming>) -> Action {
    let (parts, body) = req.into_parts();
    let q = Query::parse(parts.uri.query());
    let m = &parts.method;
    let path = parts.uri.path();
    match path {
        "/_double/stats" => {
            if m != Method::GET {
                return method_not_allowed(m, "GET");
            }
            let (index, table) = {
                let s = shared.read();
                (s.raft_index(), s.table_index())
            };
            let mut v = shared.stats.to_json(index, table);
            v["tls_sni_seen"] = json!(*lock(&shared.sni_seen));
            ok(v)
        }
        "/_double/stats/reset" => {
            if m != Method::POST {
                return method_not_allowed(m, "POST");
            }
            shared.stats.reset();
            ok(json!({"ok": true}))
        }
        "/_double/fault" => fault(shared, m, &q, body).await,
        "/_double/snapshot" => {
            if m != Method::POST {
                return method_not_allowed(m, "POST");
            }
            let name = name_param(&q);
            let state = shared.read().snapshot();
            let index = state.raft_index();
            lock(&shared.snapshots).insert(name.clone(), state);
            ok(json!({"name": name, "index": index}))
        }
        "/_double/restore" => {
            if m != Method::POST {
                return method_not_allowed(m, "POST");
            }
            let name = name_param(&q);
            let Some(state) = lock(&shared.snapshots).get(&name).cloned() else {
                return err(StatusCode::NOT_FOUND, format!("no snapshot named {name:?}"));
            };
            let (index, table) = {
                let mut s = shared.write();
                s.restore(state);
                (s.raft_index(), s.table_index())
            };
            shared.abandon_all();
            ok(json!({"name": name, "index": index, "table_index": table}))
        }
        "/_double/reset" => {
            if m != Method::POST {
                return method_not_allowed(m, "POST");
            }
            let index = {
                let mut s = shared.write();
                let index = match q.value("index") {
                    Some(v) => match parse_go_uint(v) {
                        Ok(i) => i,
                        Err(_) => return err(StatusCode::BAD_REQUEST, "invalid index"),
                    },
                    None => (s.raft_index() / 2).max(1),
                };
                s.reset(index);
                s.raft_index()
            };
            shared.abandon_all();
            ok(json!({"index": index}))
        }
        "/_double/reap" => {
            if m != Method::POST {
                return method_not_allowed(m, "POST");
            }
            let n = shared.write().reap_all();
            ok(json!({"reaped": n}))
        }
        "/_double/wake" => {
            if m != Method::POST {
                return method_not_allowed(m, "POST");
            }
            let prefix = normalize_prefix(q.get("prefix"));
            let index = shared.write().bump(&prefix, Instant::now());
            shared.notify_change();
            ok(json!({"index": index}))
        }
        "/_double/bulk" => {
            if m != Method::PUT && m != Method::POST {
                return method_not_allowed(m, "PUT, POST");
            }
            let bytes = match body_bytes(body).await {
                Ok(b) => b,
                Err(a) => return a,
            };
            let obj: serde_json::Map<String, Value> = match serde_json::from_slice(&bytes) {
                Ok(o) => o,
                Err(e) => return err(StatusCode::BAD_REQUEST, format!("invalid JSON object: {e}")),
            };
            let mut items = Vec::with_capacity(obj.len());
            for (k, v) in obj {
                let v = match v {
                    Value::String(s) => Some(s.into_bytes()),
                    Value::Null => None,
                    _ => {
                        return err(
                            StatusCode::BAD_REQUEST,
                            format!("value of {k:?} must be a string or null"),
                        )
                    }
                };
                items.push((k.into_bytes(), v));
            }
            let n = items.len();
            let out = shared.write().bulk(items, Instant::now());
            if out.changed {
                shared.notify_change();
            }
            ok(json!({"index": out.index, "changed": out.changed, "keys": n}))
        }
        "/_double/close_connections" => {
            if m != Method::POST {
                return method_not_allowed(m, "POST");
            }
            let open = shared
                .stats
                .open_connections
                .load(Relaxed)
                .saturating_sub(1);
            shared.close_conns.send_modify(|s| {
                *s = CloseSignal {
                    epoch: s.epoch.wrapping_add(1),
                    except: conn.id,
                }
            });
            let mut r = Reply::json(StatusCode::OK, json!({"closed": open}).to_string());
            r.set_header("connection", "close");
            Action::Reply(r)
        }
        "/_double/listener" => {
            if m != Method::PUT && m != Method::POST {
                return method_not_allowed(m, "PUT, POST");
            }
            let addr: std::net::SocketAddr = match q.get("addr").parse() {
                Ok(a) => a,
                Err(_) => return err(StatusCode::BAD_REQUEST, "addr must be an ip:port address"),
            };
            let up = match q.get("state") {
                "up" => true,
                "down" => false,
                _ => return err(StatusCode::BAD_REQUEST, "state must be \"up\" or \"down\""),
            };
            if !shared.listening(addr) {
                return err(
                    StatusCode::NOT_FOUND,
                    format!("{addr} is not one of this double's listeners"),
                );
            }
            shared.down.send_modify(|d| {
                if up {
                    d.remove(&addr);
                } else {
                    d.insert(addr);
                }
            });
            ok(json!({"listener": addr.to_string(), "state": if up { "up" } else { "down" }}))
        }
        "/_double/acl/revoke" => {
            if m != Method::PUT && m != Method::POST {
                return method_not_allowed(m, "PUT, POST");
            }
            let token = q.get("token");
            if token.is_empty() {
                return err(StatusCode::BAD_REQUEST, "token is required");
            }
            lock(&shared.revoked).insert(token.to_string());
            ok(json!({"revoked": true}))
        }
        "/_double/conn_limit" => {
            if m != Method::PUT && m != Method::POST {
                return method_not_allowed(m, "PUT, POST");
            }
            let Ok(max) = parse_go_uint(q.get("max")) else {
                return err(
                    StatusCode::BAD_REQUEST,
                    "max must be a non-negative integer",
                );
            };
            shared
                .max_conns_per_client
                .store(usize::try_from(max).unwrap_or(usize::MAX), Relaxed);
            ok(json!({"max_conns_per_client": max}))
        }
        _ => err(
            StatusCode::NOT_FOUND,
            format!("unknown control endpoint {path}"),
        ),
    }
}

async fn fault(shared: &Arc<Shared>, m: &Method, q: &Query, body: Incoming) -> Action {
    match *m {
        Method::GET => ok(shared.faults().to_json()),
        Method::DELETE => {
            let id = match q.value("id") {
                Some(v) => match parse_go_uint(v) {
                    Ok(i) => Some(i),
                    Err(_) => return err(StatusCode::BAD_REQUEST, "invalid id"),
                },
                None => None,
            };
            let n = shared.faults().clear(id);
            ok(json!({"cleared": n}))
        }
        Method::PUT | Method::POST => {
            let bytes = match body_bytes(body).await {
                Ok(b) => b,
                Err(a) => return a,
            };
            let spec = match parse_spec(&bytes) {
                Ok(s) => s,
                Err(e) => return err(StatusCode::BAD_REQUEST, e),
            };
            let drop_blocked = spec.kind == FaultKind::DropConnection
                && (spec.methods.is_empty() || spec.methods.iter().any(|m| m == "GET"));
            let prefix = spec.path_prefix.clone();
            let id = shared.faults().add(spec);
            if drop_blocked {
                shared.drop_blocked.send_modify(|s| {
                    *s = DropSignal {
                        epoch: s.epoch.wrapping_add(1),
                        prefix,
                    }
                });
            }
            ok(json!({"id": id}))
        }
        _ => method_not_allowed(m, "GET, PUT, POST, DELETE"),
    }
}
