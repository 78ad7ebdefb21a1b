//! Scenario 3: the validating webhook through the API, as a data engineer sees it in
//! `kubectl`'s output.

use serde_json::json;

use crate::scenario::Scenario;
use crate::webhook;

fn driver_yaml(name: &str, image: &str, memory: &str) -> String {
    let mut pod = serde_json::to_value(webhook::driver_pod(name)).expect("JSON");
    pod["spec"]["containers"][0]["image"] = json!(image);
    pod["spec"]["containers"][0]["resources"] =
        json!({"requests": {"memory": memory}, "limits": {"memory": memory}});
    // JSON is YAML: kubectl takes it as a file.
    pod.to_string()
}

pub async fn kubectl_shows_the_guardrail_refusal_and_the_warning_in_the_submitters_words() {
    let ns = "team-validate";
    let s = Scenario::start("validation", &[ns], &[]).await;
    let c = s.cluster();

    // enforce: 64Gi is over the guardrails' driver memory cap (32Gi).
    let out = c.kubectl(
        &["create", "-n", ns, "-f", "-"],
        Some(&driver_yaml("too-big-driver", "apache/spark:3.5.3", "64Gi")),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the API server stored a pod over the cap"
    );
    for needle in [
        "admission webhook \"validate.spark-admission.io\" denied the request",
        "policy \"guardrails\"",
        "spark.driver.memory",
    ] {
        assert!(
            stderr.contains(needle),
            "kubectl's error lacks {needle:?}:\n{stderr}"
        );
    }
    let get = c.kubectl(&["get", "pod", "-n", ns, "too-big-driver"], None);
    assert!(!get.status.success(), "the refused pod exists");

    // warn: an image outside the approved registries is stored, with a Warning: line.
    let out = c.kubectl(
        &["create", "-n", ns, "-f", "-"],
        Some(&driver_yaml(
            "unapproved-image-driver",
            "quay.io/someone/spark:3.5",
            "1Gi",
        )),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "a warn rule refused the pod:\n{stderr}"
    );
    let warning = stderr
        .lines()
        .find(|l| l.starts_with("Warning:") && l.contains("approved-images"))
        .unwrap_or_else(|| panic!("no Warning: line naming the policy:\n{stderr}"));
    assert!(
        warning.contains("spark.kubernetes.driver.container.image"),
        "the warning does not name the Spark setting: {warning}"
    );
    let get = c.kubectl(
        &[
            "get",
            "pod",
            "-n",
            ns,
            "unapproved-image-driver",
            "-o",
            "name",
        ],
        None,
    );
    assert!(get.status.success(), "the warned pod was not stored");
}
