//! The real fixtures: `spark/` holds the pod bodies spark-submit POSTed, `admission/` the
//! AdmissionReviews a kube-apiserver sent for them (see tests/fixtures/README.md).

use std::path::{Path, PathBuf};

use serde_json::Value;

/// `tests/fixtures` of the repository.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&read(path))
        .unwrap_or_else(|e| panic!("fixture {} is not JSON: {e}", path.display()))
}

/// A raw pod from `spark/NAME.json`, as spark-submit sent it.
pub fn spark_pod(name: &str) -> Value {
    json(&dir().join("spark").join(format!("{name}.json")))
}

/// The bytes of `admission/NAME.json`, as the API server sent them.
pub fn review_bytes(name: &str) -> Vec<u8> {
    read(&dir().join("admission").join(format!("{name}.json")))
}

/// `admission/NAME.json` parsed.
pub fn review(name: &str) -> Value {
    json(&dir().join("admission").join(format!("{name}.json")))
}

/// The pod inside `admission/NAME.json`.
pub fn review_pod(name: &str) -> Value {
    review(name)["request"]["object"].clone()
}

/// The `.json` files of one fixture folder (`spark` or `admission`), sorted by name.
pub fn files(folder: &str) -> Vec<PathBuf> {
    let d = dir().join(folder);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("fixtures {}: {e}", d.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// Every raw pod of `spark/`: (file stem, pod).
pub fn spark_pods() -> Vec<(String, Value)> {
    files("spark")
        .into_iter()
        .map(|f| (stem(&f), json(&f)))
        .collect()
}

/// Every fixture pod, raw and reviewed: (`spark/NAME.json` or `admission/NAME.json`, pod).
pub fn all_pods() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for folder in ["spark", "admission"] {
        for f in files(folder) {
            let v = json(&f);
            let pod = if folder == "admission" {
                v["request"]["object"].clone()
            } else {
                v
            };
            out.push((format!("{folder}/{}.json", stem(&f)), pod));
        }
    }
    out
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}
