//! Job pinning over the real Spark pods and the example policies: an executor whose pin
//! was verified (tests/server/pin_verification.rs), planned after the policies changed,
//! gets exactly what it would have got before the change; every pass after the first is empty; the history survives its own
//! stored form.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use spark_admission::engine::{submit_opts_tokens, Engine, MutateRequest, SUBMIT_OPTS_VAR};
use spark_admission::matching::PolicySet;
use spark_admission::pinning::{
    self, DRIVER_POLICIES_ANNOTATION, MISSING_POLICIES_ANNOTATION, PIN_SPARK_CONF_KEY,
};
use spark_admission::policy::{parse_documents, CompiledPolicy, PolicySource};
use spark_admission::source::history::{decode, Record};
use spark_admission::source::{load_paths, PolicyHistory, PolicyStore};
use spark_admission::spark::ContainerNames;

const NAMESPACES: [&str; 3] = ["spark-jobs", "team-e2e", "team-ml"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> Pod {
    let path = root().join("tests/fixtures/spark").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn fixtures(prefix: &str) -> Vec<(String, Pod)> {
    let dir = root().join("tests/fixtures/spark");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir:?}: {e}"))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix) && n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no {prefix} fixtures");
    names
        .into_iter()
        .map(|n| (n.clone(), fixture(&n)))
        .collect()
}

fn examples() -> Vec<Arc<CompiledPolicy>> {
    let (policies, errors) = load_paths(&[root().join("policies")]);
    assert!(errors.is_empty(), "{errors:?}");
    policies
}

/// A policy of our own that changes between the two sets, touching executors.
fn versioned(version: &str) -> Arc<CompiledPolicy> {
    let text = format!(
        "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {{name: pinned-team}}\nspec:\n  namespaces: [\"*\"]\n  all:\n    labels: {{policy-version: \"{version}\"}}\n    env: [{{name: TEAM_VERSION, value: \"{version}\"}}]\n  executor:\n    nodeSelector: {{pool: \"pool-{version}\"}}\n"
    );
    let mut docs = parse_documents(&PolicySource("pinned-team.yaml".into()), &text)
        .unwrap_or_else(|e| panic!("{e:?}"));
    Arc::new(docs.remove(0))
}

/// Created after the drivers: must not reach their executors.
fn created_later() -> Arc<CompiledPolicy> {
    let text = "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {name: created-later}\nspec:\n  namespaces: [\"*\"]\n  executor: {labels: {created-later: \"yes\"}}\n";
    let mut docs = parse_documents(&PolicySource("later.yaml".into()), text)
        .unwrap_or_else(|e| panic!("{e:?}"));
    Arc::new(docs.remove(0))
}

fn engine() -> Engine {
    Engine::new(ContainerNames::default()).with_job_pinning(true)
}

fn apply(pod: &Pod, patch: &json_patch::Patch) -> Pod {
    let mut value = serde_json::to_value(pod).unwrap_or(Value::Null);
    json_patch::patch(&mut value, patch).unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
}

/// The pin as Spark reads it from the mutated driver's SPARK_SUBMIT_OPTS.
fn pin_in(driver: &Pod) -> Option<String> {
    let env = driver.spec.as_ref()?.containers.iter().find_map(|c| {
        (c.name == "spark-kubernetes-driver")
            .then(|| c.env.clone())
            .flatten()
    })?;
    let opts = env
        .iter()
        .find(|e| e.name == SUBMIT_OPTS_VAR)?
        .value
        .clone()?;
    let tokens = submit_opts_tokens(&opts).ok()?;
    let prefix = format!("-D{PIN_SPARK_CONF_KEY}=");
    tokens
        .iter()
        .find_map(|t| t.strip_prefix(&prefix).map(str::to_owned))
}

fn with_pin(pod: &Pod, pin: &str) -> Pod {
    let mut p = pod.clone();
    p.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(DRIVER_POLICIES_ANNOTATION.to_owned(), pin.to_owned());
    p
}

