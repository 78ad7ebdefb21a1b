//! Golden tests: every real Spark pod (raw from spark-submit and as the API server sent it)
//! through the example policies in `policies/`. The expected patch, warnings and verdict are
//! kept in `tests/golden/`; regenerate with `UPDATE_GOLDEN=1 cargo test --test engine golden`
//! and review the diff like code.

use crate::engine_support;

use std::path::Path;

use engine_support::*;
use serde_json::{json, Value};
use spark_admission::engine::{Engine, MutateRequest, APPLIED_ANNOTATION};
use spark_admission::explain::{explain, read_input};

fn golden(name: &str, actual: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"));
    let rendered = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing golden file {}: run UPDATE_GOLDEN=1 cargo test --test engine golden",
            path.display()
        )
    });
    assert_eq!(
        rendered, expected,
        "golden mismatch for {name}; if intended, regenerate with UPDATE_GOLDEN=1"
    );
}

#[test]
fn every_fixture_through_the_example_policies() {
    let set = example_policies();
    let engine = Engine::default();
    for (label, pod) in all_fixture_pods() {
        let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
        let role = pod["metadata"]["labels"]["spark-role"].as_str().unwrap();
        let spark_name = format!("spark-kubernetes-{role}");

        // What a platform admin expects of these policies on any Spark pod in spark-jobs.
        let applied = out["metadata"]["annotations"][APPLIED_ANNOTATION]
            .as_str()
            .unwrap();
        assert!(
            applied.contains("team-defaults@") && applied.contains("s3-dependencies@"),
            "{label}: {applied}"
        );
        assert_eq!(
            out["metadata"]["labels"]["cost-center"], "data-platform",
            "{label}"
        );
        let c = spark_container(&out, &spark_name);
        let classpath = if role == "driver" {
            "SPARK_DIST_CLASSPATH"
        } else {
            "SPARK_EXTRA_CLASSPATH"
        };
        assert!(
            env_value(c, classpath)
                .unwrap()
                .contains("/opt/spark/deps/hadoop-aws/*"),
            "{label}"
        );
        assert_eq!(
            env_value(c, "PYTHONPATH").as_deref(),
            Some("/opt/spark/deps/python"),
            "{label}"
        );
        assert_eq!(
            out["spec"]["tolerations"], pod["spec"]["tolerations"],
            "{label}: no policy here adds tolerations, so they are untouched"
        );
        // Whatever the pod had stays (only additions and in-place edits).
        for (k, v) in pod["metadata"]["labels"].as_object().unwrap() {
            assert_eq!(&out["metadata"]["labels"][k], v, "{label}: label {k}");
        }

        let input = read_input(&serde_json::to_string(&pod).unwrap()).unwrap();
        let report = explain(&engine, &set, &input, Some("spark-jobs")).unwrap();
        assert_eq!(report.mutated, out);
        let name = label.replace('/', "-").trim_end_matches(".json").to_owned();
        golden(
            &name,
            &json!({
                "patch": m.patch,
                "warnings": m.warnings,
                "applied": m.applied,
                "denied": report.validation.denied(),
                "findings": report.validation.findings,
            }),
        );
    }
}

#[test]
fn the_guardrails_deny_the_hostpath_driver_with_a_message_that_says_what_to_change() {
    let set = example_policies();
    let pod = typed(&review_pod("validate-driver-rich"));
    let v = Engine::default().validate(&set, &pod, "spark-jobs");
    assert!(v.denied());
    let msg = v.denial_message();
    assert!(
        msg.contains("policy \"guardrails\" (forbiddenVolumeTypes)"),
        "{msg}"
    );
    assert!(
        msg.contains("volume \"scratch\" is a hostPath volume"),
        "{msg}"
    );
    assert!(
        msg.contains("spark.kubernetes.driver.volumes.hostPath.scratch"),
        "{msg}"
    );
}

#[test]
fn the_plain_fixtures_pass_validation() {
    let set = example_policies();
    for name in [
        "validate-driver-scala-sparkpi",
        "validate-driver-pyspark-pi",
        "validate-executor-rich-1",
        "validate-executor-client-extra",
    ] {
        let v = Engine::default().validate(&set, &typed(&review_pod(name)), "spark-jobs");
        assert!(!v.denied(), "{name}: {:?}", v.findings);
    }
}

