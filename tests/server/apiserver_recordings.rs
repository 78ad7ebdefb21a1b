//! What a real kube-apiserver did, replayed on every machine: `tests/fixtures/apiserver/`
//! was recorded by the API-server tier (`SPARK_ADMISSION_E2E_RECORD`, see the README) and
//! holds the pods as the API server stored them after our webhook, the probe pod before and
//! after, the patch we sent, and review bodies byte for byte as the API server sent them.
//! If the engine starts adding something the API server then defaults, or stops
//! recognising its own work, a second pass here is no longer empty.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use tower::ServiceExt;

use spark_admission::admission::{webhook_router, AppState, Limits};
use spark_admission::engine::{Engine, MutateRequest, Mutation};
use spark_admission::matching::PolicySet;
use spark_admission::metrics::Metrics;
use spark_admission::source::{load_paths, PolicyStore};
use spark_admission_testkit::fixtures::as_sent;

fn recordings() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/apiserver")
}

/// The JSON files of one recorded folder, by name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, bytes)
        })
        .collect();
    out.sort();
    out
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("recorded JSON: {e}"))
}

/// The policies the recorded test's webhook served.
fn policy_set(test: &str) -> PolicySet {
    let (policies, errors) = load_paths(&[recordings().join(test).join("policies")]);
    assert!(errors.is_empty(), "{test}: recorded policies: {errors:?}");
    assert!(!policies.is_empty(), "{test}: no recorded policies");
    PolicySet::new(policies)
}

/// The webhook's engine, as `serve` ran it for the recording: the folder source, so job
/// pinning off (pins are written only where stored drivers can verify them).
fn engine() -> Engine {
    Engine::default().with_job_pinning(false)
}

fn mutate(set: &PolicySet, pod: &Value) -> Mutation {
    let ns = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or_else(|| panic!("a stored pod has its namespace: {pod}"));
    let typed: Pod = serde_json::from_value(pod.clone()).expect("a Pod");
    engine()
        .mutate(MutateRequest::new(set, &typed, ns))
        .expect("the engine plans the pod")
}

#[test]
fn the_recording_names_the_kubernetes_version_it_came_from() {
    let version = json(&std::fs::read(recordings().join("version.json")).expect("version.json"));
    let git = version["gitVersion"].as_str().unwrap_or_default();
    assert!(
        git.starts_with("v1.32."),
        "recorded from {git:?}: the shipped configurations and the e2e tier target v1.32"
    );
}

#[test]
fn a_second_pass_over_every_pod_the_api_server_stored_changes_nothing() {
    let mut seen = 0;
    for test in ["fixtures", "defaults"] {
        let set = policy_set(test);
        for (name, bytes) in files(&recordings().join(test).join("stored")) {
            let stored = json(&bytes);
            let again = mutate(&set, &stored);
            assert!(
                again.is_spark(),
                "{test}/{name}: not recognised as a Spark pod"
            );
            assert!(
                again.patch.0.is_empty(),
                "{test}/{name}: a second pass over what the API server stored would change {:?}",
                again.patch
            );
            // Nor does it warn about what it added itself, back with the API server's
            // defaults: a warning on every pod teaches people to ignore warnings.
            assert!(
                again.warnings.is_empty(),
                "{test}/{name}: the second pass warns {:?}",
                again.warnings
            );
            // The API server's own tolerations survived our patch.
            let tolerations = stored["spec"]["tolerations"].to_string();
            for key in [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
            ] {
                assert!(tolerations.contains(key), "{test}/{name}: {key} is gone");
            }
            seen += 1;
        }
    }
    // 8 captured pods in 2 namespaces, less the ones the guardrails refuse, and the probe.
    assert!(seen >= 13, "only {seen} recorded stored pods");
}

