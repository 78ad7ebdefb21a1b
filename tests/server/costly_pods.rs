//! Pods crafted to be expensive (issue 25): lists far longer than any Spark pod's are
//! refused before planning with the field, count and limit; a review is never evaluated
//! past its deadline, inline or on the blocking pool, and is refused rather than admitted.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use common::*;
use spark_admission::admission::{webhook_router, AppState, Limits};
use spark_admission::engine::{Engine, PodLimits};
use spark_admission::matching::PolicySet;
use spark_admission::metrics::Metrics;
use spark_admission::policy::{parse_documents, PolicySource};
use spark_admission::source::PolicyStore;
use spark_admission_testkit::key_order::KeyOrder;

/// Required node affinity for the executors of every application, as the shipped
/// `gpu-executors` policy has it for `gpu-*` applications.
const NODE_AFFINITY_POLICY: &str = r#"apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata:
  name: test-gpu-nodes
spec:
  namespaces: ["*"]
  selector:
    roles: [executor]
  executor:
    resources:
      force:
        limits: {nvidia.com/gpu: "1"}
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms:
            - matchExpressions:
                - {key: nvidia.com/gpu.present, operator: In, values: ["true"]}
"#;

fn router_with(policies: &[&str], limits: Limits) -> (Router, Arc<Metrics>) {
    let mut all = Vec::new();
    for (i, text) in policies.iter().enumerate() {
        let docs = parse_documents(&PolicySource(format!("test-{i}.yaml")), text).unwrap();
        all.extend(docs.into_iter().map(Arc::new));
    }
    let store = Arc::new(PolicyStore::new());
    store.install(PolicySet::new(all));
    let metrics = Arc::new(Metrics::new());
    let state = AppState::new(Engine::default(), store, Arc::clone(&metrics), limits);
    (webhook_router(Arc::new(state)), metrics)
}

async fn call(router: &Router, uri: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let req = Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.to_vec())
}

async fn answer(router: &Router, uri: &str, review: &Value) -> Value {
    let (status, body) = call(router, uri, to_bytes(review)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    response_of(&body)
}

/// The executor review a kube-apiserver sent, with `terms` distinct required node
/// selector terms.
fn executor_with_terms(terms: usize) -> Value {
    let mut review = fixture_json("mutate-executor-rich-1.json");
    let terms: Vec<Value> = (0..terms)
        .map(|i| json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": [format!("z{i}")]}]}))
        .collect();
    review["request"]["object"]["spec"]["affinity"] = json!({
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}
    });
    review
}

/// The executor review with `extra` more containers, each with limits (the API server
/// fills requests from them).
fn executor_with_containers(extra: usize) -> Value {
    let mut review = fixture_json("mutate-executor-rich-1.json");
    let containers = review["request"]["object"]["spec"]["containers"]
        .as_array_mut()
        .unwrap();
    for i in 0..extra {
        containers.push(json!({
            "name": format!("c{i}"),
            "image": "busybox",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}
        }));
    }
    review
}

