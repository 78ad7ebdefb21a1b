//! Scenarios 1 and 2: the shipped webhook configurations on a real API server, and every
//! pod spark-submit really sent, stored with exactly the policies' changes, once, behind a
//! second webhook that adds a sidecar.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

use crate::expect::{self, Expect};
use crate::scenario::Scenario;
use crate::sidecar;
use crate::webhook;

/// `containers: all`: must reach the sidecar that the second webhook adds after ours.
const SHARED_LOGS_POLICY: &str = r#"apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata:
  name: e2e-shared-logs
spec:
  namespaces: ["*"]
  all:
    volumes:
      - volume: {name: shared-logs, emptyDir: {}}
        mount: {mountPath: /var/log/spark-shared}
        containers: all
"#;

pub async fn priority_class(client: &kube::Client, name: &str, value: i32) {
    let pc: PriorityClass = serde_json::from_value(json!({
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": name}, "value": value
    }))
    .expect("PriorityClass");
    match Api::<PriorityClass>::all(client.clone())
        .create(&PostParams::default(), &pc)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("PriorityClass {name}: {e}"),
    }
}

fn names<'a>(items: &'a Value, key: &str) -> Vec<&'a str> {
    items
        .as_array()
        .map(|a| a.iter().filter_map(|i| i[key].as_str()).collect())
        .unwrap_or_default()
}

fn assert_unique(what: &str, list: Vec<&str>) {
    let set: BTreeSet<&str> = list.iter().copied().collect();
    assert_eq!(set.len(), list.len(), "{what} has duplicates: {list:?}");
}

pub async fn every_captured_spark_pod_is_stored_with_exactly_the_policies_changes_once() {
    let namespaces = ["spark-jobs", "team-e2e"];
    let extra = [("e2e-shared-logs.yaml", SHARED_LOGS_POLICY)];
    let Scenario {
        env,
        client,
        policies,
        hook,
    } = Scenario::start("fixtures", &namespaces, &extra).await;
    let expect = Expect::new(&policies);
    crate::record::version(&client).await;
    crate::record::policies("fixtures", &policies);
    let sidecar_addr = sidecar::serve(&hook.certs).await;
    sidecar::register(&client, sidecar_addr, &hook.ca_pem()).await;
    sidecar::wait_active(&client, namespaces[0], true).await;

    let mut stored_count = 0;
    let mut refused_count = 0;
    for (name, raw) in expect::spark_fixtures() {
        for ns in namespaces {
            let what = format!("{name} in {ns}");
            // What the API server has before any webhook, with the sidecar already there:
            // the engine is order-independent, so this is where the chain must end.
            let mut with_sidecar = raw.clone();
            with_sidecar["spec"]["containers"]
                .as_array_mut()
                .expect("containers")
                .push(json!({"name": sidecar::CONTAINER, "image": "fluent/fluent-bit:3.0"}));
            let before = expect::defaulted(&client, &with_sidecar, ns).await;
            let (planned, verdict) = expect.plan(&before, ns);

            let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
            let pod: Pod = serde_json::from_value(raw.clone()).expect("fixture is a Pod");
            let created = pods.create(&PostParams::default(), &pod).await;
            if verdict.denied() {
                let err =
                    created.expect_err(&format!("{what}: the policies deny it, the API stored it"));
                let msg = err.to_string();
                for f in verdict
                    .findings
                    .iter()
                    .filter(|f| f.mode == spark_admission::policy::model::RuleMode::Enforce)
                {
                    assert!(
                        msg.contains(&f.message),
                        "{what}: refusal lacks {:?}: {msg}",
                        f.message
                    );
                }
                refused_count += 1;
                continue;
            }
            let created = created.unwrap_or_else(|e| panic!("{what}: create failed: {e}"));
            let expected = expect::defaulted(&client, &planned, ns).await;
            let stored = serde_json::to_value(
                pods.get(created.metadata.name.as_deref().expect("name"))
                    .await
                    .expect("read back"),
            )
            .expect("JSON");
            let (got, want) = (
                expect::normalize(stored.clone()),
                expect::normalize(expected),
            );
            if got != want {
                let diff = json_patch::diff(&want, &got);
                let _ = std::fs::write(
                    env.dir.join(format!("{name}-{ns}.want.json")),
                    serde_json::to_string_pretty(&want).unwrap_or_default(),
                );
                let _ = std::fs::write(
                    env.dir.join(format!("{name}-{ns}.got.json")),
                    serde_json::to_string_pretty(&got).unwrap_or_default(),
                );
                panic!(
                    "{what}: the stored pod differs from the policies' plan (expected -> stored):\n{}",
                    serde_json::to_string_pretty(&diff).unwrap_or_default()
                );
            }
            crate::record::json("fixtures", "stored", &format!("{name}-{ns}"), &stored);
            // Once: running the policies on what was stored changes nothing, and no list
            // carries an item twice.
            let again = expect.mutate(&stored, ns);
            assert!(
                again.patch.0.is_empty(),
                "{what}: a second pass would change {:?}",
                again.patch
            );
            let spec = &stored["spec"];
            assert_unique(&format!("{what} volumes"), names(&spec["volumes"], "name"));
            for ct in spec["containers"].as_array().into_iter().flatten() {
                assert_unique(
                    &format!("{what} {} mounts", ct["name"]),
                    names(&ct["volumeMounts"], "mountPath"),
                );
                assert_unique(
                    &format!("{what} {} env", ct["name"]),
                    names(&ct["env"], "name"),
                );
            }
            let tolerations: Vec<String> = spec["tolerations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| t.to_string())
                .collect();
            let distinct: BTreeSet<&String> = tolerations.iter().collect();
            assert_eq!(
                distinct.len(),
                tolerations.len(),
                "{what}: duplicate tolerations {tolerations:?}"
            );
            for key in [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
            ] {
                assert!(
                    tolerations.iter().any(|t| t.contains(key)),
                    "{what}: the API server's default toleration {key} is gone: {tolerations:?}"
                );
            }
            // The sidecar arrived after our first pass; the reinvocation gave it the
            // `containers: all` mount.
            let sidecar = spec["containers"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["name"] == sidecar::CONTAINER))
                .unwrap_or_else(|| panic!("{what}: no sidecar"));
            assert!(
                names(&sidecar["volumeMounts"], "mountPath").contains(&"/var/log/spark-shared"),
                "{what}: the sidecar lacks the containers: all mount: {sidecar}"
            );
            let applied = stored["metadata"]["annotations"]
                [spark_admission::engine::APPLIED_ANNOTATION]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: no applied annotation"));
            assert!(applied.contains("e2e-shared-logs@"), "{what}: {applied}");
            if stored["metadata"]["labels"]["spark-role"] == "driver" {
                assert_eq!(spec["priorityClassName"], "spark-driver", "{what}");
                assert_eq!(
                    spec["priority"], 1000,
                    "{what}: priority comes from the class"
                );
            }
            stored_count += 1;
        }
    }
    eprintln!(
        "fixtures: {stored_count} pods stored as planned, {refused_count} refused as planned"
    );
    assert!(
        stored_count >= 12,
        "too few fixtures were stored: {stored_count}"
    );
    assert!(
        refused_count >= 1,
        "the hostPath fixture (driver-rich) must be refused by the guardrails"
    );
    sidecar::unregister(&client).await;
    sidecar::wait_active(&client, namespaces[0], false).await;
}

