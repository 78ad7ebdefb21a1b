//! Stage 2: where the policies come from. The folder is loaded here, before the ports
//! open; the ConfigMaps load in the background once serving (the server stays unready
//! until their first list), with the driver cache that checks executors' pins.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::config::{PolicySourceConfig, ServerConfig};
use super::error::PolicyStartError;
use crate::admission::policies::PolicyWatcher;
use crate::metrics::Metrics;
use crate::source::events::Reporter;
use crate::source::history::{load_initial, ConfigMapBackend, FileBackend};
use crate::source::{ConfigMapWatcher, DriverCache, PolicyHistory, PolicyStore};

/// The downward-API variable with the pod's namespace (`fieldRef: metadata.namespace`).
pub const POD_NAMESPACE_ENV: &str = "POD_NAMESPACE";
/// The downward-API variable with the pod's name (`fieldRef: metadata.name`), used as
/// the `reportingInstance` of Events.
pub const POD_NAME_ENV: &str = "POD_NAME";
/// The downward-API variable with the pod's uid (`fieldRef: metadata.uid`): the
/// `PolicyLoaded` Event about the replica carries it, so `kubectl describe pod` shows it.
pub const POD_UID_ENV: &str = "POD_UID";

/// The policy store and what fills it, not yet running.
pub(super) struct Sources {
    pub(super) store: Arc<PolicyStore>,
    pub(super) history: Arc<PolicyHistory>,
    pub(super) source: Source,
}

pub(super) enum Source {
    /// The folder, loaded; its watcher rescans it, and the history file (if any) keeps
    /// the versions across restarts.
    Folder {
        watcher: PolicyWatcher,
        history_file: Option<FileBackend>,
    },
    /// The ConfigMaps of a namespace.
    Cluster(Box<Cluster>),
}

/// The ConfigMap source and what else needs the cluster.
pub(super) struct Cluster {
    pub(super) client: kube::Client,
    pub(super) namespace: String,
    pub(super) watcher: ConfigMapWatcher,
    /// Where the version history is stored.
    pub(super) history: ConfigMapBackend,
    /// Stored drivers, for executors' pins, and the watch that fills them.
    pub(super) drivers: Arc<DriverCache>,
    pub(super) driver_watch: BoxFuture<'static, ()>,
}

/// The policy source of `config`; `client` is the cluster's (`None`: inferred from the
/// environment), used by the ConfigMap source only.
pub(super) async fn policy_sources(
    config: &ServerConfig,
    client: Option<kube::Client>,
    metrics: &Arc<Metrics>,
) -> Result<Sources, PolicyStartError> {
    let history = Arc::new(
        PolicyHistory::new(
            config.history_max_age,
            config.history_max_bytes,
            Some(Arc::clone(metrics)),
        )
        .with_configmaps(config.history_configmaps)
        .map_err(PolicyStartError::History)?,
    );
    let store = Arc::new(PolicyStore::with_history(Arc::clone(&history)));
    let source = match &config.policy_source {
        PolicySourceConfig::Folder => {
            if !config.policies_dir.is_dir() {
                return Err(PolicyStartError::NoFolder(
                    config.policies_dir.display().to_string(),
                ));
            }
            let history_file = config.history_dir.as_deref().map(FileBackend::new);
            if let Some(backend) = &history_file {
                load_initial(&history, backend, config.history_load_timeout).await;
            }
            let mut watcher = PolicyWatcher::new(
                &config.policies_dir,
                Arc::clone(&store),
                Arc::clone(metrics),
            );
            watcher.initial_load().map_err(PolicyStartError::Load)?;
            Source::Folder {
                watcher,
                history_file,
            }
        }
        PolicySourceConfig::ConfigMaps { namespace } => {
            if namespace.is_empty() {
                return Err(PolicyStartError::NoNamespace);
            }
            let client = match client {
                Some(c) => c,
                None => kube::Client::try_default()
                    .await
                    .map_err(PolicyStartError::Kube)?,
            };
            let instance = std::env::var(POD_NAME_ENV)
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok());
            let (drivers, driver_watch) =
                DriverCache::new(client.clone(), config.container_names.clone());
            let watcher = ConfigMapWatcher::new(
                client.clone(),
                namespace.clone(),
                Arc::clone(&store),
                Arc::clone(metrics),
                Reporter::new(instance).in_pod(
                    std::env::var(POD_NAMESPACE_ENV).ok(),
                    std::env::var(POD_UID_ENV).ok(),
                ),
            );
            Source::Cluster(Box::new(Cluster {
                history: ConfigMapBackend::new(client.clone(), namespace),
                client,
                namespace: namespace.clone(),
                watcher,
                drivers,
                driver_watch: driver_watch.boxed(),
            }))
        }
    };
    Ok(Sources {
        store,
        history,
        source,
    })
}
