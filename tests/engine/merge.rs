//! One test per merge rule, on real Spark pods: what a platform admin writes in a policy,
//! and what the pod looks like after the webhook.

use crate::engine_support;

use engine_support::*;
use serde_json::json;
use spark_admission::engine::{Engine, MutateRequest, APPLIED_ANNOTATION};

const HEADER: &str = "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\n";

fn policy(name: &str, priority: i32, body: &str) -> String {
    let indented: String = body.lines().map(|l| format!("  {l}\n")).collect();
    format!("{HEADER}metadata: {{name: {name}}}\nspec:\n  priority: {priority}\n  namespaces: [spark-jobs]\n{indented}")
}

#[test]
fn tolerations_are_appended_after_the_api_servers_own() {
    let set = policies(&policy(
        "spot",
        0,
        "all:\n  tolerations:\n  - {key: spot, operator: Exists, effect: NoSchedule}",
    ));
    let pod = review_pod("mutate-driver-rich");
    let before = pod["spec"]["tolerations"].as_array().unwrap().clone();
    let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
    let after = out["spec"]["tolerations"].as_array().unwrap();
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "existing tolerations kept in order"
    );
    assert_eq!(
        after.last().unwrap(),
        &json!({"key": "spot", "operator": "Exists", "effect": "NoSchedule"})
    );
    assert!(
        paths(&m).contains(&format!("/spec/tolerations/{}", before.len())),
        "{:?}",
        paths(&m)
    );
}

#[test]
fn an_existing_equal_toleration_is_not_added_twice() {
    let pod = review_pod("mutate-driver-pyspark-pi");
    let existing = pod["spec"]["tolerations"][0].to_string();
    let set = policies(&policy(
        "dup",
        0,
        &format!("all:\n  tolerations:\n  - {existing}"),
    ));
    let (m, _) = mutate_checked(&set, &pod, "spark-jobs");
    assert!(!paths(&m).iter().any(|p| p.starts_with("/spec/tolerations")));
}

#[test]
fn spark_container_is_found_by_name_not_position() {
    let mut pod = review_pod("mutate-driver-scala-sparkpi");
    let sidecar = json!({"name": "log-shipper", "image": "fluent/fluent-bit:3", "env": [{"name": "A", "value": "1"}]});
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .insert(0, sidecar.clone());
    let set = policies(&policy(
        "env",
        0,
        "all:\n  env:\n  - {name: AWS_REGION, value: eu-west-1}",
    ));
    let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
    assert!(
        paths(&m)
            .iter()
            .any(|p| p.starts_with("/spec/containers/1/env")),
        "{:?}",
        paths(&m)
    );
    assert!(!paths(&m)
        .iter()
        .any(|p| p.starts_with("/spec/containers/0")));
    assert_eq!(
        out["spec"]["containers"][0], sidecar,
        "the sidecar keeps every field"
    );
    assert_eq!(
        env_value(
            spark_container(&out, "spark-kubernetes-driver"),
            "AWS_REGION"
        )
        .as_deref(),
        Some("eu-west-1")
    );
}

#[test]
fn a_pod_without_the_spark_container_gets_a_warning_and_no_container_patch() {
    let mut pod = review_pod("mutate-driver-scala-sparkpi");
    pod["spec"]["containers"][0]["name"] = json!("renamed");
    let set = policies(&policy(
        "env",
        0,
        "all:\n  labels: {a: b}\n  env:\n  - {name: X, value: \"y\"}",
    ));
    let (m, _) = mutate_checked(&set, &pod, "spark-jobs");
    assert!(
        !paths(&m).iter().any(|p| p.starts_with("/spec/containers")),
        "{:?}",
        paths(&m)
    );
    assert!(
        paths(&m).contains(&"/metadata/labels/a".to_owned()),
        "pod-level changes still apply"
    );
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("no container named \"spark-kubernetes-driver\"")),
        "{:?}",
        m.warnings
    );
}

#[test]
fn pods_without_a_spark_role_are_never_touched() {
    let mut pod = review_pod("mutate-driver-rich");
    pod["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("spark-role");
    let m = Engine::default()
        .mutate(MutateRequest::new(
            &example_policies(),
            &typed(&pod),
            "spark-jobs",
        ))
        .expect("the engine plans the pod");
    assert!(m.patch.0.is_empty());
    assert!(m.role.is_none());
    assert!(m.warnings.is_empty());
}

#[test]
fn volumes_merge_by_name_and_mounts_by_path() {
    let pod = review_pod("mutate-driver-rich");
    // `data` is an existing PVC volume: a different `data` must not replace it.
    let set = policies(&policy(
        "vols",
        0,
        "all:\n  volumes:\n  - volume: {name: data, emptyDir: {}}\n    mount: {mountPath: /other}\n  - volume: {name: fresh, emptyDir: {}}\n    mount: {mountPath: /data}\n  - volume: {name: cache, emptyDir: {}}\n    mount: {mountPath: /cache, readOnly: true}",
    ));
    let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
    let vols: Vec<&str> = out["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vols.iter().filter(|n| **n == "data").count(), 1);
    assert!(out["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "data" && v["persistentVolumeClaim"].is_object()));
    let c = spark_container(&out, "spark-kubernetes-driver");
    let mounts = c["volumeMounts"].as_array().unwrap();
    assert_eq!(
        mounts.iter().filter(|v| v["mountPath"] == "/data").count(),
        1,
        "mount path /data not duplicated"
    );
    assert!(mounts
        .iter()
        .any(|v| v["mountPath"] == "/cache" && v["name"] == "cache" && v["readOnly"] == true));
    assert!(!mounts.iter().any(|v| v["mountPath"] == "/other"));
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("volume \"data\" was not added")),
        "{:?}",
        m.warnings
    );
    assert!(
        m.warnings.iter().any(|w| w.contains("/data")),
        "{:?}",
        m.warnings
    );
}

#[test]
fn volumes_for_all_containers_reach_sidecars() {
    let mut pod = review_pod("mutate-driver-scala-sparkpi");
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "side", "image": "busybox"}));
    let set = policies(&policy("vols", 0, "all:\n  volumes:\n  - volume: {name: certs, configMap: {name: ca}}\n    mount: {mountPath: /etc/ca}\n    containers: all"));
    let (_, out) = mutate_checked(&set, &pod, "spark-jobs");
    for c in out["spec"]["containers"].as_array().unwrap() {
        assert!(
            c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["mountPath"] == "/etc/ca"),
            "{}",
            c["name"]
        );
    }
}

