//! Request routing, mirroring the layers of Consul's HTTP server:
//! `cleanhttp.PrintablePathCheckHandler`, then Go's `ServeMux` (path
//! cleaning and redirects), then the registered endpoints.

use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::Notify;

use crate::body::{self, finish, Reply, ReplyBody};
use crate::control;
use crate::gocompat::{clean_path, escape_path, html_escape, is_go_printable, percent_decode};
use crate::kv::{self, KvRequest};
use crate::state::Shared;

/// What a handler decided to do with the request.
pub enum Action {
    Reply(Reply),
    /// Close the connection without answering.
    Drop,
    /// Never answer.
    Hang,
}

/// Per-connection context.
pub struct ConnCtx {
    pub id: u64,
    /// The listener this connection came in on (faults may target one).
    pub local: std::net::SocketAddr,
    /// Notified to make the connection task drop the connection.
    pub kill: Notify,
}

/// The hyper service entry point.
pub async fn serve_request(
    shared: Arc<Shared>,
    conn: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<ReplyBody>, Infallible> {
    let accept_gzip = body::accepts_gzip(req.headers());
    match route(&shared, &conn, req).await {
        Action::Reply(r) => Ok(finish(r, accept_gzip)),
        Action::Drop => {
            conn.kill.notify_one();
            std::future::pending().await
        }
        Action::Hang => std::future::pending().await,
    }
}

/// `http.Redirect` with 301, as `ServeMux` sends it.
fn redirect(method: &Method, path: &[u8], raw_query: Option<&str>) -> Reply {
    let mut url = escape_path(path);
    if let Some(q) = raw_query {
        if !q.is_empty() {
            url.push('?');
            url.push_str(q);
        }
    }
    let mut r = Reply::new(StatusCode::MOVED_PERMANENTLY).header("location", &url);
    if method == Method::GET || method == Method::HEAD {
        r.set_header("content-type", "text/html; charset=utf-8");
    }
    if method == Method::GET {
        r.body = format!(
            "<a href=\"{}\">Moved Permanently</a>.\n\n",
            html_escape(&url)
        )
        .into();
    }
    r
}

async fn route(shared: &Arc<Shared>, conn: &ConnCtx, req: Request<Incoming>) -> Action {
    let raw_path = req.uri().path().to_string();
    if raw_path == "/_double" || raw_path.starts_with("/_double/") {
        return control::handle(shared, conn, req).await;
    }
    shared.stats.requests_total.fetch_add(1, Relaxed);
    let Some(path) = percent_decode(&raw_path, false) else {
        return Action::Reply(Reply::text(StatusCode::BAD_REQUEST, "400 Bad Request"));
    };
    // cleanhttp.PrintablePathCheckHandler: 400 with an empty body.
    if String::from_utf8_lossy(&path)
        .chars()
        .any(|c| !is_go_printable(c))
    {
        return Action::Reply(Reply::new(StatusCode::BAD_REQUEST));
    }
    let raw_query = req.uri().query();
    let cleaned = clean_path(&path);
    if cleaned != path {
        return Action::Reply(redirect(req.method(), &cleaned, raw_query));
    }
    if path == b"/v1/kv" {
        return Action::Reply(redirect(req.method(), b"/v1/kv/", raw_query));
    }
    if let Some(key) = path.strip_prefix(b"/v1/kv/") {
        let key = key.to_vec();
        let (parts, body) = req.into_parts();
        let query = crate::gocompat::Query::parse(parts.uri.query());
        return kv::handle(
            shared,
            KvRequest {
                method: parts.method,
                key,
                query,
                headers: parts.headers,
                body,
                path: String::from_utf8_lossy(&path).into_owned(),
                local: conn.local,
            },
        )
        .await;
    }
    if path == b"/v1/acl/bootstrap" {
        return Action::Reply(kv::wrap(
            shared,
            crate::bootstrap::handle(shared, req.method()),
        ));
    }
    if path == b"/v1/status/leader" {
        return Action::Reply(kv::wrap(shared, leader(shared, req.method())));
    }
    if path == b"/" {
        return Action::Reply(Reply::text(
            StatusCode::OK,
            "Consul Agent: UI disabled. To enable, set ui_config.enabled=true in the agent \
             configuration and restart.",
        ));
    }
    let msg = if raw_path.contains("/v1/") {
        "Invalid URL path: not a recognized HTTP API endpoint\n"
    } else {
        "Invalid URL path: if attempting to use the HTTP API, ensure the path starts with '/v1/'\n"
    };
    Action::Reply(Reply::text(StatusCode::NOT_FOUND, msg))
}

/// `GET /v1/status/leader`: the leader's Raft address as a JSON string,
/// `""` while a `no_leader` fault is active.
fn leader(shared: &Shared, method: &Method) -> Reply {
    if let Some(r) = single_method(method, &Method::GET) {
        return r;
    }
    let addr = if shared.faults().no_leader() {
        String::new()
    } else {
        shared.cfg.leader_addr.clone()
    };
    Reply::json(StatusCode::OK, serde_json::Value::String(addr).to_string())
}

/// `wrap`'s method handling for an endpoint registered with one method:
/// `OPTIONS` answers 200 with `Allow`, any other method but `allowed` 405.
pub fn single_method(method: &Method, allowed: &Method) -> Option<Reply> {
    let allow = format!("OPTIONS,{allowed}");
    if method == Method::OPTIONS {
        return Some(Reply::new(StatusCode::OK).header("allow", &allow));
    }
    if method != allowed {
        let r = Reply::text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed"),
        );
        return Some(r.header("allow", &allow));
    }
    None
}
