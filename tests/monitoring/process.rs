//! Child processes the tests start (the webhook, Prometheus), killed by their handle when
//! dropped (a failing test included); nothing else is signalled.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::StatusCode;

use crate::common::{try_admin_get, write_policies, LABEL_POLICY};

/// Startup of a debug build (certificate generation, policy compile) on a busy machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback (or `[::]`) port free right now; a start that loses the race is retried.
pub fn free_port(host: &str) -> u16 {
    std::net::TcpListener::bind(format!("{host}:0"))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `spark-admission serve` as a child process, with the folder source.
pub struct Webhook {
    pub _child: KillOnDrop,
    /// Where clients connect (127.0.0.1 when it listens on `[::]`).
    pub webhook: SocketAddr,
    pub admin: SocketAddr,
    pub policies: PathBuf,
    pub certs: PathBuf,
    pub log: PathBuf,
    pub _dir: tempfile::TempDir,
}

impl Webhook {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.certs.join("ca.crt")).unwrap()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("server log (last lines, newest first):");
            for line in tail {
                eprintln!("  {line}");
            }
        }
    }
}

/// The server command with the test's folders; the caller's SPARK_ADMISSION_* and POD_*
/// settings are removed so they cannot change what is tested.
pub fn serve_command(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spark-admission"));
    cmd.arg("serve")
        .arg("--policies")
        .arg(dir.join("policies"))
        .arg("--certs-dir")
        .arg(dir.join("certs"))
        .args(["--policy-source", "folder"])
        .stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("SPARK_ADMISSION_") || key.starts_with("POD_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Starts the webhook listening on `host` (`127.0.0.1` or `[::]`), with the test label
/// policy and `extra` flags, and waits until it is ready.
pub async fn start_webhook(host: &str, extra: &[&str]) -> Webhook {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    write_policies(&policies, &[("test-labels.yaml", LABEL_POLICY)]);
    let certs = dir.path().join("certs");
    let log = dir.path().join("server.log");
    for attempt in 1..=5 {
        let (webhook_port, admin_port) = (free_port(host), free_port(host));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = serve_command(dir.path());
        cmd.args(["--listen", &format!("{host}:{webhook_port}")])
            .args(["--admin-listen", &format!("{host}:{admin_port}")])
            .args(extra)
            .stderr(out.try_clone().unwrap())
            .stdout(out);
        let mut child = KillOnDrop(cmd.spawn().expect("starting spark-admission serve"));
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        let started = Instant::now();
        let ready = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break Err(status);
            }
            let probe =
                tokio::time::timeout(Duration::from_secs(5), try_admin_get(admin, "/readyz"));
            if let Ok(Ok((StatusCode::OK, _))) = probe.await {
                break Ok(());
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "server not ready within {READY_TIMEOUT:?}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        match ready {
            Ok(()) => {
                return Webhook {
                    _child: child,
                    webhook: SocketAddr::from(([127, 0, 0, 1], webhook_port)),
                    admin,
                    policies,
                    certs,
                    log,
                    _dir: dir,
                }
            }
            Err(status) => {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(
                    attempt < 5 && text.contains("cannot listen"),
                    "server exited during startup ({status}): {text}"
                );
            }
        }
    }
    unreachable!("the loop returns or fails")
}
