//! Scenario 4: policies from ConfigMaps, watched through the real API: add, change,
//! break (the last good version keeps serving, a PolicyInvalid Event says why), fix,
//! delete; and `kubectl apply` of a broken policy refused by /validate-policy.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use serde_json::json;

use crate::cluster::{self, Cluster};
use crate::expect::UNWATCHED_NS;
use crate::webhook::{self, Policies, Webhook};

const NS: &str = "team-configmaps";
const LABEL: &str = "e2e.example.com/policy-version";

fn policy(version: &str) -> String {
    format!(
        "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata:\n  name: e2e-versioned\nspec:\n  namespaces: [{NS}]\n  all:\n    labels:\n      {LABEL}: \"{version}\"\n"
    )
}

/// A schema error at a known path: tolerationSeconds must be an integer.
const BROKEN: &str = "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata:\n  name: e2e-versioned\nspec:\n  namespaces: [team-configmaps]\n  executor:\n    tolerations:\n      - {key: x, operator: Exists, tolerationSeconds: soon}\n";

fn configmap(name: &str, policy: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": UNWATCHED_NS, "labels": {"spark-admission.io/policy": "true"}},
        "data": {"policy.yaml": policy}
    })
    .to_string()
}

fn apply(c: &Cluster, manifest: &str) -> std::process::Output {
    c.kubectl(&["apply", "-f", "-"], Some(manifest))
}

/// The label value the webhook gives a new pod now (dry run), or None.
async fn served(client: &Client) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let p = pods.create(&dry, &webhook::probe_pod()).await.ok()?;
    Some(p.metadata.labels?.get(LABEL).cloned().unwrap_or_default())
}

/// Waits until new pods get `want` ("" for no label), then stores one for real and
/// checks it carries the same.
async fn expect_served(client: &Client, want: &str, step: &str, n: &mut u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = served(client).await;
        if got.as_deref() == Some(want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{step}: new pods still get {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    *n += 1;
    let mut pod = serde_json::to_value(webhook::probe_pod()).expect("JSON");
    pod["metadata"]["name"] = json!(format!("cm-{n}-driver"));
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let stored = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(pod).expect("Pod"),
        )
        .await
        .unwrap_or_else(|e| panic!("{step}: create: {e}"));
    let label = stored
        .metadata
        .labels
        .unwrap_or_default()
        .get(LABEL)
        .cloned()
        .unwrap_or_default();
    assert_eq!(label, want, "{step}: the stored pod");
}

pub async fn policy_configmaps_are_watched_and_a_broken_one_keeps_the_last_good_version() {
    let env = cluster::env("configmaps");
    let c = env.cluster;
    let client = c.client().await;
    c.namespace(&client, NS, &[]).await;
    c.delete_policy_configmaps();
    let hook = Webhook::start(c, &env.dir, Policies::ConfigMaps(UNWATCHED_NS));
    // Without the policy-ConfigMap webhook for now: it would refuse the broken version
    // this test must get into the API to see the watch keep the last good one.
    webhook::register(&client, &hook, NS, false).await;
    let mut n = 0;
    expect_served(&client, "", "before any policy", &mut n).await;

    let out = apply(c, &configmap("e2e-policy", &policy("v1")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    expect_served(&client, "v1", "added", &mut n).await;

    assert!(apply(c, &configmap("e2e-policy", &policy("v2")))
        .status
        .success());
    expect_served(&client, "v2", "changed", &mut n).await;

    assert!(apply(c, &configmap("e2e-policy", BROKEN)).status.success());
    let events: Api<Event> = Api::namespaced(client.clone(), UNWATCHED_NS);
    let deadline = Instant::now() + Duration::from_secs(30);
    let note = loop {
        let list = events
            .list(&ListParams::default())
            .await
            .expect("list Events");
        if let Some(e) = list.items.iter().find(|e| {
            e.reason.as_deref() == Some("PolicyInvalid")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("e2e-policy")
        }) {
            break e.note.clone().unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "no PolicyInvalid Event for the broken ConfigMap"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        note.contains("/spec/executor/tolerations/0/tolerationSeconds"),
        "the Event does not name the JSON path: {note}"
    );
    expect_served(&client, "v2", "broken (last good keeps serving)", &mut n).await;

    assert!(apply(c, &configmap("e2e-policy", &policy("v3")))
        .status
        .success());
    expect_served(&client, "v3", "fixed", &mut n).await;

    let out = c.kubectl(
        &["delete", "configmap", "-n", UNWATCHED_NS, "e2e-policy"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    expect_served(&client, "", "deleted", &mut n).await;

    // Now the whole shipped validating configuration: `kubectl apply` of a broken policy
    // fails with the schema path. The API server learns of it through a watch.
    webhook::register(&client, &hook, NS, true).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let stderr = loop {
        let out = apply(c, &configmap("e2e-broken", BROKEN));
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        let _ = c.kubectl(
            &["delete", "configmap", "-n", UNWATCHED_NS, "e2e-broken"],
            None,
        );
        assert!(
            Instant::now() < deadline,
            "kubectl apply of a broken policy kept succeeding"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for needle in [
        "policies.spark-admission.io",
        "/spec/executor/tolerations/0/tolerationSeconds",
    ] {
        assert!(
            stderr.contains(needle),
            "kubectl's error lacks {needle:?}:\n{stderr}"
        );
    }
}
