//! OOM-aware memory against the real API server: an executor's status is set to
//! `Failed`/`OOMKilled` through the status subresource (as the kubelet would); the next
//! executor of the same application is created bigger — also after a restart, and by a
//! second webhook process that never saw the OOM (it reads the state ConfigMaps).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use spark_admission::memory::STATE_LABEL;
use spark_admission::memory_on_oom::RAISED_ANNOTATION;

use crate::cluster::{self, Cluster};
use crate::expect::UNWATCHED_NS;
use crate::webhook::{self, metric_sum, Policies, Webhook};

const NS: &str = "team-oom";

fn apply_policy(c: &Cluster) {
    let policy = format!(
        "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata:\n  name: e2e-oom\nspec:\n  namespaces: [{NS}]\n  executor:\n    memoryOnOOM: {{step: 25%, minStep: 512Mi, max: 4Gi, remember: 1d}}\n"
    );
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "e2e-oom", "namespace": UNWATCHED_NS, "labels": {"spark-admission.io/policy": "true"}},
        "data": {"policy.yaml": policy}
    });
    let out = c.kubectl(&["apply", "-f", "-"], Some(&cm.to_string()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An executor as Spark creates it, asking for 1Gi.
fn executor(app: &str, name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {
                "spark-role": "executor",
                "spark-app-selector": format!("spark-{app}"),
                "spark-app-name": app,
                "spark-exec-id": "1",
                "spark-version": "3.5.9"
            }
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "spark-kubernetes-executor", "image": "apache/spark:3.5.3", "args": ["executor"],
                "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "1Gi"}}
            }]
        }
    }))
    .expect("executor pod")
}

fn memory_limit(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.resources.as_ref())
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}

async fn create(client: &Client, pod: &Pod, dry_run: bool) -> Pod {
    let pp = PostParams {
        dry_run,
        ..PostParams::default()
    };
    Api::<Pod>::namespaced(client.clone(), NS)
        .create(&pp, pod)
        .await
        .unwrap_or_else(|e| panic!("create {:?}: {e}", pod.metadata.name))
}

/// Waits until a new executor of `app` (dry run) is admitted with `limit`.
async fn wait_admitted(client: &Client, app: &str, limit: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = memory_limit(&create(client, &executor(app, &format!("{app}-dry")), true).await);
        if got == limit {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: new executors still get {got}, not {limit}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub async fn an_oomkilled_executor_makes_the_next_one_bigger_across_restarts_and_replicas() {
    let env = cluster::env("memory_on_oom");
    let c = env.cluster;
    let client = c.client().await;
    c.namespace(&client, NS, &[]).await;
    c.delete_policy_configmaps();
    let label = format!("{STATE_LABEL}=true");
    let _ = c.kubectl(
        &["delete", "configmap", "-n", UNWATCHED_NS, "-l", &label],
        None,
    );
    apply_policy(c);
    let mut first = Webhook::start(c, &env.dir, Policies::ConfigMaps(UNWATCHED_NS));
    webhook::register(&client, &first, NS, false).await;

    // A tenant cannot fake an OOM: the status in a create request is dropped by the API
    // server (only the status subresource, the kubelet's, sets it).
    let mut forged = serde_json::to_value(executor("forged", "forged-exec-1")).expect("JSON");
    forged["status"] = json!({"phase": "Failed", "containerStatuses": [{
        "name": "spark-kubernetes-executor", "image": "apache/spark:3.5.3", "imageID": "",
        "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]});
    let forged: Pod = serde_json::from_value(forged).expect("Pod");
    let stored = create(&client, &forged, false).await;
    assert_ne!(
        stored.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed"),
        "the API server kept a status sent with the create"
    );

    let killed = create(&client, &executor("etl", "etl-exec-1"), false).await;
    assert_eq!(
        memory_limit(&killed),
        "1Gi",
        "no OOM yet: what Spark asked for"
    );
    // What the kubelet reports for a container killed by its memory limit.
    let status = json!({"status": {
        "phase": "Failed",
        "containerStatuses": [{
            "name": "spark-kubernetes-executor", "image": "apache/spark:3.5.3", "imageID": "",
            "ready": false, "restartCount": 0, "started": false,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                     "startedAt": "2026-06-01T10:00:00Z", "finishedAt": k8s_openapi::jiff::Timestamp::now().to_string()}}
        }]
    }});
    Api::<Pod>::namespaced(client.clone(), NS)
        .patch_status(
            "etl-exec-1",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .expect("status update");

    // 1Gi + max(25%, 512Mi) = 1536Mi.
    wait_admitted(&client, "etl", "1536Mi", "after the OOM").await;
    let next = create(&client, &executor("etl", "etl-exec-2"), false).await;
    assert_eq!(memory_limit(&next), "1536Mi");
    let note = next
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RAISED_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    assert!(
        note.contains("1Gi -> 1536Mi") && note.contains("etl-exec-1"),
        "{note}"
    );
    // Once stored (uid given, pending), the raised pod gets one MemoryRaised Event, which
    // the real API server validates; dry runs (never stored) get none.
    let uid = next.metadata.uid.clone().unwrap_or_default();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(30);
    let about_next = loop {
        let list = events.list(&Default::default()).await.expect("list Events");
        let raised: Vec<_> = list
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some(spark_admission::memory::events::REASON))
            .cloned()
            .collect();
        if raised
            .iter()
            .any(|e| e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid.as_str()))
        {
            break raised;
        }
        assert!(
            Instant::now() < deadline,
            "no MemoryRaised Event on etl-exec-2 ({uid}): {raised:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        about_next.len(),
        1,
        "one Event, only on the stored pod: {about_next:?}"
    );
    let event_note = about_next[0].note.clone().unwrap_or_default();
    assert!(
        event_note.contains("1Gi to 1536Mi") && event_note.contains("etl-exec-1"),
        "{event_note}"
    );
    assert_eq!(
        memory_limit(&create(&client, &executor("other", "other-exec-1"), true).await),
        "1Gi",
        "another application is unchanged"
    );
    // The forged pod came before the real OOM, which is already applied: it taught nothing.
    assert_eq!(
        memory_limit(&create(&client, &executor("forged", "forged-exec-2"), true).await),
        "1Gi",
        "a status sent with the create does not count"
    );
    assert!(
        metric_sum(
            &first.metrics(),
            "spark_admission_memory_raises_total",
            "role=\"executor\""
        ) >= 1.0
    );

    first.restart();
    wait_admitted(&client, "etl", "1536Mi", "after a restart").await;

    // A second process that never saw the pod: it is deleted, only the state remains.
    first.stop();
    Api::<Pod>::namespaced(client.clone(), NS)
        .delete("etl-exec-1", &Default::default())
        .await
        .expect("delete the OOMKilled pod");
    let second_dir = env.dir.join("second");
    std::fs::create_dir_all(&second_dir).expect("second webhook folder");
    let second = Webhook::start(c, &second_dir, Policies::ConfigMaps(UNWATCHED_NS));
    webhook::register(&client, &second, NS, false).await;
    wait_admitted(&client, "etl", "1536Mi", "a second replica").await;
    eprintln!("memory_on_oom: etl-exec-1 OOMKilled at 1Gi; the next executors get 1536Mi, after a restart and from a second process");
}