#[test]
fn a_pinned_executor_planned_after_a_change_gets_what_it_got_before_and_a_second_pass_is_empty() {
    let before: Vec<_> = examples().into_iter().chain([versioned("1")]).collect();
    let after: Vec<_> = examples()
        .into_iter()
        .chain([versioned("2"), created_later()])
        .collect();
    let store = PolicyStore::new();
    store.install(PolicySet::new(before.clone()));
    let v1 = store.snapshot();
    store.install(PolicySet::new(after));
    let v2 = store.snapshot();

    let mut checked = 0;
    for ns in NAMESPACES {
        let (_, driver) = &fixtures("driver-")[0];
        let first = engine()
            .mutate(MutateRequest::new(&v1, driver, ns))
            .unwrap_or_else(|e| panic!("{e}"));
        let admitted = apply(driver, &first.patch);
        let pin = pin_in(&admitted).unwrap_or_else(|| panic!("{ns}: the driver has no pin"));
        assert_eq!(pin, pinning::executor_tags(&v1, ns).join(","));
        assert!(pin.contains("pinned-team@"), "{ns}: {pin}");

        for (name, executor) in fixtures("executor-") {
            // What the executor got while v1 was current, and what it gets now, pinned.
            let pinned_pod = with_pin(&executor, &pin);
            let then = engine()
                .mutate(MutateRequest::new(&v1, &pinned_pod, ns))
                .unwrap_or_else(|e| panic!("{e}"));
            let tags: Vec<&str> = pin.split(',').collect();
            let resolved = store.pinned(&v2, &tags);
            assert!(
                resolved.missing.is_empty(),
                "{name}: {:?}",
                resolved.missing
            );
            let now = engine()
                .mutate(
                    MutateRequest::new(&resolved.set, &pinned_pod, ns)
                        .pinned(&resolved.set, &resolved.missing),
                )
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(then.patch, now.patch, "{name} in {ns}");
            assert_eq!(then.applied, now.applied, "{name} in {ns}");

            let once = apply(&pinned_pod, &now.patch);
            let again = engine()
                .mutate(
                    MutateRequest::new(&resolved.set, &once, ns)
                        .pinned(&resolved.set, &resolved.missing),
                )
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                again.patch.0.is_empty(),
                "{name} in {ns}: {:?}",
                again.patch
            );
            let labels = once.metadata.labels.clone().unwrap_or_default();
            assert_eq!(labels.get("policy-version").map(String::as_str), Some("1"));
            assert!(!labels.contains_key("created-later"), "{name} in {ns}");

            // Without the pin, the same executor gets the current versions.
            let unpinned = engine()
                .mutate(MutateRequest::new(&v2, &executor, ns))
                .unwrap_or_else(|e| panic!("{e}"));
            let current = apply(&executor, &unpinned.patch);
            let labels = current.metadata.labels.unwrap_or_default();
            assert_eq!(labels.get("policy-version").map(String::as_str), Some("2"));
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} executors checked");
}

#[test]
fn a_new_driver_pins_the_new_versions_and_its_second_pass_is_empty() {
    let set = PolicySet::new(examples().into_iter().chain([versioned("2")]));
    for (name, driver) in fixtures("driver-") {
        for ns in NAMESPACES {
            let first = engine()
                .mutate(MutateRequest::new(&set, &driver, ns))
                .unwrap_or_else(|e| panic!("{e}"));
            let once = apply(&driver, &first.patch);
            let pin = pin_in(&once).unwrap_or_else(|| panic!("{name} in {ns}: no pin"));
            assert!(pin.contains(&versioned("2").tag), "{name} in {ns}: {pin}");
            let again = engine()
                .mutate(MutateRequest::new(&set, &once, ns))
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                again.patch.0.is_empty(),
                "{name} in {ns}: {:?}",
                again.patch
            );
        }
    }
}