#[test]
fn env_keeps_the_pods_value_unless_overwrite() {
    let pod = review_pod("mutate-driver-rich");
    let keep = policies(&policy(
        "keep",
        0,
        "driver:\n  env:\n  - {name: MY_DRIVER_ENV, value: policy}",
    ));
    let (m, out) = mutate_checked(&keep, &pod, "spark-jobs");
    assert_eq!(
        env_value(
            spark_container(&out, "spark-kubernetes-driver"),
            "MY_DRIVER_ENV"
        )
        .as_deref(),
        Some("hello")
    );
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("MY_DRIVER_ENV") && w.contains("\"hello\"")),
        "{:?}",
        m.warnings
    );

    let force = policies(&policy(
        "force",
        0,
        "driver:\n  overwrite: true\n  env:\n  - {name: MY_DRIVER_ENV, value: policy}",
    ));
    let (m, out) = mutate_checked(&force, &pod, "spark-jobs");
    assert_eq!(
        env_value(
            spark_container(&out, "spark-kubernetes-driver"),
            "MY_DRIVER_ENV"
        )
        .as_deref(),
        Some("policy")
    );
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
}

#[test]
fn the_higher_priority_policy_wins_a_scalar() {
    let yaml = format!(
        "{}---\n{}",
        policy(
            "low",
            1,
            "all:\n  labels: {tier: bronze}\n  schedulerName: low-sched"
        ),
        policy(
            "high",
            9,
            "all:\n  labels: {tier: gold}\n  schedulerName: high-sched\n  overwrite: true"
        )
    );
    let set = policies(&yaml);
    let (m, out) = mutate_checked(&set, &review_pod("mutate-driver-pyspark-pi"), "spark-jobs");
    assert_eq!(out["metadata"]["labels"]["tier"], "gold");
    assert_eq!(out["spec"]["schedulerName"], "high-sched");
    let applied = out["metadata"]["annotations"][APPLIED_ANNOTATION]
        .as_str()
        .unwrap();
    assert!(
        applied.starts_with("high@") && !applied.contains("low@"),
        "low changed nothing, so it is not listed: {applied}"
    );
    assert!(m.changes.iter().any(|c| c.policy == "low"
        && !c.applied
        && c.action.contains("\"high\" has higher priority")));
}

