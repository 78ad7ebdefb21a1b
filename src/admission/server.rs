//! The running server: TLS webhook listener, admin listener, watcher threads and the
//! shutdown sequence (unready at once, stop accepting, drain within the grace, exit).

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::admin::{admin_router, Health};
use super::policies::PolicyWatcher;
use super::router::{webhook_router, AppState, Limits};
use super::shutdown::ShutdownHandle;
use super::tls::{self, CertReloader, CertResolver};
use super::ServeError;
use crate::certs::{self, CertPaths, Ensured};
use crate::engine::Engine;
use crate::metrics::{Metrics, SlowClient};
use crate::source::events::Reporter;
use crate::source::history::{load_initial, run_persister, ConfigMapBackend, FileBackend};
use crate::source::{ConfigMapWatcher, DriverCache, Drivers, PolicyHistory, PolicyStore};
use crate::spark::ContainerNames;

/// Pings on idle HTTP/2 connections find dead peers; the API server keeps connections open.
const H2_KEEPALIVE: Duration = Duration::from_secs(20);
/// How often the stored version history is rewritten without a change (retries a failed
/// write, drops expired versions).
const HISTORY_TICK: Duration = Duration::from_secs(300);
/// How long the admin port may take to close once the webhook has drained.
const ADMIN_STOP: Duration = Duration::from_secs(2);

/// Everything `serve` needs; [`ServeArgs`](super::ServeArgs) maps flags onto it.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Webhook address (TLS).
    pub listen: SocketAddr,
    /// Admin address (plain HTTP).
    pub admin_listen: SocketAddr,
    /// Where policies come from.
    pub policy_source: PolicySourceConfig,
    /// The policy folder (folder source), scanned every `policy_poll`.
    pub policies_dir: PathBuf,
    pub certs_dir: PathBuf,
    /// Generate certificates in `certs_dir` when absent; off in a cluster, where every
    /// replica must serve the mounted Secret.
    pub generate_certs: bool,
    /// Extra names for a generated serving certificate.
    pub dns_names: Vec<String>,
    /// CA bundle that client certificates must chain to; none: no client certificates.
    pub client_ca: Option<PathBuf>,
    pub container_names: ContainerNames,
    pub policy_poll: Duration,
    pub cert_poll: Duration,
    pub shutdown_grace: Duration,
    pub limits: Limits,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub handshake_timeout: Duration,
    /// Job pinning: drivers carry their executors' policy versions (see
    /// `spark_admission_core::pinning`).
    pub job_pinning: bool,
    /// Retired policy versions are kept this long in the version history.
    pub history_max_age: Duration,
    /// Bound of the stored version history (bytes of ConfigMap data).
    pub history_max_bytes: usize,
    /// How long the start waits for the stored history before serving without it.
    pub history_load_timeout: Duration,
    /// Folder source: where the version history is kept across restarts (none: memory).
    pub history_dir: Option<PathBuf>,
    /// How many ConfigMaps (or files) the version history is spread over.
    pub history_configmaps: usize,
    /// Serve this router on the TLS listener instead of the webhook's: for tools that
    /// measure the listener and HTTP stack alone (tools/loadgen's no-op server). `serve`
    /// never sets it.
    pub router_override: Option<axum::Router>,
    /// Bounds of the memory raised after OOMKilled pods (ConfigMap source only).
    pub memory: crate::memory::MemoryConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 8443)),
            admin_listen: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 8080)),
            policy_source: PolicySourceConfig::Folder,
            policies_dir: PathBuf::from("policies"),
            certs_dir: PathBuf::from("certs"),
            generate_certs: true,
            dns_names: Vec::new(),
            client_ca: None,
            container_names: ContainerNames::default(),
            policy_poll: Duration::from_secs(2),
            cert_poll: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(20),
            limits: Limits::default(),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            job_pinning: true,
            history_max_age: crate::source::history::DEFAULT_MAX_AGE,
            history_max_bytes: crate::source::history::DEFAULT_MAX_BYTES,
            history_load_timeout: Duration::from_secs(5),
            history_dir: None,
            history_configmaps: crate::source::history::DEFAULT_CONFIGMAPS,
            router_override: None,
            memory: crate::memory::MemoryConfig::default(),
        }
    }
}

