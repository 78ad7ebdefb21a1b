//! `POST /validate-policy` over real TLS: what `kubectl apply` of a policy ConfigMap gets.

use crate::common;

use hyper::StatusCode;
use serde_json::{json, Value};

use common::*;

const GOOD_TEAM: &str = r#"apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata: {name: team-defaults}
spec:
  namespaces: ["team-*"]
  all:
    labels: {platform.example.com/team: "yes"}
"#;

/// Document 1 is fine, document 2 has a string where an integer belongs.
const BAD_GPU: &str = r#"apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata: {name: cpu}
spec:
  namespaces: [analytics]
---
apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata: {name: gpu}
spec:
  namespaces: [analytics]
  executor:
    tolerations:
      - key: nvidia.com/gpu
        operator: Exists
        effect: NoSchedule
        tolerationSeconds: soon
"#;

fn configmap(name: &str, labelled: bool, data: &[(&str, &str)]) -> Value {
    let labels = if labelled {
        json!({"spark-admission.io/policy": "true"})
    } else {
        json!({})
    };
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "spark-admission", "labels": labels},
        "data": data,
    })
}

/// An AdmissionReview as the API server sends it for a ConfigMap.
fn review(operation: &str, cm: Value) -> Value {
    let name = cm["metadata"]["name"].clone();
    let (object, old) = match operation {
        "DELETE" => (Value::Null, cm),
        "UPDATE" => (cm.clone(), cm),
        _ => (cm, Value::Null),
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0b4a9d2e-7f3c-4e0e-9a43-6f1c2d3e4f50",
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "requestKind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "requestResource": {"group": "", "version": "v1", "resource": "configmaps"},
            "name": name,
            "namespace": "spark-admission",
            "operation": operation,
            "userInfo": {"username": "platform-admin", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": old,
            "dryRun": false,
        }
    })
}

async fn post(conn: &mut Conn, body: &Value) -> Value {
    let (status, bytes) = conn
        .post("/validate-policy?timeout=5s", to_bytes(body))
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let resp = response_of(&bytes);
    assert_eq!(resp["uid"], body["request"]["uid"]);
    resp
}