#[test]
fn required_node_affinity_is_anded_into_every_term() {
    let mut pod = review_pod("mutate-driver-scala-sparkpi");
    pod["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}
    ]}}});
    let set = policies(&policy(
        "arch",
        0,
        "all:\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {key: arch, operator: In, values: [amd64]}\n      preferredDuringSchedulingIgnoredDuringExecution:\n      - weight: 10\n        preference:\n          matchExpressions:\n          - {key: ssd, operator: Exists}",
    ));
    let (_, out) = mutate_checked(&set, &pod, "spark-jobs");
    let terms = out["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        .as_array()
        .unwrap();
    assert_eq!(terms.len(), 2, "still two ORed terms");
    for (term, zone) in terms.iter().zip(["a", "b"]) {
        let exprs = term["matchExpressions"].as_array().unwrap();
        assert!(exprs
            .iter()
            .any(|e| e["key"] == "zone" && e["values"][0] == zone));
        assert!(exprs.iter().any(|e| e["key"] == "arch"));
    }
    assert_eq!(
        out["spec"]["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0]["weight"],
        10
    );
}

#[test]
fn affinity_parents_are_created_when_absent() {
    let pod = review_pod("mutate-executor-client-1");
    assert!(pod["spec"].get("affinity").is_none());
    let set = policies(&policy("anti", 0, "executor:\n  affinity:\n    podAntiAffinity:\n      preferredDuringSchedulingIgnoredDuringExecution:\n      - weight: 50\n        podAffinityTerm:\n          topologyKey: kubernetes.io/hostname\n          labelSelector: {matchLabels: {spark-role: executor}}"));
    let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
    assert!(
        paths(&m).contains(&"/spec/affinity".to_owned()),
        "{:?}",
        paths(&m)
    );
    assert_eq!(
        out["spec"]["affinity"]["podAntiAffinity"]
            ["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"],
        50
    );
}

#[test]
fn priority_class_drops_the_computed_priority() {
    let pod = review_pod("mutate-driver-pyspark-pi");
    assert_eq!(pod["spec"]["priority"], 0);
    let set = policies(&policy(
        "prio",
        0,
        "driver:\n  priorityClassName: spark-high",
    ));
    let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
    assert_eq!(out["spec"]["priorityClassName"], "spark-high");
    assert!(out["spec"].get("priority").is_none());
    assert!(out["spec"].get("preemptionPolicy").is_none());
    assert!(paths(&m).contains(&"/spec/priority".to_owned()));
}

#[test]
/// A `/` in a key is escaped in the patch path (`~` cannot be in a label key: the policy
/// is refused at load; patch.rs tests its escape).
fn keys_with_a_slash_are_escaped() {
    let set = policies(&policy(
        "esc",
        0,
        "all:\n  labels: {\"example.com/team.x\": data}",
    ));
    let (m, out) = mutate_checked(&set, &review_pod("mutate-driver-rich"), "spark-jobs");
    assert!(
        paths(&m).contains(&"/metadata/labels/example.com~1team.x".to_owned()),
        "{:?}",
        paths(&m)
    );
    assert_eq!(out["metadata"]["labels"]["example.com/team.x"], "data");
}

#[test]
fn annotations_parent_is_created_when_absent() {
    let pod = spark_pod("driver-scala-sparkpi");
    assert!(pod["metadata"].get("annotations").is_none());
    let set = policies(&policy("ann", 0, "all:\n  labels: {x: z}"));
    let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
    assert!(
        paths(&m).contains(&"/metadata/annotations".to_owned()),
        "{:?}",
        paths(&m)
    );
    assert!(out["metadata"]["annotations"][APPLIED_ANNOTATION]
        .as_str()
        .unwrap()
        .starts_with("ann@"));
}

#[test]
fn pull_secrets_merge_by_name() {
    let set = policies(&policy(
        "ps",
        0,
        "all:\n  imagePullSecrets: [regcred, corp]",
    ));
    let (_, out) = mutate_checked(&set, &review_pod("mutate-driver-rich"), "spark-jobs");
    let names: Vec<&str> = out["spec"]["imagePullSecrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["regcred", "regcred2", "corp"]);
}

#[test]
fn jars_go_to_the_launcher_classpath_on_drivers_and_the_extra_classpath_on_executors() {
    let set = policies(&policy(
        "deps",
        0,
        "all:\n  dependencies:\n  - name: hadoop-aws\n    source: {persistentVolumeClaim: {claimName: jars}}\n  - name: py\n    source: {image: {reference: registry.example.com/py-libs:1}}\n    jars: false\n    python: true",
    ));
    let (_, driver) = mutate_checked(
        &set,
        &review_pod("mutate-driver-scala-sparkpi"),
        "spark-jobs",
    );
    let c = spark_container(&driver, "spark-kubernetes-driver");
    assert_eq!(
        env_value(c, "SPARK_DIST_CLASSPATH").as_deref(),
        Some("/opt/spark/deps/hadoop-aws/*")
    );
    assert_eq!(
        env_value(c, "PYTHONPATH").as_deref(),
        Some("/opt/spark/deps/py")
    );
    assert!(env_value(c, "SPARK_EXTRA_CLASSPATH").is_none());
    assert!(driver["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "spark-deps-py"
            && v["image"]["reference"] == "registry.example.com/py-libs:1"));

    // This executor already has SPARK_CLASSPATH from spark.executor.extraClassPath: untouched.
    let pod = review_pod("mutate-executor-client-extra");
    let spark_classpath = env_value(
        spark_container(&pod, "spark-kubernetes-executor"),
        "SPARK_CLASSPATH",
    );
    assert!(spark_classpath.is_some());
    let (_, exec) = mutate_checked(&set, &pod, "spark-jobs");
    let c = spark_container(&exec, "spark-kubernetes-executor");
    assert_eq!(env_value(c, "SPARK_CLASSPATH"), spark_classpath);
    assert_eq!(
        env_value(c, "SPARK_EXTRA_CLASSPATH").as_deref(),
        Some("/opt/spark/deps/hadoop-aws/*")
    );
    assert!(c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["mountPath"] == "/opt/spark/deps/hadoop-aws" && m["readOnly"] == true));
}

#[test]
fn classpath_entries_are_appended_to_an_existing_value() {
    let mut pod = review_pod("mutate-executor-client-1");
    let env = pod["spec"]["containers"][0]["env"].as_array_mut().unwrap();
    env.push(json!({"name": "SPARK_EXTRA_CLASSPATH", "value": "/opt/custom/*"}));
    let set = policies(&policy(
        "deps",
        0,
        "all:\n  dependencies:\n  - name: jdbc\n    source: {configMap: {name: jdbc}}",
    ));
    let (_, out) = mutate_checked(&set, &pod, "spark-jobs");
    assert_eq!(
        env_value(
            spark_container(&out, "spark-kubernetes-executor"),
            "SPARK_EXTRA_CLASSPATH"
        )
        .as_deref(),
        Some("/opt/custom/*:/opt/spark/deps/jdbc/*")
    );
}

#[test]
fn download_dependencies_use_an_init_container_that_runs_as_a_numeric_non_root_user() {
    let set = policies(&policy(
        "dl",
        0,
        "all:\n  dependencies:\n  - name: aws\n    source:\n      download:\n        urls:\n        - \"https://repo.example.com/a/hadoop-aws.jar\"\n        - {url: \"https://repo.example.com/b/sdk.jar?sig=1/2#x\", sha256: \"ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789\"}",
    ));
    let (_, out) = mutate_checked(&set, &review_pod("mutate-executor-rich-1"), "spark-jobs");
    let init = &out["spec"]["initContainers"][0];
    assert_eq!(init["name"], "spark-deps-aws");
    assert_eq!(init["image"], "curlimages/curl:8.11.1");
    // curlimages/curl names its user (`curl_user`): without a numeric runAsUser the kubelet
    // cannot verify runAsNonRoot and refuses the container. 185 is Spark's own uid, so the
    // files belong to the user who reads them.
    assert_eq!(
        init["securityContext"],
        json!({
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": 185,
            "runAsGroup": 185,
            "seccompProfile": {"type": "RuntimeDefault"}
        })
    );
    let command = init["command"].as_array().unwrap();
    assert_eq!(command.len(), 4, "{command:?}");
    assert_eq!(command[..2], [json!("sh"), json!("-c")]);
    let script = command[2].as_str().unwrap();
    assert!(script.contains("--fail-early") && script.contains("sha256sum"));
    assert!(script.contains("--speed-time \"$stall\""), "{script}");
    // The policy's values are arguments, never part of the script.
    assert!(!script.contains("repo.example.com") && !script.contains("abcdef"));
    assert_eq!(
        init["args"],
        json!([
            "/deps",
            "60",
            "https://repo.example.com/a/hadoop-aws.jar",
            "hadoop-aws.jar",
            "",
            "https://repo.example.com/b/sdk.jar?sig=1/2#x",
            "sdk.jar",
            "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
        ])
    );
    assert_eq!(
        init["volumeMounts"],
        json!([{"name": "spark-deps-aws", "mountPath": "/deps"}])
    );
    assert!(out["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "spark-deps-aws" && v["emptyDir"].is_object()));
}

#[test]
fn a_download_dependency_can_name_its_own_user_and_group() {
    let set = policies(&policy(
        "dl",
        0,
        "all:\n  dependencies:\n  - name: aws\n    source:\n      download:\n        urls: [\"https://repo.example.com/a/hadoop-aws.jar\"]\n        image: registry.example.com/tools/curl:1\n        runAsUser: 1001\n        runAsGroup: 0",
    ));
    let (_, out) = mutate_checked(
        &set,
        &review_pod("mutate-driver-scala-sparkpi"),
        "spark-jobs",
    );
    let sc = &out["spec"]["initContainers"][0]["securityContext"];
    assert_eq!(sc["runAsUser"], 1001);
    assert_eq!(sc["runAsGroup"], 0);
    assert_eq!(sc["runAsNonRoot"], true);
}

#[test]
fn dollars_in_download_urls_reach_curl_as_written() {
    // The kubelet expands `$(NAME)` in args from the container's environment, which holds
    // the service-link variables of every Service in the tenant's namespace.
    let set = policies(&policy(
        "dl",
        0,
        "all:\n  dependencies:\n  - name: aws\n    source:\n      download:\n        urls: [\"https://repo.example.com/$(KUBERNETES_SERVICE_HOST)/a$$b.jar\"]",
    ));
    let (_, out) = mutate_checked(
        &set,
        &review_pod("mutate-driver-scala-sparkpi"),
        "spark-jobs",
    );
    let args = &out["spec"]["initContainers"][0]["args"];
    assert_eq!(
        args[2],
        "https://repo.example.com/$$(KUBERNETES_SERVICE_HOST)/a$$$$b.jar"
    );
    assert_eq!(args[3], "a$$$$b.jar");
}

#[test]
fn resource_defaults_fill_gaps_and_force_replaces() {
    let pod = review_pod("mutate-executor-rich-1");
    let c = spark_container(&pod, "spark-kubernetes-executor");
    let cpu_limit = c["resources"]["limits"]["cpu"].clone();
    assert!(!cpu_limit.is_null());
    let set = policies(&policy(
        "res",
        0,
        "executor:\n  resources:\n    defaults: {limits: {cpu: \"8\", ephemeral-storage: 10Gi}}\n    force: {limits: {nvidia.com/gpu: 1}}",
    ));
    let (_, out) = mutate_checked(&set, &pod, "spark-jobs");
    let r = &spark_container(&out, "spark-kubernetes-executor")["resources"];
    assert_eq!(
        r["limits"]["cpu"], cpu_limit,
        "a default never replaces a value"
    );
    assert_eq!(r["limits"]["ephemeral-storage"], "10Gi");
    assert_eq!(r["limits"]["nvidia.com/gpu"], "1");
}

#[test]
fn a_value_that_would_put_a_request_above_its_limit_is_not_applied() {
    let pod = review_pod("mutate-executor-rich-1");
    let before = spark_container(&pod, "spark-kubernetes-executor")["resources"].clone();
    let set = policies(&policy(
        "res",
        0,
        "executor:\n  resources:\n    force: {requests: {cpu: \"64\"}}",
    ));
    let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
    assert_eq!(
        spark_container(&out, "spark-kubernetes-executor")["resources"],
        before
    );
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("larger than the limit")),
        "{:?}",
        m.warnings
    );
    // The value taken back is no change: the policy is not listed as applied.
    assert!(m.applied.is_empty(), "{:?}", m.applied);
    assert!(m.changes_by_policy.is_empty(), "{:?}", m.changes_by_policy);
}

#[test]
fn a_value_taken_back_names_its_policy_and_the_others_stay_counted() {
    let pod = review_pod("mutate-executor-rich-1");
    let set = policies(&format!(
        "{}---\n{}",
        policy(
            "high",
            10,
            "executor:\n  resources:\n    force: {requests: {cpu: \"64\"}, limits: {ephemeral-storage: 10Gi}}",
        ),
        policy(
            "low",
            0,
            "executor:\n  resources:\n    force: {requests: {cpu: \"32\"}}",
        )
    ));
    let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
    let r = &spark_container(&out, "spark-kubernetes-executor")["resources"];
    assert_eq!(r["limits"]["ephemeral-storage"], "10Gi");
    let warning = m
        .warnings
        .iter()
        .find(|w| w.contains("larger than the limit"))
        .unwrap_or_else(|| panic!("{:?}", m.warnings));
    assert!(
        warning.starts_with("cpu of container \"spark-kubernetes-executor\"")
            && warning.contains("the values from policy \"high\" would make the request (64)"),
        "{warning}"
    );
    // "high" keeps its ephemeral-storage limit; "low" lost cpu to "high" and changed
    // nothing; the webhook's own change is the applied annotation.
    assert_eq!(
        m.changes_by_policy,
        vec![("high".to_owned(), 1), ("spark-admission".to_owned(), 1)]
    );
    assert_eq!(m.applied.len(), 1, "{:?}", m.applied);
    assert!(m.applied[0].starts_with("high@"), "{:?}", m.applied);
}

#[test]
fn security_context_merges_field_by_field() {
    let mut pod = review_pod("mutate-driver-scala-sparkpi");
    pod["spec"]["securityContext"] = json!({"fsGroup": 185});
    let set = policies(&policy(
        "sec",
        0,
        "all:\n  podSecurityContext: {runAsNonRoot: true, fsGroup: 1000}\n  securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}",
    ));
    let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
    assert_eq!(
        out["spec"]["securityContext"],
        json!({"fsGroup": 185, "runAsNonRoot": true})
    );
    let c = spark_container(&out, "spark-kubernetes-driver");
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert!(m.warnings.iter().any(|w| w.contains("fsGroup")));
}

#[test]
fn sidecars_and_init_containers_merge_by_name_after_the_pods_own() {
    let set = policies(&policy(
        "side",
        0,
        "all:\n  sidecars:\n  - {name: vector, image: timberio/vector:0.40}\n  initContainers:\n  - {name: wait-for-metastore, image: busybox:1.36, command: [sh, -c, 'true']}",
    ));
    let (_, out) = mutate_checked(&set, &review_pod("mutate-driver-rich"), "spark-jobs");
    let names: Vec<&str> = out["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["spark-kubernetes-driver", "vector"]);
    assert_eq!(
        out["spec"]["initContainers"][0]["name"],
        "wait-for-metastore"
    );
}

#[test]
fn image_rewrite_applies_to_every_container_once() {
    let set = policies(&policy(
        "mirror",
        0,
        "all:\n  image:\n    rewrite:\n    - {from: apache/, to: mirror.example.com/apache/}\n    - {from: mirror.example.com/, to: elsewhere/}\n    pullPolicy: IfNotPresent\n  overwrite: true\n  sidecars:\n  - {name: tool, image: apache/tool:1}",
    ));
    let (_, out) = mutate_checked(&set, &review_pod("mutate-driver-rich"), "spark-jobs");
    for c in out["spec"]["containers"].as_array().unwrap() {
        assert!(
            c["image"]
                .as_str()
                .unwrap()
                .starts_with("mirror.example.com/apache/"),
            "{}",
            c["image"]
        );
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    }
}

#[test]
fn topology_spread_dns_and_host_aliases_merge() {
    let set = policies(&policy(
        "net",
        0,
        "all:\n  topologySpreadConstraints:\n  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {spark-role: executor}}}\n  dnsConfig: {options: [{name: ndots, value: \"2\"}], searches: [corp.example.com]}\n  hostAliases:\n  - {ip: 10.0.0.5, hostnames: [metastore]}\n  terminationGracePeriodSeconds: 60\n  overwrite: true",
    ));
    let (_, out) = mutate_checked(&set, &review_pod("mutate-executor-rich-2"), "spark-jobs");
    assert_eq!(out["spec"]["topologySpreadConstraints"][0]["maxSkew"], 1);
    assert_eq!(
        out["spec"]["dnsConfig"]["options"][0],
        json!({"name": "ndots", "value": "2"})
    );
    assert_eq!(
        out["spec"]["hostAliases"][0],
        json!({"ip": "10.0.0.5", "hostnames": ["metastore"]})
    );
    assert_eq!(out["spec"]["terminationGracePeriodSeconds"], 60);
}

#[test]
fn selector_limits_policies_by_role_app_name_and_labels() {
    let yaml = format!(
        "{HEADER}metadata: {{name: sel}}\nspec:\n  namespaces: [\"spark-*\"]\n  selector:\n    roles: [executor]\n    appName: \"^spark-pi\"\n    matchLabels: {{spark-version: 3.5.9}}\n  all:\n    labels: {{selected: \"yes\"}}\n"
    );
    let set = policies(&yaml);
    let engine = Engine::default();
    let hit = |fixture: &str, ns: &str| {
        let m = engine
            .mutate(MutateRequest::new(&set, &typed(&review_pod(fixture)), ns))
            .expect("the engine plans the pod");
        !m.patch.0.is_empty()
    };
    assert!(hit("mutate-executor-rich-1", "spark-jobs"));
    assert!(!hit("mutate-driver-rich", "spark-jobs"), "role");
    assert!(
        !hit("mutate-executor-client-1", "spark-jobs"),
        "app name client-pi"
    );
    assert!(!hit("mutate-executor-rich-1", "default"), "namespace glob");
}

#[test]
fn applied_annotation_names_each_policy_with_its_hash() {
    let (_, out) = mutate_checked(
        &example_policies(),
        &review_pod("mutate-executor-rich-1"),
        "spark-jobs",
    );
    let applied = out["metadata"]["annotations"][APPLIED_ANNOTATION]
        .as_str()
        .unwrap();
    for tag in applied.split(',') {
        let (name, hash) = tag.split_once('@').unwrap();
        assert!(!name.is_empty());
        assert_eq!(hash.len(), 10);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    }
}

#[test]
fn changing_a_policy_changes_its_hash() {
    let a = policies(&policy("p", 0, "all:\n  labels: {a: \"1\"}"));
    let b = policies(&policy("p", 0, "all:\n  labels: {a: \"2\"}"));
    assert_ne!(a.policies()[0].tag, b.policies()[0].tag);
}

/// The applied annotation, or "" when the pod has none.
fn applied_annotation(out: &serde_json::Value) -> String {
    out["metadata"]["annotations"][APPLIED_ANNOTATION]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn only_policies_that_changed_the_pod_are_listed_as_applied() {
    // "kept" wants a label the pod already has (no overwrite): it changes nothing.
    let mut pod = review_pod("mutate-driver-pyspark-pi");
    pod["metadata"]["labels"]["tier"] = json!("gold");
    let yaml = format!(
        "{}---\n{}",
        policy("kept", 5, "all:\n  labels: {tier: bronze}"),
        policy("adds", 1, "all:\n  labels: {team: data}")
    );
    let (m, out) = mutate_checked(&policies(&yaml), &pod, "spark-jobs");
    let applied = applied_annotation(&out);
    assert!(applied.starts_with("adds@"), "{applied}");
    assert!(!applied.contains("kept@"), "{applied}");
    assert_eq!(m.applied.len(), 1, "{:?}", m.applied);
    assert!(
        !m.changes_by_policy.iter().any(|(p, _)| p == "kept"),
        "{:?}",
        m.changes_by_policy
    );
}

#[test]
fn a_policy_whose_every_value_loses_to_a_higher_priority_one_is_not_applied() {
    let yaml = format!(
        "{}---\n{}",
        policy("low", 1, "all:\n  labels: {tier: bronze}"),
        policy("high", 9, "all:\n  labels: {tier: gold}")
    );
    let (m, out) = mutate_checked(
        &policies(&yaml),
        &review_pod("mutate-driver-pyspark-pi"),
        "spark-jobs",
    );
    assert!(applied_annotation(&out).starts_with("high@"));
    assert!(!applied_annotation(&out).contains("low@"));
    assert_eq!(
        m.changes_by_policy
            .iter()
            .filter(|(p, _)| p != "spark-admission")
            .collect::<Vec<_>>(),
        [&("high".to_owned(), 1)],
        "the losing value is not counted as a change"
    );
}

#[test]
fn a_policy_whose_only_change_is_undone_is_not_applied() {
    // Forcing a cpu request above the pod's limit is undone after planning.
    let yaml = format!(
        "{}---\n{}",
        policy(
            "res",
            0,
            "executor:\n  resources:\n    force: {requests: {cpu: \"64\"}}"
        ),
        policy("adds", 0, "all:\n  labels: {team: data}")
    );
    let (m, out) = mutate_checked(
        &policies(&yaml),
        &review_pod("mutate-executor-rich-1"),
        "spark-jobs",
    );
    assert!(!applied_annotation(&out).contains("res@"), "{out}");
    assert!(
        !m.changes_by_policy.iter().any(|(p, _)| p == "res"),
        "{:?}",
        m.changes_by_policy
    );
    // `explain` still shows the value, taken back.
    let undone: Vec<_> = m.changes.iter().filter(|c| c.policy == "res").collect();
    assert_eq!(undone.len(), 1, "{:?}", m.changes);
    assert!(
        undone[0].field.ends_with(".resources.requests[cpu]"),
        "{:?}",
        undone[0]
    );
    assert!(
        !undone[0].applied && undone[0].action.ends_with(" (undone)"),
        "{:?}",
        undone[0]
    );
}

#[test]
fn policies_that_change_nothing_leave_the_pod_without_a_patch() {
    let mut pod = review_pod("mutate-driver-pyspark-pi");
    pod["metadata"]["labels"]["tier"] = json!("gold");
    let set = policies(&policy("kept", 0, "all:\n  labels: {tier: bronze}"));
    let m = Engine::default()
        .mutate(MutateRequest::new(&set, &typed(&pod), "spark-jobs"))
        .expect("the engine plans the pod");
    assert!(m.patch.0.is_empty(), "{:?}", m.patch);
    assert!(m.applied.is_empty(), "{:?}", m.applied);
}

// --- sparkConf, ports and variables -------------------------------------------------

use spark_admission::engine::{submit_opts_tokens, SUBMIT_OPTS_VAR};
use spark_admission::policy::{parse_documents, PolicyError, PolicySource};

/// The driver's SPARK_SUBMIT_OPTS as Spark's launcher reads it.
fn submit_opts(pod: &serde_json::Value) -> Vec<String> {
    let c = spark_container(pod, "spark-kubernetes-driver");
    submit_opts_tokens(&env_value(c, SUBMIT_OPTS_VAR).unwrap_or_default()).unwrap()
}

fn load_errors(yaml: &str) -> Vec<PolicyError> {
    parse_documents(&PolicySource("test.yaml".into()), yaml).expect_err("the policy must not load")
}

fn with_submit_opts(fixture: &str, value: &str) -> serde_json::Value {
    let mut pod = review_pod(fixture);
    let c = pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "spark-kubernetes-driver")
        .unwrap();
    c["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": SUBMIT_OPTS_VAR, "value": value}));
    pod
}

