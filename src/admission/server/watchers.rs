//! Stage 4, first half: the watchers a server runs besides its listeners (the policy
//! folder or ConfigMaps, stored drivers, the certificate files, OOM memory).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::config::ServerConfig;
use super::error::SpawnError;
use super::sources::Source;
use crate::admission::admin::ReadyGate;
use crate::admission::state::AppState;
use crate::admission::tls::CertReloader;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::shutdown::ShutdownHandle;
use crate::source::history::{load_initial, run_persister, run_watch};
use crate::source::{Drivers, PolicyHistory, PolicyStore};

/// How often the stored version history is rewritten without a change (retries a failed
/// write, drops expired versions).
const HISTORY_TICK: Duration = Duration::from_secs(300);

/// What runs in the background besides the listeners.
#[derive(Default)]
pub(super) struct Watchers {
    pub(super) threads: Vec<std::thread::JoinHandle<()>>,
    pub(super) drivers: Option<JoinHandle<()>>,
    pub(super) configmaps: Option<JoinHandle<()>>,
}

/// The started watchers, and what reviews need of the cluster.
pub(super) struct Watching {
    pub(super) watchers: Watchers,
    /// What readiness waits for besides the policies (ConfigMap source only).
    pub(super) gates: Vec<ReadyGate>,
    /// Where executors' pins are checked.
    pub(super) drivers: Drivers,
    /// The client and namespace OOM-aware memory uses (ConfigMap source only).
    pub(super) cluster: Option<(kube::Client, String)>,
}

/// Starts the watchers of `source` and of the certificate files; all stop with `shutdown`.
pub(super) fn start_watchers(
    config: &ServerConfig,
    source: Source,
    history: Arc<PolicyHistory>,
    mut reloader: CertReloader,
    shutdown: &ShutdownHandle,
) -> Result<Watching, SpawnError> {
    let mut watchers = Watchers::default();
    let mut gates = Vec::new();
    let mut drivers = Drivers::None;
    // OOM-aware memory needs the cluster: the state ConfigMaps and the pod watch.
    let mut cluster = None;
    match source {
        Source::Folder {
            mut watcher,
            history_file,
        } => {
            if let Some(backend) = history_file {
                let stop = shutdown.clone();
                tokio::spawn(run_persister(
                    Arc::clone(&history),
                    backend,
                    HISTORY_TICK,
                    async move { stop.triggered().await },
                ));
            }
            watchers.threads.push(spawn_watch_thread(
                "policy-watch",
                config.policy_poll,
                shutdown.clone(),
                move || watcher.poll(),
            )?);
        }
        Source::Cluster(source) => {
            let source = *source;
            drivers = Drivers::Cluster(source.drivers);
            let stop = shutdown.clone();
            let driver_watch = source.driver_watch;
            watchers.drivers = Some(tokio::spawn(async move {
                tokio::select! {
                    () = driver_watch => {}
                    () = stop.triggered() => {}
                }
            }));
            // Readiness waits for the first list (PolicyStore::is_loaded); the webhook
            // and admin ports are up meanwhile so probes get a clear "not ready". The
            // stored version history loads first (bounded wait), so that a replica
            // started after a policy change still serves the versions running jobs
            // pinned.
            // Versions other replicas store arrive by watch, not by a periodic re-read.
            gates.push(ReadyGate {
                waiting: "policy version history not listed",
                done: history.listed().clone(),
            });
            let stop = shutdown.clone();
            tokio::spawn(run_watch(
                Arc::clone(&history),
                kube::Api::namespaced(source.client.clone(), &source.namespace),
                async move { stop.triggered().await },
            ));
            let stop = shutdown.clone();
            let history = Arc::clone(&history);
            let wait = config.history_load_timeout;
            let (watcher, backend) = (source.watcher, source.history);
            watchers.configmaps = Some(tokio::spawn(async move {
                load_initial(&history, &backend, wait).await;
                let persist_stop = stop.clone();
                tokio::spawn(run_persister(history, backend, HISTORY_TICK, async move {
                    persist_stop.triggered().await
                }));
                watcher.run(async move { stop.triggered().await }).await
            }));
            cluster = Some((source.client, source.namespace));
        }
    }
    watchers.threads.push(spawn_watch_thread(
        "cert-watch",
        config.cert_poll,
        shutdown.clone(),
        move || {
            reloader.poll();
        },
    )?);

    Ok(Watching {
        watchers,
        gates,
        drivers,
        cluster,
    })
}

/// What every review shares; with the cluster, the raises remembered after OOMKilled
/// pods start being watched here.
pub(super) fn review_state(
    config: &ServerConfig,
    store: &Arc<PolicyStore>,
    metrics: &Arc<Metrics>,
    drivers: Drivers,
    cluster: Option<(kube::Client, String)>,
    gates: &mut Vec<ReadyGate>,
    shutdown: &ShutdownHandle,
) -> AppState {
    // Pins only where they can be verified (stored drivers): elsewhere every driver's pin,
    // `none` included, would only earn its executors a warning.
    let pin_jobs = config.job_pinning && matches!(drivers, Drivers::Cluster(_));
    let mut state = AppState::new(
        Engine::new(config.container_names.clone()).with_job_pinning(pin_jobs),
        Arc::clone(store),
        Arc::clone(metrics),
        config.limits.clone(),
    )
    .with_drivers(drivers);
    if let Some((client, namespace)) = cluster {
        let memory = crate::memory::start(
            &config.memory,
            config.container_names.clone(),
            client,
            &namespace,
            Arc::clone(store),
            Arc::clone(metrics),
            shutdown,
        );
        gates.push(ReadyGate {
            waiting: "memory state not listed",
            done: memory.listed().clone(),
        });
        state = state.with_memory(memory);
    }
    state
}

/// Runs `tick` every `period` on its own thread until shutdown.
fn spawn_watch_thread(
    name: &'static str,
    period: Duration,
    shutdown: ShutdownHandle,
    mut tick: impl FnMut() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, SpawnError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            while !shutdown.sleep(period) {
                tick();
            }
        })
        .map_err(|error| SpawnError { what: name, error })
}
