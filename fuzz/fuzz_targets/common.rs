//! The fuzz targets' bodies, shared with `tests/engine/fuzz_regressions.rs`, which replays the
//! seeds and every past finding as ordinary tests. A panic here is a finding.

// Each target uses only some of these.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use spark_admission::admission::answer::Answer;
use spark_admission::admission::review::{self, Review};
use spark_admission::engine::{Engine, MutateRequest};
use spark_admission::matching::PolicySet;
use spark_admission::policy::{parse_documents, PolicySource};

/// The repository root, whether built from fuzz/ (cargo-fuzz) or from the root (tests).
fn repo_root() -> &'static Path {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    if here.join("policies").is_dir() {
        here
    } else {
        here.parent().unwrap_or(here)
    }
}

pub fn example_policies() -> &'static PolicySet {
    static SET: OnceLock<PolicySet> = OnceLock::new();
    SET.get_or_init(|| {
        let (policies, errors) =
            spark_admission::source::load_paths(&[repo_root().join("policies")]);
        assert!(errors.is_empty(), "example policies must load: {errors:?}");
        PolicySet::new(policies)
    })
}

/// Plans, applies and re-plans: the patch applies to the JSON as received, the result is a
/// Pod, and a second pass is empty.
pub fn check_plan(engine: &Engine, set: &PolicySet, raw: &Value, pod: &Pod, namespace: &str) {
    let m = engine
        .mutate(MutateRequest::new(set, pod, namespace))
        .expect("the engine plans the pod");
    let _ = engine.validate(set, pod, namespace);
    if m.patch.0.is_empty() {
        return;
    }
    let mut patched = raw.clone();
    if let Err(e) = json_patch::patch(&mut patched, &m.patch) {
        panic!(
            "patch does not apply: {e}: {}",
            serde_json::to_string(&m.patch).unwrap_or_default()
        );
    }
    // The webhook never reads managedFields (the API server validates and owns them), so
    // their content may be anything here: read the result as the webhook reads a pod.
    if let Some(meta) = patched.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    let again: Pod = match serde_json::from_value(patched) {
        Ok(p) => p,
        Err(e) => panic!("patched object is not a Pod: {e}"),
    };
    let second = engine
        .mutate(MutateRequest::new(set, &again, namespace))
        .expect("the engine plans the pod");
    assert!(
        second.patch.0.is_empty(),
        "second pass not empty: {}",
        serde_json::to_string(&second.patch).unwrap_or_default()
    );
}

/// AdmissionReview bytes -> decode -> mutate + validate -> encoded answer.
pub fn review(data: &[u8]) {
    let Ok(Review::PodCreate(create)) = review::decode(data) else {
        return;
    };
    let engine = Engine::default();
    let set = example_policies();
    let raw: Value = serde_json::from_slice(data).expect("a decoded body is JSON");
    check_plan(
        &engine,
        set,
        &raw["request"]["object"],
        &create.pod,
        &create.namespace,
    );

    let m = engine
        .mutate(MutateRequest::new(set, &create.pod, &create.namespace))
        .expect("the engine plans the pod");
    let mut answer = Answer::allow(create.uid.clone());
    answer.set_patch(&m.patch).expect("the patch serialises");
    let v = engine.validate(set, &create.pod, &create.namespace);
    if v.denied() {
        answer.deny(403, "Forbidden", v.denial_message());
    }
    let out = answer.to_review_json().expect("the answer serialises");
    let back: Value = serde_json::from_slice(&out).expect("the answer is JSON");
    assert_eq!(back["response"]["uid"], Value::String(create.uid.clone()));
}

/// Arbitrary pod JSON through the planner with the example policies.
pub fn planner(data: &[u8]) {
    let Ok(raw) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(pod) = serde_json::from_value::<Pod>(raw.clone()) else {
        return;
    };
    let engine = Engine::default();
    for ns in ["spark-jobs", "team-ml", "default"] {
        check_plan(&engine, example_policies(), &raw, &pod, ns);
    }
}

fn fixture_pods() -> &'static [(Value, Pod)] {
    static PODS: OnceLock<Vec<(Value, Pod)>> = OnceLock::new();
    PODS.get_or_init(|| {
        [
            "mutate-driver-rich.json",
            "mutate-executor-client-extra.json",
        ]
        .iter()
        .map(|f| {
            let path = repo_root().join("tests/fixtures/admission").join(f);
            let review: Value =
                serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json");
            let raw = review["request"]["object"].clone();
            let pod = serde_json::from_value(raw.clone()).expect("pod");
            (raw, pod)
        })
        .collect()
    })
}

/// Policy YAML -> schema check -> compile -> real pods planned with the result.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policies) = parse_documents(&PolicySource("fuzz.yaml".into()), text) else {
        return;
    };
    let set = PolicySet::new(policies.into_iter().map(Arc::new));
    let engine = Engine::default();
    for (raw, pod) in fixture_pods() {
        check_plan(&engine, &set, raw, pod, "spark-jobs");
    }
}