fn message(resp: &Value) -> &str {
    resp["status"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_pod_with_more_node_selector_terms_than_any_spark_pod_is_refused_naming_the_field() {
    let (router, metrics) = router_with(&[NODE_AFFINITY_POLICY], Limits::default());
    let limit = PodLimits::default().terms;
    let resp = answer(&router, "/mutate", &executor_with_terms(1000)).await;
    assert_eq!(resp["allowed"], false, "{resp}");
    assert_eq!(resp["status"]["code"], 422, "{resp}");
    assert!(resp.get("patch").is_none(), "{resp}");
    let m = message(&resp);
    assert!(
        m.contains(&format!(
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms has more than {limit} entries"
        )),
        "{m}"
    );
    assert!(m.contains("not admitted"), "{m}");
    assert!(metrics.encode().unwrap().contains(
        r#"spark_admission_requests_total{endpoint="mutate",role="executor",outcome="denied"} 1"#
    ));

    // At the limit the same pod is planned: every term gets the policy's requirement.
    let resp = answer(&router, "/mutate", &executor_with_terms(limit)).await;
    assert_eq!(resp["allowed"], true, "{resp}");
    let pod = patched_object(&executor_with_terms(limit), &resp);
    let terms = pod["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        .as_array()
        .unwrap();
    assert_eq!(terms.len(), limit);
    assert!(terms
        .iter()
        .all(|t| t["matchExpressions"][1]["key"] == "nvidia.com/gpu.present"));
}

/// The same crafted review with its keys where the API server writes them (the request's
/// uid, kind and operation before its object, the pod's metadata before its spec) and with
/// them sorted (the object first): the scan stops one entry past the limit in the first and
/// reads to the end in the second; the answer is the same 422 naming the field and limit.
#[tokio::test]
async fn a_crafted_review_is_refused_alike_in_the_api_servers_key_order_and_sorted() {
    let (router, metrics) = router_with(&[NODE_AFFINITY_POLICY], Limits::default());
    let limit = PodLimits::default().terms;
    let review = executor_with_terms(5000);
    let order = KeyOrder::of(&fixture("mutate-executor-rich-1.json")).unwrap();
    let as_sent = order.write(&review).unwrap();
    let text = String::from_utf8_lossy(&as_sent);
    let at = |key: &str| text.find(&format!("\"{key}\":")).unwrap();
    assert!(at("uid") < at("object") && at("operation") < at("object"));
    assert!(at("metadata") < at("spec") && as_sent.len() > 256 * 1024);
    let sorted = to_bytes(&review);
    assert!(sorted.len() == as_sent.len() && sorted != as_sent);
    for body in [as_sent, sorted] {
        let (status, body) = call(&router, "/mutate", body).await;
        assert_eq!(status, StatusCode::OK);
        let resp = response_of(&body);
        assert_eq!(resp["allowed"], false, "{resp}");
        assert_eq!(resp["status"]["code"], 422, "{resp}");
        assert!(resp.get("patch").is_none(), "{resp}");
        assert!(
            message(&resp).contains(&format!(
                "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms has more than {limit} entries"
            )),
            "{resp}"
        );
    }
    assert!(metrics.encode().unwrap().contains(
        r#"spark_admission_requests_total{endpoint="mutate",role="executor",outcome="denied"} 2"#
    ));
}

#[tokio::test]
async fn a_pod_with_more_containers_than_any_spark_pod_is_refused_by_mutate_and_validate() {
    let (router, _) = router_with(&[NODE_AFFINITY_POLICY, DENY_POLICY], Limits::default());
    let limit = PodLimits::default().containers;
    let review = executor_with_containers(limit);
    let expected = format!(
        "spec.containers has {} entries, more than the {limit}",
        limit + 1
    );
    let resp = answer(&router, "/mutate", &review).await;
    assert_eq!(resp["allowed"], false, "{resp}");
    assert_eq!(resp["status"]["code"], 422, "{resp}");
    assert!(message(&resp).contains(&expected), "{resp}");

    // The rules are not run on it either (DENY_POLICY checks every Spark pod).
    let mut validate = review.clone();
    validate["request"]["object"]["metadata"]["labels"]["cost-center"] = json!("data");
    let resp = answer(&router, "/validate", &validate).await;
    assert_eq!(resp["allowed"], false, "{resp}");
    assert_eq!(resp["status"]["code"], 422, "{resp}");
    assert!(message(&resp).contains(&expected), "{resp}");

    // One container fewer is planned and checked.
    let ok = executor_with_containers(limit - 1);
    let resp = answer(&router, "/mutate", &ok).await;
    assert_eq!(resp["allowed"], true, "{resp}");
    let mut ok = ok;
    ok["request"]["object"]["metadata"]["labels"]["cost-center"] = json!("data");
    let resp = answer(&router, "/validate", &ok).await;
    assert_eq!(resp["allowed"], true, "{resp}");
}

/// A deadline that has passed by the time the review is evaluated (the body is already in
/// memory, so reading it and taking a slot succeed at once): the planner sees it and the
/// pod is refused, never admitted with an empty patch.
#[tokio::test]
async fn a_review_past_its_deadline_is_refused_by_the_planner_inline_and_in_validation() {
    let limits = Limits {
        request_timeout: Duration::from_nanos(1),
        ..Limits::default()
    };
    let (router, metrics) = router_with(&[NODE_AFFINITY_POLICY, DENY_POLICY], limits);
    let review = executor_with_terms(2);
    let resp = answer(&router, "/mutate", &review).await;
    assert_eq!(resp["allowed"], false, "{resp}");
    assert_eq!(resp["status"]["code"], 503, "{resp}");
    assert!(resp.get("patch").is_none(), "{resp}");
    assert!(
        message(&resp).contains("stopped at the review's deadline"),
        "{resp}"
    );
    let resp = answer(&router, "/validate", &review).await;
    assert_eq!(resp["allowed"], false, "{resp}");
    assert!(
        message(&resp).contains("stopped at the review's deadline"),
        "{resp}"
    );
    assert!(metrics.encode().unwrap().contains(
        r#"spark_admission_requests_total{endpoint="mutate",role="executor",outcome="error"} 1"#
    ));
}

/// The same for a review large enough for the blocking pool: refused, never admitted.
#[tokio::test]
async fn a_large_review_past_its_deadline_is_refused() {
    let limits = Limits {
        request_timeout: Duration::from_nanos(1),
        ..Limits::default()
    };
    let (router, _) = router_with(&[NODE_AFFINITY_POLICY], limits);
    // About 300 KB: above the inline size, within every list limit.
    let mut review = executor_with_terms(2);
    review["request"]["object"]["metadata"]["annotations"]["example.com/padding"] =
        json!("x".repeat(300 * 1024));
    let (status, body) = call(&router, "/mutate", to_bytes(&review)).await;
    let text = String::from_utf8_lossy(&body);
    match status {
        // The pool's job reached the planner first, which refused.
        StatusCode::OK => {
            let resp = response_of(&body);
            assert_eq!(resp["allowed"], false, "{resp}");
            assert!(
                message(&resp).contains("stopped at the review's deadline"),
                "{resp}"
            );
        }
        // The deadline answered first; the job then stops before decoding.
        StatusCode::SERVICE_UNAVAILABLE => {
            assert!(text.contains("not evaluated within"), "{text}")
        }
        other => panic!("{other}: {text}"),
    }
}

/// With time to spare, the large review is planned: its size alone is no reason to refuse.
#[tokio::test]
async fn a_benign_large_review_is_planned() {
    let (router, _) = router_with(&[NODE_AFFINITY_POLICY], Limits::default());
    let mut review = executor_with_terms(2);
    review["request"]["object"]["metadata"]["annotations"]["example.com/padding"] =
        json!("x".repeat(400 * 1024));
    let resp = answer(&router, "/mutate", &review).await;
    assert_eq!(resp["allowed"], true, "{resp}");
    assert!(resp["patch"].is_string(), "{resp}");
}

/// A driver review whose Spark container has `entries` as its `field` list: refused with
/// 422, naming the container's list and `limit`.
async fn refused_naming_the_list(field: &str, entries: Vec<Value>, limit: usize) {
    let (router, _) = router_with(&[LABEL_POLICY], Limits::default());
    let mut review = fixture_json("mutate-driver-rich.json");
    review["request"]["object"]["spec"]["containers"][0][field] = Value::Array(entries);
    let resp = answer(&router, "/mutate", &review).await;
    assert_eq!(resp["allowed"], false, "{resp}");
    assert_eq!(resp["status"]["code"], 422, "{resp}");
    assert!(
        message(&resp).contains(&format!(
            "spec.containers[0].{field} has more than {limit} entries"
        )),
        "{resp}"
    );
}

/// The huge-array review the robustness tests once sent (30,000 env entries) is a pod no
/// Spark submission makes: refused naming the container's env, its count and the limit.
#[tokio::test]
async fn thirty_thousand_env_entries_are_refused_naming_the_container() {
    let env = (0..30_000)
        .map(|i| json!({"name": format!("V{i}"), "value": "1"}))
        .collect();
    refused_naming_the_list("env", env, PodLimits::default().env).await;
}

/// Container args: nothing merges into them, but 30,000 short strings cost ~15x a benign
/// body of the same size to decode; no Spark submission passes that many.
#[tokio::test]
async fn thirty_thousand_container_args_are_refused_naming_the_container() {
    let args = (0..30_000)
        .map(|i| json!(format!("--application-arg-{i}=1")))
        .collect();
    refused_naming_the_list("args", args, PodLimits::default().arguments).await;
}

/// Every list under its own limit, but 64 containers of them: refused by their total, before
/// decoding (the scan) and by the engine's own check alike.
#[tokio::test]
async fn containers_whose_lists_together_pass_the_pods_total_are_refused() {
    let (router, _) = router_with(&[LABEL_POLICY], Limits::default());
    let limits = PodLimits::default();
    let per = limits.env - 24;
    let count = limits.container_entries / per + 1;
    let mut review = fixture_json("mutate-driver-rich.json");
    let containers = review["request"]["object"]["spec"]["containers"]
        .as_array_mut()
        .expect("containers");
    for c in 0..count {
        containers.push(json!({
            "name": format!("wide-{c}"),
            "image": "busybox",
            "env": (0..per).map(|i| json!({"name": format!("W{i}"), "value": "1"})).collect::<Vec<_>>(),
        }));
    }
    assert!(
        count < limits.containers,
        "each list stays under its own limit"
    );
    let resp = answer(&router, "/mutate", &review).await;
    assert_eq!(resp["allowed"], false, "{resp}");
    assert_eq!(resp["status"]["code"], 422, "{resp}");
    assert!(
        message(&resp).contains(&format!(
            "{} has more than {} entries",
            spark_admission::engine::CONTAINER_ENTRIES_FIELD,
            limits.container_entries
        )),
        "{resp}"
    );
}