#[test]
fn drivers_with_a_priority_class_were_stored_with_the_class_priority() {
    let mut drivers = 0;
    for (name, bytes) in files(&recordings().join("fixtures/stored")) {
        let stored = json(&bytes);
        if stored["metadata"]["labels"]["spark-role"] != "driver" {
            continue;
        }
        // Our patch removed the spec's `priority: 0` so the Priority plugin could set it.
        assert_eq!(
            stored["spec"]["priorityClassName"], "spark-driver",
            "{name}"
        );
        assert_eq!(stored["spec"]["priority"], 1000, "{name}");
        drivers += 1;
    }
    assert!(drivers >= 4, "only {drivers} recorded drivers");
}

#[test]
fn the_api_server_defaults_what_our_patch_adds_where_the_engine_expects_it() {
    let dir = recordings().join("defaults");
    let sent = String::from_utf8(std::fs::read(dir.join("patch/probe.json")).expect("patch"))
        .expect("UTF-8");
    let stored = json(&std::fs::read(dir.join("stored/probe.json")).expect("stored"));
    let before = json(&std::fs::read(dir.join("before/probe.json")).expect("before"));

    // What the recorded API server added to the init container our patch added.
    let init = &stored["spec"]["initContainers"][0];
    for (field, value) in [
        ("imagePullPolicy", "IfNotPresent"),
        ("terminationMessagePath", "/dev/termination-log"),
        ("terminationMessagePolicy", "File"),
    ] {
        assert_eq!(init[field], value, "the API server's default for {field}");
        assert!(!sent.contains(&format!("\"{field}\"")), "we sent {field}");
    }
    let mounts = init["volumeMounts"].to_string();
    assert!(
        mounts.contains("/var/run/secrets/kubernetes.io/serviceaccount"),
        "the ServiceAccount plugin mounted the token into our init container: {init}"
    );
    let conf = stored["spec"]["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "extra-conf"))
        .expect("extra-conf volume");
    assert_eq!(conf["configMap"]["defaultMode"], 420);
    assert!(!sent.contains("defaultMode"), "we sent defaultMode");

    // Today's engine still leaves those fields to the API server on the same pod.
    let today =
        serde_json::to_string(&mutate(&policy_set("defaults"), &before).patch).expect("JSON");
    for field in [
        "imagePullPolicy",
        "terminationMessagePath",
        "terminationMessagePolicy",
        "defaultMode",
    ] {
        assert!(
            !today.contains(&format!("\"{field}\"")),
            "the engine now sets {field}, which the API server defaults: {today}"
        );
    }
}

#[tokio::test]
async fn every_review_body_the_api_server_sent_is_compact_and_answered_with_nothing_left_to_do() {
    let set = policy_set("fixtures");
    let store = Arc::new(PolicyStore::new());
    store.install(set);
    let state = AppState::new(engine(), store, Arc::new(Metrics::new()), Limits::default());
    let router = webhook_router(Arc::new(state));
    let reviews = files(&recordings().join("reviews"));
    assert!(
        reviews.len() >= 10,
        "only {} recorded reviews",
        reviews.len()
    );
    for (name, body) in reviews {
        // As sent: compact JSON, nothing between tokens, and one newline at the end (the
        // API server's JSON encoder ends every value with one).
        let compact = body
            .strip_suffix(b"\n")
            .unwrap_or_else(|| panic!("{name}: no newline at the end"));
        assert!(
            as_sent(compact) == compact,
            "{name}: the API server sends compact JSON"
        );
        let sent = json(&body);
        let req = Request::post("/mutate?timeout=10s")
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .expect("request");
        let resp = router.clone().oneshot(req).await.expect("router");
        assert_eq!(resp.status(), StatusCode::OK, "{name}");
        let answer = resp.into_body().collect().await.expect("body").to_bytes();
        let response = common::response_of(&answer);
        assert_eq!(response["uid"], sent["request"]["uid"], "{name}");
        assert_eq!(response["allowed"], true, "{name}");
        // These bodies reached the second webhook after ours had patched the pod: ours
        // has nothing more to do on them.
        assert!(
            response.get("patch").is_none(),
            "{name}: our webhook would patch again: {}",
            common::patched_object(&sent, &response)
        );
    }
}
