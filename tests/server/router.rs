//! The webhook router without sockets: real AdmissionReviews through `Router::oneshot`.

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
use spark_admission::engine::Engine;
use spark_admission::matching::PolicySet;
use spark_admission::metrics::Metrics;
use spark_admission::policy::{parse_documents, PolicySource};
use spark_admission::source::PolicyStore;

struct Fixture {
    router: Router,
    metrics: Arc<Metrics>,
}

fn router_with(policies: &[&str], limits: Limits) -> Fixture {
    let mut all = Vec::new();
    for (i, text) in policies.iter().enumerate() {
        let docs = parse_documents(&PolicySource(format!("test-{i}.yaml")), text).unwrap();
        all.extend(docs.into_iter().map(Arc::new));
    }
    let store = Arc::new(PolicyStore::new());
    store.install(PolicySet::new(all));
    let metrics = Arc::new(Metrics::new());
    let state = AppState::new(Engine::default(), store, Arc::clone(&metrics), limits);
    Fixture {
        router: webhook_router(Arc::new(state)),
        metrics,
    }
}

fn router(policies: &[&str]) -> Fixture {
    router_with(policies, Limits::default())
}

async fn call(router: &Router, uri: &str, body: impl Into<Body>) -> (StatusCode, Vec<u8>) {
    let req = Request::post(uri)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.to_vec())
}

async fn review(router: &Router, uri: &str, review: &Value) -> Value {
    let (status, body) = call(router, uri, to_bytes(review)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "body: {}",
        String::from_utf8_lossy(&body)
    );
    response_of(&body)
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// Posts a body that is still arriving to `uri`; the webhook must cut it with a 408 on its
/// own, within `within` (the caller's deadline is far longer). Returns the reason.
async fn cut_with_408(router: &Router, uri: &str, body: Body, within: Duration) -> String {
    let (status, body) = tokio::time::timeout(within, call(router, uri, body))
        .await
        .expect("the webhook must answer on its own");
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{}", text(&body));
    text(&body)
}

#[tokio::test]
async fn mutate_patches_a_driver_as_the_api_server_sent_it() {
    let f = router(&[LABEL_POLICY]);
    let req = fixture_json("mutate-driver-scala-sparkpi.json");
    let resp = review(&f.router, "/mutate?timeout=10s", &req).await;

    assert_eq!(resp["uid"], req["request"]["uid"]);
    assert_eq!(resp["allowed"], true);
    assert!(
        resp["patch"].is_string(),
        "patch must be base64 text: {resp}"
    );
    assert!(resp.get("status").is_none());
    let applied = resp["auditAnnotations"]["applied-policies"]
        .as_str()
        .unwrap();
    assert!(applied.starts_with("test-labels@"), "{applied}");

    let pod = patched_object(&req, &resp);
    assert_eq!(
        pod["metadata"]["labels"]["platform.example.com/managed"],
        "yes"
    );
    // The API server's two default tolerations stay first; ours is appended after them.
    let before = req["request"]["object"]["spec"]["tolerations"]
        .as_array()
        .unwrap();
    let after = pod["spec"]["tolerations"].as_array().unwrap();
    assert_eq!(before.len(), 2);
    assert_eq!(after.len(), 3);
    assert_eq!(&after[..2], &before[..]);
    assert_eq!(after[2]["key"], "example.com/spark-pool");
    // Everything Spark set is still there.
    assert_eq!(
        pod["spec"]["containers"][0]["name"],
        "spark-kubernetes-driver"
    );
}

#[tokio::test]
async fn every_recorded_mutate_review_gets_a_patch_that_applies() {
    let f = router(&[LABEL_POLICY]);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !(name.starts_with("mutate-") && name.ends_with(".json")) {
            continue;
        }
        let req = fixture_json(&name);
        let resp = review(&f.router, "/mutate", &req).await;
        assert_eq!(resp["uid"], req["request"]["uid"], "{name}");
        let pod = patched_object(&req, &resp);
        assert_eq!(
            pod["metadata"]["labels"]["platform.example.com/managed"], "yes",
            "{name}"
        );
        seen += 1;
    }
    assert!(seen >= 8, "only {seen} mutate fixtures");
}

