//! OOM-aware memory through the whole server in ConfigMap mode, against the stand-in API
//! server: the watch of ended Spark pods (selectors checked), the raise on the next
//! executor of the same application only, the state in ConfigMaps surviving a restart and
//! applied by a process that never saw the OOM, expiry, and the bounds under a flood.

use crate::common;

use crate::fake_apiserver;

use std::time::Duration;

use hyper::StatusCode;
use serde_json::{json, Value};

use common::{eventually, fixture_json, patched_object, response_of, to_bytes, Proto};
use fake_apiserver::{configmap, FakeApiServer};
use spark_admission::admission::{PolicySourceConfig, Server};
use spark_admission::memory::{MemoryConfig, DATA_KEY, STATE_LABEL};
use spark_admission::memory_on_oom::RAISED_ANNOTATION;
use spark_admission::source::drivers::DRIVER_SELECTOR;

const NS: &str = "spark-admission";
/// Generous: watches back off and retry; nothing here is timed.
const WAIT: Duration = Duration::from_secs(60);

const POLICY: &str = r#"apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata: {name: memory-on-oom}
spec:
  namespaces: [team-a, "flood-*"]
  executor:
    memoryOnOOM: {step: 25%, minStep: 512Mi, max: 16Gi, remember: 14d}
"#;

fn now() -> i64 {
    spark_admission::memory::now()
}

fn rfc3339(secs: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .unwrap()
        .to_string()
}

/// An executor of `app` in `namespace`, as the API server shows it after the kubelet
/// recorded its Spark container's end with `reason`.
fn ended_executor(namespace: &str, app: &str, n: usize, reason: &str, finished: i64) -> Value {
    let mut pod = fixture_json("mutate-executor-rich-1.json")["request"]["object"].clone();
    pod["metadata"]["namespace"] = json!(namespace);
    pod["metadata"]["name"] = json!(format!("{app}-exec-{n}"));
    pod["metadata"]["labels"]["spark-app-name"] = json!(app);
    pod["status"] = json!({
        "phase": "Failed",
        "containerStatuses": [{
            "name": "spark-kubernetes-executor", "image": "apache/spark:3.5.9", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": reason,
                                     "finishedAt": rfc3339(finished)}}
        }]
    });
    pod
}

/// The review of a new executor of `app` in `namespace`.
fn executor_review(namespace: &str, app: &str, n: usize) -> Value {
    let mut review = fixture_json("mutate-executor-rich-1.json");
    review["request"]["namespace"] = json!(namespace);
    review["request"]["name"] = json!(format!("{app}-exec-{n}"));
    let pod = &mut review["request"]["object"];
    pod["metadata"]["namespace"] = json!(namespace);
    pod["metadata"]["name"] = json!(format!("{app}-exec-{n}"));
    pod["metadata"]["labels"]["spark-app-name"] = json!(app);
    review
}

async fn start(api: &FakeApiServer, memory: MemoryConfig) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.policy_source = PolicySourceConfig::ConfigMaps {
        namespace: NS.to_owned(),
    };
    config.memory = memory;
    let server = Server::start_with_client(config, Some(api.client()))
        .await
        .unwrap();
    eventually("ready", WAIT, || async {
        common::admin_get(server.admin_addr(), "/readyz").await.0 == StatusCode::OK
    })
    .await;
    (server, dir)
}

/// The Spark container's memory limit of the executor the server admits for `app`.
async fn admitted_memory(
    server: &Server,
    dir: &tempfile::TempDir,
    ns: &str,
    app: &str,
) -> (String, Value) {
    let ca = std::fs::read(dir.path().join("certs/ca.crt")).unwrap();
    let mut conn = common::Conn::connect(server.webhook_addr(), &ca, Proto::H2, None, None)
        .await
        .unwrap();
    let review = executor_review(ns, app, 9);
    let (status, body) = conn.post("/mutate", to_bytes(&review)).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let pod = patched_object(&review, &response_of(&body));
    let limit = pod["spec"]["containers"][0]["resources"]["limits"]["memory"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["requests"]["memory"],
        limit.as_str(),
        "request and limit raised together"
    );
    (limit, pod)
}

