//! Policies from ConfigMaps, against a stand-in API server on 127.0.0.1 (list + watch of
//! ConfigMaps, Event creation) with a real kube client: add, change, break, fix and
//! delete a ConfigMap, a dropped watch, a watch refused then expired (relist), duplicate
//! names, and the whole server in ConfigMap mode (unready until the first list).

use crate::common;
use crate::fake_apiserver;

use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use tokio::sync::oneshot;

use common::{eventually, fixture_json, patched_object, response_of, to_bytes, Proto};
use fake_apiserver::{configmap, FakeApiServer};
use spark_admission::admission::{PolicySourceConfig, Server};
use spark_admission::metrics::Metrics;
use spark_admission::source::events::Reporter;
use spark_admission::source::{ConfigMapWatcher, PolicyStore};

const NS: &str = "spark-admission";
/// Generous: the watcher's backoff starts at 0.8 s and doubles; nothing here is timed.
const WAIT: Duration = Duration::from_secs(30);

fn policy(name: &str, label_value: &str) -> String {
    format!(
        "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata:\n  name: {name}\nspec:\n  namespaces: [spark-jobs]\n  all:\n    labels:\n      platform.example.com/managed: \"{label_value}\"\n"
    )
}

fn broken(name: &str) -> String {
    format!(
        "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata:\n  name: {name}\nspec:\n  namespaces: 42\n"
    )
}

