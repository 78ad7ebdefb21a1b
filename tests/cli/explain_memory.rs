//! `explain --memory-state`: the raise the webhook would make after an OOMKilled pod,
//! read from the state ConfigMaps as `kubectl get configmap -o yaml` exports them.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_spark-admission");

fn explain_with(entry_expires_in: i64) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let now = spark_admission::memory::now();
    let entries = serde_json::json!({
        "spark-etl/executor/name:spark-pi-rich": {
            "m": 4320u64 << 20, "f": 3456u64 << 20,
            "p": "spark-pi-rich-c42f07a1fef4587b-exec-1", "t": now - 60, "x": now + entry_expires_in
        }
    });
    let state = serde_json::json!({
        "apiVersion": "v1", "kind": "List",
        "items": [{"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "spark-admission-memory-3", "namespace": "spark-admission"},
                   "data": {"entries.json": entries.to_string()}}]
    });
    let path = dir.path().join("state.json");
    std::fs::write(&path, state.to_string()).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(BIN)
        .current_dir(root)
        .args(["explain", "--namespace", "spark-etl", "--memory-state"])
        .arg(&path)
        .arg("tests/fixtures/spark/executor-rich-1.json")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn explain_shows_the_raise_a_remembered_oom_would_make() {
    let (code, stdout, stderr) = explain_with(3600);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("resources.limits.memory")
            && stdout.contains("raised from 3456Mi to 4320Mi")
            && stdout.contains("spark-pi-rich-c42f07a1fef4587b-exec-1"),
        "{stdout}"
    );
    // Expired: nothing to raise.
    let (code, stdout, _) = explain_with(-1);
    assert_eq!(code, 0);
    assert!(!stdout.contains("raised from"), "{stdout}");
}
