//! `spark-admission serve`: its flags (each also read from an environment variable), the
//! [`ServerConfig`] they map onto, and the command that runs the server until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::admission::{
    Limits, PolicySourceConfig, ServeError, Server, ServerConfig, POD_NAMESPACE_ENV,
};
use crate::duration::parse_duration;
use crate::memory::MemoryConfig;
use crate::spark::ContainerNames;

/// Flags of `spark-admission serve`; each one also reads the environment variable shown.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Webhook address (HTTPS). `[::]` listens on IPv6 and IPv4 (dual-stack); `0.0.0.0`
    /// on IPv4 only.
    #[arg(long, env = "SPARK_ADMISSION_LISTEN", default_value = "[::]:8443")]
    pub listen: SocketAddr,
    /// Admin address (plain HTTP: /healthz, /readyz, /metrics); `[::]` is dual-stack.
    #[arg(
        long,
        env = "SPARK_ADMISSION_ADMIN_LISTEN",
        default_value = "[::]:8080"
    )]
    pub admin_listen: SocketAddr,
    /// Policy folder, watched for changes (*.yaml and *.yml directly in it).
    #[arg(long, env = "SPARK_ADMISSION_POLICIES", default_value = "policies")]
    pub policies: PathBuf,
    /// How often the policy folder is scanned, e.g. 500ms, 2s.
    #[arg(long, env = "SPARK_ADMISSION_POLICY_POLL_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub policy_poll_interval: Duration,
    /// Where policies come from: auto (ConfigMaps when --policy-namespace or POD_NAMESPACE
    /// is set, else the --policies folder), folder, or configmaps.
    #[arg(long, env = "SPARK_ADMISSION_POLICY_SOURCE", value_enum, default_value_t = PolicySourceArg::Auto)]
    pub policy_source: PolicySourceArg,
    /// Namespace whose ConfigMaps labelled spark-admission.io/policy="true" hold the
    /// policies (default: $POD_NAMESPACE, the webhook's own namespace in a cluster).
    #[arg(long, env = "SPARK_ADMISSION_POLICY_NAMESPACE", value_name = "NS")]
    pub policy_namespace: Option<String>,
    /// Folder with tls.crt, tls.key and ca.crt; generated there when absent.
    #[arg(long, env = "SPARK_ADMISSION_CERTS_DIR", default_value = "certs")]
    pub certs_dir: PathBuf,
    /// Generate a CA and a serving certificate in --certs-dir when tls.crt and tls.key are
    /// absent. Set false in a cluster: every replica must serve the mounted Secret's pair.
    #[arg(long, env = "SPARK_ADMISSION_GENERATE_CERTS", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub generate_certs: bool,
    /// Extra names for a generated serving certificate (e.g. spark-admission.spark-admission.svc);
    /// repeat the flag or separate with commas.
    #[arg(long = "dns", value_name = "NAME", env = "SPARK_ADMISSION_DNS", value_delimiter = ',', num_args = 1..)]
    pub dns: Vec<String>,
    /// How often the certificate files are checked for a new pair.
    #[arg(long, env = "SPARK_ADMISSION_CERT_POLL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub cert_poll_interval: Duration,
    /// Require client certificates signed by a CA in this PEM file (the API server's).
    #[arg(long, env = "SPARK_ADMISSION_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Name of the driver's Spark container.
    #[arg(long, env = "SPARK_ADMISSION_DRIVER_CONTAINER", default_value = crate::spark::DEFAULT_DRIVER_CONTAINER)]
    pub driver_container_name: String,
    /// Name of the executors' Spark container.
    #[arg(long, env = "SPARK_ADMISSION_EXECUTOR_CONTAINER", default_value = crate::spark::DEFAULT_EXECUTOR_CONTAINER)]
    pub executor_container_name: String,
    /// Log format: json (one object per line) or text (for humans).
    #[arg(long, env = "SPARK_ADMISSION_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Log filter, e.g. info, debug, spark_admission=debug,info.
    #[arg(long, env = "SPARK_ADMISSION_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    // Boxed to keep the `Command` enum small.
    #[command(flatten, next_help_heading = "Limits and timeouts")]
    pub limits: Box<LimitArgs>,
    #[command(
        flatten,
        next_help_heading = "Job pinning and the policy version history"
    )]
    pub history: Box<HistoryArgs>,
    #[command(flatten, next_help_heading = "OOM-aware memory")]
    pub memory: Box<MemoryArgs>,
}