/// Where the policies come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PolicySourceConfig {
    /// `policies_dir`, rescanned every `policy_poll`.
    #[default]
    Folder,
    /// ConfigMaps labelled `spark-admission.io/policy: "true"` in `namespace`, watched.
    ConfigMaps { namespace: String },
}

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
        let paths = CertPaths::new(&config.certs_dir);
        let ensured = if config.generate_certs {
            certs::ensure(&config.certs_dir, &config.dns_names)
        } else {
            certs::require(&config.certs_dir)
        }
        .map_err(|error| ServeError::Certs {
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
        let tls_config = tls::server_config(
            Arc::clone(&resolver),
            config.client_ca.as_deref(),
            Arc::clone(&provider),
        )?;

        config
            .memory
            .validate()
            .map_err(|e| ServeError::Settings(e.to_string()))?;
        let history = Arc::new(
            PolicyHistory::new(
                config.history_max_age,
                config.history_max_bytes,
                Some(Arc::clone(&metrics)),
            )
            .with_configmaps(config.history_configmaps)
            .map_err(|e| ServeError::Settings(e.to_string()))?,
        );
        // What readiness waits for besides the policies (ConfigMap source only).
        let mut gates = Vec::new();
        let store = Arc::new(PolicyStore::with_history(Arc::clone(&history)));
        // Executors' pins are checked against stored drivers: only with a cluster.
        let mut drivers = Drivers::None;
        let mut driver_watch = None;
        // OOM-aware memory needs the cluster: the state ConfigMaps and the pod watch.
        let mut memory = None;
        let mut history_watch = None;
        let (folder_watcher, configmaps) = match &config.policy_source {
            PolicySourceConfig::Folder => {
                if !config.policies_dir.is_dir() {
                    return Err(ServeError::NoPolicyFolder(
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
                    Arc::clone(&metrics),
                );
                watcher
                    .initial_load()
                    .map_err(|e| ServeError::Policies(e.to_string()))?;
                (Some((watcher, history_file)), None)
            }
            PolicySourceConfig::ConfigMaps { namespace } => {
                if namespace.is_empty() {
                    return Err(ServeError::NoPolicyNamespace);
                }
                let client = match client {
                    Some(c) => c,
                    None => kube::Client::try_default()
                        .await
                        .map_err(|e| ServeError::Kube(e.to_string()))?,
                };
                let instance = std::env::var(super::POD_NAME_ENV)
                    .ok()
                    .or_else(|| std::env::var("HOSTNAME").ok());
                let (cache, watch) =
                    DriverCache::new(client.clone(), config.container_names.clone());
                drivers = Drivers::Cluster(cache);
                driver_watch = Some(watch);
                let backend = ConfigMapBackend::new(client.clone(), namespace);
                memory = Some((client.clone(), namespace.clone()));
                // Versions other replicas store arrive by watch, not by a periodic re-read.
                gates.push(super::admin::ReadyGate {
                    waiting: "policy version history not listed",
                    done: history.listed_flag(),
                });
                history_watch = Some(kube::Api::namespaced(client.clone(), namespace));
                let watcher = ConfigMapWatcher::new(
                    client,
                    namespace.clone(),
                    Arc::clone(&store),
                    Arc::clone(&metrics),
                    Reporter::new(instance).in_pod(
                        std::env::var(super::POD_NAMESPACE_ENV).ok(),
                        std::env::var(super::POD_UID_ENV).ok(),
                    ),
                );
                (None, Some((watcher, backend)))
            }
        };

        let webhook_listener = bind(config.listen).await?;
        let admin_listener = bind(config.admin_listen).await?;
        let webhook_addr = local_addr(&webhook_listener, config.listen)?;
        let admin_addr = local_addr(&admin_listener, config.admin_listen)?;

        let shutdown = ShutdownHandle::new();
        let mut threads = Vec::with_capacity(2);
        if let Some((mut policy_watcher, history_file)) = folder_watcher {
            if let Some(backend) = history_file {
                let stop = shutdown.clone();
                tokio::spawn(run_persister(
                    Arc::clone(&history),
                    backend,
                    HISTORY_TICK,
                    async move { stop.triggered().await },
                ));
            }
            threads.push(spawn_watch_thread(
                "policy-watch",
                config.policy_poll,
                shutdown.clone(),
                move || policy_watcher.poll(),
            )?);
        }
        // Readiness waits for the first list (PolicyStore::is_loaded); the webhook and
        // admin ports are up meanwhile so probes get a clear "not ready".
        // The stored version history loads first (bounded wait), so that a replica
        // started after a policy change still serves the versions running jobs pinned.
        let driver_task = driver_watch.map(|watch| {
            let stop = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = watch => {}
                    () = stop.triggered() => {}
                }
            })
        });
        if let Some(api) = history_watch {
            let stop = shutdown.clone();
            tokio::spawn(crate::source::history::run_watch(
                Arc::clone(&history),
                api,
                async move { stop.triggered().await },
            ));
        }
        let configmap_task = configmaps.map(|(watcher, backend)| {
            let stop = shutdown.clone();
            let history = Arc::clone(&history);
            let wait = config.history_load_timeout;
            tokio::spawn(async move {
                load_initial(&history, &backend, wait).await;
                let persist_stop = stop.clone();
                tokio::spawn(run_persister(history, backend, HISTORY_TICK, async move {
                    persist_stop.triggered().await
                }));
                watcher.run(async move { stop.triggered().await }).await
            })
        });
        let mut reloader = CertReloader::new(
            Arc::clone(&resolver),
            &loaded,
            paths.tls_cert.clone(),
            paths.tls_key.clone(),
            provider,
            Arc::clone(&metrics),
        );
        threads.push(spawn_watch_thread(
            "cert-watch",
            config.cert_poll,
            shutdown.clone(),
            move || {
                reloader.poll();
            },
        )?);

        let mut state = AppState::new(
            // Pins only where they can be verified (stored drivers): elsewhere every
            // driver's pin, `none` included, would only earn its executors a warning.
            Engine::new(config.container_names.clone())
                .with_job_pinning(config.job_pinning && matches!(drivers, Drivers::Cluster(_))),
            Arc::clone(&store),
            Arc::clone(&metrics),
            config.limits.clone(),
        )
        .with_drivers(drivers);
        if let Some((client, namespace)) = memory {
            let memory = crate::memory::start(
                &config.memory,
                config.container_names.clone(),
                client,
                &namespace,
                Arc::clone(&store),
                Arc::clone(&metrics),
                &shutdown,
            );
            gates.push(super::admin::ReadyGate {
                waiting: "memory state not listed",
                done: memory.listed_flag(),
            });
            state = state.with_memory(memory);
        }
        let state = Arc::new(state);
        let connections = Arc::new(Connections {
            acceptor: TlsAcceptor::from(Arc::new(tls_config)),
            router: match config.router_override.clone() {
                Some(router) => router,
                None => webhook_router(state),
            },
            handshake_timeout: config.handshake_timeout,
            header_read_timeout: config.header_read_timeout,
            metrics: Arc::clone(&metrics),
        });
        let health = Health {
            store: Arc::clone(&store),
            shutdown: shutdown.clone(),
            gates,
        };
        let (admin_stop, admin_stopped) = oneshot::channel::<()>();
        let admin = tokio::spawn(
            axum::serve(admin_listener, admin_router(health, Arc::clone(&metrics)))
                .with_graceful_shutdown(async move {
                    let _ = admin_stopped.await;
                })
                .into_future(),
        );
        let accept = tokio::spawn(accept_loop(
            webhook_listener,
            connections,
            config.max_connections.max(1),
            config.shutdown_grace,
            shutdown.clone(),
        ));
        let policy_origin = match &config.policy_source {
            PolicySourceConfig::Folder => format!("folder {}", config.policies_dir.display()),
            PolicySourceConfig::ConfigMaps { namespace } => format!(
                "ConfigMaps in {namespace} labelled {}",
                crate::source::configmap::label_selector()
            ),
        };
        tracing::info!(
            webhook = %format!("https://{webhook_addr}"),
            admin = %format!("http://{admin_addr}"),
            policies = policy_origin.as_str(),
            "serving: POST /mutate, /validate and /validate-policy; /healthz, /readyz and /metrics on the admin port"
        );

        let task = tokio::spawn(async move {
            if let Err(e) = accept.await {
                tracing::error!(error = %e, "webhook listener task failed");
            }
            let _ = admin_stop.send(());
            let mut admin = admin;
            match tokio::time::timeout(ADMIN_STOP, &mut admin).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "admin server ended with an error"),
                Ok(Err(e)) => tracing::warn!(error = %e, "admin server task failed"),
                Err(_) => admin.abort(),
            }
            // The watcher threads wake on the shutdown signal; joining waits at most for
            // a scan in progress.
            let _ = tokio::task::spawn_blocking(move || {
                for t in threads {
                    let _ = t.join();
                }
            })
            .await;
            if let Some(task) = driver_task {
                let _ = task.await;
            }
            // The ConfigMap watch ends on the same signal; a reload in progress finishes.
            if let Some(mut task) = configmap_task {
                if tokio::time::timeout(ADMIN_STOP, &mut task).await.is_err() {
                    task.abort();
                }
            }
            tracing::info!("stopped");
        });

        Ok(Server {
            webhook_addr,
            admin_addr,
            shutdown,
            store,
            metrics,
            resolver,
            task,
        })
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
        self.task.await.map_err(|e| ServeError::Task(e.to_string()))
    }

    /// Triggers the shutdown and waits for the drain.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.shutdown.trigger();
        self.wait().await
    }
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

