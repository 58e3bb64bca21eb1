//! Listeners and connections: keep-alive HTTP/1.1 with no read, write or idle
//! timeouts (as Consul's `http.Server`), an optional per-IP connection cap
//! answered with go-connlimit's raw 429, and prompt shutdown.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::http::{serve_request, ConnCtx};
use crate::state::{lock, Shared};
use crate::stats::ConnGuard;

/// go-connlimit's response when an IP has too many connections.
const TOO_MANY_CONNS_MSG: &str =
    "Your IP is issuing too many concurrent connections, please rate limit your calls\n";

fn too_many_conns_response() -> Vec<u8> {
    format!(
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{}",
        TOO_MANY_CONNS_MSG.len(),
        TOO_MANY_CONNS_MSG
    )
    .into_bytes()
}

/// A bound, not yet running server.
pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
    addrs: Vec<SocketAddr>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// The TLS acceptor of `--tls-cert`/`--tls-key`, requiring a client
/// certificate from `--tls-client-ca` when given.
fn tls_acceptor(tls: &crate::config::Tls) -> io::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {e}"))
    };
    let certs = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad("--tls-cert", &e))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| bad("--tls-key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("tls", &e))?;
    let builder = match &tls.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| bad("--tls-client-ca", &e))? {
                roots
                    .add(c.map_err(|e| bad("--tls-client-ca", &e))?)
                    .map_err(|e| bad("--tls-client-ca", &e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| bad("--tls-client-ca", &e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| bad("--tls-cert/--tls-key", &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

impl Server {
    /// Binds every `config.listen` address.
    pub async fn bind(config: Config) -> io::Result<Server> {
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for a in &config.listen {
            let l = TcpListener::bind(a).await?;
            addrs.push(l.local_addr()?);
            listeners.push(l);
        }
        if listeners.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no listen address",
            ));
        }
        let shared = Arc::new(Shared::new(config));
        lock(&shared.bound).clone_from(&addrs);
        Ok(Server {
            shared,
            listeners,
            addrs,
            tls,
        })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Serves until `shutdown` resolves, then drops every connection.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let shared = self.shared;
        let reaper = tokio::spawn(reap_loop(shared.clone()));
        let mut accepts = Vec::new();
        for l in self.listeners {
            accepts.push(tokio::spawn(accept_loop(
                shared.clone(),
                l,
                self.tls.clone(),
            )));
        }
        let mut stop = shared.shutdown.subscribe();
        tokio::select! {
            _ = shutdown => {}
            _ = stopped(&mut stop) => {}
        }
        shared.shutdown.send_replace(true);
        reaper.abort();
        for a in accepts {
            let _ = a.await;
        }
    }
}

/// A server running in the background (for in-process tests).
pub struct Handle {
    pub addrs: Vec<SocketAddr>,
    stop: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Handle {
    /// The first listen address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

/// Binds and runs a server on the current runtime.
pub async fn spawn(config: Config) -> io::Result<Handle> {
    let server = Server::bind(config).await?;
    let addrs = server.local_addrs().to_vec();
    let stop = Arc::new(Notify::new());
    let s2 = stop.clone();
    let task = tokio::spawn(async move { server.run(async move { s2.notified().await }).await });
    Ok(Handle { addrs, stop, task })
}

/// Resolves once the shutdown flag is set (or its sender is gone).
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await.map(|_| ());
}

async fn reap_loop(shared: Arc<Shared>) {
    let tick =
        (shared.cfg.tombstone_ttl / 4).clamp(Duration::from_millis(10), Duration::from_secs(30));
    loop {
        tokio::time::sleep(tick).await;
        shared.write().reap_expired(std::time::Instant::now());
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut stop = shared.shutdown.subscribe();
    let mut down = shared.down.subscribe();
    let Ok(addr) = listener.local_addr() else {
        return;
    };
    let mut listener = Some(listener);
    loop {
        let is_down = down.borrow_and_update().contains(&addr);
        match (&listener, is_down) {
            (Some(_), true) => {
                // Closed: new connections are refused, as by a stopped agent.
                listener = None;
                continue;
            }
            (None, false) => match TcpListener::bind(addr).await {
                Ok(l) => listener = Some(l),
                Err(_) => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(20)) => continue,
                        _ = stopped(&mut stop) => return,
                    }
                }
            },
            _ => {}
        }
        let Some(l) = &listener else {
            tokio::select! {
                _ = down.changed() => continue,
                _ = stopped(&mut stop) => return,
            }
        };
        tokio::select! {
            r = l.accept() => match r {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    match tls.clone() {
                        None => {
                            tokio::spawn(connection(shared, stream, peer, addr));
                        }
                        Some(acceptor) => {
                            tokio::spawn(async move {
                                // A refused client certificate ends here,
                                // with the TLS alert rustls sends.
                                if let Ok(s) = acceptor.accept(stream).await {
                                    if let Some(sni) = s.get_ref().1.server_name() {
                                        lock(&shared.sni_seen).insert(sni.to_owned());
                                    }
                                    connection(shared, s, peer, addr).await;
                                }
                            });
                        }
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            _ = down.changed() => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Decrements the per-IP connection count when the connection ends.
struct ClientSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut m = lock(&self.shared.per_client);
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

async fn connection<S>(shared: Arc<Shared>, mut stream: S, peer: SocketAddr, local: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ip = peer.ip();
    let admitted = {
        let limit = shared.max_conns_per_client.load(Relaxed);
        let mut m = lock(&shared.per_client);
        let n = m.entry(ip).or_insert(0);
        if limit > 0 && *n >= limit {
            false
        } else {
            *n += 1;
            true
        }
    };
    if !admitted {
        let _ = stream.write_all(&too_many_conns_response()).await;
        let _ = stream.shutdown().await;
        return;
    }
    let _slot = ClientSlot {
        shared: shared.clone(),
        ip,
    };
    let _guard = ConnGuard::new(shared.stats.clone());
    let ctx = Arc::new(ConnCtx {
        id: shared.next_conn_id.fetch_add(1, Relaxed),
        local,
        kill: Notify::new(),
    });
    let svc = {
        let shared = shared.clone();
        let ctx = ctx.clone();
        service_fn(move |req| serve_request(shared.clone(), ctx.clone(), req))
    };
    let conn = http1::Builder::new()
        .title_case_headers(true)
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut close = shared.close_conns.subscribe();
    close.borrow_and_update();
    let mut stop = shared.shutdown.subscribe();
    let mut down = shared.down.subscribe();
    loop {
        if down.borrow_and_update().contains(&local) {
            return;
        }
        tokio::select! {
            _ = down.changed() => {}
            _ = &mut conn => return,
            _ = ctx.kill.notified() => return,
            r = close.changed() => {
                if r.is_err() || close.borrow_and_update().except != ctx.id {
                    return;
                }
            }
            _ = stopped(&mut stop) => return,
        }
    }
}
