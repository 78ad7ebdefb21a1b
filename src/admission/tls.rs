//! TLS for the webhook: rustls on the ring provider only, TLS 1.2 and 1.3, ALPN h2 and
//! http/1.1, and a certificate resolver that hands every handshake the current pair.
//!
//! The resolver ignores SNI on purpose: the API server sends none when the webhook URL is
//! an IP. The pair lives in an `ArcSwap`, so a reload is one atomic store; handshakes in
//! progress and established connections keep the pair they started with.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use crate::error_chain::ErrorChain;

use crate::metrics::Metrics;

/// ALPN protocols offered, h2 first: the API server uses HTTP/2 when the server selects it.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        error: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("TLS configuration")]
    Config(#[source] rustls::Error),
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Config(e)
    }
}

/// The one crypto provider of the process: ring (two providers make rustls refuse to pick).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain with its key, checked to belong together.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub certified: Arc<CertifiedKey>,
    /// Expiry of the leaf certificate as a unix timestamp, when it parses.
    pub not_after: Option<i64>,
    /// DNS names and IP addresses of the leaf certificate.
    pub names: Vec<String>,
    /// Hash of both files' bytes, to notice a change.
    pub content_hash: u64,
}

/// Reads and checks a PEM chain (leaf first, then intermediates) and its PEM key.
pub fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<LoadedCert, TlsError> {
    let (cert_pem, key_pem) = read_pair(cert_path, key_path)?;
    parse_pair(cert_path, &cert_pem, key_path, &key_pem, provider)
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|error| TlsError::Read {
            path: p.display().to_string(),
            error,
        })
    };
    Ok((read(cert_path)?, read(key_path)?))
}

fn pair_hash(cert_pem: &[u8], key_pem: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    cert_pem.hash(&mut h);
    key_pem.hash(&mut h);
    h.finish()
}

fn parse_pair(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<LoadedCert, TlsError> {
    let invalid = |path: &Path, reason: String| TlsError::Invalid {
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(cert_path, format!("not a PEM certificate chain: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(invalid(cert_path, "no certificate in the file".to_owned()));
    };
    let (not_after, names) = leaf_details(leaf)
        .map_err(|e| invalid(cert_path, format!("cannot parse the certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| invalid(key_path, format!("not a PEM private key: {e}")))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        invalid(
            key_path,
            format!("does not go with {}: {e}", cert_path.display()),
        )
    })?;
    Ok(LoadedCert {
        certified: Arc::new(certified),
        not_after: Some(not_after),
        names,
        content_hash: pair_hash(cert_pem, key_pem),
    })
}

fn leaf_details(der: &CertificateDer<'_>) -> Result<(i64, Vec<String>), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let not_after = cert.validity().not_after.timestamp();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => names.push((*n).to_owned()),
                GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        names.push(std::net::IpAddr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        names.push(std::net::IpAddr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok((not_after, names))
}

/// Serves the current pair to every handshake.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl CertResolver {
    pub fn new(initial: Arc<CertifiedKey>) -> Self {
        Self {
            current: ArcSwap::new(initial),
        }
    }

    /// New handshakes use `pair` from now on.
    pub fn replace(&self, pair: Arc<CertifiedKey>) {
        self.current.store(pair);
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The rustls server configuration; with `client_ca`, clients must present a certificate
/// signed by one of its CAs (the API server's client certificate).
pub fn server_config(
    resolver: Arc<CertResolver>,
    client_ca: Option<&Path>,
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = client_roots(path)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Invalid {
                    path: path.display().to_string(),
                    reason: format!("unusable client CA: {e}"),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn client_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.display().to_string(),
        error,
    })?;
    let invalid = |reason: String| TlsError::Invalid {
        path: path.display().to_string(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| invalid(format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(invalid("no certificate in the file".to_owned()));
    }
    Ok(roots)
}

/// Polls the certificate files and swaps a new pair in when their bytes change.
#[derive(Debug)]
pub struct CertReloader {
    resolver: Arc<CertResolver>,
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    metrics: Arc<Metrics>,
    /// Hash of the bytes last looked at, good or not, so a broken pair is reported once.
    seen: u64,
}

impl CertReloader {
    pub fn new(
        resolver: Arc<CertResolver>,
        initial: &LoadedCert,
        cert_path: PathBuf,
        key_path: PathBuf,
        provider: Arc<CryptoProvider>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            resolver,
            cert_path,
            key_path,
            provider,
            metrics,
            seen: initial.content_hash,
        }
    }

    /// One poll: `None` if nothing changed, else whether the new pair was installed.
    pub fn poll(&mut self) -> Option<bool> {
        let (cert_pem, key_pem) = match read_pair(&self.cert_path, &self.key_path) {
            Ok(p) => p,
            // Mid-swap (a Secret volume relinking, a writer renaming): look again next poll.
            Err(e) => {
                tracing::debug!(error = %ErrorChain(&e), "certificate files not readable right now");
                return None;
            }
        };
        let hash = pair_hash(&cert_pem, &key_pem);
        if hash == self.seen {
            return None;
        }
        self.seen = hash;
        match parse_pair(
            &self.cert_path,
            &cert_pem,
            &self.key_path,
            &key_pem,
            &self.provider,
        ) {
            Ok(loaded) => {
                self.resolver.replace(Arc::clone(&loaded.certified));
                if let Some(t) = loaded.not_after {
                    self.metrics.set_certificate_not_after(t);
                }
                self.metrics.record_certificate_reload(true);
                tracing::info!(
                    cert = %self.cert_path.display(),
                    not_after = loaded.not_after,
                    "serving certificate reloaded"
                );
                Some(true)
            }
            Err(e) => {
                self.metrics.record_certificate_reload(false);
                tracing::error!(
                    error = %ErrorChain(&e),
                    "new certificate files rejected; the previous certificate keeps serving"
                );
                Some(false)
            }
        }
    }
}
