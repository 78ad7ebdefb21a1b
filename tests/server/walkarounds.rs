//! Issue 24: the ways around the rules, each as the API server sends it. Every rule looks at
//! every container (regular, init, ephemeral) and at the whole pod's resources, and every
//! change to a Spark pod (UPDATE of `pods`, `pods/ephemeralcontainers`, `pods/resize`) is
//! judged on the pod as it will be.

use crate::common;

use std::sync::Arc;

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

/// The guardrails of the issue's trial: one image registry, resource caps, no privilege;
/// for the `spark-pi*` applications of spark-jobs (so `spark-app-name` is a label the
/// rules find pods by).
const GUARDRAILS: &str = r#"apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata: {name: test-guardrails}
spec:
  namespaces: [spark-jobs]
  selector: {appName: "^spark-pi"}
  validate:
    mode: enforce
    allowedImages: ["apache/spark:*"]
    maxResources:
      driver: {requests: {cpu: "8", memory: 32Gi}}
      executor:
        requests: {cpu: "16", memory: 128Gi}
        limits: {nvidia.com/gpu: "2"}
    forbidPrivileged: true
"#;

fn router(policies: &[&str]) -> Router {
    let mut all = Vec::new();
    for (i, text) in policies.iter().enumerate() {
        let docs = parse_documents(&PolicySource(format!("test-{i}.yaml")), text).unwrap();
        all.extend(docs.into_iter().map(Arc::new));
    }
    let store = Arc::new(PolicyStore::new());
    store.install(PolicySet::new(all));
    let state = AppState::new(
        Engine::default(),
        store,
        Arc::new(Metrics::new()),
        Limits::default(),
    );
    webhook_router(Arc::new(state))
}

/// Posts a review (compact JSON, as the API server sends it) and returns its response.
async fn post(router: &Router, uri: &str, review: &Value) -> Value {
    let req = Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(to_bytes(review)))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    response_of(&body)
}

/// The denial message, or a panic saying the review was allowed.
fn denied(resp: &Value) -> String {
    assert_eq!(resp["allowed"], false, "expected a denial, got {resp}");
    assert_eq!(resp["status"]["code"], 403, "{resp}");
    resp["status"]["message"].as_str().unwrap().to_owned()
}

fn allowed(resp: &Value) {
    assert_eq!(resp["allowed"], true, "expected allowed, got {resp}");
}

/// A recorded validate review of an executor (`apache/spark:3.5.3`, cpu 1500m/2,
/// memory 3456Mi), which the guardrails allow.
fn executor_create() -> Value {
    fixture_json("validate-executor-rich-1.json")
}

/// An UPDATE of the stored pod, as the API server sends it for a `kubectl patch`/`set image`
/// (or for `subresource`): oldObject is the pod as stored, object the pod after `change`.
fn update(subresource: Option<&str>, change: impl FnOnce(&mut Value)) -> Value {
    let mut review = executor_create();
    let r = &mut review["request"];
    let old = r["object"].clone();
    let mut new = old.clone();
    change(&mut new);
    r["operation"] = json!("UPDATE");
    r["oldObject"] = old;
    r["object"] = new;
    r["options"] =
        json!({"kind": "PatchOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl"});
    if let Some(sub) = subresource {
        r["subResource"] = json!(sub);
        r["requestSubResource"] = json!(sub);
    }
    review
}

fn spark_container(pod: &mut Value) -> &mut Value {
    &mut pod["spec"]["containers"][0]
}

/// A container as the API server stores it (defaults applied).
fn container(name: &str, image: &str, cpu: &str, memory: &str) -> Value {
    json!({
        "name": name,
        "image": image,
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent"
    })
}

/// `kubectl debug --profile=sysadmin --image=busybox:1.36` as the ephemeral container the
/// API server stores.
fn sysadmin_debugger() -> Value {
    json!({
        "name": "debugger-x7k2p",
        "image": "busybox:1.36",
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
        "securityContext": {"privileged": true},
        "stdin": true,
        "tty": true,
        "targetContainerName": "spark-kubernetes-executor"
    })
}