/// Connections waiting to be accepted (the kernel caps it at somaxconn).
const BACKLOG: i32 = 1024;

/// Binds `addr`. The unspecified IPv6 address (`[::]`, the default) is dual-stack: it also
/// accepts IPv4, whatever the host's `net.ipv6.bindv6only`, so probes and the Service work
/// on IPv4, IPv6-only and dual-stack clusters alike. On a host without IPv6 it falls back
/// to `0.0.0.0` with a warning. Any other address is bound as given (`0.0.0.0`: IPv4 only).
async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    let bind_error = |error| ServeError::Bind { addr, error };
    match addr {
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => match bind_dual_stack(addr) {
            Ok(listener) => Ok(listener),
            Err(error) if no_ipv6(&error) => {
                let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
                tracing::warn!(%addr, fallback = %v4, error = %error, "no IPv6 on this host; listening on IPv4 only");
                TcpListener::bind(v4).await.map_err(bind_error)
            }
            Err(error) => Err(bind_error(error)),
        },
        _ => TcpListener::bind(addr).await.map_err(bind_error),
    }
}

fn bind_dual_stack(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(false)?;
    // As tokio's own bind does: a restarted server rebinds while old connections linger.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// The host has no IPv6 at all (the kernel built or booted without it).
fn no_ipv6(error: &std::io::Error) -> bool {
    // EAFNOSUPPORT (97) when the family is missing, EADDRNOTAVAIL (99) when IPv6 is
    // disabled on every interface.
    matches!(error.raw_os_error(), Some(97 | 99))
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, ServeError> {
    listener
        .local_addr()
        .map_err(|error| ServeError::Bind { addr, error })
}

/// Runs `tick` every `period` on its own thread until shutdown.
fn spawn_watch_thread(
    name: &'static str,
    period: Duration,
    shutdown: ShutdownHandle,
    mut tick: impl FnMut() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, ServeError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            while !shutdown.sleep(period) {
                tick();
            }
        })
        .map_err(|error| ServeError::Start { what: name, error })
}