#[test]
fn spark_conf_reaches_the_driver_as_system_properties_in_spark_submit_opts() {
    let set = policies(&policy(
        "history",
        0,
        "driver:\n  sparkConf:\n    spark.eventLog.enabled: \"true\"\n    spark.eventLog.dir: s3a://spark-events/logs",
    ));
    let (m, out) = mutate_checked(&set, &review_pod("mutate-driver-rich"), "spark-jobs");
    assert_eq!(
        submit_opts(&out),
        [
            "-Dspark.eventLog.dir=s3a://spark-events/logs",
            "-Dspark.eventLog.enabled=true"
        ]
    );
    // explain names each key with the policy that set it.
    assert!(m.changes.iter().any(|c| c.policy == "history"
        && c.field == "sparkConf[spark.eventLog.dir]"
        && c.action.contains("s3a://spark-events/logs")));
}

#[test]
fn spark_conf_in_all_is_written_on_drivers_only() {
    let set = policies(&policy(
        "metrics",
        0,
        "all:\n  sparkConf: {spark.ui.prometheus.enabled: \"true\"}",
    ));
    let (_, exec) = mutate_checked(&set, &review_pod("mutate-executor-rich-1"), "spark-jobs");
    let c = spark_container(&exec, "spark-kubernetes-executor");
    assert!(env_value(c, SUBMIT_OPTS_VAR).is_none());
    let (_, driver) = mutate_checked(&set, &review_pod("mutate-driver-pyspark-pi"), "spark-jobs");
    assert_eq!(submit_opts(&driver), ["-Dspark.ui.prometheus.enabled=true"]);
}

