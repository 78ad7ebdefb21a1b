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

/// The bytes of the file `admission/NAME.json`: the API server's review, indented for
/// reading. What a webhook really receives is [`as_sent`] of these bytes.
pub fn review_bytes(name: &str) -> Vec<u8> {
    read(&dir().join("admission").join(format!("{name}.json")))
}

/// The review as the API server sends it: the same JSON, keys in the same order, without
/// the indentation the fixture files were saved with. A real kube-apiserver's body has no
/// whitespace between tokens (the e2e suite's webhook logs `body_bytes=7113` for the rich
/// driver whose fixture file is 16,021 bytes), and whitespace is half of what a decoder
/// would otherwise scan.
pub fn as_sent(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if b.is_ascii_whitespace() {
            continue;
        }
        out.push(b);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_sent_keeps_the_json_and_its_key_order_and_drops_only_indentation() {
        for f in files("admission") {
            let file = read(&f);
            let sent = as_sent(&file);
            let (a, b): (Value, Value) = (
                serde_json::from_slice(&file).unwrap_or_default(),
                serde_json::from_slice(&sent).unwrap_or_default(),
            );
            assert!(a.is_object() && a == b, "{}", f.display());
            // Nothing moved: the file is the sent bytes with whitespace put between them.
            let mut rest = sent.iter().peekable();
            for b in &file {
                if rest.peek() == Some(&b) {
                    rest.next();
                } else {
                    assert!(b.is_ascii_whitespace(), "{}", f.display());
                }
            }
            assert!(rest.next().is_none(), "{}", f.display());
            assert!(sent.len() < file.len() * 3 / 4, "{}", f.display());
        }
        let tricky = br#"{ "a" : "x \" y\\", "b":[ 1 , "  " ] }"#;
        assert_eq!(
            as_sent(tricky),
            br#"{"a":"x \" y\\","b":[1,"  "]}"#.to_vec()
        );
    }
}
