//! Why a server could not start, by stage: each stage has its own error, and
//! [`ServeError`] says which stage failed, keeping every cause as `source()`.

use std::net::SocketAddr;

use crate::admission::tls::TlsError;
use crate::certs::CertsError;
use crate::memory::BoundsError;
use crate::source::history::HistoryError;
use crate::source::SourceError;

/// Why `serve` could not start or run. The binary prints the chain in one line
/// (`error: TLS: certificates in certs: certs/tls.key: Permission denied`).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Stage 0: settings that contradict each other (the OOM memory state's bounds).
    #[error("invalid settings")]
    Settings(#[source] BoundsError),
    /// Stage 1: the serving certificate and the TLS configuration.
    #[error("TLS")]
    Tls(#[source] TlsStartError),
    /// Stage 2, its commonest failure (a laptop without `./policies`), told apart.
    #[error(transparent)]
    NoPolicyFolder(PolicyStartError),
    /// Stage 2: the policy source (its settings, its client, its first load).
    #[error(transparent)]
    Policies(PolicyStartError),
    /// Stage 3: a listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Stage 4: a watcher thread could not be started.
    #[error(transparent)]
    Serve(#[from] SpawnError),
    /// The running server's task ended abnormally.
    #[error("server task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Stage 1: the serving certificate (found, or generated) and the TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsStartError {
    #[error("certificates in {dir}")]
    Certs {
        dir: String,
        #[source]
        error: CertsError,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Stage 2: where the policies come from, and their first load.
#[derive(Debug, thiserror::Error)]
pub enum PolicyStartError {
    #[error(
        "policy folder {0} not found: create it (an empty folder is fine) or pass --policies DIR; in a cluster, read policy ConfigMaps with --policy-namespace NS (or POD_NAMESPACE)"
    )]
    NoFolder(String),
    #[error("--policy-source configmaps needs a namespace: pass --policy-namespace NS or set POD_NAMESPACE (the downward API's metadata.namespace)")]
    NoNamespace,
    #[error("cannot build a Kubernetes client for the policy ConfigMaps")]
    Kube(#[source] kube::Error),
    #[error("policy version history")]
    History(#[source] HistoryError),
    /// Not a `source()`: a `SourceError`'s message already ends with its cause.
    #[error("policies: {0}")]
    Load(SourceError),
}

/// Stage 3: binding a listener.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub error: std::io::Error,
}

/// Stage 4: starting a watcher thread.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the {what}")]
pub struct SpawnError {
    pub what: &'static str,
    #[source]
    pub error: std::io::Error,
}

impl From<TlsStartError> for ServeError {
    fn from(e: TlsStartError) -> Self {
        ServeError::Tls(e)
    }
}

impl From<PolicyStartError> for ServeError {
    fn from(e: PolicyStartError) -> Self {
        match e {
            PolicyStartError::NoFolder(_) => ServeError::NoPolicyFolder(e),
            _ => ServeError::Policies(e),
        }
    }
}