#[test]
fn the_higher_priority_policy_wins_a_spark_conf_key_and_ties_go_by_name() {
    let yaml = [
        policy(
            "low",
            1,
            "driver:\n  sparkConf: {spark.a: low, spark.only.low: x}",
        ),
        policy("high", 9, "driver:\n  sparkConf: {spark.a: high}"),
        policy("b-tie", 5, "driver:\n  sparkConf: {spark.t: b}"),
        policy("a-tie", 5, "driver:\n  sparkConf: {spark.t: a}"),
    ]
    .join("---\n");
    let (m, out) = mutate_checked(
        &policies(&yaml),
        &review_pod("mutate-driver-rich"),
        "spark-jobs",
    );
    let opts = submit_opts(&out);
    assert!(opts.contains(&"-Dspark.a=high".to_owned()), "{opts:?}");
    assert!(opts.contains(&"-Dspark.t=a".to_owned()), "{opts:?}");
    assert!(opts.contains(&"-Dspark.only.low=x".to_owned()), "{opts:?}");
    assert_eq!(opts.len(), 3, "one token per key: {opts:?}");
    assert!(m.changes.iter().any(|c| c.policy == "low"
        && c.field == "sparkConf[spark.a]"
        && c.action.contains("\"high\" has higher priority")));
}

