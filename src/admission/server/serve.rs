//! Stage 4: a [`Bound`] server starts serving. The watchers start (policy folder or
//! ConfigMaps, stored drivers, certificate files, OOM memory), then the admin port and the
//! webhook's accept loop; [`Running::stop`] is the shutdown sequence after the drain.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::bind::Bound;
use super::certified::Certified;
use super::config::{PolicySourceConfig, ServerConfig};
use super::connections::{accept_loop, Connections};
use super::error::SpawnError;
use super::sources::Sources;
use super::watchers::{review_state, start_watchers, Watchers};
use super::Server;
use crate::admission::admin::{admin_router, Health};
use crate::admission::handlers::webhook_router;
use crate::metrics::Metrics;
use crate::shutdown::ShutdownHandle;

/// How long the admin port may take to close once the webhook has drained.
const ADMIN_STOP: Duration = Duration::from_secs(2);

impl Bound {
    /// Starts everything and returns the running server.
    pub(super) fn serve(
        self,
        config: ServerConfig,
        certified: Certified,
        sources: Sources,
        metrics: Arc<Metrics>,
    ) -> Result<Server, SpawnError> {
        let shutdown = ShutdownHandle::new();
        let Sources {
            store,
            history,
            source,
        } = sources;
        let mut watching = start_watchers(&config, source, history, certified.reloader, &shutdown)?;
        let state = review_state(
            &config,
            &store,
            &metrics,
            watching.drivers,
            watching.cluster,
            &mut watching.gates,
            &shutdown,
        );
        let connections = Arc::new(Connections {
            acceptor: TlsAcceptor::from(Arc::new(certified.server_config)),
            router: match config.router_override.clone() {
                Some(router) => router,
                None => webhook_router(Arc::new(state)),
            },
            handshake_timeout: config.handshake_timeout,
            header_read_timeout: config.header_read_timeout,
            metrics: Arc::clone(&metrics),
        });
        let health = Health {
            store: Arc::clone(&store),
            shutdown: shutdown.clone(),
            gates: watching.gates,
        };
        let (admin_stop, admin_stopped) = oneshot::channel::<()>();
        let admin = tokio::spawn(
            axum::serve(self.admin, admin_router(health, Arc::clone(&metrics)))
                .with_graceful_shutdown(async move {
                    let _ = admin_stopped.await;
                })
                .into_future(),
        );
        let accept = tokio::spawn(accept_loop(
            self.webhook,
            connections,
            config.max_connections.max(1),
            config.shutdown_grace,
            shutdown.clone(),
        ));
        log_serving(&config, self.webhook_addr, self.admin_addr);
        let running = Running {
            accept,
            admin,
            admin_stop,
            watchers: watching.watchers,
        };
        Ok(Server {
            webhook_addr: self.webhook_addr,
            admin_addr: self.admin_addr,
            shutdown,
            store,
            metrics,
            resolver: certified.resolver,
            task: tokio::spawn(running.stop()),
        })
    }
}

fn log_serving(config: &ServerConfig, webhook: SocketAddr, admin: SocketAddr) {
    let policy_origin = match &config.policy_source {
        PolicySourceConfig::Folder => format!("folder {}", config.policies_dir.display()),
        PolicySourceConfig::ConfigMaps { namespace } => format!(
            "ConfigMaps in {namespace} labelled {}",
            crate::source::configmap::label_selector()
        ),
    };
    tracing::info!(
        webhook = %format!("https://{webhook}"),
        admin = %format!("http://{admin}"),
        policies = policy_origin.as_str(),
        "serving: POST /mutate, /validate and /validate-policy; /healthz, /readyz and /metrics on the admin port"
    );
}

/// A serving server's tasks, until they stop.
struct Running {
    accept: JoinHandle<()>,
    admin: JoinHandle<std::io::Result<()>>,
    admin_stop: oneshot::Sender<()>,
    watchers: Watchers,
}

impl Running {
    /// Waits for the webhook to drain (after the shutdown signal), then closes the admin
    /// port and waits for the watchers.
    async fn stop(self) {
        if let Err(e) = self.accept.await {
            tracing::error!(error = %e, "webhook listener task failed");
        }
        let _ = self.admin_stop.send(());
        let mut admin = self.admin;
        match tokio::time::timeout(ADMIN_STOP, &mut admin).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "admin server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "admin server task failed"),
            Err(_) => admin.abort(),
        }
        let Watchers {
            threads,
            drivers,
            configmaps,
        } = self.watchers;
        // The watcher threads wake on the shutdown signal; joining waits at most for a
        // scan in progress.
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        if let Some(task) = drivers {
            let _ = task.await;
        }
        // The ConfigMap watch ends on the same signal; a reload in progress finishes.
        if let Some(mut task) = configmaps {
            if tokio::time::timeout(ADMIN_STOP, &mut task).await.is_err() {
                task.abort();
            }
        }
        tracing::info!("stopped");
    }
}
