//! Background processes (etcd, kube-apiserver, the webhook) that die with the test binary.
//!
//! Each runs under a small `sh` guard that holds the write end of a pipe from us: when the
//! test process ends for any reason (success, panic, abort, SIGKILL), the pipe closes and the
//! guard stops its child. Statics are never dropped in Rust, so the shared apiserver could
//! not be stopped by a destructor alone.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

// `read` returns at EOF, i.e. when the test process is gone or `stop` closed the pipe.
const GUARD: &str = r#""$@" </dev/null & child=$!
read -r _ || true
kill -TERM "$child" 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$child" 2>/dev/null || exit 0; sleep 0.5; done
kill -KILL "$child" 2>/dev/null"#;

pub struct Background {
    pub log: PathBuf,
    guard: Child,
    stdin: Option<ChildStdin>,
}

impl Background {
    /// Starts `program args` with its output in `dir/<name>.log`.
    pub fn start(
        name: &str,
        dir: &Path,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
    ) -> Background {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().expect("log file handle");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(GUARD)
            .arg("sh")
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut guard = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let stdin = guard.stdin.take();
        Background { log, guard, stdin }
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 5 s; waits for the guard.
    pub fn stop(&mut self) {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.guard.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.guard.kill();
        let _ = self.guard.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free port on 127.0.0.1 (bound, read and released: fine for a test machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `ready` every 100 ms until it is true or `within` has passed.
pub fn wait_until(
    what: &str,
    within: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{what} not ready within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET path` over plain HTTP/1.0 on loopback: status code and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}