/// Dependencies by download (an init container) and a ConfigMap volume, for one namespace.
const DEFAULTED_POLICY: &str = r#"apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata:
  name: e2e-defaulted
spec:
  namespaces: [team-defaulting]
  all:
    dependencies:
      - name: tools
        source:
          download:
            urls: [https://repo.example.com/tools.jar]
        jars: true
    volumes:
      - volume: {name: extra-conf, configMap: {name: spark-extra-conf}}
        mount: {mountPath: /etc/spark-extra}
"#;

/// What the stand-in API server never did: the real one defaults the objects our patch
/// adds (an init container's pull policy and termination message fields, a ConfigMap
/// volume's defaultMode), and the ServiceAccount plugin, run again after the webhooks,
/// mounts the token into the init container we added. The webhook's next pass must take
/// those for its own items and change nothing.
pub async fn the_api_server_defaults_what_the_patch_adds_and_a_second_pass_changes_nothing() {
    let ns = "team-defaulting";
    let extra = [("e2e-defaulted.yaml", DEFAULTED_POLICY)];
    let Scenario {
        env: _turn,
        client,
        policies,
        hook: _hook,
    } = Scenario::start("apiserver_defaults", &[ns], &extra).await;
    let expect = Expect::new(&policies);
    crate::record::version(&client).await;
    crate::record::policies("defaults", &policies);

    let probe = serde_json::to_value(webhook::probe_pod()).expect("JSON");
    let before = expect::defaulted(&client, &probe, ns).await;
    let patch = expect.mutate(&before, ns).patch;
    let sent = serde_json::to_string(&patch).expect("JSON");
    crate::record::json("defaults", "before", "probe", &before);
    crate::record::json(
        "defaults",
        "patch",
        "probe",
        &serde_json::to_value(&patch).expect("JSON"),
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let created = pods
        .create(&PostParams::default(), &webhook::probe_pod())
        .await
        .expect("create");
    let stored = serde_json::to_value(
        pods.get(created.metadata.name.as_deref().expect("name"))
            .await
            .expect("read back"),
    )
    .expect("JSON");
    crate::record::json("defaults", "stored", "probe", &stored);

    let init = stored["spec"]["initContainers"]
        .as_array()
        .and_then(|a| a.first())
        .unwrap_or_else(|| panic!("no init container stored: {stored}"));
    for (field, value) in [
        ("imagePullPolicy", "IfNotPresent"),
        ("terminationMessagePath", "/dev/termination-log"),
        ("terminationMessagePolicy", "File"),
    ] {
        assert_eq!(init[field], value, "the API server's default for {field}");
        assert!(
            !sent.contains(&format!("\"{field}\"")),
            "our patch itself sets {field}: {sent}"
        );
    }
    assert!(
        names(&init["volumeMounts"], "mountPath")
            .contains(&"/var/run/secrets/kubernetes.io/serviceaccount"),
        "the ServiceAccount plugin did not mount the token into the added init container: {init}"
    );
    let conf = stored["spec"]["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "extra-conf"))
        .expect("extra-conf volume");
    assert_eq!(
        conf["configMap"]["defaultMode"], 420,
        "defaultMode defaulted"
    );
    assert!(
        !sent.contains("defaultMode"),
        "our patch itself sets defaultMode: {sent}"
    );

    let again = expect.mutate(&stored, ns);
    assert!(
        again.patch.0.is_empty(),
        "on the stored (defaulted) pod a second pass would change {:?}",
        again.patch
    );
}