/// A watcher over the fake API server, stopped when the returned sender is dropped.
struct Running {
    store: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    _stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn start_watcher(api: &FakeApiServer) -> Running {
    let store = Arc::new(PolicyStore::new());
    let metrics = Arc::new(Metrics::new());
    let watcher = ConfigMapWatcher::new(
        api.client(),
        NS,
        Arc::clone(&store),
        Arc::clone(&metrics),
        Reporter::new(Some("test-replica".to_owned())),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(watcher.run(async move {
        let _ = stopped.await;
    }));
    Running {
        store,
        metrics,
        _stop: stop,
        task,
    }
}

/// The serving set as `name=label value`, sorted by name.
fn serving(store: &PolicyStore) -> Vec<String> {
    let set = store.snapshot();
    let mut out: Vec<String> = set
        .policies()
        .iter()
        .map(|p| {
            let value = p
                .all
                .as_ref()
                .and_then(|a| a.labels.get("platform.example.com/managed"))
                .cloned()
                .unwrap_or_default();
            format!("{}={value}", p.name)
        })
        .collect();
    out.sort();
    out
}

async fn wait_for_set(store: &PolicyStore, expected: &[&str]) {
    eventually(&format!("policy set {expected:?}"), WAIT, || async {
        store.is_loaded() && serving(store) == expected
    })
    .await;
}

fn metric(metrics: &Metrics, prefix: &str) -> Option<String> {
    let text = metrics.encode().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(prefix).map(|v| v.trim().to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_change_break_fix_and_delete_a_configmap() {
    let api = FakeApiServer::start().await;
    let a1 = policy("alpha", "a1");
    api.apply(configmap(NS, "team-a", true, &[("alpha.yaml", &a1)]));
    // Not labelled, or in another namespace: never read.
    let rogue = policy("rogue", "x");
    api.apply(configmap(
        NS,
        "unlabelled",
        false,
        &[("rogue.yaml", &rogue)],
    ));
    api.apply(configmap("tenant", "mine", true, &[("rogue.yaml", &rogue)]));
    let w = start_watcher(&api);
    wait_for_set(&w.store, &["alpha=a1"]).await;
    // At start, an Event about the replica names what it serves, with versions.
    let tag_a1 = w.store.snapshot().policies()[0].tag.clone();
    eventually("a PolicyLoaded Event about the replica", WAIT, || async {
        !api.events_for("PolicyLoaded", "test-replica").is_empty()
    })
    .await;
    let ev = &api.events_for("PolicyLoaded", "test-replica")[0];
    assert_eq!(ev["regarding"]["kind"], "Pod");
    assert_eq!(ev["regarding"]["namespace"], NS);
    assert_eq!(ev["type"], "Normal");
    assert_eq!(ev["note"], format!("serving 1 policies: {tag_a1}"));

    // Add a ConfigMap.
    let b1 = policy("beta", "b1");
    api.apply(configmap(NS, "team-b", true, &[("beta.yml", &b1)]));
    wait_for_set(&w.store, &["alpha=a1", "beta=b1"]).await;

    // Change one.
    let a2 = policy("alpha", "a2");
    api.apply(configmap(NS, "team-a", true, &[("alpha.yaml", &a2)]));
    wait_for_set(&w.store, &["alpha=a2", "beta=b1"]).await;
    let tag_a2 = w.store.snapshot().policies()[0].tag.clone();

    // Break it: the last good version keeps serving; an Event says why.
    api.apply(configmap(
        NS,
        "team-a",
        true,
        &[("alpha.yaml", &broken("alpha"))],
    ));
    eventually("a PolicyInvalid Event on team-a", WAIT, || async {
        !api.events_for("PolicyInvalid", "team-a").is_empty()
    })
    .await;
    let ev = &api.events_for("PolicyInvalid", "team-a")[0];
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["metadata"]["namespace"], NS);
    assert_eq!(ev["regarding"]["kind"], "ConfigMap");
    assert_eq!(ev["regarding"]["namespace"], NS);
    assert_eq!(ev["reportingController"], "spark-admission.io/webhook");
    assert_eq!(ev["reportingInstance"], "test-replica");
    let note = ev["note"].as_str().unwrap();
    assert!(
        note.contains("alpha.yaml#1 (alpha): /spec/namespaces: "),
        "{note}"
    );
    assert_eq!(serving(&w.store), ["alpha=a2", "beta=b1"]);
    assert_eq!(w.store.snapshot().policies()[0].tag, tag_a2);
    assert_eq!(
        metric(&w.metrics, "spark_admission_policy_errors ").as_deref(),
        Some("1")
    );

    // Fix it.
    let a3 = policy("alpha", "a3");
    api.apply(configmap(NS, "team-a", true, &[("alpha.yaml", &a3)]));
    wait_for_set(&w.store, &["alpha=a3", "beta=b1"]).await;
    assert_eq!(
        metric(&w.metrics, "spark_admission_policy_errors ").as_deref(),
        Some("0")
    );
    eventually("a PolicyLoaded Event on team-a", WAIT, || async {
        !api.events_for("PolicyLoaded", "team-a").is_empty()
    })
    .await;

    // Every install says so again: after the fix, both policies with their versions.
    let tags: Vec<String> = w
        .store
        .snapshot()
        .policies()
        .iter()
        .map(|p| p.tag.clone())
        .collect();
    eventually("a PolicyLoaded Event for every install", WAIT, || async {
        api.events_for("PolicyLoaded", "test-replica")
            .iter()
            .any(|e| e["note"] == format!("serving 2 policies: {}", tags.join(", ")))
    })
    .await;

    // Delete one; removing the label counts as deleting.
    api.delete(NS, "team-b");
    wait_for_set(&w.store, &["alpha=a3"]).await;
    api.apply(configmap(NS, "team-a", false, &[("alpha.yaml", &a3)]));
    wait_for_set(&w.store, &[]).await;

    // Only the policy namespace was ever listed, once: no GET per change.
    let (lists, _) = api.requests();
    assert_eq!(lists, 1);
    assert!(api
        .events()
        .iter()
        .all(|e| e["regarding"]["name"] != "mine" && e["regarding"]["name"] != "unlabelled"));
    w.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_watch_resumes_where_it_left_off() {
    let api = FakeApiServer::start().await;
    let a1 = policy("alpha", "a1");
    api.apply(configmap(NS, "team-a", true, &[("alpha.yaml", &a1)]));
    let w = start_watcher(&api);
    wait_for_set(&w.store, &["alpha=a1"]).await;
    eventually("the watch is open", WAIT, || async {
        api.requests().1 >= 1
    })
    .await;

    api.drop_watches();
    let a2 = policy("alpha", "a2");
    api.apply(configmap(NS, "team-a", true, &[("alpha.yaml", &a2)]));
    wait_for_set(&w.store, &["alpha=a2"]).await;
    let (lists, watches) = api.requests();
    assert_eq!(lists, 1, "resumed from its resourceVersion, no relist");
    assert!(watches >= 2, "watched again after the drop");
    w.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_refused_then_expired_relists_and_drops_what_was_deleted_meanwhile() {
    let api = FakeApiServer::start().await;
    let a1 = policy("alpha", "a1");
    let b1 = policy("beta", "b1");
    api.apply(configmap(NS, "team-a", true, &[("alpha.yaml", &a1)]));
    api.apply(configmap(NS, "team-b", true, &[("beta.yaml", &b1)]));
    let w = start_watcher(&api);
    wait_for_set(&w.store, &["alpha=a1", "beta=b1"]).await;
    eventually("the watch is open", WAIT, || async {
        api.requests().1 >= 1
    })
    .await;

    // The API server goes away; meanwhile team-b is deleted and team-a changes, and the
    // history is compacted, so the old resourceVersion is gone (410) when it comes back.
    api.refuse_watches(true);
    api.drop_watches();
    eventually("a refused watch attempt", WAIT, || async {
        metric(&w.metrics, "spark_admission_policy_watch_errors_total ").is_some_and(|v| v != "0")
    })
    .await;
    // The last good set keeps serving while the watch is down.
    assert_eq!(serving(&w.store), ["alpha=a1", "beta=b1"]);
    api.delete(NS, "team-b");
    let a2 = policy("alpha", "a2");
    api.apply(configmap(NS, "team-a", true, &[("alpha.yaml", &a2)]));
    api.compact();
    api.refuse_watches(false);

    wait_for_set(&w.store, &["alpha=a2"]).await;
    let (lists, _) = api.requests();
    assert_eq!(lists, 2, "the 410 made it list again");
    assert_eq!(
        metric(
            &w.metrics,
            "spark_admission_policy_reloads_total{result=\"failed\"} "
        )
        .as_deref(),
        Some("1")
    );
    w.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_name_in_two_configmaps_uses_the_first_origin_and_says_so() {
    let api = FakeApiServer::start().await;
    let from_a = policy("shared", "from-a");
    let from_z = policy("shared", "from-z");
    api.apply(configmap(NS, "zz-team", true, &[("shared.yaml", &from_z)]));
    api.apply(configmap(NS, "aa-team", true, &[("shared.yaml", &from_a)]));
    let w = start_watcher(&api);
    wait_for_set(&w.store, &["shared=from-a"]).await;
    eventually(
        "PolicyDuplicate Events on both ConfigMaps",
        WAIT,
        || async {
            !api.events_for("PolicyDuplicate", "zz-team").is_empty()
                && !api.events_for("PolicyDuplicate", "aa-team").is_empty()
        },
    )
    .await;
    let ignored = &api.events_for("PolicyDuplicate", "zz-team")[0];
    let note = ignored["note"].as_str().unwrap();
    assert!(note.contains("ignored here"), "{note}");
    assert!(note.contains("configmap spark-admission/aa-team"), "{note}");
    let set = w.store.snapshot();
    assert_eq!(set.warnings.len(), 1);
    w.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_configmap_at_startup_keeps_the_server_unready_until_fixed() {
    let api = FakeApiServer::start().await;
    api.apply(configmap(
        NS,
        "team-a",
        true,
        &[("alpha.yaml", &broken("alpha"))],
    ));
    let w = start_watcher(&api);
    eventually("a PolicyInvalid Event", WAIT, || async {
        !api.events_for("PolicyInvalid", "team-a").is_empty()
    })
    .await;
    assert!(!w.store.is_loaded());
    let a1 = policy("alpha", "a1");
    api.apply(configmap(NS, "team-a", true, &[("alpha.yaml", &a1)]));
    wait_for_set(&w.store, &["alpha=a1"]).await;
    w.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_in_configmap_mode_is_ready_after_the_first_list_and_applies_them() {
    let api = FakeApiServer::start().await;
    let a1 = policy("alpha", "from-configmap");
    api.apply(configmap(NS, "team-a", true, &[("alpha.yaml", &a1)]));
    api.hold_lists(true);

    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.policy_source = PolicySourceConfig::ConfigMaps {
        namespace: NS.to_owned(),
    };
    // No policy folder exists: the ConfigMap source does not need one.
    let server = Server::start_with_client(config, Some(api.client()))
        .await
        .unwrap();
    let (status, body) = common::admin_get(server.admin_addr(), "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    api.hold_lists(false);
    eventually("/readyz turns ready", WAIT, || async {
        common::admin_get(server.admin_addr(), "/readyz").await.0 == StatusCode::OK
    })
    .await;

    let ca = std::fs::read(dir.path().join("certs/ca.crt")).unwrap();
    let mut conn = common::Conn::connect(server.webhook_addr(), &ca, Proto::H2, None, None)
        .await
        .unwrap();
    let req = fixture_json("mutate-driver-scala-sparkpi.json");
    let (status, body) = conn.post("/mutate", to_bytes(&req)).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let pod = patched_object(&req, &response_of(&body));
    assert_eq!(
        pod["metadata"]["labels"]["platform.example.com/managed"],
        "from-configmap"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_mode_without_a_namespace_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.policy_source = PolicySourceConfig::ConfigMaps {
        namespace: String::new(),
    };
    let err = Server::start(config).await.unwrap_err();
    assert!(err.to_string().contains("--policy-namespace"), "{err}");
}
