//! The running server, started in stages whose types say where start-up is:
//! [`certified`] (the serving certificate and TLS configuration) → [`sources`] (where
//! policies come from, and their first load) → [`bind`] (both ports: a `Bound` server) →
//! [`serve`] (watchers, admin port, accept loop: a running [`Server`]). Each stage has its
//! own error, so a failure names its stage ([`ServeError`]). Shutdown: unready at once,
//! stop accepting, drain within the grace, exit.

mod bind;
mod certified;
mod config;
mod connections;
mod error;
mod serve;
mod sources;
mod watchers;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;

pub use config::{PolicySourceConfig, ServerConfig};
pub use error::{BindError, PolicyStartError, ServeError, SpawnError, TlsStartError};
pub use sources::{POD_NAMESPACE_ENV, POD_NAME_ENV, POD_UID_ENV};

use super::tls::CertResolver;
use crate::metrics::Metrics;
use crate::shutdown::ShutdownHandle;
use crate::source::PolicyStore;

/// A started server. Dropping it does not stop it: call [`Server::shutdown`] or trigger
/// the [`ShutdownHandle`] and await [`Server::wait`].
#[derive(Debug)]
pub struct Server {
    webhook_addr: SocketAddr,
    admin_addr: SocketAddr,
    shutdown: ShutdownHandle,
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    resolver: Arc<CertResolver>,
    task: JoinHandle<()>,
}

impl Server {
    /// Prepares certificates and policies, binds both ports and starts serving. Returns
    /// once both listeners accept connections. With the ConfigMap source, the Kubernetes
    /// client comes from the environment (in-cluster, else kubeconfig) and the server
    /// stays unready until the first list of ConfigMaps is loaded.
    pub async fn start(config: ServerConfig) -> Result<Server, ServeError> {
        Self::start_with_client(config, None).await
    }

    /// [`Server::start`] with the client the ConfigMap source uses (a test's stand-in API
    /// server); `None` infers it from the environment. The folder source ignores it.
    pub async fn start_with_client(
        config: ServerConfig,
        client: Option<kube::Client>,
    ) -> Result<Server, ServeError> {
        let metrics = Arc::new(Metrics::new());
        config.memory.validate().map_err(ServeError::Settings)?;
        let certified = certified::certify(&config, &metrics)?;
        let sources = sources::policy_sources(&config, client, &metrics).await?;
        let bound = bind::bind(&config).await?;
        Ok(bound.serve(config, certified, sources, metrics)?)
    }

    /// The bound webhook address (the real port when started on port 0).
    pub fn webhook_addr(&self) -> SocketAddr {
        self.webhook_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    pub fn store(&self) -> &Arc<PolicyStore> {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The certificate chain new handshakes get, leaf first.
    pub fn serving_chain(&self) -> Vec<Vec<u8>> {
        self.resolver
            .current()
            .cert
            .iter()
            .map(|c| c.as_ref().to_vec())
            .collect()
    }

    /// Waits until the server has stopped (after a shutdown was triggered and drained).
    pub async fn wait(self) -> Result<(), ServeError> {
        self.task.await.map_err(ServeError::Task)
    }

    /// Triggers the shutdown and waits for the drain.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.shutdown.trigger();
        self.wait().await
    }
}