/// Every remembered entry, over all state ConfigMaps: key -> value, and the largest data.
fn state(api: &FakeApiServer, shards: usize) -> (serde_json::Map<String, Value>, usize) {
    let mut all = serde_json::Map::new();
    let mut largest = 0;
    for i in 0..shards {
        let Some(cm) = api.configmap(NS, &format!("spark-admission-memory-{i}")) else {
            continue;
        };
        assert_eq!(cm["metadata"]["labels"][STATE_LABEL], "true");
        let text = cm["data"][DATA_KEY].as_str().unwrap();
        largest = largest.max(text.len());
        let entries: serde_json::Map<String, Value> = serde_json::from_str(text).unwrap();
        all.extend(entries);
    }
    (all, largest)
}

fn metric(text: &str, prefix: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix).map(|v| v.trim().to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oomkilled_executor_of_app_a_makes_as_next_executor_bigger_not_bs() {
    let _turn = common::heavy_test_turn().await;
    let api = FakeApiServer::start().await;
    api.apply(configmap(NS, "oom", true, &[("oom.yaml", POLICY)]));
    let (server, dir) = start(&api, MemoryConfig::default()).await;
    assert_eq!(
        admitted_memory(&server, &dir, "team-a", "app-a").await.0,
        "3456Mi"
    );

    // Ended pods that teach nothing: not OOMKilled; a namespace no policy enables it for.
    api.apply_pod(ended_executor("team-a", "app-a", 1, "Error", now()));
    api.apply_pod(ended_executor("team-b", "app-a", 1, "OOMKilled", now()));
    // A running pod, and a pod that is not Spark's, are never sent to us at all.
    let mut running = ended_executor("team-a", "app-a", 2, "OOMKilled", now());
    running["status"]["phase"] = json!("Running");
    api.apply_pod(running);
    let mut other = ended_executor("team-a", "app-a", 3, "OOMKilled", now());
    other["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("spark-role");
    api.apply_pod(other);

    // The OOM that counts.
    let at = now() - 30;
    api.apply_pod(ended_executor("team-a", "app-a", 4, "OOMKilled", at));
    eventually("app-a's next executor is bigger", WAIT, || async {
        admitted_memory(&server, &dir, "team-a", "app-a").await.0 == "4320Mi"
    })
    .await;
    let (_, pod) = admitted_memory(&server, &dir, "team-a", "app-a").await;
    let note = pod["metadata"]["annotations"][RAISED_ANNOTATION]
        .as_str()
        .unwrap();
    assert!(
        note.contains("3456Mi -> 4320Mi")
            && note.contains("app-a-exec-4")
            && note.contains(&rfc3339(at)),
        "{note}"
    );
    // Another application, and the same name in another namespace, are unchanged.
    assert_eq!(
        admitted_memory(&server, &dir, "team-a", "app-b").await.0,
        "3456Mi"
    );
    assert_eq!(
        admitted_memory(&server, &dir, "team-b", "app-a").await.0,
        "3456Mi"
    );

    // Only what the OOMKilled pod taught is remembered, per namespace, role and app name.
    let (entries, _) = state(&api, 8);
    let keys: Vec<&String> = entries.keys().collect();
    assert_eq!(keys, ["team-a/executor/name:app-a"]);
    // The watch asked only for ended Spark pods, the Event writer only for pending ones
    // (beside them, the job-pinning driver cache asks for drivers only).
    let selectors = api.pod_selectors();
    let ended = ("spark-role".to_owned(), "status.phase=Failed".to_owned());
    let pending = ("spark-role".to_owned(), "status.phase=Pending".to_owned());
    let drivers = (DRIVER_SELECTOR.to_owned(), String::new());
    assert!(selectors.contains(&ended), "{selectors:?}");
    for s in &selectors {
        assert!(
            *s == ended || *s == pending || *s == drivers,
            "a pod list for {s:?}"
        );
    }

    // A second OOM in the same job (the raised executor) raises once more.
    let mut raised = ended_executor("team-a", "app-a", 5, "OOMKilled", now());
    raised["spec"]["containers"][0]["resources"] =
        pod["spec"]["containers"][0]["resources"].clone();
    api.apply_pod(raised);
    eventually("raised again", WAIT, || async {
        admitted_memory(&server, &dir, "team-a", "app-a").await.0 == "5400Mi"
    })
    .await;

    let (_, text) = common::admin_get(server.admin_addr(), "/metrics").await;
    let raises: u64 = metric(
        &text,
        "spark_admission_memory_raises_total{role=\"executor\"}",
    )
    .unwrap()
    .parse()
    .unwrap();
    assert!(raises >= 2, "{raises}");
    assert_eq!(
        metric(&text, "spark_admission_memory_state_entries").as_deref(),
        Some("1")
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_survives_a_restart_and_a_process_that_never_saw_the_oom_applies_it() {
    let _turn = common::heavy_test_turn().await;
    let api = FakeApiServer::start().await;
    api.apply(configmap(NS, "oom", true, &[("oom.yaml", POLICY)]));
    // Two replicas: both see the OOM, the state is written once and agreed on.
    let (first, first_dir) = start(&api, MemoryConfig::default()).await;
    let (second, second_dir) = start(&api, MemoryConfig::default()).await;
    api.apply_pod(ended_executor(
        "team-a",
        "app-a",
        1,
        "OOMKilled",
        now() - 10,
    ));
    for (server, dir) in [(&first, &first_dir), (&second, &second_dir)] {
        eventually("each replica raises", WAIT, || async {
            admitted_memory(server, dir, "team-a", "app-a").await.0 == "4320Mi"
        })
        .await;
    }
    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();

    // The OOMKilled pod is gone (deleted by Spark at the end of the job): a process
    // started now lists no ended pod at all, and still raises from the ConfigMaps alone.
    api.delete_pod("team-a", "app-a-exec-1");
    let (third, third_dir) = start(&api, MemoryConfig::default()).await;
    eventually(
        "a fresh process applies the remembered raise",
        WAIT,
        || async {
            admitted_memory(&third, &third_dir, "team-a", "app-a")
                .await
                .0
                == "4320Mi"
        },
    )
    .await;
    assert_eq!(
        admitted_memory(&third, &third_dir, "team-a", "app-b")
            .await
            .0,
        "3456Mi"
    );
    third.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raises_expire_after_remember() {
    let _turn = common::heavy_test_turn().await;
    let api = FakeApiServer::start().await;
    api.apply(configmap(NS, "oom", true, &[("oom.yaml", POLICY)]));
    // Remembered by an earlier process: one still valid, one expired an hour ago.
    let entry = |memory: u64, expires: i64| json!({"m": memory, "f": 3456u64 << 20, "p": "old-exec-1", "t": expires - 14 * 86400, "x": expires});
    let entries = json!({
        "team-a/executor/name:fresh": entry(5000 << 20, now() + 3600),
        "team-a/executor/name:stale": entry(6000 << 20, now() - 3600),
    });
    let mut shard = configmap(
        NS,
        "spark-admission-memory-0",
        false,
        &[(DATA_KEY, &entries.to_string())],
    );
    shard["metadata"]["labels"][STATE_LABEL] = json!("true");
    api.apply(shard);
    let (server, dir) = start(
        &api,
        MemoryConfig {
            shards: 1,
            ..MemoryConfig::default()
        },
    )
    .await;
    eventually("the fresh raise applies", WAIT, || async {
        admitted_memory(&server, &dir, "team-a", "fresh").await.0 == "5000Mi"
    })
    .await;
    assert_eq!(
        admitted_memory(&server, &dir, "team-a", "stale").await.0,
        "3456Mi"
    );

    // An OOM that ended longer ago than `remember` teaches nothing...
    api.apply_pod(ended_executor(
        "team-a",
        "ancient",
        1,
        "OOMKilled",
        now() - 15 * 86400,
    ));
    // ...and the next write drops the expired entry.
    api.apply_pod(ended_executor("team-a", "recent", 1, "OOMKilled", now()));
    eventually("the recent raise is written", WAIT, || async {
        state(&api, 1).0.contains_key("team-a/executor/name:recent")
    })
    .await;
    let (entries, _) = state(&api, 1);
    let mut keys: Vec<&String> = entries.keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["team-a/executor/name:fresh", "team-a/executor/name:recent"]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bounds_hold_under_a_flood_of_oomkilled_pods() {
    let _turn = common::heavy_test_turn().await;
    let api = FakeApiServer::start().await;
    api.apply(configmap(NS, "oom", true, &[("oom.yaml", POLICY)]));
    let bounds = MemoryConfig {
        shards: 2,
        max_entries: 50,
        max_per_namespace: 20,
        max_shard_bytes: 4096,
    };
    let (server, dir) = start(&api, bounds.clone()).await;
    // One real OOM in team-a, the oldest of all.
    let base = now() - 10_000;
    api.apply_pod(ended_executor("team-a", "app-a", 1, "OOMKilled", base));
    eventually("team-a's raise", WAIT, || async {
        admitted_memory(&server, &dir, "team-a", "app-a").await.0 == "4320Mi"
    })
    .await;

    // A tenant floods: 600 OOMKilled pods, each a different app name, in two namespaces.
    const FLOOD: usize = 600;
    for i in 0..FLOOD {
        let ns = if i % 2 == 0 { "flood-1" } else { "flood-2" };
        api.apply_pod(ended_executor(
            ns,
            &format!("junk-{i}"),
            1,
            "OOMKilled",
            base + 1 + i as i64,
        ));
    }
    let last = format!("flood-2/executor/name:junk-{}", FLOOD - 1);
    eventually("the last of the flood is recorded", WAIT, || async {
        state(&api, 2).0.contains_key(&last)
    })
    .await;
    let (entries, largest) = state(&api, 2);
    assert!(
        largest <= bounds.max_shard_bytes,
        "a shard holds {largest} bytes"
    );
    assert!(
        entries.len() <= bounds.max_entries,
        "{} entries",
        entries.len()
    );
    for ns in ["flood-1", "flood-2"] {
        let n = entries
            .keys()
            .filter(|k| k.starts_with(&format!("{ns}/")))
            .count();
        assert!(n <= bounds.max_per_namespace, "{ns}: {n} entries");
        assert!(n > 0);
    }
    // The flood evicted only its own namespaces' entries: team-a's raise still applies.
    assert!(entries.contains_key("team-a/executor/name:app-a"));
    assert_eq!(
        admitted_memory(&server, &dir, "team-a", "app-a").await.0,
        "4320Mi"
    );
    eprintln!(
        "flood of {FLOOD} OOMKilled pods: {} ConfigMap writes, {} entries kept, largest shard {largest} bytes",
        api.configmap_writes(),
        entries.len()
    );
    server.shutdown().await.unwrap();
}

/// Starts a server without waiting for it to be ready.
async fn start_unready(api: &FakeApiServer) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.policy_source = PolicySourceConfig::ConfigMaps {
        namespace: NS.to_owned(),
    };
    let server = Server::start_with_client(config, Some(api.client()))
        .await
        .unwrap();
    (server, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_replica_is_not_ready_before_it_has_listed_the_memory_state_and_the_history() {
    let _turn = common::heavy_test_turn().await;
    let api = FakeApiServer::start().await;
    api.apply(configmap(NS, "oom", true, &[("oom.yaml", POLICY)]));
    let (first, dir) = start(&api, MemoryConfig::default()).await;
    api.apply_pod(ended_executor(
        "team-a",
        "app-a",
        4,
        "OOMKilled",
        now() - 30,
    ));
    eventually("the raise is remembered", WAIT, || async {
        admitted_memory(&first, &dir, "team-a", "app-a").await.0 == "4320Mi"
    })
    .await;
    first.shutdown().await.unwrap();

    // A fresh replica whose lists of the state and of the history do not come back yet:
    // policies loaded, but it must not take traffic, or it would admit app-a's next
    // executor without the raise.
    for (label, reason) in [
        (STATE_LABEL, "memory state not listed"),
        (
            spark_admission::source::history::HISTORY_LABEL,
            "policy version history not listed",
        ),
    ] {
        api.hold_lists_selecting(Some(label));
        let (fresh, dir) = start_unready(&api).await;
        eventually(&format!("not ready: {reason}"), WAIT, || async {
            let (status, body) = common::admin_get(fresh.admin_addr(), "/readyz").await;
            status == StatusCode::SERVICE_UNAVAILABLE && body.contains(reason)
        })
        .await;
        // Still not ready a while later: nothing but the list makes it ready.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, body) = common::admin_get(fresh.admin_addr(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(fresh.store().is_loaded(), "the policies are loaded");
        api.hold_lists_selecting(None);
        eventually("ready once listed", WAIT, || async {
            common::admin_get(fresh.admin_addr(), "/readyz").await.0 == StatusCode::OK
        })
        .await;
        // Ready means it serves the remembered raise from the first review on.
        assert_eq!(
            admitted_memory(&fresh, &dir, "team-a", "app-a").await.0,
            "4320Mi"
        );
        fresh.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_pod_gets_one_event_once_stored_and_a_flood_of_them_is_rate_limited() {
    use spark_admission::memory::events::{BURST, RATE_PER_SECOND, REASON};
    let _turn = common::heavy_test_turn().await;
    let api = FakeApiServer::start().await;
    api.apply(configmap(NS, "oom", true, &[("oom.yaml", POLICY)]));
    let (server, dir) = start(&api, MemoryConfig::default()).await;
    api.apply_pod(ended_executor(
        "team-a",
        "app-a",
        4,
        "OOMKilled",
        now() - 30,
    ));
    eventually("the raise is remembered", WAIT, || async {
        admitted_memory(&server, &dir, "team-a", "app-a").await.0 == "4320Mi"
    })
    .await;

    // The admitted pod as the API server stores it: a uid, pending.
    let (_, mut raised) = admitted_memory(&server, &dir, "team-a", "app-a").await;
    raised["metadata"]["name"] = json!("app-a-exec-9");
    raised["status"] = json!({"phase": "Pending"});
    let uid = api.apply_pod(raised.clone());
    eventually("an Event on the raised pod", WAIT, || async {
        !api.events_for(REASON, "app-a-exec-9").is_empty()
    })
    .await;
    let events = api.events_for(REASON, "app-a-exec-9");
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = &events[0];
    assert_eq!(ev["metadata"]["namespace"], "team-a");
    assert_eq!(ev["regarding"]["uid"], uid.as_str());
    assert_eq!(ev["regarding"]["kind"], "Pod");
    assert_eq!(ev["type"], "Normal");
    let note = ev["note"].as_str().unwrap();
    assert!(
        note.contains("3456Mi to 4320Mi") && note.contains("app-a-exec-4"),
        "{note}"
    );

    // Updates while pending, and a second replica listing the same pod: still one.
    raised["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False"}]);
    api.apply_pod(raised.clone());
    let (second, _dir2) = start(&api, MemoryConfig::default()).await;
    // A submitter's own annotation on a pod of an application without a raise: nothing.
    let mut forged = raised.clone();
    forged["metadata"]["name"] = json!("app-b-exec-1");
    forged["metadata"]["uid"] = json!("forged-uid");
    forged["metadata"]["labels"]["spark-app-name"] = json!("app-b");
    api.apply_pod(forged);
    // A marker pod after both: once its Event is there, the watches have passed the others.
    let mut marker = raised.clone();
    marker["metadata"]["name"] = json!("app-a-exec-10");
    marker["metadata"]["uid"] = json!("marker-uid");
    api.apply_pod(marker);
    eventually("the marker's Event", WAIT, || async {
        !api.events_for(REASON, "app-a-exec-10").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.events_for(REASON, "app-a-exec-9").len(), 1);
    assert_eq!(api.events_for(REASON, "app-a-exec-10").len(), 1);
    assert!(api.events_for(REASON, "app-b-exec-1").is_empty());
    second.shutdown().await.unwrap();

    // A flood of raised pods: one replica writes at most its burst and rate.
    let flood = 200;
    let started = std::time::Instant::now();
    for i in 0..flood {
        let mut p = raised.clone();
        p["metadata"]["name"] = json!(format!("app-a-flood-{i}"));
        p["metadata"]["uid"] = json!(format!("flood-{i}"));
        api.apply_pod(p);
    }
    let count = || {
        api.events()
            .iter()
            .filter(|e| e["reason"] == REASON)
            .filter(|e| {
                e["regarding"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("app-a-flood-")
            })
            .count()
    };
    eventually("some flood Events", WAIT, || async { count() > 0 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let allowed = BURST + RATE_PER_SECOND * (started.elapsed().as_secs_f64() + 1.0);
    let written = count();
    eprintln!("{flood} raised pods: {written} Events, at most {allowed:.0} allowed");
    assert!(
        (written as f64) <= allowed,
        "{written} Events over {allowed}"
    );
    assert!(written < flood);
    let (_, metrics) = common::admin_get(server.admin_addr(), "/metrics").await;
    let dropped = metrics
        .lines()
        .find(|l| l.contains(REASON) && l.contains("result=\"dropped\""))
        .unwrap_or_default()
        .to_owned();
    assert!(
        !dropped.ends_with(" 0"),
        "dropped Events counted: {dropped}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_already_at_max_is_counted_once_apart_from_raises() {
    let _turn = common::heavy_test_turn().await;
    let api = FakeApiServer::start().await;
    api.apply(configmap(NS, "oom", true, &[("oom.yaml", POLICY)]));
    // The captured executor asks for 3456Mi: at this max, no raise can follow.
    let at_max = "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {name: oom-capped}\nspec:\n  namespaces: [team-max]\n  executor:\n    memoryOnOOM: {step: 25%, max: 3456Mi}\n";
    api.apply(configmap(NS, "capped", true, &[("capped.yaml", at_max)]));
    let (server, dir) = start(&api, MemoryConfig::default()).await;
    let count = |result: &'static str| {
        let addr = server.admin_addr();
        async move {
            let (_, text) = common::admin_get(addr, "/metrics").await;
            metric(
                &text,
                &format!(
                    "spark_admission_memory_ooms_total{{role=\"executor\",result=\"{result}\"}}"
                ),
            )
            .unwrap_or_default()
        }
    };
    assert_eq!(count("at_max").await, "0");
    let t = now();
    api.apply_pod(ended_executor("team-max", "app-m", 1, "OOMKilled", t));
    api.apply_pod(ended_executor("team-a", "app-a", 1, "OOMKilled", t));
    eventually("counted at max", WAIT, || async {
        count("at_max").await == "1"
    })
    .await;
    eventually("counted raised", WAIT, || async {
        count("raised").await == "1"
    })
    .await;
    assert_eq!(
        admitted_memory(&server, &dir, "team-max", "app-m").await.0,
        "3456Mi",
        "never above max"
    );
    // The same pods again (a later update of their status, as a relist would deliver
    // them) count neither again; the marker after them shows the watch has passed them.
    let mut again = ended_executor("team-max", "app-m", 1, "OOMKilled", t);
    again["metadata"]["annotations"] = json!({"touched": "1"});
    api.apply_pod(again);
    api.apply_pod(ended_executor("team-a", "app-a", 1, "OOMKilled", t));
    api.apply_pod(ended_executor("team-max", "app-n", 1, "OOMKilled", now()));
    eventually("the marker counted", WAIT, || async {
        count("at_max").await == "2"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count("at_max").await, "2");
    assert_eq!(count("raised").await, "1");
    server.shutdown().await.unwrap();
}
