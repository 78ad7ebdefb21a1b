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

/// The API server shows a request's warnings whole while they come to at most 4,096
/// characters; past that it cuts each to 256 and drops the rest, saying nothing. A pod
/// with 30 containers of unapproved images earns more than that: what kubectl prints must
/// be whole warnings and a last one saying how many were left out.
pub async fn kubectl_shows_whole_warnings_and_how_many_more_when_there_are_too_many() {
    let ns = "team-many-warnings";
    let s = Scenario::start("many-warnings", &[ns], &[]).await;
    let c = s.cluster();
    let mut pod = serde_json::to_value(webhook::driver_pod("many-sidecars-driver")).expect("JSON");
    let containers = pod["spec"]["containers"]
        .as_array_mut()
        .expect("containers");
    for i in 0..30 {
        containers.push(json!({
            "name": format!("helper-{i:02}"),
            "image": format!("quay.io/someone/helper-{i:02}:1.0"),
        }));
    }
    let out = c.kubectl(&["create", "-n", ns, "-f", "-"], Some(&pod.to_string()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "a warn rule refused the pod:\n{stderr}"
    );
    let warnings: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("Warning: "))
        .collect();
    let images: Vec<&&str> = warnings
        .iter()
        .filter(|w| w.contains("approved-images"))
        .collect();
    assert!(images.len() >= 5, "{stderr}");
    for w in &images {
        assert!(
            w.ends_with("curlimages/curl:*)"),
            "a warning cut short: {w}\n{stderr}"
        );
    }
    let more = warnings
        .iter()
        .find(|w| w.contains("more warning"))
        .unwrap_or_else(|| panic!("no line saying how many warnings were left out:\n{stderr}"));
    let left: usize = more
        .split_whitespace()
        .find_map(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no count in {more}"));
    assert_eq!(images.len() + left, 30, "{stderr}");
}