/// What each webhook connection needs.
struct Connections {
    acceptor: TlsAcceptor,
    router: Router,
    handshake_timeout: Duration,
    header_read_timeout: Duration,
    metrics: Arc<Metrics>,
}

async fn accept_loop(
    listener: TcpListener,
    connections: Arc<Connections>,
    max_connections: usize,
    grace: Duration,
    shutdown: ShutdownHandle,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut tasks = JoinSet::new();
    let stop = shutdown.triggered();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::warn!(%peer, max_connections, "connection limit reached; connection closed");
                    continue;
                };
                let watcher = graceful.watcher();
                let connections = Arc::clone(&connections);
                tasks.spawn(async move {
                    serve_connection(tcp, peer, &connections, watcher).await;
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        grace_seconds = grace.as_secs_f64(),
        "shutting down: unready, no new connections, draining"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace elapsed; closing the remaining connections");
    } else {
        tracing::info!("all connections drained");
    }
    tasks.shutdown().await;
}

async fn serve_connection(tcp: TcpStream, peer: SocketAddr, c: &Connections, watcher: Watcher) {
    // Reviews are small request/response pairs: send them without Nagle's delay.
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(c.handshake_timeout, c.acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            log_handshake_error(peer, &e);
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let io = TokioIo::new(tls);
    let result = if h2 {
        // hyper's h2 server waits for the client preface without a limit, and its
        // keep-alive pings start only after it: a client that negotiates h2 and then says
        // nothing would hold a connection slot forever. Like HTTP/1.1's header read
        // timeout, the first request must arrive in time.
        let spoke = Arc::new(AtomicBool::new(false));
        let heard = Arc::clone(&spoke);
        let router =
            c.router
                .clone()
                .map_request(move |req: http::Request<hyper::body::Incoming>| {
                    heard.store(true, Ordering::Relaxed);
                    req
                });
        let service = TowerToHyperService::new(router);
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(H2_KEEPALIVE))
            .keep_alive_timeout(H2_KEEPALIVE);
        let conn = watcher.watch(builder.serve_connection(io, service));
        tokio::pin!(conn);
        let silent = async {
            tokio::time::sleep(c.header_read_timeout).await;
            if spoke.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = &mut conn => result,
            () = silent => {
                c.metrics.record_slow_client(SlowClient::Header);
                tracing::debug!(%peer, "h2 connection sent no request in time; closed");
                return;
            }
        }
    } else {
        let service = TowerToHyperService::new(c.router.clone());
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(c.header_read_timeout)
            .keep_alive(true)
            // Answers to pipelined requests go out in one TLS write instead of one each.
            .pipeline_flush(true);
        watcher.watch(builder.serve_connection(io, service)).await
    };
    if let Err(e) = result {
        if e.is_timeout() {
            // HTTP/1.1 headers not complete within --header-read-timeout.
            c.metrics.record_slow_client(SlowClient::Header);
        }
        tracing::debug!(%peer, error = %e, "connection closed with an error");
    }
}

fn log_handshake_error(peer: SocketAddr, e: &std::io::Error) {
    let alert = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| matches!(r, rustls::Error::AlertReceived(_)));
    if alert {
        // The client refused us: almost always a caBundle that does not match our CA.
        tracing::warn!(%peer, error = %e, "TLS handshake refused by the client; check the webhook caBundle");
    } else {
        tracing::debug!(%peer, error = %e, "TLS handshake failed");
    }
}