fn warnings(resp: &Value) -> Vec<String> {
    resp["warnings"]
        .as_array()
        .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_policy_configmap_is_allowed_and_ignored_keys_are_warned_about() {
    let t = TestServer::start(&[("labels.yaml", LABEL_POLICY)]).await;
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = t.connect(proto).await;
        let cm = configmap(
            "team-policies",
            true,
            &[("team.yaml", GOOD_TEAM), ("README.txt", "notes")],
        );
        for op in ["CREATE", "UPDATE"] {
            let resp = post(&mut conn, &review(op, cm.clone())).await;
            assert_eq!(resp["allowed"], true, "{op}: {resp}");
            assert!(resp.get("status").is_none());
            let w = warnings(&resp);
            assert_eq!(w.len(), 1, "{w:?}");
            assert!(w[0].contains("\"README.txt\" is ignored"), "{w:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_policy_configmap_is_denied_with_document_path_and_expectation() {
    let t = TestServer::start(&[("labels.yaml", LABEL_POLICY)]).await;
    let mut conn = t.connect(Proto::H2).await;
    let cm = configmap(
        "gpu-policies",
        true,
        &[("team.yaml", GOOD_TEAM), ("gpu.yaml", BAD_GPU)],
    );
    for op in ["CREATE", "UPDATE"] {
        let resp = post(&mut conn, &review(op, cm.clone())).await;
        assert_eq!(resp["allowed"], false, "{resp}");
        assert_eq!(resp["status"]["code"], 403);
        let message = resp["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("configmap spark-admission/gpu-policies has 1 policy error(s)"),
            "{message}"
        );
        assert!(
            message.contains(
                "gpu.yaml#2 (gpu): /spec/executor/tolerations/0/tolerationSeconds: \"soon\" is not of type \"integer\""
            ),
            "{message}"
        );
    }

    // Not YAML at all.
    let cm = configmap("typo", true, &[("bad.yaml", "a: [unclosed")]);
    let resp = post(&mut conn, &review("CREATE", cm)).await;
    assert_eq!(resp["allowed"], false);
    let message = resp["status"]["message"].as_str().unwrap();
    assert!(message.contains("bad.yaml: /: not valid YAML"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_yaml_is_denied_with_where_the_reader_stopped() {
    let t = TestServer::start(&[("labels.yaml", LABEL_POLICY)]).await;
    let mut conn = t.connect(Proto::H2).await;
    for (what, text) in spark_admission_testkit::hostile_yaml::texts() {
        let cm = configmap("hostile", true, &[("bad.yaml", &text)]);
        let resp = post(&mut conn, &review("CREATE", cm)).await;
        assert_eq!(resp["allowed"], false, "{what}: {resp}");
        let message = resp["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("bad.yaml: /: not valid YAML: line "),
            "{what}: {message}"
        );
    }
    // The server still answers.
    let cm = configmap("team-policies", true, &[("team.yaml", GOOD_TEAM)]);
    let resp = post(&mut conn, &review("CREATE", cm)).await;
    assert_eq!(resp["allowed"], true, "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_unlabelled_and_other_kinds_pass() {
    let t = TestServer::start(&[("labels.yaml", LABEL_POLICY)]).await;
    let mut conn = t.connect(Proto::H1).await;
    let broken_cm = configmap("gpu-policies", true, &[("gpu.yaml", BAD_GPU)]);
    // Deleting a policy ConfigMap is always allowed (its policies go away).
    let resp = post(&mut conn, &review("DELETE", broken_cm)).await;
    assert_eq!(resp["allowed"], true);
    // Without the label it holds no policies, whatever its content.
    let plain = configmap("app-config", false, &[("gpu.yaml", BAD_GPU)]);
    let resp = post(&mut conn, &review("CREATE", plain)).await;
    assert_eq!(resp["allowed"], true);
    assert!(resp.get("warnings").is_none());
    // A pod sent here by a misconfigured webhook passes untouched.
    let pod = fixture_json("validate-driver-scala-sparkpi.json");
    let (status, body) = conn.post("/validate-policy", to_bytes(&pod)).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response_of(&body)["allowed"], true);
    // Not a review at all.
    let (status, body) = conn.post("/validate-policy", b"{".to_vec()).await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("not JSON"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_already_in_force_elsewhere_is_a_warning() {
    let t = TestServer::start(&[("labels.yaml", LABEL_POLICY)]).await;
    let mut conn = t.connect(Proto::H2).await;
    let cm = configmap("copy", true, &[("labels.yaml", LABEL_POLICY)]);
    let resp = post(&mut conn, &review("CREATE", cm)).await;
    assert_eq!(resp["allowed"], true);
    let w = warnings(&resp);
    assert!(
        w.iter()
            .any(|w| w.contains("policy \"test-labels\" is also defined in")),
        "{w:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_configmaps_are_checked_even_while_the_policies_are_not_loaded() {
    // Broken at startup: unready, /mutate answers 503, but a fix can still be checked.
    let t = TestServer::start(&[("broken.yaml", BROKEN_POLICY)]).await;
    let mut conn = t.connect(Proto::H2).await;
    let (status, _) = conn
        .post(
            "/mutate",
            to_bytes(&fixture_json("mutate-driver-scala-sparkpi.json")),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let cm = configmap("team-policies", true, &[("team.yaml", GOOD_TEAM)]);
    let resp = post(&mut conn, &review("CREATE", cm)).await;
    assert_eq!(resp["allowed"], true);
    let text = t.server.metrics().encode().unwrap();
    assert!(
        text.contains(
            "spark_admission_requests_total{endpoint=\"validate_policy\",role=\"none\",outcome=\"unchanged\"} 1"
        ),
        "{text}"
    );
}