/// Job pinning and the version history it reads (see README, "Job pinning").
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// Pin jobs: drivers get their executors' policy versions in a Spark setting, and
    /// executors carrying it are mutated with exactly those versions.
    #[arg(long, env = "SPARK_ADMISSION_JOB_PINNING", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub job_pinning: bool,
    /// How long a policy version is kept after it stopped being current, e.g. 7d, 36h.
    #[arg(long, env = "SPARK_ADMISSION_POLICY_HISTORY_MAX_AGE", default_value = "7d", value_parser = parse_duration)]
    pub policy_history_max_age: Duration,
    /// Bound of each history ConfigMap's data in bytes (it must stay under the API's
    /// 1 MiB); the oldest retired versions leave first.
    #[arg(long, env = "SPARK_ADMISSION_POLICY_HISTORY_MAX_BYTES", default_value_t = crate::source::history::DEFAULT_MAX_BYTES as u64, value_parser = clap::value_parser!(u64).range(1..=crate::source::history::MAX_STORABLE_BYTES as u64))]
    pub policy_history_max_bytes: u64,
    /// Longest the start waits for the stored history (ConfigMap or history folder) before serving
    /// without the older versions.
    #[arg(long, env = "SPARK_ADMISSION_POLICY_HISTORY_LOAD_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub policy_history_load_timeout: Duration,
    /// How many ConfigMaps (folder source: files) the history is spread over, each within
    /// --policy-history-max-bytes (1 to 64).
    #[arg(long, env = "SPARK_ADMISSION_POLICY_HISTORY_CONFIGMAPS", default_value_t = crate::source::history::DEFAULT_CONFIGMAPS as u64, value_parser = clap::value_parser!(u64).range(1..=crate::source::history::MAX_CONFIGMAPS as u64))]
    pub policy_history_configmaps: u64,
    /// Folder source: keep the version history in this folder across restarts (JSON
    /// files). Without it the folder source keeps the history in memory only.
    #[arg(long, env = "SPARK_ADMISSION_POLICY_HISTORY_DIR")]
    pub policy_history_dir: Option<PathBuf>,
}

/// Flags of `serve` for the memory state (see README, "When an executor runs out of memory").
#[derive(Debug, Clone, Args)]
pub struct MemoryArgs {
    /// Raises remembered at most, over every namespace; the oldest OOMs leave first.
    #[arg(
        long,
        env = "SPARK_ADMISSION_MEMORY_STATE_MAX_ENTRIES",
        default_value_t = 20_000
    )]
    pub memory_state_max_entries: usize,
    /// Raises one namespace may hold at most: a flood in one namespace evicts only its own.
    #[arg(
        long,
        env = "SPARK_ADMISSION_MEMORY_STATE_MAX_ENTRIES_PER_NAMESPACE",
        default_value_t = 2_000
    )]
    pub memory_state_max_entries_per_namespace: usize,
    /// Bytes of one state ConfigMap's data at most (1024 to 1024000).
    #[arg(long, env = "SPARK_ADMISSION_MEMORY_STATE_MAX_BYTES", default_value_t = 512 * 1024)]
    pub memory_state_max_bytes: usize,
    /// How many ConfigMaps the state is spread over (1 to 64).
    #[arg(
        long,
        env = "SPARK_ADMISSION_MEMORY_STATE_CONFIGMAPS",
        default_value_t = 8
    )]
    pub memory_state_configmaps: usize,
}