#[test]
fn within_one_policy_the_driver_section_replaces_the_all_section() {
    let set = policies(&policy(
        "p",
        0,
        "all:\n  sparkConf: {spark.x: from-all, spark.y: \"1\"}\ndriver:\n  sparkConf: {spark.x: from-driver}",
    ));
    let (m, out) = mutate_checked(&set, &review_pod("mutate-driver-rich"), "spark-jobs");
    assert_eq!(submit_opts(&out), ["-Dspark.x=from-driver", "-Dspark.y=1"]);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
}

#[test]
fn the_submitters_spark_submit_opts_is_kept_and_its_keys_win_with_a_warning() {
    // As spark.kubernetes.driverEnv.SPARK_SUBMIT_OPTS puts it on the driver container.
    let pod = with_submit_opts(
        "mutate-driver-rich",
        "-Dfoo.bar=x -XX:+UseG1GC '-Dspark.eventLog.dir=s3a://mine/logs'",
    );
    let set = policies(&policy(
        "history",
        0,
        "driver:\n  sparkConf:\n    spark.eventLog.dir: s3a://spark-events/logs\n    spark.eventLog.enabled: \"true\"",
    ));
    let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
    assert_eq!(
        submit_opts(&out),
        [
            "-Dfoo.bar=x",
            "-XX:+UseG1GC",
            "-Dspark.eventLog.dir=s3a://mine/logs",
            "-Dspark.eventLog.enabled=true"
        ]
    );
    assert!(
        m.warnings.iter().any(|w| w.contains("policy \"history\"")
            && w.contains("spark.eventLog.dir is already \"s3a://mine/logs\"")
            && w.contains("spark.kubernetes.driverEnv.SPARK_SUBMIT_OPTS")),
        "{:?}",
        m.warnings
    );
    // The same value as the policy's is no conflict: nothing to add, nothing to say.
    let pod = with_submit_opts("mutate-driver-rich", "-Dspark.eventLog.enabled=true");
    let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
    assert_eq!(
        submit_opts(&out),
        [
            "-Dspark.eventLog.enabled=true",
            "-Dspark.eventLog.dir=s3a://spark-events/logs"
        ]
    );
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
}

#[test]
fn spark_conf_values_are_quoted_so_the_launcher_reads_them_byte_for_byte() {
    // `$$` and `$(NAME)` would also be eaten by the kubelet's expansion of env values.
    let tricky =
        r#"-XX:OnOutOfMemoryError="kill -9 %p" it's $HOME ${env:X} $$ $(SPARK_USER) C:\temp\n"#;
    let yaml = format!(
        "driver:\n  sparkConf:\n    spark.driver.defaultJavaOptions: {}\n    \"spark.kubernetes.executor.annotation.example.com/owner\": data-team\n    spark.hadoop.fs.s3a.path.style.access: \"true\"",
        serde_json::to_string(&tricky.replace("${", "$${")).unwrap()
    );
    let (_, out) = mutate_checked(
        &policies(&policy("q", 0, &yaml)),
        &with_submit_opts("mutate-driver-rich", "\"-Dfoo.bar=a b\""),
        "spark-jobs",
    );
    let opts = submit_opts(&out);
    assert_eq!(opts[0], "-Dfoo.bar=a b");
    assert!(
        opts.contains(&format!("-Dspark.driver.defaultJavaOptions={tricky}")),
        "{opts:?}"
    );
    assert!(opts.contains(
        &"-Dspark.kubernetes.executor.annotation.example.com/owner=data-team".to_owned()
    ));
    assert!(opts.contains(&"-Dspark.hadoop.fs.s3a.path.style.access=true".to_owned()));
}

#[test]
fn spark_submit_opts_from_a_reference_is_left_alone_with_a_warning() {
    let mut pod = review_pod("mutate-driver-scala-sparkpi");
    pod["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": SUBMIT_OPTS_VAR, "valueFrom": {"configMapKeyRef": {"name": "jvm", "key": "opts"}}}));
    let set = policies(&policy("p", 0, "driver:\n  sparkConf: {spark.x: \"1\"}"));
    let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
    assert_eq!(
        spark_container(&out, "spark-kubernetes-driver")["env"],
        pod["spec"]["containers"][0]["env"]
    );
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("comes from a reference")),
        "{:?}",
        m.warnings
    );
}

#[test]
fn spark_conf_in_the_executor_section_is_refused_at_load_saying_where_it_belongs() {
    let errors = load_errors(&policy(
        "bad",
        0,
        "executor:\n  sparkConf: {spark.executor.cores: \"2\"}",
    ));
    assert_eq!(errors[0].path, "/spec/executor/sparkConf");
    let msg = &errors[0].message;
    assert!(
        msg.contains("receive their whole Spark configuration from their driver"),
        "{msg}"
    );
    assert!(
        msg.contains("spark.executor.*") && msg.contains("`driver`"),
        "{msg}"
    );
}

