//! Starts `spark-admission serve` as a child process on loopback ports, in its own
//! scratch folder (policies, generated certificates), and reads its memory from /proc.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::client::admin_get;

/// Startup (certificate generation, policy compile) must finish within this.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

pub struct ServerOptions<'a> {
    /// `baseline` or `real`: names the scratch folder and the messages.
    pub label: &'a str,
    pub baseline: bool,
    /// Policy files `(name, text)` written to the policy folder before start.
    pub policies: Vec<(String, String)>,
    /// Where the server's log lines go; `None` discards them (they are still produced).
    pub log: Option<PathBuf>,
    pub extra_args: Vec<String>,
}

/// A running server process, stopped and cleaned up on drop.
pub struct Spawned {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub ca_pem: Vec<u8>,
    pub dir: PathBuf,
    /// From spawn to `/readyz` answering 200.
    pub startup: Duration,
}

/// Resident memory of a process, from /proc/<pid>/status (KiB).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Memory {
    /// Peak resident set size over the process's life (VmHWM).
    pub peak_kib: u64,
    /// Current resident set size (VmRSS).
    pub rss_kib: u64,
}

/// Reads VmHWM and VmRSS of any process (ours or one given with --pid).
pub fn memory_of(pid: u32) -> anyhow::Result<Memory> {
    let fields = spark_admission_testkit::proc_status::kib_fields(pid)
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| fields.get(name).copied().unwrap_or(0);
    Ok(Memory {
        peak_kib: field("VmHWM"),
        rss_kib: field("VmRSS"),
    })
}

/// A loopback port free right now (the server binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// `spark-admission` next to this executable (both are built into the same folder).
pub fn default_server_bin() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating loadgen")?;
    let dir = me.parent().context("loadgen has no folder")?;
    let bin = dir.join("spark-admission");
    if !bin.is_file() {
        bail!(
            "{} not found: build it (cargo build --release --bins) or pass --server-bin",
            bin.display()
        );
    }
    Ok(bin)
}

impl Spawned {
    pub async fn start(bin: &Path, opts: ServerOptions<'_>) -> anyhow::Result<Spawned> {
        let dir = std::env::temp_dir().join(format!(
            "spark-admission-loadgen-{}-{}",
            std::process::id(),
            opts.label
        ));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("cleaning {}", dir.display()))?;
        }
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies)
            .with_context(|| format!("creating {}", policies.display()))?;
        for (name, text) in &opts.policies {
            std::fs::write(policies.join(name), text)?;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let stdout = match &opts.log {
            Some(path) => Stdio::from(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            ),
            None => Stdio::null(),
        };
        // The baseline is this tool's own no-op server on the webhook's stack.
        let mut cmd = if opts.baseline {
            let mut c = Command::new(std::env::current_exe().context("locating loadgen")?);
            c.arg("noop-server");
            c
        } else {
            let mut c = Command::new(bin);
            c.arg("serve");
            c
        };
        cmd.arg("--listen")
            .arg(addr.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .arg("--policies")
            .arg(&policies)
            .arg("--certs-dir")
            .arg(dir.join("certs"))
            .arg("--policy-poll-interval")
            .arg("100ms")
            .args(&opts.extra_args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::inherit())
            // The server's own defaults (log level, limits) apply, not the caller's.
            .env_remove("SPARK_ADMISSION_LOG_LEVEL")
            .env_remove("SPARK_ADMISSION_MAX_CONCURRENT_REQUESTS");
        let spawned_at = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = Spawned {
            pid: child.id(),
            child,
            addr,
            admin,
            ca_pem: Vec::new(),
            dir,
            startup: Duration::ZERO,
        };
        let deadline = spawned_at + READY_TIMEOUT;
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "the {} server exited during startup ({status}); rerun with --server-log FILE to see its log",
                    opts.label
                );
            }
            if let Ok((200, _)) = admin_get(admin, "/readyz").await {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the {} server was not ready within {READY_TIMEOUT:?}",
                    opts.label
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        server.startup = spawned_at.elapsed();
        server.ca_pem = std::fs::read(server.dir.join("certs/ca.crt"))
            .context("reading the server's generated CA")?;
        Ok(server)
    }

    pub fn policies_dir(&self) -> PathBuf {
        self.dir.join("policies")
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        memory_of(self.pid)
    }

    /// A counter from the admin port's /metrics, summed over the series matching `filter`.
    pub async fn metric(&self, name: &str, filter: &str) -> anyhow::Result<f64> {
        let (status, text) = admin_get(self.admin, "/metrics").await?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // Our own child, by its handle: nothing else is signalled.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server a measurement drives: the one at `url` (its certificate chaining to `ca`), or
/// one started here from `bin` with the 100-policy benchmark set, kept running while the
/// returned `Spawned` lives.
pub async fn target(
    url: Option<&str>,
    ca: &Path,
    label: &'static str,
    bin: Option<PathBuf>,
    extra_args: Vec<String>,
) -> anyhow::Result<(SocketAddr, Vec<u8>, Option<Spawned>)> {
    if let Some(url) = url {
        let ca = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        return Ok((crate::resolve(url)?, ca, None));
    }
    let s = Spawned::start(
        &crate::server_bin(bin)?,
        ServerOptions {
            label,
            baseline: false,
            policies: spark_admission_testkit::bench_policies::files(100, 50),
            log: None,
            extra_args,
        },
    )
    .await?;
    Ok((s.addr, s.ca_pem.clone(), Some(s)))
}