#[tokio::test]
async fn the_recorded_executor_is_allowed_as_a_baseline() {
    let r = router(&[GUARDRAILS]);
    allowed(&post(&r, "/validate", &executor_create()).await);
}

#[tokio::test]
async fn a_renamed_spark_container_is_counted_whole() {
    let r = router(&[GUARDRAILS]);
    let mut review = executor_create();
    let c = spark_container(&mut review["request"]["object"]);
    c["name"] = json!("main");
    c["resources"] = json!({
        "requests": {"cpu": "100", "memory": "1000Gi", "nvidia.com/gpu": "4"},
        "limits": {"cpu": "100", "memory": "1000Gi", "nvidia.com/gpu": "4"}
    });
    let message = denied(&post(&r, "/validate", &review).await);
    for part in [
        "cpu 100 (requests, counted as the scheduler does: container \"main\" 100)",
        "memory 1000Gi (requests",
        "nvidia.com/gpu 4 (limits",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
}

#[tokio::test]
async fn a_second_container_over_the_cap_is_counted_with_the_spark_container() {
    let r = router(&[GUARDRAILS]);
    let mut review = executor_create();
    review["request"]["object"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(container("helper", "apache/spark:3.5.3", "100", "1000Gi"));
    let message = denied(&post(&r, "/validate", &review).await);
    assert!(
        message.contains("cpu 101.5 (requests, counted as the scheduler does: container \"spark-kubernetes-executor\" 1500m + container \"helper\" 100)"),
        "{message}"
    );
    assert!(message.contains("memory 1003.375Gi"), "{message}");
}

#[tokio::test]
async fn an_init_container_over_the_cap_is_counted_as_the_scheduler_counts_it() {
    let r = router(&[GUARDRAILS]);
    let mut review = executor_create();
    review["request"]["object"]["spec"]["initContainers"] =
        json!([container("setup", "apache/spark:3.5.3", "100", "1000Gi")]);
    let message = denied(&post(&r, "/validate", &review).await);
    assert!(
        message.contains(
            "cpu 100 (requests, counted as the scheduler does: init container \"setup\" 100)"
        ),
        "{message}"
    );

    // An init container runs before the others, not with them: 15 + 1.5 CPUs is not 16.5.
    review["request"]["object"]["spec"]["initContainers"] =
        json!([container("setup", "apache/spark:3.5.3", "15", "1Gi")]);
    allowed(&post(&r, "/validate", &review).await);
    // A sidecar (restartPolicy: Always) runs with them: 15 + 1.5 is over 16.
    review["request"]["object"]["spec"]["initContainers"][0]["restartPolicy"] = json!("Always");
    let message = denied(&post(&r, "/validate", &review).await);
    assert!(
        message.contains("sidecar init container \"setup\" 15"),
        "{message}"
    );
}

#[tokio::test]
async fn a_create_carrying_a_privileged_ephemeral_container_is_denied() {
    let r = router(&[GUARDRAILS]);
    let mut review = executor_create();
    review["request"]["object"]["spec"]["ephemeralContainers"] = json!([sysadmin_debugger()]);
    let message = denied(&post(&r, "/validate", &review).await);
    assert!(
        message.contains("container \"debugger-x7k2p\" (ephemeral) runs privileged"),
        "{message}"
    );
    assert!(
        message.contains("container \"debugger-x7k2p\" (ephemeral) uses image \"busybox:1.36\""),
        "{message}"
    );
}

#[tokio::test]
async fn set_image_to_a_forbidden_image_is_denied_and_to_an_allowed_one_allowed() {
    let r = router(&[GUARDRAILS]);
    let review = update(None, |pod| {
        spark_container(pod)["image"] = json!("docker.io/someone/miner:latest")
    });
    let message = denied(&post(&r, "/validate", &review).await);
    assert!(message.contains("(allowedImages)"), "{message}");
    assert!(
        message.contains("\"docker.io/someone/miner:latest\""),
        "{message}"
    );
    let review = update(None, |pod| {
        spark_container(pod)["image"] = json!("apache/spark:3.5.4")
    });
    allowed(&post(&r, "/validate", &review).await);
    // The mutating webhook never judges nor patches an UPDATE.
    let review = update(None, |pod| {
        spark_container(pod)["image"] = json!("docker.io/someone/miner:latest")
    });
    let resp = post(&r, "/mutate", &review).await;
    allowed(&resp);
    assert!(resp.get("patch").is_none(), "{resp}");
}

#[tokio::test]
async fn kubectl_debug_through_the_ephemeralcontainers_subresource_is_denied() {
    let r = router(&[GUARDRAILS]);
    let review = update(Some("ephemeralcontainers"), |pod| {
        pod["spec"]["ephemeralContainers"] = json!([sysadmin_debugger()])
    });
    let message = denied(&post(&r, "/validate", &review).await);
    assert!(message.contains("(forbidPrivileged)"), "{message}");
    assert!(message.contains("(allowedImages)"), "{message}");
}

#[tokio::test]
async fn a_resize_over_the_cap_is_denied_and_within_it_allowed() {
    let r = router(&[GUARDRAILS]);
    let review = update(Some("resize"), |pod| {
        spark_container(pod)["resources"] = json!({
            "requests": {"cpu": "64", "memory": "3456Mi"},
            "limits": {"cpu": "64", "memory": "3456Mi"}
        })
    });
    let message = denied(&post(&r, "/validate", &review).await);
    assert!(
        message.contains("the executor asks for cpu 64 (requests), above the 16 allowed"),
        "{message}"
    );
    let review = update(Some("resize"), |pod| {
        spark_container(pod)["resources"]["requests"]["cpu"] = json!("2")
    });
    allowed(&post(&r, "/validate", &review).await);
}

#[tokio::test]
async fn removing_or_changing_the_labels_the_rules_key_on_is_denied() {
    let r = router(&[GUARDRAILS]);
    let labels = |f: fn(&mut serde_json::Map<String, Value>)| {
        update(None, move |pod| {
            f(pod["metadata"]["labels"].as_object_mut().unwrap())
        })
    };
    let message = denied(
        &post(
            &r,
            "/validate",
            &labels(|l| {
                l.remove("spark-role");
            }),
        )
        .await,
    );
    assert!(
        message.contains("label \"spark-role\" of this Spark executor pod cannot be removed"),
        "{message}"
    );
    let message = denied(
        &post(
            &r,
            "/validate",
            &labels(|l| {
                l.insert("spark-role".into(), json!("driver"));
            }),
        )
        .await,
    );
    assert!(message.contains("\"spark-role\""), "{message}");
    // Out of the policy's appName selector: the next UPDATE would go unjudged.
    let message = denied(
        &post(
            &r,
            "/validate",
            &labels(|l| {
                l.insert("spark-app-name".into(), json!("other"));
            }),
        )
        .await,
    );
    assert!(message.contains("label \"spark-app-name\""), "{message}");
    // A pod created without spark-role cannot become a Spark pod afterwards, even where
    // no policy has rules (it was never mutated nor checked as one).
    for policies in [&[GUARDRAILS][..], &[LABEL_POLICY][..]] {
        let r = router(policies);
        let mut review = update(None, |pod| {
            pod["metadata"]["labels"]["spark-role"] = json!("driver");
        });
        review["request"]["oldObject"]["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("spark-role");
        let message = denied(&post(&r, "/validate", &review).await);
        assert!(
            message.contains("label \"spark-role\" cannot be added to an existing pod"),
            "{message}"
        );
    }
    // A label no rule reads (Spark's decommission label, say) is fine.
    allowed(
        &post(
            &r,
            "/validate",
            &labels(|l| {
                l.insert("spark-decommissioning".into(), json!("true"));
            }),
        )
        .await,
    );
}

#[tokio::test]
async fn updates_that_change_nothing_the_rules_read_are_not_judged() {
    let r = router(&[GUARDRAILS]);
    // A pod stored before the policy forbade its image: finalizers and annotations can still
    // change (a controller, `kubectl annotate`), or the pod could never be cleaned up.
    let mut review = update(None, |pod| {
        pod["metadata"]["finalizers"] = json!(["example.com/cleanup"]);
        pod["metadata"]["annotations"] = json!({"note": "x"});
    });
    for key in ["object", "oldObject"] {
        review["request"][key]["spec"]["containers"][0]["image"] = json!("docker.io/old/spark:1");
    }
    allowed(&post(&r, "/validate", &review).await);
    // Status is the kubelet's: never judged, whatever the pod holds.
    review["request"]["subResource"] = json!("status");
    allowed(&post(&r, "/validate", &review).await);
    // Without a policy with rules, spark-role may go: nothing is walked around.
    let r = router(&[LABEL_POLICY]);
    let review = update(None, |pod| {
        pod["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("spark-role");
    });
    allowed(&post(&r, "/validate", &review).await);
}

/// The shipped policies, as `policies/` holds them.
fn shipped_policies() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// What the API server does to a container a webhook added before the chain runs again
/// (see the admission fixtures' README): defaults and the service account token mount.
fn api_server_defaults(c: &mut Value) {
    let c = c.as_object_mut().unwrap();
    c.entry("imagePullPolicy").or_insert(json!("IfNotPresent"));
    c.entry("terminationMessagePath")
        .or_insert(json!("/dev/termination-log"));
    c.entry("terminationMessagePolicy").or_insert(json!("File"));
    c.entry("resources").or_insert(json!({}));
    let mounts = c.entry("volumeMounts").or_insert(json!([]));
    mounts.as_array_mut().unwrap().push(json!({
        "name": "kube-api-access-7xq2d",
        "readOnly": true,
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"
    }));
}

#[tokio::test]
async fn the_reinvocation_pass_does_not_warn_about_the_webhooks_own_init_container() {
    let texts = shipped_policies();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let r = router(&texts);
    // team-a: the History Server's download init container; spark-jobs: also the S3
    // dependencies' ConfigMap volume, which the API server gives a defaultMode.
    let mut defaulted_volumes = 0;
    for ns in ["team-a", "spark-jobs"] {
        let mut review = fixture_json("mutate-driver-scala-sparkpi.json");
        review["request"]["namespace"] = json!(ns);
        review["request"]["object"]["metadata"]["namespace"] = json!(ns);
        let first = post(&r, "/mutate", &review).await;
        allowed(&first);
        let mut pod = patched_object(&review, &first);
        let inits = pod["spec"]["initContainers"].as_array_mut().unwrap();
        assert!(
            inits.iter().any(|c| c["name"] == "spark-deps-hadoop-aws"),
            "{ns}: the shipped policies add the download init container: {inits:?}"
        );
        for c in inits {
            api_server_defaults(c);
        }
        for v in pod["spec"]["volumes"].as_array_mut().unwrap() {
            for source in ["configMap", "secret", "projected"] {
                if let Some(s) = v.get_mut(source).and_then(Value::as_object_mut) {
                    if !s.contains_key("defaultMode") {
                        s.insert("defaultMode".into(), json!(420));
                        defaulted_volumes += 1;
                    }
                }
            }
        }
        review["request"]["object"] = pod;
        let second = post(&r, "/mutate", &review).await;
        allowed(&second);
        assert!(second.get("warnings").is_none(), "{ns}: {second}");
        assert!(second.get("patch").is_none(), "{ns}: {second}");

        // A container of that name the submitter wrote differently is still reported.
        let inits = review["request"]["object"]["spec"]["initContainers"]
            .as_array_mut()
            .unwrap();
        let ours = inits
            .iter_mut()
            .find(|c| c["name"] == "spark-deps-hadoop-aws")
            .unwrap();
        ours["args"] = json!(["https://example.com/other.jar"]);
        let third = post(&r, "/mutate", &review).await;
        let warnings = third["warnings"].to_string();
        assert!(
            warnings.contains("initContainers[spark-deps-hadoop-aws]"),
            "{ns}: {third}"
        );
    }
    assert!(defaulted_volumes > 0, "no policy volume got a defaultMode");
}