#[test]
fn an_expired_pin_falls_back_to_the_current_version_named_on_the_executor() {
    let store = PolicyStore::new();
    store.install(PolicySet::new([versioned("2")]));
    let current = store.snapshot();
    let (_, executor) = &fixtures("executor-")[0];
    let pod = with_pin(executor, "pinned-team@0000000000");
    let resolved = store.pinned(&current, &["pinned-team@0000000000"]);
    assert_eq!(resolved.missing, ["pinned-team@0000000000"]);
    let m = engine()
        .mutate(
            MutateRequest::new(&resolved.set, &pod, "spark-jobs")
                .pinned(&resolved.set, &resolved.missing),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("pinned-team@0000000000")),
        "{:?}",
        m.warnings
    );
    let once = apply(&pod, &m.patch);
    let ann = once.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        ann.get(MISSING_POLICIES_ANNOTATION).map(String::as_str),
        Some("pinned-team@0000000000")
    );
    assert_eq!(
        once.metadata
            .labels
            .unwrap_or_default()
            .get("policy-version")
            .map(String::as_str),
        Some("2")
    );
}

#[test]
fn every_example_policy_survives_the_stored_form_with_its_own_tag() {
    let written = PolicyHistory::default();
    let set = PolicySet::new(examples());
    written.record_install(&set, 1);
    let parts = written.stored_form().unwrap_or_else(|e| panic!("{e}"));
    let records: Vec<Record> = parts.iter().flat_map(decode).collect();
    assert_eq!(records.len(), set.len());
    let read = PolicyHistory::default();
    assert_eq!(read.merge_stored(records, 2), set.len());
    for p in set.policies() {
        assert!(read.lookup(&p.tag).is_some(), "{} did not load back", p.tag);
    }
}

fn folder_config(root: &std::path::Path) -> spark_admission::admission::ServerConfig {
    use std::net::SocketAddr;
    use std::time::Duration;
    spark_admission::admission::ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        policies_dir: root.join("policies"),
        certs_dir: root.join("certs"),
        policy_poll: Duration::from_millis(50),
        history_dir: Some(root.join("history")),
        ..Default::default()
    }
}

/// Polls `done` for up to 20 s (no timing is asserted, only that it happens).
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn versioned_text(version: &str) -> String {
    format!(
        "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {{name: pinned-team}}\nspec:\n  namespaces: [\"*\"]\n  all:\n    labels: {{policy-version: \"{version}\"}}\n    env: [{{name: TEAM_VERSION, value: \"{version}\"}}]\n  executor:\n    nodeSelector: {{pool: \"pool-{version}\"}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_history_folder_a_restarted_folder_webhook_still_knows_the_replaced_version() {
    use spark_admission::admission::Server;
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let policies = root.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap_or_else(|e| panic!("{e}"));
    let file = policies.join("team.yaml");
    std::fs::write(&file, versioned_text("1")).unwrap_or_else(|e| panic!("{e}"));
    let (v1, v2) = (versioned("1").tag.clone(), versioned("2").tag.clone());

    let first = Server::start(folder_config(root.path()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eventually("v1 installed", || {
        first.store().history().lookup(&v1).is_some()
    })
    .await;
    std::fs::write(&file, versioned_text("2")).unwrap_or_else(|e| panic!("{e}"));
    // Spread over a few files, as over ConfigMaps in a cluster.
    let stored = || -> String {
        std::fs::read_dir(root.path().join("history"))
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect()
    };
    eventually("both versions in the history files", || {
        let t = stored();
        t.contains(&v1) && t.contains(&v2)
    })
    .await;
    first.shutdown().await.unwrap_or_else(|e| panic!("{e}"));

    let second = Server::start(folder_config(root.path()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let store = second.store();
    assert!(
        store.history().lookup(&v1).is_some(),
        "v1 was not loaded from the folder"
    );
    let pinned = store.pinned(&store.snapshot(), &[v1.as_str()]);
    assert!(pinned.missing.is_empty());
    assert_eq!(pinned.set.policies()[0].tag, v1);
    second.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
}