#[test]
fn spark_conf_keys_must_be_spark_keys() {
    let errors = load_errors(&policy(
        "bad",
        0,
        "driver:\n  sparkConf: {fs.s3a.endpoint: x}",
    ));
    assert_eq!(errors[0].path, "/spec/driver/sparkConf/fs.s3a.endpoint");
    assert!(
        errors[0].message.contains("spark.hadoop."),
        "{}",
        errors[0].message
    );
    let errors = load_errors(&policy("bad", 0, "all:\n  sparkConf: {\"spark.a b\": x}"));
    assert_eq!(errors[0].path, "/spec/all/sparkConf/spark.a b");
}

#[test]
fn ports_merge_by_name_and_number_and_never_clash() {
    let set = policies(&policy(
        "ports",
        0,
        "driver:\n  ports:\n  - {name: spark-ui, containerPort: 4040}\n  - {name: jmx, containerPort: 9404}\n  - {name: metrics, containerPort: 7078}\n  - {name: blockmanager, containerPort: 9999}",
    ));
    let pod = review_pod("mutate-driver-rich");
    let before = spark_container(&pod, "spark-kubernetes-driver")["ports"].clone();
    let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
    let ports = spark_container(&out, "spark-kubernetes-driver")["ports"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        &ports[..before.as_array().unwrap().len()],
        before.as_array().unwrap().as_slice()
    );
    assert_eq!(
        ports.len(),
        before.as_array().unwrap().len() + 1,
        "only jmx is new"
    );
    assert_eq!(
        ports.last().unwrap(),
        &json!({"name": "jmx", "containerPort": 9404})
    );
    for clash in ["\"metrics\" (7078/TCP)", "\"blockmanager\" (9999/TCP)"] {
        assert!(
            m.warnings.iter().any(|w| w.contains(clash)),
            "{clash}: {:?}",
            m.warnings
        );
    }
    assert_eq!(
        m.warnings.len(),
        2,
        "spark-ui 4040 is Spark's own port: {:?}",
        m.warnings
    );
}

#[test]
fn each_variable_takes_the_pods_value() {
    let set = policies(&policy(
        "vars",
        0,
        "all:\n  labels: {ns: \"${namespace}\", role: \"${role}\"}\n  annotations: {app: \"${app.name}/${app.id}\", literal: \"$${namespace}\"}\n  env:\n  - {name: EVENT_DIR, value: \"s3a://events/${namespace}/${app.id}\"}\n  volumes:\n  - volume: {name: team-data, persistentVolumeClaim: {claimName: \"data-${namespace}\"}}\n    mount: {mountPath: /team, subPath: \"${app.name}\"}\n  - volume: {name: team-conf, configMap: {name: \"conf-${role}\"}}\n  - volume: {name: team-keys, secret: {secretName: \"keys-${namespace}\"}}\ndriver:\n  sparkConf: {spark.eventLog.dir: \"s3a://spark-events/${namespace}\"}",
    ));
    let pod = review_pod("mutate-driver-rich");
    let id = pod["metadata"]["labels"]["spark-app-selector"]
        .as_str()
        .unwrap()
        .to_owned();
    let name = pod["metadata"]["labels"]["spark-app-name"]
        .as_str()
        .unwrap()
        .to_owned();
    let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(out["metadata"]["labels"]["ns"], "spark-jobs");
    assert_eq!(out["metadata"]["labels"]["role"], "driver");
    assert_eq!(
        out["metadata"]["annotations"]["app"],
        format!("{name}/{id}")
    );
    assert_eq!(out["metadata"]["annotations"]["literal"], "${namespace}");
    let c = spark_container(&out, "spark-kubernetes-driver");
    assert_eq!(
        env_value(c, "EVENT_DIR").unwrap(),
        format!("s3a://events/spark-jobs/{id}")
    );
    assert!(submit_opts(&out)
        .contains(&"-Dspark.eventLog.dir=s3a://spark-events/spark-jobs".to_owned()));
    let vols = out["spec"]["volumes"].as_array().unwrap();
    let vol = |n: &str| vols.iter().find(|v| v["name"] == n).unwrap().clone();
    assert_eq!(
        vol("team-data")["persistentVolumeClaim"]["claimName"],
        "data-spark-jobs"
    );
    assert_eq!(vol("team-conf")["configMap"]["name"], "conf-driver");
    assert_eq!(vol("team-keys")["secret"]["secretName"], "keys-spark-jobs");
    assert!(c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["mountPath"] == "/team" && m["subPath"] == name.as_str()));

    // On an executor of the same app, ${role} says so.
    let (_, exec) = mutate_checked(&set, &review_pod("mutate-executor-rich-1"), "spark-jobs");
    assert_eq!(exec["metadata"]["labels"]["role"], "executor");
    assert_eq!(
        exec["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "team-conf")
            .unwrap()["configMap"]["name"],
        "conf-executor"
    );
}

