//! Stage 1: the serving certificate, found in `--certs-dir` (or generated there), loaded
//! and checked, and the TLS configuration that serves it.

use std::sync::Arc;

use super::config::ServerConfig;
use super::error::TlsStartError;
use crate::admission::tls::{self, CertReloader, CertResolver};
use crate::certs::{self, CertPaths, Ensured};
use crate::metrics::Metrics;

/// The TLS side of a server, ready to accept handshakes.
pub(super) struct Certified {
    /// Hands each handshake the current pair; the reloader replaces it.
    pub(super) resolver: Arc<CertResolver>,
    pub(super) server_config: rustls::ServerConfig,
    /// Watches the certificate files for a new pair (run it on a thread).
    pub(super) reloader: CertReloader,
}

pub(super) fn certify(
    config: &ServerConfig,
    metrics: &Arc<Metrics>,
) -> Result<Certified, TlsStartError> {
    let paths = CertPaths::new(&config.certs_dir);
    let ensured = if config.generate_certs {
        certs::ensure(&config.certs_dir, &config.dns_names)
    } else {
        certs::require(&config.certs_dir)
    }
    .map_err(|error| TlsStartError::Certs {
        dir: config.certs_dir.display().to_string(),
        error,
    })?;
    let provider = tls::provider();
    let loaded = tls::load_pair(&paths.tls_cert, &paths.tls_key, &provider)?;
    log_certificate(&paths, ensured, &loaded, &config.dns_names);
    if let Some(t) = loaded.not_after {
        metrics.set_certificate_not_after(t);
    }
    let resolver = Arc::new(CertResolver::new(Arc::clone(&loaded.certified)));
    let server_config = tls::server_config(
        Arc::clone(&resolver),
        config.client_ca.as_deref(),
        Arc::clone(&provider),
    )?;
    let reloader = CertReloader::new(
        Arc::clone(&resolver),
        &loaded,
        paths.tls_cert.clone(),
        paths.tls_key.clone(),
        provider,
        Arc::clone(metrics),
    );
    Ok(Certified {
        resolver,
        server_config,
        reloader,
    })
}

fn log_certificate(paths: &CertPaths, ensured: Ensured, loaded: &tls::LoadedCert, dns: &[String]) {
    let ca = std::path::absolute(&paths.ca_cert).unwrap_or_else(|_| paths.ca_cert.clone());
    match ensured {
        Ensured::Generated => tracing::info!(
            dir = %paths.dir.display(),
            "generated a CA and a serving certificate"
        ),
        Ensured::IssuedFromCa => tracing::info!(
            dir = %paths.dir.display(),
            "issued a serving certificate from the existing CA"
        ),
        Ensured::Existing => {}
    }
    if paths.ca_cert.exists() {
        tracing::info!(
            ca = %ca.display(),
            names = loaded.names.join(",").as_str(),
            not_after = loaded.not_after,
            "serving certificate loaded; clients trust it with: curl --cacert {}",
            ca.display()
        );
    } else {
        tracing::info!(
            cert = %paths.tls_cert.display(),
            names = loaded.names.join(",").as_str(),
            not_after = loaded.not_after,
            "serving certificate loaded (no ca.crt next to it)"
        );
    }
    let missing: Vec<&str> = dns
        .iter()
        .map(|d| d.trim())
        .filter(|d| !d.is_empty() && !loaded.names.iter().any(|n| n == d))
        .collect();
    if !missing.is_empty() {
        tracing::warn!(
            missing = missing.join(",").as_str(),
            "the serving certificate does not cover these names; delete tls.crt and tls.key to issue a new one"
        );
    }
}
