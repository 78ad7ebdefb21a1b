//! Values of the pod fields a policy writes, placed both in a pod (for a real API server to
//! judge, `tests/e2e/names.rs`) and in a policy (for the loader to judge): the two must
//! agree, recorded in `tests/fixtures/apiserver/names/` and replayed without a server.

use serde_json::{json, Value};

/// The PriorityClass and RuntimeClass the API-server tier creates for the corpus.
pub const CLASS: &str = "names-probe";

/// The fields, each with values the API server takes and values it refuses. Priority and
/// runtime classes are objects the API server looks up: [`CLASS`] exists in the test
/// cluster, a malformed name never can.
pub fn corpus() -> Vec<(&'static str, Value)> {
    let long = |c: &str, n: usize| c.repeat(n);
    let mut out: Vec<(&'static str, Value)> = Vec::new();
    for key in [
        "team".to_owned(),
        "example.com/team".to_owned(),
        "Example.com/team".to_owned(),
        "cost center".to_owned(),
        "-team".to_owned(),
        "team-".to_owned(),
        "a/b/c".to_owned(),
        "example.com/".to_owned(),
        "ex_ample.com/x".to_owned(),
        "x_y.Z".to_owned(),
        long("k", 63),
        long("k", 64),
        format!("{}/n", long("p", 253)),
        format!("{}/n", long("p", 254)),
    ] {
        out.push(("labelKey", json!(key)));
    }
    for value in [
        "",
        "data",
        "Data_Platform.1",
        "data platform",
        "-x",
        "x.",
        "a/b",
    ] {
        out.push(("labelValue", json!(value)));
    }
    out.push(("labelValue", json!(long("v", 63))));
    out.push(("labelValue", json!(long("v", 64))));
    for key in ["Example.COM/Owner", "owner", "Bad Key!", "example.com/x~y"] {
        out.push(("annotationKey", json!(key)));
    }
    for key in ["kubernetes.io/arch", "pool name"] {
        out.push(("nodeSelectorKey", json!(key)));
    }
    for value in ["amd64", "a b", ""] {
        out.push(("nodeSelectorValue", json!(value)));
    }
    for name in ["volcano", "my.scheduler", "Volcano", "my_scheduler"] {
        out.push(("schedulerName", json!(name)));
    }
    for field in ["priorityClassName", "runtimeClassName"] {
        for name in [CLASS, "Names_Probe", "names-probe."] {
            out.push((field, json!(name)));
        }
    }
    for name in ["scratch", "scratch-1", "Scratch", "a.b", "a_b"] {
        out.push(("volumeName", json!(name)));
    }
    out.push(("volumeName", json!(long("a", 63))));
    out.push(("volumeName", json!(long("a", 64))));
    for name in ["log-shipper", "Log_Shipper", "a.b"] {
        out.push(("containerName", json!(name)));
    }
    for t in [
        json!({"operator": "Exists"}),
        json!({"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": "gpu", "value": ""}),
        json!({"key": "gpu", "operator": "", "value": "x", "effect": "PreferNoSchedule"}),
        json!({"key": "a", "operator": "Equal", "value": "b", "effect": "NoExecute", "tolerationSeconds": 30}),
        json!({"key": "gpu", "operator": "Exist"}),
        json!({"key": "gpu", "operator": "Exists", "value": "yes"}),
        json!({"operator": "Equal", "value": "x"}),
        json!({"key": "gpu", "effect": "NoScheduled"}),
        json!({"key": "gpu", "effect": "NoSchedule", "tolerationSeconds": 30}),
        json!({"key": "bad key", "operator": "Exists"}),
        json!({"key": "gpu", "value": "a b"}),
    ] {
        out.push(("toleration", t));
    }
    out
}

/// A plain pod (no `spark-role`: the webhook lets it through) carrying `value` in `field`.
pub fn pod(field: &str, value: &Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "names-probe"},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}
    });
    let text = || value.as_str().unwrap_or_default().to_owned();
    match field {
        "labelKey" => pod["metadata"]["labels"] = json!({ text(): "x" }),
        "labelValue" => pod["metadata"]["labels"] = json!({ "team": value }),
        "annotationKey" => pod["metadata"]["annotations"] = json!({ text(): "x" }),
        "nodeSelectorKey" => pod["spec"]["nodeSelector"] = json!({ text(): "x" }),
        "nodeSelectorValue" => pod["spec"]["nodeSelector"] = json!({ "pool": value }),
        "schedulerName" | "priorityClassName" | "runtimeClassName" => {
            pod["spec"][field] = value.clone()
        }
        "volumeName" => pod["spec"]["volumes"] = json!([{"name": value, "emptyDir": {}}]),
        "containerName" => pod["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
            .push(json!({"name": value, "image": "busybox"})),
        "toleration" => pod["spec"]["tolerations"] = json!([value]),
        other => panic!("unknown field {other}"),
    }
    pod
}

/// A policy (JSON, which is YAML) whose `all` section writes `value` into `field`.
pub fn policy(field: &str, value: &Value) -> String {
    let text = || value.as_str().unwrap_or_default().to_owned();
    let all = match field {
        "labelKey" => json!({"labels": { text(): "x" }}),
        "labelValue" => json!({"labels": { "team": value }}),
        "annotationKey" => json!({"annotations": { text(): "x" }}),
        "nodeSelectorKey" => json!({"nodeSelector": { text(): "x" }}),
        "nodeSelectorValue" => json!({"nodeSelector": { "pool": value }}),
        "schedulerName" | "priorityClassName" | "runtimeClassName" => json!({ field: value }),
        "volumeName" => json!({"volumes": [{"volume": {"name": value, "emptyDir": {}}}]}),
        "containerName" => json!({"sidecars": [{"name": value, "image": "busybox"}]}),
        "toleration" => json!({"tolerations": [value]}),
        other => panic!("unknown field {other}"),
    };
    json!({
        "apiVersion": "spark-admission.io/v1alpha1",
        "kind": "SparkPodPolicy",
        "metadata": {"name": "names-probe"},
        "spec": {"namespaces": ["*"], "all": all}
    })
    .to_string()
}
