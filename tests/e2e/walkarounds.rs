//! Issue 24 on a real API server: a compliant Spark pod, once stored, cannot be changed
//! into one the rules forbid (`kubectl set image`, `kubectl debug --profile=sysadmin`, an
//! in-place resize, dropping `spark-role`), while changes no rule reads still go through.

use serde_json::json;

use crate::scenario::Scenario;
use crate::webhook;

/// Images from one registry only, enforced, for the `walk*` applications of the namespace.
const ENFORCED_IMAGES: &str = r#"apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata: {name: walk-images}
spec:
  namespaces: [team-walk]
  selector: {appName: "^walk"}
  validate:
    mode: enforce
    allowedImages: ["apache/spark:*", "curlimages/curl:*"]   # curl: the shipped policies' download init container
"#;

const UPDATE_WEBHOOK: &str = "validate-updates.spark-admission.io";

pub async fn a_stored_spark_pod_cannot_be_changed_past_the_rules() {
    let ns = "team-walk";
    let s = Scenario::start(
        "walkarounds",
        &[ns],
        &[("90-walk-images.yaml", ENFORCED_IMAGES)],
    )
    .await;
    let c = s.cluster();
    let name = "walk-driver";
    let mut pod = serde_json::to_value(webhook::driver_pod(name)).expect("JSON");
    pod["metadata"]["labels"]["spark-app-name"] = json!("walk");
    // Burstable, so that a resize keeps the QoS class (the API server refuses a change).
    pod["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}});
    let out = c.kubectl(&["create", "-n", ns, "-f", "-"], Some(&pod.to_string()));
    assert!(
        out.status.success(),
        "the compliant driver was refused:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod_ref = format!("pod/{name}");
    let refused = |what: &str, args: &[&str], needles: &[&str]| {
        let out = c.kubectl(args, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{what} was stored:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{what}: no {needle:?} in:\n{stderr}"
            );
        }
    };
    let accepted = |what: &str, args: &[&str]| {
        let out = c.kubectl(args, None);
        assert!(
            out.status.success(),
            "{what} was refused:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let stored = |path: &str| -> String {
        let out = c.kubectl(
            &["get", "-n", ns, &pod_ref, "-o", &format!("jsonpath={path}")],
            None,
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    refused(
        "kubectl set image to a forbidden image",
        &[
            "set",
            "image",
            "-n",
            ns,
            &pod_ref,
            "spark-kubernetes-driver=docker.io/someone/miner:latest",
        ],
        &[UPDATE_WEBHOOK, "policy \"walk-images\" (allowedImages)"],
    );
    assert_eq!(stored("{.spec.containers[0].image}"), "apache/spark:3.5.3");
    accepted(
        "kubectl set image to an allowed image",
        &[
            "set",
            "image",
            "-n",
            ns,
            &pod_ref,
            "spark-kubernetes-driver=apache/spark:3.5.4",
        ],
    );
    assert_eq!(stored("{.spec.containers[0].image}"), "apache/spark:3.5.4");

    refused(
        "kubectl debug --profile=sysadmin",
        &[
            "debug",
            "-n",
            ns,
            name,
            "--image=busybox:1.36",
            "--profile=sysadmin",
            "--container=debugger",
        ],
        &[UPDATE_WEBHOOK, "(ephemeral) runs privileged"],
    );
    assert_eq!(stored("{.spec.ephemeralContainers}"), "");

    // In-place resize (the InPlacePodVerticalScaling gate, on in this cluster): 64 CPUs
    // against the guardrails' 8 for drivers (the limit above it, as team-defaults set a
    // limit of 2, and below nothing that would make the pod Guaranteed: QoS cannot change).
    refused(
        "a resize to 64 CPUs",
        &[
            "patch",
            "-n",
            ns,
            &pod_ref,
            "--subresource=resize",
            "-p",
            r#"{"spec":{"containers":[{"name":"spark-kubernetes-driver","resources":{"requests":{"cpu":"64"},"limits":{"cpu":"128"}}}]}}"#,
        ],
        &[UPDATE_WEBHOOK, "asks for cpu 64 (requests)"],
    );
    assert_eq!(stored("{.spec.containers[0].resources.requests.cpu}"), "1");
    accepted(
        "a resize to 2 CPUs",
        &[
            "patch",
            "-n",
            ns,
            &pod_ref,
            "--subresource=resize",
            "-p",
            r#"{"spec":{"containers":[{"name":"spark-kubernetes-driver","resources":{"requests":{"cpu":"2"}}}]}}"#,
        ],
    );
    assert_eq!(stored("{.spec.containers[0].resources.requests.cpu}"), "2");

    // The two-step walk-around: drop the label, then change the pod unseen.
    refused(
        "removing spark-role",
        &["label", "-n", ns, &pod_ref, "spark-role-"],
        &[UPDATE_WEBHOOK, "label \"spark-role\""],
    );
    refused(
        "moving the pod out of the policy's appName selector",
        &[
            "label",
            "--overwrite",
            "-n",
            ns,
            &pod_ref,
            "spark-app-name=other",
        ],
        &[UPDATE_WEBHOOK, "label \"spark-app-name\""],
    );
    // What no rule reads is not judged.
    accepted(
        "an annotation",
        &["annotate", "-n", ns, &pod_ref, "example.com/note=checked"],
    );
    accepted(
        "a label no rule reads",
        &["label", "-n", ns, &pod_ref, "spark-decommissioning=true"],
    );
}
