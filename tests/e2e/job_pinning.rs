//! Job pinning against the real API server: a driver admitted under policy v1 carries the
//! pin in its SPARK_SUBMIT_OPTS; after the policy ConfigMap moves to v2, an executor created
//! as Spark would (the annotation taken from the stored driver, an owner reference to it)
//! still gets v1 — also after a restart, and from a second webhook process that only ever
//! saw v2 (its v1 comes from the history ConfigMap) — while an executor without the pin, a
//! new driver, and the same pin on an executor owned by another driver or by none get v2
//! (the webhook reads the stored drivers: a pin is honoured only when its own driver
//! carries it). A driver created with a pin token of its own gets the webhook's instead.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use serde_json::json;

use spark_admission::engine::{submit_opts_tokens, SUBMIT_OPTS_VAR};
use spark_admission::pinning::{
    DRIVER_POLICIES_ANNOTATION, MISSING_POLICIES_ANNOTATION, PIN_NONE, PIN_SPARK_CONF_KEY,
};
use spark_admission::source::history::HISTORY_LABEL;

use crate::assets;
use crate::cluster::{self, Cluster};
use crate::expect::UNWATCHED_NS;
use crate::spark_submit::client_mode_executors;
use crate::webhook::{self, metric_sum, Policies, Webhook};

const NS: &str = "team-pinning";
const LABEL: &str = "e2e.example.com/policy-version";
const POLICY: &str = "e2e-pinned";

/// v2 adds a guardrail that v1 did not have.
fn configmap(version: &str) -> String {
    let rules = if version == "v2" {
        "  validate:\n    mode: enforce\n    forbidPrivileged: true\n"
    } else {
        ""
    };
    let policy = format!(
        "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata:\n  name: {POLICY}\nspec:\n  namespaces: [{NS}, \"{NS}-*\"]\n  all:\n    labels:\n      {LABEL}: \"{version}\"\n{rules}"
    );
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "e2e-pinning", "namespace": UNWATCHED_NS, "labels": {"spark-admission.io/policy": "true"}},
        "data": {"policy.yaml": policy}
    })
    .to_string()
}

fn apply_version(c: &Cluster, version: &str) {
    let out = c.kubectl(&["apply", "-f", "-"], Some(&configmap(version)));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn driver(name: &str) -> Pod {
    let mut pod = serde_json::to_value(webhook::probe_pod()).expect("JSON");
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["labels"]["spark-app-selector"] = json!("spark-pinning");
    serde_json::from_value(pod).expect("Pod")
}

/// An executor as Spark creates it; `pin` is the annotation Spark copies from the
/// driver's `spark.kubernetes.executor.annotation.*` setting, `owner` the stored driver
/// its owner reference names (as Spark sets it in cluster mode).
fn executor(name: &str, pin: Option<&str>, owner: Option<&Pod>) -> Pod {
    let mut annotations = serde_json::Map::new();
    if let Some(p) = pin {
        annotations.insert(DRIVER_POLICIES_ANNOTATION.to_owned(), json!(p));
    }
    let owners: Vec<serde_json::Value> = owner
        .into_iter()
        .map(|d| {
            json!({
                "apiVersion": "v1", "kind": "Pod", "controller": true,
                "name": d.metadata.name.clone().expect("driver name"),
                "uid": d.metadata.uid.clone().expect("driver uid"),
            })
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name,
            "ownerReferences": owners,
            "labels": {
                "spark-role": "executor",
                "spark-app-selector": "spark-pinning",
                "spark-app-name": "probe",
                "spark-exec-id": "1",
                "spark-version": "3.5.9"
            },
            "annotations": annotations
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "spark-kubernetes-executor", "image": "apache/spark:3.5.3", "args": ["executor"]}]
        }
    }))
    .expect("executor pod")
}

fn label(pod: &Pod) -> String {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL))
        .cloned()
        .unwrap_or_default()
}

fn annotation(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata.annotations.as_ref()?.get(key).cloned()
}

