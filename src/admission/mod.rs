//! The HTTPS admission webhook: `POST /mutate` and `POST /validate` over TLS (h2 and
//! HTTP/1.1), `POST /validate-policy` for policy ConfigMaps, an admin port with health
//! probes and metrics, certificate and policy hot reload, and a graceful shutdown.
//!
//! `spark-admission serve` with no flags serves `./policies` with certificates from
//! `./certs` (generated on first start) on `[::]:8443`, admin on `[::]:8080`, both
//! dual-stack (IPv6 and IPv4). With `--policy-namespace NS`, or `POD_NAMESPACE` set (in a
//! cluster), policies come from the ConfigMaps of that namespace labelled
//! `spark-admission.io/policy: "true"` instead.

mod admin;
pub mod answer;
mod policies;
pub mod policy_review;
pub mod prescan;
pub mod review;
mod router;
mod server;
mod shutdown;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

pub use admin::{admin_router, Health};
pub use policies::PolicyWatcher;
pub use router::{
    webhook_router, AppState, Limits, MUTATE_PATH, VALIDATE_PATH, VALIDATE_POLICY_PATH,
};
pub use server::{PolicySourceConfig, Server, ServerConfig};
pub use shutdown::ShutdownHandle;

use crate::certs::CertsError;
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
    /// Bound of the stored history in bytes (the ConfigMap must stay under the API's
    /// 1 MiB); the oldest retired versions leave first.
    #[arg(long, env = "SPARK_ADMISSION_POLICY_HISTORY_MAX_BYTES", default_value_t = crate::source::history::DEFAULT_MAX_BYTES as u64, value_parser = clap::value_parser!(u64).range(1..=crate::source::history::MAX_STORABLE_BYTES as u64))]
    pub policy_history_max_bytes: u64,
    /// Longest the start waits for the stored history (ConfigMap or history folder) before serving
    /// without the older versions.
    #[arg(long, env = "SPARK_ADMISSION_POLICY_HISTORY_LOAD_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub policy_history_load_timeout: Duration,
    /// Folder source: keep the version history in this folder across restarts (one JSON
    /// file). Without it the folder source keeps the history in memory only.
    #[arg(long, env = "SPARK_ADMISSION_POLICY_HISTORY_DIR")]
    pub policy_history_dir: Option<PathBuf>,
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

/// The downward-API variable with the pod's namespace (`fieldRef: metadata.namespace`).
pub const POD_NAMESPACE_ENV: &str = "POD_NAMESPACE";
/// The downward-API variable with the pod's name (`fieldRef: metadata.name`), used as
/// the `reportingInstance` of Events.
pub const POD_NAME_ENV: &str = "POD_NAME";
/// The downward-API variable with the pod's uid (`fieldRef: metadata.uid`): the
/// `PolicyLoaded` Event about the replica carries it, so `kubectl describe pod` shows it.
pub const POD_UID_ENV: &str = "POD_UID";

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
            router_override: None,
            memory: crate::memory::MemoryConfig::default(),
        }
    }
}

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

/// `spark-admission serve`: runs until SIGTERM or Ctrl-C, then drains and returns.
pub fn run(args: ServeArgs) -> Result<(), ServeError> {
    run_with_router(args, None)
}

/// [`run`], serving `router` on the TLS listener instead of the webhook's when given
/// (see [`ServerConfig::router_override`]).
pub fn run_with_router(args: ServeArgs, router: Option<axum::Router>) -> Result<(), ServeError> {
    init_logging(args.log_format, &args.log_level)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("spark-admission")
        .build()
        .map_err(|error| ServeError::Start {
            what: "async runtime",
            error,
        })?;
    let config = ServerConfig {
        router_override: router,
        ..args.to_config()
    };
    runtime.block_on(async move {
        let server = Server::start(config).await?;
        let handle = server.shutdown_handle();
        tokio::spawn(async move {
            shutdown::os_signal().await;
            handle.trigger();
        });
        server.wait().await
    })
}

fn init_logging(format: LogFormat, level: &str) -> Result<(), ServeError> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| ServeError::LogLevel(format!("{level:?}: {e}")))?;
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

/// The last line `serve` prints when it stops on an error and logs are JSON: an object
/// shaped like the log lines (`timestamp`, `level`, `message`, `target`), so a log
/// pipeline keeps it and `kubectl describe pod` shows it as the termination message.
pub fn fatal_json_line(error: &str) -> String {
    serde_json::json!({
        "timestamp": k8s_openapi::jiff::Timestamp::now().to_string(),
        "level": "ERROR",
        "message": "serve stopped",
        "error": error,
        "target": "spark_admission",
    })
    .to_string()
}

/// Parses `500ms`, `2s`, `1.5s`, `1m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 500ms, 2s or 1m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        other => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {other:?} (use ms, s, m, h or d)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("").is_err());
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
