//! CI smoke run of the load generator: a few seconds against a real server and the no-op
//! baseline it spawns on loopback ports (h1 and h2, closed loop, fixed rate, a policy
//! reload). Timing is not asserted here, only that every request succeeds.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Startup of two debug-build servers plus ~3 s of load; far above that means a hang.
const LIMIT: Duration = Duration::from_secs(180);

#[test]
fn loadgen_smoke_run_succeeds() {
    // The webhook binary is found next to loadgen's: a workspace build makes both.
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("smoke")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadgen starts");
    // Drained on their own threads so a full pipe can never block the child.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for loadgen") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("loadgen smoke did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    assert!(
        status.success(),
        "loadgen smoke failed ({status}):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("smoke run: OK"), "{stdout}\n{stderr}");
}