#[tokio::test]
async fn a_pod_without_spark_role_is_allowed_unchanged() {
    let f = router(&[LABEL_POLICY, DENY_POLICY]);
    for (uri, file) in [
        ("/mutate", "mutate-driver-rich.json"),
        ("/validate", "validate-driver-rich.json"),
    ] {
        let mut req = fixture_json(file);
        req["request"]["object"]["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("spark-role");
        let resp = review(&f.router, uri, &req).await;
        assert_eq!(resp["allowed"], true, "{uri}");
        assert_eq!(resp["uid"], req["request"]["uid"]);
        assert!(resp.get("patch").is_none(), "{resp}");
        assert!(resp.get("patchType").is_none(), "{resp}");
        assert!(resp.get("status").is_none(), "{resp}");
    }
    let metrics = f.metrics.encode().unwrap();
    assert!(
        metrics.contains(
            r#"spark_admission_requests_total{endpoint="mutate",role="none",outcome="unchanged"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn nothing_to_change_means_no_patch_fields() {
    // The policy applies to another namespace only.
    let f = router(&[&LABEL_POLICY.replace("[spark-jobs]", "[elsewhere]")]);
    let req = fixture_json("mutate-executor-client-1.json");
    let resp = review(&f.router, "/mutate", &req).await;
    assert_eq!(resp["allowed"], true);
    assert!(resp.get("patch").is_none() && resp.get("patchType").is_none());
    assert!(resp.get("auditAnnotations").is_none(), "{resp}");
}

#[tokio::test]
async fn validate_denies_with_403_and_the_rule_message() {
    let f = router(&[DENY_POLICY]);
    let req = fixture_json("validate-driver-rich.json");
    let resp = review(&f.router, "/validate?timeout=10s", &req).await;
    assert_eq!(resp["uid"], req["request"]["uid"]);
    assert_eq!(resp["allowed"], false);
    assert_eq!(resp["status"]["code"], 403);
    let message = resp["status"]["message"].as_str().unwrap();
    assert!(message.contains("test-cost-center"), "{message}");
    assert!(message.contains("cost-center"), "{message}");
    assert!(resp.get("patch").is_none());
    let checked = resp["auditAnnotations"]["checked-policies"]
        .as_str()
        .unwrap();
    assert!(checked.starts_with("test-cost-center@"), "{checked}");

    // With the label the same pod passes.
    let mut ok = req.clone();
    ok["request"]["object"]["metadata"]["labels"]["cost-center"] = json!("data");
    let resp = review(&f.router, "/validate", &ok).await;
    assert_eq!(resp["allowed"], true, "{resp}");
    assert!(resp.get("status").is_none());

    let metrics = f.metrics.encode().unwrap();
    assert!(metrics.contains(
        r#"spark_admission_requests_total{endpoint="validate",role="driver",outcome="denied"} 1"#
    ));
    // The denial counted under its policy and rule; the pod that passed is not.
    assert!(
        metrics.contains(
            r#"spark_admission_rule_findings_total{policy="test-cost-center",rule="requiredLabels",mode="enforce"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn warn_findings_become_warnings_and_audit_findings_audit_annotations() {
    let f = router(&[WARN_POLICY, AUDIT_POLICY]);
    let req = fixture_json("validate-executor-rich-1.json");
    let resp = review(&f.router, "/validate", &req).await;
    assert_eq!(resp["allowed"], true);
    let warnings = resp["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{resp}");
    assert!(warnings[0].as_str().unwrap().contains("owner"));
    let audit = resp["auditAnnotations"]["audit-findings"].as_str().unwrap();
    assert!(audit.contains("test-escalation"), "{audit}");
    let checked = resp["auditAnnotations"]["checked-policies"]
        .as_str()
        .unwrap();
    assert!(checked.contains("test-owner@") && checked.contains("test-escalation@"));
    let metrics = f.metrics.encode().unwrap();
    assert!(metrics.contains(
        r#"spark_admission_requests_total{endpoint="validate",role="executor",outcome="warned"} 1"#
    ));
    for line in [
        r#"spark_admission_rule_findings_total{policy="test-owner",rule="requiredLabels",mode="warn"} 1"#,
        r#"spark_admission_rule_findings_total{policy="test-escalation",rule="forbidPrivilegeEscalation",mode="audit"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}

/// The API server passes on 4,096 characters of a request's warnings whole and drops the
/// rest silently (with a real one, 20 of these 30 reached kubectl; tests/e2e/validation.rs):
/// the answer keeps the first whole within its share and counts the rest.
#[tokio::test]
async fn too_many_warnings_are_cut_to_whole_ones_and_a_count_of_the_rest() {
    const IMAGES: &str = r#"apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata:
  name: test-images
spec:
  namespaces: ["*"]
  validate:
    mode: warn
    allowedImages: ["apache/spark:*", "registry.example.com/spark/*"]
"#;
    let f = router(&[IMAGES]);
    let mut req = fixture_json("validate-driver-rich.json");
    let containers = req["request"]["object"]["spec"]["containers"]
        .as_array_mut()
        .unwrap();
    containers[0]["image"] = json!("apache/spark:3.5.3");
    for i in 0..30 {
        containers.push(json!({"name": format!("helper-{i:02}"), "image": format!("quay.io/x/helper-{i:02}:1")}));
    }
    let resp = review(&f.router, "/validate", &req).await;
    assert_eq!(resp["allowed"], true, "{resp}");
    let warnings: Vec<&str> = resp["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    let chars: usize = warnings.iter().map(|w| w.chars().count()).sum();
    assert!(chars <= 4096 - 256, "{chars} characters");
    let (last, shown) = warnings.split_last().unwrap();
    assert!(shown.len() >= 5, "{warnings:#?}");
    for (i, w) in shown.iter().enumerate() {
        assert!(w.contains(&format!("\"helper-{i:02}\"")), "in order: {w}");
        assert!(w.ends_with("registry.example.com/spark/*)"), "whole: {w}");
    }
    assert!(
        last.starts_with(&format!(
            "spark-admission: {} more warning(s) left out",
            30 - shown.len()
        )),
        "{last}"
    );
    // Every finding still counts in the metric, shown or not.
    let metrics = f.metrics.encode().unwrap();
    assert!(metrics.contains(
        r#"spark_admission_rule_findings_total{policy="test-images",rule="allowedImages",mode="warn"} 1"#
    ), "{metrics}");
}

#[tokio::test]
async fn other_operations_and_kinds_are_allowed_unchanged() {
    let f = router(&[LABEL_POLICY, DENY_POLICY]);

    let mut delete = fixture_json("mutate-driver-rich.json");
    let pod = delete["request"]["object"].take();
    delete["request"]["operation"] = json!("DELETE");
    delete["request"]["oldObject"] = pod;
    for uri in ["/mutate", "/validate"] {
        let resp = review(&f.router, uri, &delete).await;
        assert_eq!(resp["allowed"], true);
        assert_eq!(resp["uid"], delete["request"]["uid"]);
        assert!(resp.get("patch").is_none());
    }

    // An UPDATE, as the API server sends it (with oldObject), is never mutated.
    let mut update = fixture_json("mutate-driver-rich.json");
    update["request"]["operation"] = json!("UPDATE");
    update["request"]["oldObject"] = update["request"]["object"].clone();
    let resp = review(&f.router, "/mutate", &update).await;
    assert_eq!(resp["allowed"], true);
    assert!(resp.get("patch").is_none());

    let mut config_map = fixture_json("mutate-driver-rich.json");
    config_map["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
    config_map["request"]["resource"] =
        json!({"group": "", "version": "v1", "resource": "configmaps"});
    config_map["request"]["object"] = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "spark-jobs", "labels": {"spark-role": "driver"}},
        "data": {"a": "b"}
    });
    for uri in ["/mutate", "/validate"] {
        let resp = review(&f.router, uri, &config_map).await;
        assert_eq!(resp["allowed"], true, "{uri}");
        assert_eq!(resp["uid"], config_map["request"]["uid"]);
        assert!(resp.get("patch").is_none());
    }

    let metrics = f.metrics.encode().unwrap();
    assert!(metrics.contains(
        r#"spark_admission_requests_total{endpoint="mutate",role="none",outcome="unchanged"} 3"#
    ));
}

#[tokio::test]
async fn bad_bodies_get_400_with_a_one_line_reason() {
    let f = router(&[LABEL_POLICY]);
    let good = fixture_json("mutate-driver-rich.json");

    let mut v1beta1 = good.clone();
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let mut no_request = good.clone();
    no_request.as_object_mut().unwrap().remove("request");
    let mut null_request = good.clone();
    null_request["request"] = Value::Null;
    let mut not_a_review = good.clone();
    not_a_review["kind"] = json!("Pod");
    let mut bad_pod = good.clone();
    bad_pod["request"]["object"]["spec"]["containers"] = json!("not a list");
    let mut no_uid = good.clone();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut no_object = good.clone();
    no_object["request"]
        .as_object_mut()
        .unwrap()
        .remove("object");

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("v1beta1", to_bytes(&v1beta1), "admission.k8s.io/v1beta1"),
        ("no request", to_bytes(&no_request), "no request"),
        ("null request", to_bytes(&null_request), "no request"),
        ("not a review", to_bytes(&not_a_review), "kind"),
        ("not JSON", b"<html>hello</html>".to_vec(), "not JSON"),
        ("empty", Vec::new(), "not JSON"),
        ("truncated", to_bytes(&good)[..200].to_vec(), "not JSON"),
        ("array", b"[1,2,3]".to_vec(), "not an AdmissionReview"),
        (
            "bad pod",
            to_bytes(&bad_pod),
            "invalid pod admission request",
        ),
        ("no uid", to_bytes(&no_uid), "uid"),
        (
            "create without object",
            to_bytes(&no_object),
            "without request.object",
        ),
    ];
    for (what, body, expect) in cases {
        for uri in ["/mutate", "/validate"] {
            let (status, body) = call(&f.router, uri, body.clone()).await;
            let reason = text(&body);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{what} on {uri}: {reason}");
            assert!(reason.contains(expect), "{what}: {reason:?}");
            assert_eq!(reason.trim_end().lines().count(), 1, "{what}: {reason:?}");
        }
    }
    let metrics = f.metrics.encode().unwrap();
    assert!(metrics.contains(
        r#"spark_admission_requests_total{endpoint="mutate",role="none",outcome="bad_request"} 11"#
    ));
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let f = router_with(
        &[LABEL_POLICY],
        Limits {
            max_body_bytes: 64 * 1024,
            ..Limits::default()
        },
    );
    let mut big = fixture_json("mutate-driver-rich.json");
    big["request"]["object"]["metadata"]["annotations"]["padding"] = json!("x".repeat(70 * 1024));
    let (status, body) = call(&f.router, "/mutate", to_bytes(&big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{}", text(&body));

    // Without a Content-Length (a streamed body) the limit still holds.
    let (tx, streamed) = channel_body();
    let payload = to_bytes(&big);
    tokio::spawn(async move {
        for chunk in payload.chunks(16 * 1024) {
            if tx.send(chunk.to_vec().into()).await.is_err() {
                break;
            }
        }
    });
    let (status, _) = call(&f.router, "/mutate", Body::new(streamed)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // The default limit is 3 MiB: a 2 MiB review is fine.
    let f = router(&[LABEL_POLICY]);
    big["request"]["object"]["metadata"]["annotations"]["padding"] =
        json!("x".repeat(2 * 1024 * 1024));
    let (status, _) = call(&f.router, "/mutate", to_bytes(&big)).await;
    assert_eq!(status, StatusCode::OK);
    big["request"]["object"]["metadata"]["annotations"]["padding"] =
        json!("x".repeat(3 * 1024 * 1024));
    let (status, _) = call(&f.router, "/mutate", to_bytes(&big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_body_that_never_completes_gets_a_timeout_error_not_a_hang() {
    let f = router_with(
        &[LABEL_POLICY],
        Limits {
            request_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    );
    let (tx, body) = channel_body();
    tx.send(b"{\"apiVersion\":".to_vec().into()).await.unwrap();
    cut_with_408(
        &f.router,
        "/mutate?timeout=10s",
        Body::new(body),
        Duration::from_secs(10),
    )
    .await;
    drop(tx);
}

#[tokio::test]
async fn a_body_still_arriving_holds_no_review_slot() {
    let f = router_with(
        &[LABEL_POLICY],
        Limits {
            max_concurrent_requests: 1,
            request_timeout: Duration::from_secs(30),
            ..Limits::default()
        },
    );
    // The first request's body is still arriving; the only slot is for evaluating.
    let (tx, slow) = channel_body();
    tx.send(b"{".to_vec().into()).await.unwrap();
    let router = f.router.clone();
    let first = tokio::spawn(async move { call(&router, "/mutate", Body::new(slow)).await });
    let metrics = Arc::clone(&f.metrics);
    eventually(
        "the first request to be in flight",
        Duration::from_secs(5),
        || {
            let m = metrics.encode().unwrap();
            async move { m.contains("spark_admission_in_flight_requests 1") }
        },
    )
    .await;
    let answer = review(
        &f.router,
        "/mutate?timeout=1s",
        &fixture_json("mutate-driver-rich.json"),
    )
    .await;
    assert!(answer["patch"].is_string(), "{answer}");
    drop(tx);
    let (status, _) = first.await.unwrap();
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a body of just '{{' is not JSON"
    );
}

#[tokio::test]
async fn body_bytes_held_at_once_are_bounded_and_a_review_over_the_budget_gets_busy() {
    let review_bytes = to_bytes(&fixture_json("mutate-driver-rich.json"));
    let f = router_with(
        &[LABEL_POLICY],
        Limits {
            max_body_bytes: 64 * 1024,
            max_body_bytes_in_flight: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            ..Limits::default()
        },
    );
    // A request holds most of the budget with a body it has not finished.
    let held = 64 * 1024 - review_bytes.len() / 2;
    let (tx, slow) = channel_body();
    tx.send(vec![b' '; held].into()).await.unwrap();
    let router = f.router.clone();
    let first = tokio::spawn(async move { call(&router, "/mutate", Body::new(slow)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Within its deadline (80% of 1 s), no room frees up for the next body.
    let (status, body) = call(&f.router, "/mutate?timeout=1s", review_bytes.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{}", text(&body));
    assert!(
        text(&body).contains("room for the request body"),
        "{}",
        text(&body)
    );
    // Once the first one is answered, its bytes are free again.
    drop(tx);
    let (status, _) = first.await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let answer = review(
        &f.router,
        "/mutate",
        &fixture_json("mutate-driver-rich.json"),
    )
    .await;
    assert!(answer["patch"].is_string());
}

/// Sends `chunk` every `every` until the receiver is gone.
fn drip(tx: tokio::sync::mpsc::Sender<hyper::body::Bytes>, chunk: &'static [u8], every: Duration) {
    tokio::spawn(async move {
        while tx
            .send(hyper::body::Bytes::from_static(chunk))
            .await
            .is_ok()
        {
            tokio::time::sleep(every).await;
        }
    });
}

fn slow_clients(metrics: &Metrics, reason: &str) -> String {
    let prefix = format!("spark_admission_slow_clients_total{{reason=\"{reason}\"}} ");
    metrics
        .encode()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test]
async fn a_body_below_the_minimum_rate_is_cut_with_408_and_counted() {
    let f = router_with(
        &[LABEL_POLICY],
        Limits {
            body_read_timeout: Duration::from_millis(300),
            min_body_rate: 1000,
            request_timeout: Duration::from_secs(30),
            ..Limits::default()
        },
    );
    // 10 bytes a second: never idle for 300 ms, but far below 1000 bytes/s.
    let (tx, slow) = channel_body();
    drip(tx, b"{", Duration::from_millis(100));
    // Cut long before the 30 s deadline.
    let reason = cut_with_408(
        &f.router,
        "/mutate",
        Body::new(slow),
        Duration::from_secs(5),
    )
    .await;
    assert!(reason.contains("too slow"), "{reason}");
    assert_eq!(slow_clients(&f.metrics, "body_rate"), "1");
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_after_the_body_read_timeout_and_counted() {
    let f = router_with(
        &[LABEL_POLICY],
        Limits {
            body_read_timeout: Duration::from_millis(300),
            min_body_rate: 0,
            request_timeout: Duration::from_secs(30),
            ..Limits::default()
        },
    );
    let (tx, slow) = channel_body();
    tx.send(b"{\"kind\":".to_vec().into()).await.unwrap();
    // Cut long before the 30 s deadline.
    let reason = cut_with_408(
        &f.router,
        "/mutate",
        Body::new(slow),
        Duration::from_secs(5),
    )
    .await;
    assert!(reason.contains("stalled"), "{reason}");
    assert_eq!(slow_clients(&f.metrics, "body_idle"), "1");
    drop(tx);
}

#[tokio::test]
async fn no_policies_loaded_means_503() {
    let store = Arc::new(PolicyStore::new());
    let state = AppState::new(
        Engine::default(),
        store,
        Arc::new(Metrics::new()),
        Limits::default(),
    );
    let router = webhook_router(Arc::new(state));
    let (status, body) = call(&router, "/mutate", fixture("mutate-driver-rich.json")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text(&body).contains("not loaded"));
}

#[tokio::test]
async fn only_post_on_the_two_endpoints() {
    let f = router(&[LABEL_POLICY]);
    let resp = f
        .router
        .clone()
        .oneshot(Request::get("/mutate").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = call(&f.router, "/admit", fixture("mutate-driver-rich.json")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[test]
fn the_deadline_fits_the_api_server_timeout() {
    let limits = Limits::default();
    assert_eq!(limits.budget(None), Duration::from_secs(8));
    assert_eq!(limits.budget(Some("timeout=10s")), Duration::from_secs(8));
    assert_eq!(limits.budget(Some("timeout=5s")), Duration::from_secs(4));
    assert_eq!(
        limits.budget(Some("x=1&timeout=2s")),
        Duration::from_millis(1600)
    );
    assert_eq!(limits.budget(Some("timeout=30s")), Duration::from_secs(8));
    assert_eq!(
        limits.budget(Some("timeout=garbage")),
        Duration::from_secs(8)
    );
}
