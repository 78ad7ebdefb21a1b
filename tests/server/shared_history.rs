//! Job pinning shared by every replica (issue 26, last part), against the stand-in API
//! server:
//!
//! - a driver whose namespace has no executor policy pins `none`: a policy added mid-job
//!   does not reach that job's later executors, and a `none` pin its own driver does not
//!   carry removes nothing;
//! - a version another replica stored reaches this one through the watch of the history
//!   ConfigMaps, within seconds (the periodic write is every 5 minutes);
//! - the history spread over several ConfigMaps survives a restart, and each ConfigMap
//!   stays within its bound under a flood of versions from two writers.

use crate::common;
use crate::fake_apiserver;
use crate::pin_verification::{
    admit_driver, executor_review, tag_of, version_for, versioned, warnings, Replica, LABEL, NS,
    POLICY_NS, WAIT,
};

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use common::{eventually, fixture_json};
use fake_apiserver::{configmap, FakeApiServer};
use spark_admission::engine::SUBMIT_OPTS_VAR;
use spark_admission::matching::PolicySet;
use spark_admission::pinning::{PIN_NONE, PIN_SPARK_CONF_KEY};
use spark_admission::policy::{parse_documents, PolicySource};
use spark_admission::source::history::{
    self, decode, load_initial, persist_once, shard_name, ConfigMapBackend, HISTORY_LABEL,
};
use spark_admission::source::PolicyHistory;

/// A policy touching drivers only: the namespace has a policy, but none for executors.
const DRIVER_ONLY: &str = "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {name: driver-only}\nspec:\n  namespaces: [\"*\"]\n  driver: {labels: {driver-only: \"yes\"}}\n";