impl MemoryArgs {
    /// The bounds as given; [`MemoryConfig::validate`] checks them at start.
    pub fn to_config(&self) -> MemoryConfig {
        MemoryConfig {
            shards: self.memory_state_configmaps,
            max_entries: self.memory_state_max_entries,
            max_per_namespace: self.memory_state_max_entries_per_namespace,
            max_shard_bytes: self.memory_state_max_bytes,
        }
    }
}

/// The limits and timeouts of `serve`.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Longest a review may take; shortened further to fit the API server's ?timeout=.
    #[arg(long, env = "SPARK_ADMISSION_REQUEST_TIMEOUT", default_value = "8s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Largest request body accepted (413 beyond).
    #[arg(long, env = "SPARK_ADMISSION_MAX_BODY_BYTES", default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Reviews processed at once; more wait for a slot within their deadline.
    #[arg(
        long,
        env = "SPARK_ADMISSION_MAX_CONCURRENT_REQUESTS",
        default_value_t = 64
    )]
    pub max_concurrent_requests: usize,
    /// Request body bytes held at once by all requests (read, not yet answered).
    #[arg(
        long,
        env = "SPARK_ADMISSION_MAX_BODY_BYTES_IN_FLIGHT",
        default_value_t = 32 * 1024 * 1024
    )]
    pub max_body_bytes_in_flight: usize,
    /// Longest wait for the next part of a request body (408 and counted beyond); also
    /// the grace before --min-body-rate applies.
    #[arg(long, env = "SPARK_ADMISSION_BODY_READ_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,
    /// Bytes per second a request body must average after --body-read-timeout (0: none).
    #[arg(long, env = "SPARK_ADMISSION_MIN_BODY_RATE", default_value_t = 64 * 1024)]
    pub min_body_rate: u64,
    /// Open webhook connections at most; further connections are closed at once.
    #[arg(long, env = "SPARK_ADMISSION_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// HTTP/1.1: time allowed to send request headers (and idle time between requests).
    #[arg(long, env = "SPARK_ADMISSION_HEADER_READ_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Time allowed for a TLS handshake.
    #[arg(long, env = "SPARK_ADMISSION_TLS_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// On SIGTERM: how long in-flight requests may take to finish before exit.
    #[arg(long, env = "SPARK_ADMISSION_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// `--policy-source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicySourceArg {
    /// ConfigMaps when --policy-namespace or POD_NAMESPACE is set, else the folder.
    Auto,
    /// The --policies folder, even in a cluster.
    Folder,
    /// ConfigMaps in --policy-namespace, else in POD_NAMESPACE; an error without either.
    Configmaps,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

impl ServeArgs {
    /// The server configuration, reading `POD_NAMESPACE` from the environment.
    pub fn to_config(&self) -> ServerConfig {
        let pod_namespace = std::env::var(POD_NAMESPACE_ENV).ok();
        self.to_config_in(pod_namespace.as_deref())
    }

    /// Where policies come from, given the pod's namespace (`POD_NAMESPACE`):
    /// `--policy-source folder` → the folder; `configmaps` → ConfigMaps in
    /// `--policy-namespace`, else the pod's namespace (empty if neither: `serve` refuses
    /// to start); `auto` → ConfigMaps when either namespace is known, else the folder.
    pub fn policy_source_in(&self, pod_namespace: Option<&str>) -> PolicySourceConfig {
        fn known(ns: Option<&str>) -> Option<&str> {
            ns.map(str::trim).filter(|n| !n.is_empty())
        }
        let namespace = known(self.policy_namespace.as_deref()).or(known(pod_namespace));
        match (self.policy_source, namespace) {
            (PolicySourceArg::Folder, _) | (PolicySourceArg::Auto, None) => {
                PolicySourceConfig::Folder
            }
            (PolicySourceArg::Configmaps | PolicySourceArg::Auto, ns) => {
                PolicySourceConfig::ConfigMaps {
                    namespace: ns.unwrap_or_default().to_owned(),
                }
            }
        }
    }