#[test]
fn an_item_whose_variable_has_no_label_on_the_pod_is_skipped_with_a_warning() {
    let mut pod = review_pod("mutate-driver-scala-sparkpi");
    pod["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("spark-app-name");
    let set = policies(&policy(
        "vars",
        0,
        "all:\n  labels: {app: \"${app.name}\", ns: \"${namespace}\"}\n  env:\n  - {name: APP, value: \"${app.name}\"}\n  - {name: NS, value: \"${namespace}\"}\n  volumes:\n  - volume: {name: per-app, persistentVolumeClaim: {claimName: \"${app.name}-data\"}}\n    mount: {mountPath: /app}\ndriver:\n  sparkConf: {spark.app.tag: \"${app.name}\", spark.ns: \"${namespace}\"}",
    ));
    let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
    assert!(
        out["metadata"]["labels"].get("app").is_none(),
        "never an empty value"
    );
    assert_eq!(
        out["metadata"]["labels"]["ns"], "spark-jobs",
        "the rest still applies"
    );
    let c = spark_container(&out, "spark-kubernetes-driver");
    assert!(env_value(c, "APP").is_none());
    assert_eq!(env_value(c, "NS").as_deref(), Some("spark-jobs"));
    assert!(!out["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "per-app"));
    assert!(!c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["mountPath"] == "/app"));
    assert_eq!(submit_opts(&out), ["-Dspark.ns=spark-jobs"]);
    for item in [
        "label \"app\"",
        "env \"APP\"",
        "volume \"per-app\"",
        "sparkConf \"spark.app.tag\"",
    ] {
        assert!(
            m.warnings.iter().any(|w| w.contains(item)
                && w.contains("${app.name}")
                && w.contains("no spark-app-name label")),
            "{item}: {:?}",
            m.warnings
        );
    }
}

#[test]
fn a_tenant_label_that_is_not_a_label_value_never_reaches_a_value() {
    // The webhook sees the pod before the API server validates its labels. Written into
    // spark.metrics.namespace, this value would make Spark resolve another conf value
    // (a credential) into metric names that Prometheus publishes; with a space it would
    // become a second JVM option.
    for bad in [
        "${spark.hadoop.fs.s3a.secret.key}",
        "x -Dspark.driver.extraJavaOptions=-javaagent:/tmp/a.jar",
        "../../etc",
    ] {
        let mut pod = review_pod("mutate-driver-pyspark-pi");
        pod["metadata"]["labels"]["spark-app-name"] = json!(bad);
        let set = policies(&policy(
            "vars",
            0,
            "driver:\n  sparkConf: {spark.metrics.namespace: \"${app.name}\", spark.ns: \"${namespace}\"}\n  annotations: {app: \"${app.name}\"}",
        ));
        let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
        assert_eq!(submit_opts(&out), ["-Dspark.ns=spark-jobs"], "{bad:?}");
        assert!(
            out["metadata"]["annotations"].get("app").is_none(),
            "{bad:?}"
        );
        for item in [
            "sparkConf \"spark.metrics.namespace\"",
            "annotation \"app\"",
        ] {
            assert!(
                m.warnings.iter().any(|w| w.contains(item)
                    && w.contains("spark-app-name label is not a valid label value")),
                "{bad:?} {item}: {:?}",
                m.warnings
            );
        }
    }
}

#[test]
fn an_unknown_variable_is_a_load_error_at_its_json_path() {
    for (body, path) in [
        ("all:\n  labels: {a: \"${app}\"}", "/spec/all/labels/a"),
        ("driver:\n  sparkConf: {spark.x: \"${env:HOME}\"}", "/spec/driver/sparkConf/spark.x"),
        ("all:\n  env:\n  - {name: A, value: ok}\n  - {name: B, value: \"${namespace\"}", "/spec/all/env/1/value"),
        ("executor:\n  volumes:\n  - volume: {name: v, secret: {secretName: \"${pod}\"}}", "/spec/executor/volumes/0/volume/secret/secretName"),
        ("all:\n  volumes:\n  - volume: {name: v, emptyDir: {}}\n    mount: {mountPath: /x, subPath: \"${x}\"}", "/spec/all/volumes/0/mount/subPath"),
    ] {
        let errors = load_errors(&policy("bad", 0, body));
        assert_eq!(errors[0].path, path, "{errors:?}");
    }
    let errors = load_errors(&policy(
        "bad",
        0,
        "driver:\n  sparkConf: {spark.x: \"${env:HOME}\"}",
    ));
    assert!(
        errors[0]
            .message
            .contains("unknown variable \"${env:HOME}\""),
        "{}",
        errors[0].message
    );
    assert!(
        errors[0].message.contains("$${"),
        "says how to write it literally"
    );
}

#[test]
fn the_escape_reaches_spark_as_its_own_reference_syntax() {
    let set = policies(&policy(
        "esc",
        0,
        "driver:\n  sparkConf: {spark.kubernetes.driver.label.owner: \"$${env:USER}\"}",
    ));
    let (_, out) = mutate_checked(&set, &review_pod("mutate-driver-rich"), "spark-jobs");
    assert_eq!(
        submit_opts(&out),
        ["-Dspark.kubernetes.driver.label.owner=${env:USER}"]
    );
}

#[test]
fn executors_are_not_warned_about_spark_conf_they_would_never_get() {
    let mut pod = review_pod("mutate-executor-rich-1");
    pod["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("spark-app-name");
    let set = policies(&policy(
        "p",
        0,
        "all:\n  labels: {x: \"y\"}\n  sparkConf: {spark.app.tag: \"${app.name}\"}",
    ));
    let (m, _) = mutate_checked(&set, &pod, "spark-jobs");
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
}

#[test]
fn dependency_sources_take_variables_and_are_skipped_without_their_label() {
    let set = policies(&policy(
        "deps",
        0,
        "all:\n  dependencies:\n  - name: team-jars\n    source: {persistentVolumeClaim: {claimName: \"jars-${namespace}\"}}\n  - name: app-py\n    source: {configMap: {name: \"${app.name}-py\"}}\n    jars: false\n    python: true",
    ));
    let pod = review_pod("mutate-driver-scala-sparkpi");
    let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    let vols = out["spec"]["volumes"].as_array().unwrap();
    assert!(vols.iter().any(|v| v["name"] == "spark-deps-team-jars"
        && v["persistentVolumeClaim"]["claimName"] == "jars-spark-jobs"));
    assert!(vols
        .iter()
        .any(|v| v["name"] == "spark-deps-app-py" && v["configMap"]["name"] == "spark-pi-py"));

    let mut pod = pod;
    pod["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("spark-app-name");
    let (m, out) = mutate_checked(&set, &pod, "spark-jobs");
    let c = spark_container(&out, "spark-kubernetes-driver");
    assert!(
        env_value(c, "PYTHONPATH").is_none(),
        "the whole dependency is skipped"
    );
    assert!(!out["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "spark-deps-app-py"));
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("dependency \"app-py\"") && w.contains("${app.name}")),
        "{:?}",
        m.warnings
    );
    let errors = load_errors(&policy(
        "bad",
        0,
        "all:\n  dependencies:\n  - name: x\n    source: {secret: {secretName: \"${team}\"}}",
    ));
    assert_eq!(
        errors[0].path,
        "/spec/all/dependencies/0/source/secret/secretName"
    );
}

/// The engine's own check (bodies under 64 KiB are not scanned first): the entries of every
/// container's lists together are bounded, whatever each list holds.
#[test]
fn the_entries_of_all_containers_lists_together_are_bounded() {
    let limits = spark_admission::engine::PodLimits {
        container_entries: 40,
        ..spark_admission::engine::PodLimits::default()
    };
    let engine = Engine {
        limits,
        ..Engine::default()
    };
    let mut pod = review_pod("mutate-driver-scala-sparkpi");
    let containers = pod["spec"]["containers"].as_array_mut().unwrap();
    for c in 0..5 {
        containers.push(json!({
            "name": format!("wide-{c}"),
            "image": "busybox",
            "env": (0..10).map(|i| json!({"name": format!("W{i}"), "value": "1"})).collect::<Vec<_>>(),
        }));
    }
    let set = example_policies();
    let err = engine
        .mutate(MutateRequest::new(&set, &typed(&pod), "spark-jobs"))
        .expect_err("over the total");
    let text = err.to_string();
    assert!(
        text.contains(spark_admission::engine::CONTAINER_ENTRIES_FIELD)
            && text.contains("more than the 40"),
        "{text}"
    );
}
