//! The HTTP client of one engine, built once at start (`ckv_init`), so that
//! everything checkable before the first request is checked there: a
//! `tls.ca_file` that is missing, unreadable, not a regular file, too large,
//! bad PEM or without a certificate fails the start with an error naming the
//! file, instead of leaving a watcher that never watches.

use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

use crate::config::Config;

/// A CA bundle larger than this is refused (Mozilla's whole bundle is about
/// 220 KB).
pub(crate) const MAX_CA_FILE_BYTES: u64 = 4 << 20;

/// Builds the HTTP client: connect timeout, gzip, no proxy from the
/// environment, no redirects (Consul never redirects a KV read, and a
/// redirect would carry the token elsewhere), and the TLS configuration.
///
/// With `tls.ca_file` (and `tls.verify` on) the certificates of that file are
/// the only roots trusted; without it, the built-in web PKI roots are.
pub fn build_client(config: &Config) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(config.timeout.connect)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .pool_max_idle_per_host(2)
        .gzip(config.gzip)
        .user_agent(concat!("ckv/", env!("CARGO_PKG_VERSION")));
    // Checked even when verification is off: a wrong path is a mistake.
    let roots = match &config.tls_ca_file {
        Some(path) => Some(load_ca_file(path)?),
        None => None,
    };
    b = match roots {
        Some(roots) if config.tls_verify => b.use_preconfigured_tls(tls_config(roots)?),
        _ => b.use_rustls_tls(),
    };
    if !config.tls_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

/// The rustls configuration trusting exactly `roots`.
fn tls_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot build the TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// Reads `path` as a PEM bundle into a root store. Every error names the
/// file and says what is wrong with it.
pub fn load_ca_file(path: &Path) -> Result<rustls::RootCertStore, String> {
    let fail = |what: String| format!("tls.ca_file {}: {what}", path.display());
    let pem = read_capped(path).map_err(fail)?;
    let mut roots = rustls::RootCertStore::empty();
    let mut found = 0usize;
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert: CertificateDer<'_> =
            cert.map_err(|e| fail(format!("bad PEM (section {}): {e}", i + 1)))?;
        roots
            .add(cert)
            .map_err(|e| fail(format!("certificate {} is not valid: {e}", i + 1)))?;
        found += 1;
    }
    if found == 0 {
        return Err(fail(
            "no certificates found (expected PEM \"-----BEGIN CERTIFICATE-----\" sections)".into(),
        ));
    }
    Ok(roots)
}

/// The file's bytes, if it is a regular file of at most
/// [`MAX_CA_FILE_BYTES`]. Opened non-blocking, so that a FIFO cannot hang
/// the start; symlinks are followed, as the path is the operator's choice
/// (`/etc/ssl/certs/...` are links).
fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_CA_FILE_BYTES {
        return Err(format!(
            "{} bytes is larger than the {MAX_CA_FILE_BYTES} bytes accepted",
            meta.len()
        ));
    }
    let mut pem = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_CA_FILE_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|e| format!("cannot read: {e}"))?;
    if pem.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(format!(
            "larger than the {MAX_CA_FILE_BYTES} bytes accepted"
        ));
    }
    Ok(pem)
}