#[test]
fn gpu_and_spot_policies_apply_in_team_namespaces() {
    let set = example_policies();
    let mut pod = review_pod("mutate-executor-rich-1");
    pod["metadata"]["labels"]["spark-app-name"] = json!("gpu-training");
    let (_, out) = mutate_checked(&set, &pod, "team-ml");
    let c = spark_container(&out, "spark-kubernetes-executor");
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "1");
    assert_eq!(out["spec"]["runtimeClassName"], "nvidia");
    let tolerations = out["spec"]["tolerations"].as_array().unwrap();
    assert_eq!(
        &tolerations[..2],
        pod["spec"]["tolerations"].as_array().unwrap().as_slice()
    );
    assert!(tolerations.iter().any(|t| t["key"] == "nvidia.com/gpu"));
    assert!(tolerations
        .iter()
        .any(|t| t["key"] == "cloud.example.com/spot"));

    let (_, driver) = mutate_checked(&set, &review_pod("mutate-driver-scala-sparkpi"), "team-ml");
    let terms = &driver["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    assert_eq!(
        terms[0]["matchExpressions"][0]["values"],
        json!(["on-demand"])
    );
    assert!(
        driver["spec"].get("priority").is_none(),
        "priority class set: computed priority removed"
    );
}

#[test]
fn namespaces_without_policies_are_left_alone() {
    let set = example_policies();
    let m = Engine::default()
        .mutate(MutateRequest::new(
            &set,
            &typed(&review_pod("mutate-driver-rich")),
            "kube-public",
        ))
        .expect("the engine plans the pod");
    assert!(m.patch.0.is_empty(), "{:?}", m.patch);
}

#[test]
fn the_example_spark_conf_reaches_drivers_per_namespace_and_explain_says_where_it_goes() {
    use spark_admission::engine::{submit_opts_tokens, SUBMIT_OPTS_VAR};
    let set = example_policies();
    let (_, out) = mutate_checked(&set, &review_pod("mutate-driver-pyspark-pi"), "team-ml");
    let opts = env_value(
        spark_container(&out, "spark-kubernetes-driver"),
        SUBMIT_OPTS_VAR,
    )
    .unwrap();
    let opts = submit_opts_tokens(&opts).unwrap();
    for token in [
        "-Dspark.eventLog.dir=s3a://spark-events/team-ml",
        "-Dspark.hadoop.fs.s3a.bucket.spark-events.access.key=${env.SPARK_EVENTS_ACCESS_KEY}",
        "-Dspark.metrics.conf.*.sink.prometheusServlet.class=org.apache.spark.metrics.sink.PrometheusServlet",
        "-Dspark.hadoop.fs.s3a.path.style.access=true",
    ] {
        assert!(opts.contains(&token.to_owned()), "{token}: {opts:?}");
    }

    let engine = Engine::default();
    let notes = |fixture: &str| {
        let pod = review_pod(fixture);
        let input = read_input(&serde_json::to_string(&pod).unwrap()).unwrap();
        explain(&engine, &set, &input, Some("spark-jobs"))
            .unwrap()
            .notes
    };
    let driver = notes("mutate-driver-rich");
    assert!(
        driver
            .iter()
            .any(|n| n.contains("SPARK_SUBMIT_OPTS as defaults")
                && n.contains("\"history-server\"")
                && n.contains("client mode")),
        "{driver:?}"
    );
    let cluster_executor = notes("mutate-executor-rich-1");
    assert!(
        cluster_executor
            .iter()
            .any(|n| n.contains("not written on executor pods")),
        "{cluster_executor:?}"
    );
    assert!(!cluster_executor.iter().any(|n| n.contains("client mode")));
    let client_executor = notes("mutate-executor-client-1");
    assert!(
        client_executor
            .iter()
            .any(|n| n.contains("no driver pod as its owner")),
        "{client_executor:?}"
    );
}
