//! The HTTP client of one engine, built once at start (`ckv_init`), so that
//! everything checkable before the first request is checked there: a
//! `tls.ca_file` that is missing, unreadable, not a regular file, too large,
//! bad PEM or without a certificate fails the start with an error naming the
//! file, instead of leaving a watcher that never watches. The same holds
//! for `tls.cert_file`/`tls.key_file` (mutual TLS), `tls.server_name` and
//! the first read of `token_file`.

use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config::{Config, Scheme, Server};

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
    if let Some(f) = &config.token_file {
        f.load()?;
    }
    client_builder(config)?
        .build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

/// Where to send the requests for `member`: its URL and the shared client,
/// or, with `tls.server_name` and an `https://` member addressed by IP,
/// `https://{server_name}:{port}` with a client that resolves that name to
/// the member's address, so that the name is also sent as SNI.
pub fn member_target(
    config: &Config,
    member: &Server,
    shared: &reqwest::Client,
) -> Result<(reqwest::Client, String), String> {
    let Some(name) = &config.tls_server_name else {
        return Ok((shared.clone(), member.url.clone()));
    };
    let ip = member
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>();
    let (Scheme::Https, Ok(ip), Err(_)) = (member.scheme, ip, name.parse::<std::net::IpAddr>())
    else {
        return Ok((shared.clone(), member.url.clone()));
    };
    let client = client_builder(config)?
        .resolve(name, std::net::SocketAddr::new(ip, member.port))
        .build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))?;
    Ok((client, format!("https://{name}:{}", member.port)))
}

/// Everything of the client but the build (see [`build_client`]).
fn client_builder(config: &Config) -> Result<reqwest::ClientBuilder, String> {
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
    let identity = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(load_identity(cert, key)?),
        _ => None,
    };
    let custom = roots.is_some() || identity.is_some() || config.tls_server_name.is_some();
    b = if custom && (config.tls_verify || identity.is_some()) {
        let roots = match roots {
            Some(r) if config.tls_verify => r,
            _ => web_pki_roots(),
        };
        b.use_preconfigured_tls(tls_config(config, roots, identity)?)
    } else {
        b.use_rustls_tls()
    };
    if !config.tls_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    Ok(b)
}

/// A client certificate chain and its private key.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The rustls configuration trusting exactly `roots`, verifying server
/// certificates against `tls.server_name` when it is set, and presenting
/// the client certificate when there is one.
fn tls_config(
    config: &Config,
    roots: rustls::RootCertStore,
    identity: Option<Identity>,
) -> Result<rustls::ClientConfig, String> {
    let fail = |e: rustls::Error| format!("cannot build the TLS configuration: {e}");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(fail)?;
    let builder = match (&config.tls_server_name, config.tls_verify) {
        (_, false) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider))),
        (Some(name), true) => {
            let name = ServerName::try_from(name.clone())
                .map_err(|e| format!("tls.server_name {name:?}: {e}"))?;
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("cannot build the TLS verifier: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(FixedName { name, inner }))
        }
        (None, true) => builder.with_root_certificates(roots),
    };
    let mut tls = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("tls.cert_file/tls.key_file: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

fn web_pki_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// Reads the client certificate chain and key (PEM). Every error names the
/// file.
fn load_identity(cert: &Path, key: &Path) -> Result<Identity, String> {
    let cert_pem =
        read_capped(cert).map_err(|e| format!("tls.cert_file {}: {e}", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.cert_file {}: bad PEM: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "tls.cert_file {}: no certificates found (expected PEM \"-----BEGIN CERTIFICATE-----\" sections)",
            cert.display()
        ));
    }
    let key_pem = read_capped(key).map_err(|e| format!("tls.key_file {}: {e}", key.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "tls.key_file {}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
            key.display()
        )
    })?;
    // The key must match the certificate: checked now, not at the first
    // handshake.
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key_der.clone_key())
        .map_err(|e| format!("tls.key_file {}: {e}", key.display()))?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing)
        .keys_match()
        .map_err(|e| {
            format!(
                "tls.key_file {} does not belong to tls.cert_file {}: {e}",
                key.display(),
                cert.display()
            )
        })?;
    Ok((chain, key_der))
}

/// Verifies the server's certificate against `tls.server_name` whatever
/// host the URL names (servers addressed by IP).
#[derive(Debug)]
struct FixedName {
    name: ServerName<'static>,
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for FixedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `tls.verify = false` with a client certificate: any server certificate
/// is accepted, but handshake signatures are still checked.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
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
