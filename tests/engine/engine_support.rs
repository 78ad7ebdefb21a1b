//! Shared helpers for the engine tests: fixtures, policies from YAML, and the invariants
//! every patch must satisfy.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use spark_admission::engine::{Engine, MutateRequest, Mutation};
use spark_admission::matching::PolicySet;
use spark_admission::policy::{parse_documents, PolicySource};

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A raw pod from `tests/fixtures/spark/NAME.json` (as spark-submit sent it).
pub fn spark_pod(name: &str) -> Value {
    let text =
        std::fs::read_to_string(fixtures_dir().join("spark").join(format!("{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The pod inside `tests/fixtures/admission/NAME.json` (as the API server sent it).
pub fn review_pod(name: &str) -> Value {
    let text = std::fs::read_to_string(
        fixtures_dir()
            .join("admission")
            .join(format!("{name}.json")),
    )
    .unwrap();
    let review: Value = serde_json::from_str(&text).unwrap();
    review["request"]["object"].clone()
}

/// Every fixture pod, raw and reviewed: (label, pod JSON).
pub fn all_fixture_pods() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for dir in ["spark", "admission"] {
        let mut files: Vec<_> = std::fs::read_dir(fixtures_dir().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for f in files {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            let pod = if dir == "admission" {
                v["request"]["object"].clone()
            } else {
                v
            };
            out.push((
                format!("{dir}/{}", f.file_name().unwrap().to_string_lossy()),
                pod,
            ));
        }
    }
    out
}

pub fn policies(yaml: &str) -> PolicySet {
    let parsed = parse_documents(&PolicySource("test.yaml".into()), yaml)
        .unwrap_or_else(|e| panic!("policy errors: {e:?}"));
    PolicySet::new(parsed.into_iter().map(Arc::new))
}

pub fn example_policies() -> PolicySet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let (ps, errors) = spark_admission::source::load_paths(&[dir]);
    assert!(errors.is_empty(), "example policies must load: {errors:?}");
    PolicySet::new(ps)
}

pub fn typed(pod: &Value) -> Pod {
    serde_json::from_value(pod.clone()).unwrap()
}

/// Runs the engine, applies its patch to the JSON exactly as received, and checks the
/// invariants: the patch applies, the result is a Pod, a second pass changes nothing.
pub fn mutate_checked(set: &PolicySet, pod: &Value, ns: &str) -> (Mutation, Value) {
    let engine = Engine::default();
    let m = engine
        .mutate(MutateRequest::new(set, &typed(pod), ns).described(true))
        .expect("the engine plans the pod");
    assert_same_decision(
        &m,
        &engine
            .mutate(MutateRequest::new(set, &typed(pod), ns))
            .expect("the engine plans the pod"),
    );
    let mut out = pod.clone();
    json_patch::patch(&mut out, &m.patch).unwrap_or_else(|e| {
        panic!(
            "patch does not apply: {e}\n{}",
            serde_json::to_string_pretty(&m.patch).unwrap()
        )
    });
    let again_pod: Pod = serde_json::from_value(out.clone())
        .unwrap_or_else(|e| panic!("patched object is not a Pod: {e}"));
    let again = engine
        .mutate(MutateRequest::new(set, &again_pod, ns))
        .expect("the engine plans the pod");
    assert!(
        again.patch.0.is_empty(),
        "second pass must be empty, got {}",
        serde_json::to_string_pretty(&again.patch).unwrap()
    );
    (m, out)
}

/// The admission path (`mutate`, changes only counted) and `explain`'s path
/// (`mutate_described`) must decide the same: same patch, warnings, policies, and counts.
pub fn assert_same_decision(described: &Mutation, admitted: &Mutation) {
    assert_eq!(
        described.patch, admitted.patch,
        "patch differs between the two paths"
    );
    assert_eq!(described.warnings, admitted.warnings);
    assert_eq!(described.applied, admitted.applied);
    assert_eq!(described.changes_by_policy, admitted.changes_by_policy);
    assert!(admitted.changes.is_empty(), "mutate describes no changes");
    // Counted: the changes that stay in the pod, per policy in order of its first one.
    let mut counted: Vec<(String, u32)> = Vec::new();
    for c in described.changes.iter().filter(|c| c.applied) {
        match counted.iter_mut().find(|(p, _)| *p == c.policy) {
            Some((_, n)) => *n += 1,
            None => counted.push((c.policy.clone(), 1)),
        }
    }
    assert_eq!(
        counted, described.changes_by_policy,
        "counts match the described changes that took effect"
    );
}

pub fn spark_container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

pub fn env_value(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_owned))
}

pub fn paths(m: &Mutation) -> Vec<String> {
    serde_json::to_value(&m.patch)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap().to_owned())
        .collect()
}
