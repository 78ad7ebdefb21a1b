//! What a stored pod should look like: the same engine the webhook runs, in-process, on
//! the pod as the API server had it before any webhook (a dry-run create in a namespace
//! the shipped namespaceSelector leaves out).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::Value;

use spark_admission::engine::{Engine, MutateRequest, Mutation, Validation};
use spark_admission::matching::PolicySet;
use spark_admission::source::load_paths;

/// The namespace the shipped webhooks never see (their own).
pub const UNWATCHED_NS: &str = "spark-admission";

pub struct Expect {
    engine: Engine,
    set: PolicySet,
}

impl Expect {
    pub fn new(policies: &Path) -> Expect {
        let (policies, errors) = load_paths(&[policies.to_path_buf()]);
        assert!(errors.is_empty(), "policy errors: {errors:?}");
        Expect {
            // Pinning off: these scenarios serve the policy folder, and the webhook pins
            // only where it can verify a pin (the ConfigMap source, with stored drivers).
            engine: Engine::default(),
            set: PolicySet::new(policies),
        }
    }

    pub fn mutate(&self, pod: &Value, ns: &str) -> Mutation {
        let typed: Pod = serde_json::from_value(pod.clone()).expect("a Pod");
        self.engine
            .mutate(MutateRequest::new(&self.set, &typed, ns))
            .expect("the engine plans the pod")
    }

    /// The pod after the policies, and the validating verdict on it.
    pub fn plan(&self, pod: &Value, ns: &str) -> (Value, Validation) {
        let m = self.mutate(pod, ns);
        let mut out = pod.clone();
        json_patch::patch(&mut out, &m.patch).expect("the engine's patch applies");
        let typed: Pod = serde_json::from_value(out.clone()).expect("a Pod");
        let v = self.engine.validate(&self.set, &typed, ns);
        (out, v)
    }
}

/// The pod as the API server stores it without any webhook (defaults, the ServiceAccount
/// and Priority plugins): dry-run in the unwatched namespace, then moved to `ns`. Applied
/// to the engine's plan too: the API server defaults what a patch adds (an init
/// container's pull policy, a volume's defaultMode) and computes the priority of a class.
pub async fn defaulted(client: &Client, raw: &Value, ns: &str) -> Value {
    let pods: Api<Pod> = Api::namespaced(client.clone(), UNWATCHED_NS);
    let mut raw = strip_server_fields(raw.clone());
    raw["metadata"]["namespace"] = Value::String(UNWATCHED_NS.to_owned());
    let pod: Pod = serde_json::from_value(raw).expect("a Pod");
    let stored = pods
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &pod,
        )
        .await
        .unwrap_or_else(|e| panic!("dry-run of {:?}: {e}", pod.metadata.name));
    let mut v = serde_json::to_value(stored).expect("JSON");
    v["metadata"]["namespace"] = Value::String(ns.to_owned());
    v
}

/// Drops what the API server sets per create (uid, resourceVersion, timestamps,
/// managedFields, status) and the random suffix of the token volume's name.
pub fn normalize(pod: Value) -> Value {
    let text = serde_json::to_string(&strip_server_fields(pod)).expect("JSON");
    let re = regex_lite_token_volume(&text);
    serde_json::from_str(&re).expect("JSON")
}

fn strip_server_fields(mut pod: Value) -> Value {
    if let Some(m) = pod["metadata"].as_object_mut() {
        for k in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "generation",
        ] {
            m.remove(k);
        }
    }
    if let Some(o) = pod.as_object_mut() {
        o.remove("status");
    }
    pod
}

fn regex_lite_token_volume(text: &str) -> String {
    // kube-api-access-xxxxx: five random lowercase alphanumerics.
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    const P: &str = "kube-api-access-";
    while let Some(i) = rest.find(P) {
        out.push_str(&rest[..i + P.len()]);
        rest = &rest[i + P.len()..];
        let n = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .count();
        out.push_str("XXXXX");
        rest = &rest[n..];
    }
    out.push_str(rest);
    out
}

/// The raw bodies spark-submit POSTed (tests/fixtures/spark/), by file stem.
pub fn spark_fixtures() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spark");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 8,
        "expected the 8 captured pods in {}",
        dir.display()
    );
    files
        .into_iter()
        .map(|p| {
            let stem = p.file_stem().expect("stem").to_string_lossy().into_owned();
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).expect("read"))
                .expect("fixture JSON");
            (stem, v)
        })
        .collect()
}

/// The example policies (`policies/*.yaml`) copied into `dir`, plus `extra` files.
pub fn policy_folder(dir: &Path, extra: &[(&str, &str)]) -> PathBuf {
    let out = dir.join("policies");
    std::fs::create_dir_all(&out).expect("policy folder");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies");
    for e in std::fs::read_dir(&src).expect("policies/") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            std::fs::copy(&p, out.join(p.file_name().expect("name"))).expect("copy policy");
        }
    }
    for (name, text) in extra {
        std::fs::write(out.join(name), text).expect("extra policy");
    }
    out
}