/// The pin a stored driver carries: Spark reads `-Dkey=value` from SPARK_SUBMIT_OPTS.
fn pin_of_driver(pod: &Pod) -> String {
    let env = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    let opts = env
        .iter()
        .find(|e| e.name == SUBMIT_OPTS_VAR)
        .and_then(|e| e.value.clone())
        .unwrap_or_else(|| panic!("the stored driver has no {SUBMIT_OPTS_VAR}: {env:?}"));
    // The value as the pod spec holds it: the kubelet turns `$$` into `$` first.
    let tokens = submit_opts_tokens(&opts).unwrap_or_else(|e| panic!("{opts}: {e}"));
    let prefix = format!("-D{PIN_SPARK_CONF_KEY}=");
    tokens
        .iter()
        .find_map(|t| t.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("no pin in {SUBMIT_OPTS_VAR}: {opts}"))
}

async fn create(client: &Client, pod: &Pod, step: &str) -> Pod {
    Api::<Pod>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), pod)
        .await
        .unwrap_or_else(|e| panic!("{step}: create: {e}"))
}

/// Waits until a new driver (dry run) gets `version`.
async fn wait_serving(client: &Client, version: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = pods
            .create(&dry, &driver("dry-driver"))
            .await
            .map(|p| label(&p));
        if got.as_deref().ok() == Some(version) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "new drivers still get {got:?}, not {version}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the history ConfigMaps (spread over several) hold every tag of `tags`.
async fn wait_stored(client: &Client, tags: &[&str]) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), UNWATCHED_NS);
    let deadline = Instant::now() + Duration::from_secs(30);
    let selector = ListParams::default().labels(&format!("{HISTORY_LABEL}=true"));
    loop {
        if let Ok(list) = cms.list(&selector).await {
            let values: Vec<String> = list
                .items
                .into_iter()
                .flat_map(|cm| cm.data.unwrap_or_default().into_values())
                .collect();
            if tags
                .iter()
                .all(|t| values.iter().any(|v| v.contains(&format!("\"{t}\""))))
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the history ConfigMaps do not hold {tags:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn executors_get_their_drivers_policy_versions_across_changes_restarts_and_replicas() {
    let env = cluster::env("job_pinning");
    let c = env.cluster;
    let client = c.client().await;
    c.namespace(&client, NS, &[]).await;
    c.delete_policy_configmaps();
    let history = format!("{HISTORY_LABEL}=true");
    let _ = c.kubectl(
        &[
            "delete",
            "configmap",
            "-n",
            UNWATCHED_NS,
            "-l",
            &history,
            "--ignore-not-found",
        ],
        None,
    );
    let mut first = Webhook::start(c, &env.dir, Policies::ConfigMaps(UNWATCHED_NS));
    webhook::register(&client, &first, NS, false).await;

    // A job started while no executor policy applies pins "none": the policy added while
    // it runs stays out of its executors; on an executor of no stored driver, "none"
    // removes nothing.
    let d0 = create(&client, &driver("nopin-driver"), "driver under no policy").await;
    assert_eq!(pin_of_driver(&d0), PIN_NONE);
    apply_version(c, "v1");
    wait_serving(&client, "v1").await;
    let e0 = create(
        &client,
        &executor("nopin-exec-1", Some(PIN_NONE), Some(&d0)),
        "executor of the job without policy",
    )
    .await;
    assert_eq!(label(&e0), "", "the policy added mid-job reached the job");
    let stray = create(
        &client,
        &executor("nopin-exec-2", Some(PIN_NONE), None),
        "\"none\" without a driver",
    )
    .await;
    assert_eq!(
        label(&stray),
        "v1",
        "an unverified \"none\" removed a policy"
    );

    let d1 = create(&client, &driver("pin-1-driver"), "driver under v1").await;
    assert_eq!(label(&d1), "v1");
    let pin = pin_of_driver(&d1);
    assert!(
        pin.starts_with(&format!("{POLICY}@")) && !pin.contains(','),
        "the driver pins its one executor policy: {pin}"
    );

    apply_version(c, "v2");
    wait_serving(&client, "v2").await;
    let pinned = create(
        &client,
        &executor("pin-1-exec-1", Some(&pin), Some(&d1)),
        "pinned",
    )
    .await;
    assert_eq!(
        label(&pinned),
        "v1",
        "the pinned executor gets its driver's version"
    );
    let unpinned = create(
        &client,
        &executor("pin-0-exec-1", None, Some(&d1)),
        "unpinned",
    )
    .await;
    assert_eq!(
        label(&unpinned),
        "v2",
        "an executor without a pin gets the current one"
    );

    // Both versions reach the history ConfigMap before the webhook restarts.
    let d2 = create(&client, &driver("pin-2-driver"), "driver under v2").await;
    let pin2 = pin_of_driver(&d2);
    assert_ne!(pin2, pin, "a new driver pins the new version");
    assert_eq!(label(&d2), "v2");
    wait_stored(&client, &[&pin, &pin2]).await;

    // The v1 pin on an executor that is not d1's vouches for nothing.
    let forged = create(
        &client,
        &executor("pin-2-exec-9", Some(&pin), Some(&d2)),
        "v1 pin on d2's executor",
    )
    .await;
    assert_eq!(label(&forged), "v2", "a pin its own driver does not carry");
    let orphan = create(
        &client,
        &executor("pin-x-exec-9", Some(&pin), None),
        "v1 pin without an owner",
    )
    .await;
    assert_eq!(label(&orphan), "v2", "a pin without a driver");
    assert_eq!(
        metric_sum(
            &first.metrics(),
            "spark_admission_pinned_executors_total",
            "result=\"forged\""
        ),
        1.0
    );

    // A driver that brings the old pin itself gets the webhook's current one instead.
    let mut own_pin = serde_json::to_value(driver("pin-3-driver")).expect("JSON");
    own_pin["spec"]["containers"][0]["env"] = json!([{
        "name": SUBMIT_OPTS_VAR,
        "value": format!("-Dspark.a=1 -D{PIN_SPARK_CONF_KEY}={pin}")
    }]);
    let d3 = create(
        &client,
        &serde_json::from_value(own_pin).expect("Pod"),
        "driver with its own pin token",
    )
    .await;
    assert_eq!(
        pin_of_driver(&d3),
        pin2,
        "the stored driver carries the webhook's pin"
    );
    let d3_exec = create(
        &client,
        &executor("pin-3-exec-1", Some(&pin), Some(&d3)),
        "old pin under a driver that brought it",
    )
    .await;
    assert_eq!(label(&d3_exec), "v2");

    first.restart();
    let after_restart = create(
        &client,
        &executor("pin-1-exec-2", Some(&pin), Some(&d1)),
        "after restart",
    )
    .await;
    assert_eq!(label(&after_restart), "v1", "after a restart");

    // A second process that never installed v1: only the ConfigMap knows it.
    first.stop();
    let second_dir = env.dir.join("second");
    std::fs::create_dir_all(&second_dir).expect("second webhook folder");
    let mut second = Webhook::start(c, &second_dir, Policies::ConfigMaps(UNWATCHED_NS));
    webhook::register(&client, &second, NS, false).await;
    let from_history = create(
        &client,
        &executor("pin-1-exec-3", Some(&pin), Some(&d1)),
        "second replica",
    )
    .await;
    assert_eq!(label(&from_history), "v1", "a replica started after v2");
    let from_new_driver = create(
        &client,
        &executor("pin-2-exec-1", Some(&pin2), Some(&d2)),
        "new driver",
    )
    .await;
    assert_eq!(label(&from_new_driver), "v2");
    assert_eq!(
        metric_sum(
            &second.metrics(),
            "spark_admission_pinned_executors_total",
            "result=\"pinned\""
        ),
        2.0
    );

    // Validation never follows the pin: v2 forbids privileged containers, v1 did not,
    // and an executor pinned to v1 is still refused.
    let mut privileged =
        serde_json::to_value(executor("pin-1-exec-4", Some(&pin), Some(&d1))).expect("JSON");
    privileged["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
    let privileged: Pod = serde_json::from_value(privileged).expect("Pod");
    let refused = Api::<Pod>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &privileged)
        .await;
    match refused {
        Err(kube::Error::Api(s)) => assert!(s.message.contains(POLICY), "{}", s.message),
        other => panic!("a privileged executor pinned to v1 was not refused: {other:?}"),
    }

    // A verified pin whose version nobody keeps any more: the history ConfigMap deleted,
    // a third process that only knows v2. The current version, named on the pod.
    second.stop();
    let _ = c.kubectl(
        &["delete", "configmap", "-n", UNWATCHED_NS, "-l", &history],
        None,
    );
    let third_dir = env.dir.join("third");
    std::fs::create_dir_all(&third_dir).expect("third webhook folder");
    let third = Webhook::start(c, &third_dir, Policies::ConfigMaps(UNWATCHED_NS));
    webhook::register(&client, &third, NS, false).await;
    let missing = create(
        &client,
        &executor("pin-1-exec-5", Some(&pin), Some(&d1)),
        "missing",
    )
    .await;
    assert_eq!(label(&missing), "v2");
    assert_eq!(
        annotation(&missing, MISSING_POLICIES_ANNOTATION).as_deref(),
        Some(pin.as_str())
    );
    assert_eq!(
        metric_sum(
            &third.metrics(),
            "spark_admission_pinned_executors_total",
            "result=\"missing\""
        ),
        1.0
    );
}

/// The `spark.*` settings a stored driver's SPARK_SUBMIT_OPTS gives Spark, as `--conf`.
fn driver_conf(pod: &Pod) -> Vec<String> {
    let opts = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.env.as_ref())
        .and_then(|env| env.iter().find(|e| e.name == SUBMIT_OPTS_VAR))
        .and_then(|e| e.value.clone())
        .unwrap_or_default();
    // No `$` here: what the kubelet would expand is what the pod spec holds.
    assert!(!opts.contains('$'), "{opts}");
    let tokens = submit_opts_tokens(&opts).unwrap_or_else(|e| panic!("{opts}: {e}"));
    tokens
        .iter()
        .filter_map(|t| t.strip_prefix("-D"))
        .filter(|kv| kv.starts_with("spark."))
        .flat_map(|kv| ["--conf".to_owned(), kv.to_owned()])
        .collect()
}

pub async fn spark_itself_gives_the_pin_to_the_executors_of_a_driver_replayed_in_client_mode() {
    let env = cluster::env("job_pinning_spark");
    let sparks = assets::sparks();
    let c = env.cluster;
    let client = c.client().await;
    c.delete_policy_configmaps();
    apply_version(c, "v1");
    let hook = Webhook::start(c, &env.dir, Policies::ConfigMaps(UNWATCHED_NS));
    c.namespace(&client, NS, &[]).await;
    webhook::register(&client, &hook, NS, false).await;
    wait_serving(&client, "v1").await;
    // One v1 driver per Spark version, in the namespace its executors will be created
    // in: Spark (given the driver's pod name, as in cluster mode) makes it their owner.
    let mut drivers = Vec::new();
    for spark in &sparks {
        let ns = format!("{NS}-{}", spark.version.replace('.', "-"));
        c.namespace(&client, &ns, &[]).await;
        let stored = Api::<Pod>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &driver("pin-spark-driver"))
            .await
            .unwrap_or_else(|e| panic!("driver under v1 in {ns}: {e}"));
        drivers.push((ns, stored));
    }
    apply_version(c, "v2");
    wait_serving(&client, "v2").await;

    for (spark, (ns, driver)) in sparks.iter().zip(&drivers) {
        let pin = pin_of_driver(driver);
        let mut conf = driver_conf(driver);
        conf.extend([
            "--conf".to_owned(),
            format!(
                "spark.kubernetes.driver.pod.name={}",
                driver.metadata.name.clone().unwrap_or_default()
            ),
        ]);
        // The stored driver's configuration, as its container's launcher would read it.
        let executors =
            client_mode_executors(c, &client, spark, &env.dir, ns, "e2e-pinned", &conf).await;
        for e in &executors {
            let owners = e.metadata.owner_references.clone().unwrap_or_default();
            assert!(
                owners
                    .iter()
                    .any(|o| o.kind == "Pod" && Some(&o.uid) == driver.metadata.uid.as_ref()),
                "{}: Spark made the stored driver the executor's owner: {owners:?}",
                spark.version
            );
            assert_eq!(
                annotation(e, DRIVER_POLICIES_ANNOTATION).as_deref(),
                Some(pin.as_str()),
                "{}: Spark copied the pin onto its executor",
                spark.version
            );
            assert_eq!(
                label(e),
                "v1",
                "{}: the executor of a v1 driver",
                spark.version
            );
        }
        eprintln!(
            "job_pinning_spark {}: {} executors created by Spark, owned by their stored driver, carry {pin} and got v1 while v2 is current",
            spark.version,
            executors.len()
        );
    }
}
