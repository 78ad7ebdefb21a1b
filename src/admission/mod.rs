//! The HTTPS admission webhook: `POST /mutate` and `POST /validate` over TLS (h2 and
//! HTTP/1.1), `POST /validate-policy` for policy ConfigMaps, an admin port with health
//! probes and metrics, certificate and policy hot reload, and a graceful shutdown.
//!
//! `spark-admission serve` with no flags serves `./policies` with certificates from
//! `./certs` (generated on first start) on `[::]:8443`, admin on `[::]:8080`, both
//! dual-stack (IPv6 and IPv4). With `--policy-namespace NS`, or `POD_NAMESPACE` set (in a
//! cluster), policies come from the ConfigMaps of that namespace labelled
//! `spark-admission.io/policy: "true"` instead. The flags live with the CLI
//! (`crate::cli::ServeArgs`), which maps them onto a [`ServerConfig`].

mod admin;
pub mod answer;
mod body;
mod decision;
mod handlers;
mod patch_json;
mod pins;
mod pods;
mod policies;
pub mod policy_review;
pub mod prescan;
mod refusal;
pub mod review;
mod schedule;
mod server;
mod service;
mod state;
pub mod tls;
mod update;

use std::net::SocketAddr;

pub use crate::shutdown::ShutdownHandle;
pub use admin::{admin_router, Health};
pub use handlers::{webhook_router, MUTATE_PATH, VALIDATE_PATH, VALIDATE_POLICY_PATH};
pub use policies::PolicyWatcher;
pub use server::{PolicySourceConfig, Server, ServerConfig};
pub use state::{AppState, Limits};

use crate::certs::CertsError;

/// The downward-API variable with the pod's namespace (`fieldRef: metadata.namespace`).
pub const POD_NAMESPACE_ENV: &str = "POD_NAMESPACE";
/// The downward-API variable with the pod's name (`fieldRef: metadata.name`), used as
/// the `reportingInstance` of Events.
pub const POD_NAME_ENV: &str = "POD_NAME";
/// The downward-API variable with the pod's uid (`fieldRef: metadata.uid`): the
/// `PolicyLoaded` Event about the replica carries it, so `kubectl describe pod` shows it.
pub const POD_UID_ENV: &str = "POD_UID";

/// Why `serve` could not start or run. Causes stay `source()`: the binary prints the
/// chain in one line (`error: certificates in certs: certs/tls.key: Permission denied`).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("certificates in {dir}")]
    Certs {
        dir: String,
        #[source]
        error: CertsError,
    },
    #[error("TLS")]
    Tls(#[source] tls::TlsError),
    #[error(
        "policy folder {0} not found: create it (an empty folder is fine) or pass --policies DIR; in a cluster, read policy ConfigMaps with --policy-namespace NS (or POD_NAMESPACE)"
    )]
    NoPolicyFolder(String),
    #[error("--policy-source configmaps needs a namespace: pass --policy-namespace NS or set POD_NAMESPACE (the downward API's metadata.namespace)")]
    NoPolicyNamespace,
    #[error("cannot build a Kubernetes client for the policy ConfigMaps: {0}")]
    Kube(String),
    #[error("policies: {0}")]
    Policies(String),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        error: std::io::Error,
    },
    #[error("cannot start the {what}")]
    Start {
        what: &'static str,
        #[source]
        error: std::io::Error,
    },
    #[error("invalid --log-level: {0}")]
    LogLevel(String),
    #[error("server task failed: {0}")]
    Task(String),
}

impl From<tls::TlsError> for ServeError {
    fn from(e: tls::TlsError) -> Self {
        ServeError::Tls(e)
    }
}
