//! The names and labels a policy writes into pods: what the real API server refuses in a
//! pod, the policy loader must refuse in a policy (else every pod the policy patches is
//! refused), and what it takes the loader must take. Each value of
//! `testkit::pod_fields::corpus` goes to the API server in a pod (a server-side dry run)
//! and to the loader in a policy; the verdicts are recorded for the tiers without a
//! server (`tests/engine/policy_schema.rs` replays them).

use serde_json::{json, Value};
use spark_admission::policy::{parse_documents, PolicySource};
use spark_admission_testkit::pod_fields;

use crate::{cluster, record};

pub async fn the_api_server_and_the_policy_loader_refuse_the_same_names_and_labels() {
    let env = cluster::env("names");
    let c = env.cluster;
    let client = c.client().await;
    let ns = "names";
    c.namespace(&client, ns, &[]).await;
    crate::fixtures::priority_class(&client, pod_fields::CLASS, 10).await;
    let runtime_class = json!({
        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
        "metadata": {"name": pod_fields::CLASS}, "handler": "runc"
    });
    let out = c.kubectl(&["apply", "-f", "-"], Some(&runtime_class.to_string()));
    assert!(
        out.status.success(),
        "RuntimeClass: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut records: Vec<Value> = Vec::new();
    let mut disagree = Vec::new();
    for (field, value) in pod_fields::corpus() {
        let out = c.kubectl(
            &["create", "--dry-run=server", "-n", ns, "-f", "-"],
            Some(&pod_fields::pod(field, &value).to_string()),
        );
        let accepted = out.status.success();
        let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let loaded = parse_documents(
            &PolicySource("names.yaml".into()),
            &pod_fields::policy(field, &value),
        );
        if accepted != loaded.is_ok() {
            disagree.push(format!(
                "{field} {value}: API server {}, loader {loaded:?}",
                if accepted {
                    "accepts".to_owned()
                } else {
                    format!("refuses ({said})")
                }
            ));
        }
        records
            .push(json!({"field": field, "value": value, "accepted": accepted, "apiServer": said}));
    }
    record::json("names", "verdicts", "pod-fields", &Value::Array(records));
    assert!(disagree.is_empty(), "{disagree:#?}");
}