    /// The server configuration for a pod in `pod_namespace` (None: not in a cluster).
    pub fn to_config_in(&self, pod_namespace: Option<&str>) -> ServerConfig {
        ServerConfig {
            policy_source: self.policy_source_in(pod_namespace),
            generate_certs: self.generate_certs,
            listen: self.listen,
            admin_listen: self.admin_listen,
            policies_dir: self.policies.clone(),
            certs_dir: self.certs_dir.clone(),
            dns_names: self.dns.clone(),
            client_ca: self.client_ca.clone(),
            container_names: ContainerNames {
                driver: self.driver_container_name.clone(),
                executor: self.executor_container_name.clone(),
            },
            policy_poll: self.policy_poll_interval,
            cert_poll: self.cert_poll_interval,
            shutdown_grace: self.limits.shutdown_grace,
            limits: Limits {
                max_body_bytes: self.limits.max_body_bytes,
                request_timeout: self.limits.request_timeout,
                max_concurrent_requests: self.limits.max_concurrent_requests,
                max_body_bytes_in_flight: self.limits.max_body_bytes_in_flight,
                body_read_timeout: self.limits.body_read_timeout,
                min_body_rate: self.limits.min_body_rate,
            },
            max_connections: self.limits.max_connections,
            header_read_timeout: self.limits.header_read_timeout,
            handshake_timeout: self.limits.tls_handshake_timeout,
            job_pinning: self.history.job_pinning,
            history_max_age: self.history.policy_history_max_age,
            history_max_bytes: usize::try_from(self.history.policy_history_max_bytes)
                .unwrap_or(crate::source::history::DEFAULT_MAX_BYTES),
            history_load_timeout: self.history.policy_history_load_timeout,
            history_dir: self.history.policy_history_dir.clone(),
            history_configmaps: usize::try_from(self.history.policy_history_configmaps)
                .unwrap_or(crate::source::history::DEFAULT_CONFIGMAPS),
            router_override: None,
            memory: self.memory.to_config(),
        }
    }
}

/// Why `serve` stopped: its own set-up (logging, the runtime), or the server's stage.
#[derive(Debug, thiserror::Error)]
pub enum ServeCommandError {
    #[error("invalid --log-level: {0}")]
    LogLevel(String),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Server(#[from] ServeError),
}

/// `spark-admission serve`: runs until SIGTERM or Ctrl-C, then drains and returns.
pub fn run(args: ServeArgs) -> Result<(), ServeCommandError> {
    run_with_router(args, None)
}

/// [`run`], serving `router` on the TLS listener instead of the webhook's when given
/// (see [`ServerConfig::router_override`]).
pub fn run_with_router(
    args: ServeArgs,
    router: Option<axum::Router>,
) -> Result<(), ServeCommandError> {
    init_logging(args.log_format, &args.log_level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("spark-admission")
        .build()
        .map_err(ServeCommandError::Runtime)?;
    let config = ServerConfig {
        router_override: router,
        ..args.to_config()
    };
    runtime.block_on(async move {
        let server = Server::start(config).await?;
        let handle = server.shutdown_handle();
        tokio::spawn(async move {
            crate::shutdown::os_signal().await;
            handle.trigger();
        });
        server.wait().await
    })?;
    Ok(())
}

fn init_logging(format: LogFormat, level: &str) -> Result<(), ServeCommandError> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| ServeCommandError::LogLevel(format!("{level:?}: {e}")))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    // A subscriber already set (an embedding program, a test) keeps its own settings.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init(),
    };
    Ok(())
}

