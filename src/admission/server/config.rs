//! What a server is started with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::admission::state::Limits;
use crate::memory::MemoryConfig;
use crate::source::history::{DEFAULT_CONFIGMAPS, DEFAULT_MAX_AGE, DEFAULT_MAX_BYTES};
use crate::spark::ContainerNames;

/// Everything `serve` needs; `crate::cli::ServeArgs` maps flags onto it.
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
    pub memory: MemoryConfig,
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
            history_max_age: DEFAULT_MAX_AGE,
            history_max_bytes: DEFAULT_MAX_BYTES,
            history_load_timeout: Duration::from_secs(5),
            history_dir: None,
            history_configmaps: DEFAULT_CONFIGMAPS,
            router_override: None,
            memory: MemoryConfig::default(),
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