/// Stores a driver pod as another replica admitted it, carrying `pin`; returns its uid.
fn store_driver(api: &FakeApiServer, name: &str, pin: &str) -> String {
    let mut pod = fixture_json("mutate-driver-rich.json")["request"]["object"].clone();
    pod["metadata"]["namespace"] = json!(NS);
    pod["metadata"]["name"] = json!(name);
    let containers = pod["spec"]["containers"].as_array_mut().unwrap();
    let spark = containers
        .iter_mut()
        .find(|c| c["name"] == "spark-kubernetes-driver")
        .unwrap();
    let env = spark["env"].as_array_mut().unwrap();
    env.retain(|e| e["name"] != SUBMIT_OPTS_VAR);
    env.push(json!({"name": SUBMIT_OPTS_VAR, "value": format!("-D{PIN_SPARK_CONF_KEY}={pin}")}));
    api.apply_pod(pod)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_driver_saw_no_executor_policy_keeps_none_after_one_is_added() {
    let api = FakeApiServer::start().await;
    api.apply(configmap(
        POLICY_NS,
        "driver-only",
        true,
        &[("p.yaml", DRIVER_ONLY)],
    ));
    let replica = Replica::start(&api).await;

    let (uid, pin, _) = admit_driver(&api, &replica, "job-1-driver", None).await;
    assert_eq!(pin.as_deref(), Some(PIN_NONE), "the driver pins 'none'");

    // Mid-job, an executor policy appears.
    api.apply(configmap(
        POLICY_NS,
        "team",
        true,
        &[("team.yaml", &versioned("1"))],
    ));
    replica.serves("1").await;

    // The job's next executor carries Spark's copy of the pin: still no executor policy.
    let own = executor_review(Some(PIN_NONE), Some(("job-1-driver", &uid)));
    let (version, w) = version_for(&replica, &own).await;
    assert_eq!(
        version, "",
        "the policy added mid-job reached the job: {w:?}"
    );
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(replica.pinned_total("pinned").await, 1.0);

    // A new job gets the policy, and so do its executors.
    let (uid2, pin2, _) = admit_driver(&api, &replica, "job-2-driver", None).await;
    let pin2 = pin2.unwrap();
    assert_eq!(pin2, tag_of(&versioned("1")));
    let (version, _) = version_for(
        &replica,
        &executor_review(Some(&pin2), Some(("job-2-driver", &uid2))),
    )
    .await;
    assert_eq!(version, "1");

    // `none` is only a claim: on an executor of a driver that carries another pin, of no
    // stored driver, or of none at all, it removes nothing.
    for (what, owner) in [
        (
            "another job's driver",
            Some(("job-2-driver", uid2.as_str())),
        ),
        (
            "a driver that is not stored",
            Some(("ghost-driver", "0000")),
        ),
        ("no owner", Some(("", ""))),
    ] {
        let response = replica
            .mutate(&executor_review(Some(PIN_NONE), owner))
            .await;
        let pod = common::patched_object(&executor_review(Some(PIN_NONE), owner), &response);
        assert_eq!(pod["metadata"]["labels"][LABEL], "1", "{what}");
        let w = warnings(&response);
        assert!(w.iter().any(|w| w.contains("\"none\"")), "{what}: {w:?}");
    }
    assert_eq!(replica.pinned_total("forged").await, 1.0);
    replica.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_another_replica_stored_is_served_here_from_the_watch() {
    let api = FakeApiServer::start().await;
    let v1 = versioned("1");
    let v2 = versioned("2");
    api.apply(configmap(POLICY_NS, "team", true, &[("team.yaml", &v2)]));
    let b = Replica::start(&api).await;
    b.serves("2").await;
    assert!(b.server.store().history().lookup(&tag_of(&v1)).is_none());

    // Replica "a" admitted a driver under v1, which b never served, and stores its
    // history the way every replica does (the same code path as its persister).
    let a = PolicyHistory::default()
        .with_configmaps(history::DEFAULT_CONFIGMAPS)
        .unwrap();
    a.record_install(&PolicySet::new([policy(&v1)]), history::now_secs());
    a.record_install(&PolicySet::new([policy(&v2)]), history::now_secs());
    let uid = store_driver(&api, "job-a-driver", &tag_of(&v1));
    let (lists_before, _) = api.requests();
    persist_once(&a, &ConfigMapBackend::new(api.client(), POLICY_NS))
        .await
        .unwrap();

    // b learns it from the watch: well within seconds, where its periodic write (which
    // re-reads) comes every 5 minutes.
    eventually(
        "b learns v1 from the watch",
        Duration::from_secs(5),
        || async { b.server.store().history().lookup(&tag_of(&v1)).is_some() },
    )
    .await;
    let (lists_after, _) = api.requests();
    assert_eq!(lists_after, lists_before, "learned without listing again");
    let review = executor_review(Some(&tag_of(&v1)), Some(("job-a-driver", &uid)));
    let (version, w) = version_for(&b, &review).await;
    assert_eq!(version, "1", "{w:?}");
    assert!(w.is_empty(), "{w:?}");
    b.server.shutdown().await.unwrap();
}

fn policy(text: &str) -> Arc<spark_admission::policy::CompiledPolicy> {
    let mut docs =
        parse_documents(&PolicySource("t.yaml".into()), text).unwrap_or_else(|e| panic!("{e:?}"));
    Arc::new(docs.remove(0))
}

/// The history ConfigMaps as stored: (name, data bytes, labelled, tags).
fn stored_parts(api: &FakeApiServer, upto: usize) -> Vec<(String, usize, bool, Vec<String>)> {
    (0..upto)
        .filter_map(|i| {
            let name = shard_name(i);
            let cm = api.configmap(POLICY_NS, &name)?;
            let data: std::collections::BTreeMap<String, String> =
                serde_json::from_value(cm["data"].clone()).unwrap_or_default();
            let bytes = data.iter().map(|(k, v)| k.len() + v.len()).sum();
            let labelled = cm["metadata"]["labels"][HISTORY_LABEL] == "true";
            let tags = decode(&data).into_iter().map(|r| r.tag).collect();
            Some((name, bytes, labelled, tags))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_over_several_configmaps_survives_a_restart() {
    const BYTES: usize = 2500;
    const PARTS: usize = 3;
    let api = FakeApiServer::start().await;
    api.apply(configmap(
        POLICY_NS,
        "team",
        true,
        &[("team.yaml", &versioned("0"))],
    ));
    let settings = |c: &mut spark_admission::admission::ServerConfig| {
        c.history_max_bytes = BYTES;
        c.history_configmaps = PARTS;
    };
    let first = Replica::start_with(&api, settings).await;
    for i in 1..=20 {
        api.apply(configmap(
            POLICY_NS,
            "team",
            true,
            &[("team.yaml", &versioned(&i.to_string()))],
        ));
        first.serves(&i.to_string()).await;
    }
    let kept: BTreeSet<String> = first.server.store().history().tags().into_iter().collect();
    eventually("the history is stored", WAIT, || async {
        let stored: BTreeSet<String> = stored_parts(&api, PARTS + 2)
            .into_iter()
            .flat_map(|p| p.3)
            .collect();
        stored == kept
    })
    .await;
    let parts = stored_parts(&api, PARTS + 2);
    eprintln!(
        "{} versions kept in {:?}",
        kept.len(),
        parts.iter().map(|p| (&p.0, p.1)).collect::<Vec<_>>()
    );
    assert!(
        parts.len() >= 2,
        "spread over several ConfigMaps: {parts:?}"
    );
    assert!(parts.len() <= PARTS, "{parts:?}");
    for (name, bytes, labelled, _) in &parts {
        assert!(*bytes <= BYTES, "{name}: {bytes} bytes");
        assert!(*labelled, "{name} carries the label the replicas watch");
    }
    // Bounded: not all 21 versions fit, more than one ConfigMap's worth do; the current
    // one is always kept. (Which retired ones go first is tested in the flood below:
    // here all retired within the same second.)
    assert!(kept.len() < 21 && kept.len() > 3, "{kept:?}");
    assert!(kept.contains(&tag_of(&versioned("20"))));
    first.server.shutdown().await.unwrap();

    // A restart (and so any new replica) finds every stored version.
    let again = Replica::start_with(&api, settings).await;
    let loaded: BTreeSet<String> = again.server.store().history().tags().into_iter().collect();
    assert_eq!(loaded, kept);
    again.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bounds_hold_under_a_flood_of_versions_from_two_writers() {
    const BYTES: usize = 4000;
    const PARTS: usize = 4;
    let api = FakeApiServer::start().await;
    let backend = ConfigMapBackend::new(api.client(), POLICY_NS);
    let make = || {
        PolicyHistory::new(history::DEFAULT_MAX_AGE, BYTES, None)
            .with_configmaps(PARTS)
            .unwrap()
    };
    let (a, b) = (make(), make());
    // In the past, one second apart: a version one writer learns from the other while it
    // is current there counts as retired now, the newest.
    let start = history::now_secs() - 1000;
    let versions: Vec<_> = (0..300)
        .map(|i| policy(&versioned(&i.to_string())))
        .collect();
    for (i, v) in versions.iter().enumerate() {
        // Two replicas installing in turn, writing concurrently every 25 versions.
        let writer = if i % 2 == 0 { &a } else { &b };
        writer.record_install(&PolicySet::new([Arc::clone(v)]), start + i as u64);
        if i % 25 == 24 {
            let (ra, rb) = tokio::join!(persist_once(&a, &backend), persist_once(&b, &backend));
            ra.unwrap();
            rb.unwrap();
        }
    }
    persist_once(&a, &backend).await.unwrap();
    persist_once(&b, &backend).await.unwrap();
    let parts = stored_parts(&api, PARTS + 2);
    assert!(parts.len() <= PARTS, "{parts:?}");
    let stored: BTreeSet<String> = parts.iter().flat_map(|p| p.3.clone()).collect();
    for (name, bytes, _, _) in &parts {
        assert!(*bytes <= BYTES, "{name}: {bytes} bytes over {BYTES}");
    }
    eprintln!(
        "300 versions: {} stored in {:?}",
        stored.len(),
        parts.iter().map(|p| (&p.0, p.1)).collect::<Vec<_>>()
    );
    assert!(stored.len() < 100, "bounded: {}", stored.len());
    // Oldest out first: the newest versions stay, the first ones are gone.
    assert!(stored.contains(&versions[299].tag) && stored.contains(&versions[298].tag));
    assert!(!stored.contains(&versions[0].tag));
    // A fresh replica loads exactly what is stored.
    let fresh = make();
    load_initial(&fresh, &backend, Duration::from_secs(5)).await;
    let loaded: BTreeSet<String> = fresh.tags().into_iter().collect();
    assert_eq!(loaded, stored);
}
