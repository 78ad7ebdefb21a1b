//! `SPARK_ADMISSION_E2E_RECORD=DIR`: what the real API server did, saved for the tiers that
//! run without one (`tests/server/apiserver_recordings.rs` replays `tests/fixtures/apiserver/`).
//!
//! Layout under DIR: `version.json` (the server's `/version`); per test, `<test>/policies/`
//! (the policy files the webhook served) and `<test>/<kind>/<name>.json` (stored pods, the
//! patch sent, …); `reviews/` holds AdmissionReview bodies byte for byte as the API server
//! sent them to the second webhook.

use std::path::{Path, PathBuf};

use kube::Client;
use serde_json::Value;

const VAR: &str = "SPARK_ADMISSION_E2E_RECORD";

fn root() -> Option<PathBuf> {
    std::env::var_os(VAR)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("{VAR}: {}: {e}", parent.display()));
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{VAR}: {}: {e}", path.display()));
}

/// Saves a JSON value (indented: recordings are read by people too).
pub fn json(test: &str, kind: &str, name: &str, value: &Value) {
    if let Some(root) = root() {
        let text = serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
        write(
            &root.join(test).join(kind).join(format!("{name}.json")),
            text.as_bytes(),
        );
    }
}

/// Saves the policy files the test's webhook served.
pub fn policies(test: &str, folder: &Path) {
    let Some(root) = root() else { return };
    let out = root.join(test).join("policies");
    let _ = std::fs::remove_dir_all(&out);
    for entry in std::fs::read_dir(folder).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let text = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            write(&out.join(entry.file_name()), &text);
        }
    }
}

/// Saves a review body exactly as it arrived.
pub fn review(name: &str, body: &[u8]) {
    if let Some(root) = root() {
        write(&root.join("reviews").join(format!("{name}.json")), body);
    }
}

/// Saves the API server's `/version`.
pub async fn version(client: &Client) {
    if root().is_none() {
        return;
    }
    let info = client
        .apiserver_version()
        .await
        .unwrap_or_else(|e| panic!("{VAR}: GET /version: {e}"));
    let value = serde_json::to_value(&info).unwrap_or_default();
    if let Some(root) = root() {
        let text = serde_json::to_string_pretty(&value).unwrap_or_default() + "\n";
        write(&root.join("version.json"), text.as_bytes());
    }
}