/// The last line `serve` prints when it stops on an error (or refuses its command line) and
/// logs are JSON: an object
/// shaped like the log lines (`timestamp`, `level`, `message`, `target`), so a log
/// pipeline keeps it and `kubectl describe pod` shows it as the termination message.
pub fn fatal_json_line(message: &str, error: &str) -> String {
    serde_json::json!({
        "timestamp": k8s_openapi::jiff::Timestamp::now().to_string(),
        "level": "ERROR",
        "message": message,
        "error": error,
        "target": "spark_admission",
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_default_to_the_documented_bounds_and_nonsense_is_refused() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            memory: MemoryArgs,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
                .map(|c| c.memory.to_config())
        };
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults, MemoryConfig::default());
        assert!(defaults.validate().is_ok());
        let err = |args: &[&str]| match parse(args) {
            Ok(c) => c.validate().unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(err(&["--memory-state-configmaps", "0"]).contains("1 to 64"));
        assert!(err(&["--memory-state-configmaps", "65"]).contains("1 to 64"));
        assert!(err(&["--memory-state-max-bytes", "2000000"]).contains("1 MiB"));
        assert!(err(&["--memory-state-max-bytes", "10"]).contains("1024 to"));
        assert!(err(&["--memory-state-max-entries", "0"]).contains("at least 1"));
        assert!(err(&["--memory-state-max-entries", "100"]).contains("crowd out"));
        assert!(err(&["--memory-state-max-entries", "-3"]).contains("-3"));
        let small = parse(&[
            "--memory-state-max-entries=100",
            "--memory-state-max-entries-per-namespace=10",
            "--memory-state-max-bytes=4096",
            "--memory-state-configmaps=2",
        ])
        .unwrap();
        assert!(small.validate().is_ok());
        assert_eq!(
            (
                small.shards,
                small.max_entries,
                small.max_per_namespace,
                small.max_shard_bytes
            ),
            (2, 100, 10, 4096)
        );
    }

    #[test]
    fn serve_with_no_flags_uses_the_documented_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let cli = Cli::try_parse_from(["serve"]).unwrap();
        let c = cli.serve.to_config();
        let any = std::net::Ipv6Addr::UNSPECIFIED;
        assert_eq!(c.listen, SocketAddr::from((any, 8443)));
        assert_eq!(c.admin_listen, SocketAddr::from((any, 8080)));
        assert_eq!(c.policies_dir, PathBuf::from("policies"));
        assert_eq!(c.certs_dir, PathBuf::from("certs"));
        assert_eq!(c.limits.max_body_bytes, 3 * 1024 * 1024);
        let defaults = Limits::default();
        assert_eq!(
            c.limits.max_body_bytes_in_flight,
            defaults.max_body_bytes_in_flight
        );
        assert_eq!(c.limits.body_read_timeout, defaults.body_read_timeout);
        assert_eq!(c.limits.min_body_rate, defaults.min_body_rate);
        assert_eq!(c.policy_poll, Duration::from_secs(2));
        assert_eq!(c.container_names, ContainerNames::default());
        assert!(c.generate_certs);
    }

    #[test]
    fn the_policy_source_follows_the_flags_and_the_pod_namespace() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
                .unwrap()
                .serve
        };
        let cm = |ns: &str| PolicySourceConfig::ConfigMaps {
            namespace: ns.to_owned(),
        };
        // Auto: the folder on a laptop, ConfigMaps in a cluster.
        assert_eq!(
            parse(&[]).policy_source_in(None),
            PolicySourceConfig::Folder
        );
        assert_eq!(
            parse(&[]).policy_source_in(Some("")),
            PolicySourceConfig::Folder
        );
        assert_eq!(parse(&[]).policy_source_in(Some("admin")), cm("admin"));
        // An explicit namespace wins over the pod's.
        let explicit = parse(&["--policy-namespace", "policies"]);
        assert_eq!(explicit.policy_source_in(Some("admin")), cm("policies"));
        assert_eq!(explicit.policy_source_in(None), cm("policies"));
        // Forced folder, even in a cluster.
        let folder = parse(&["--policy-source", "folder"]);
        assert_eq!(
            folder.policy_source_in(Some("admin")),
            PolicySourceConfig::Folder
        );
        // Forced ConfigMaps without a namespace: empty, refused at start.
        let forced = parse(&["--policy-source=configmaps"]);
        assert_eq!(forced.policy_source_in(None), cm(""));
        assert_eq!(forced.policy_source_in(Some("admin")), cm("admin"));
        assert!(!parse(&["--generate-certs=false"]).generate_certs);
    }
}
