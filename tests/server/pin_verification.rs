//! Job pins must be the executor's own driver's (issue 23), through the whole server over
//! TLS with policies from ConfigMaps and drivers from a stand-in API server:
//!
//! - the three reviews of the issue (`","`, `nonexistent@deadbeef`, a pin of an older
//!   valid version on an executor whose driver is not stored) get exactly the patch of no
//!   pin at all, plus a warning;
//! - an executor owned by its stored driver keeps the driver's versions after a policy
//!   change, on the replica that admitted the driver and on another; the same pin on an
//!   executor owned by another driver (forged), by a pod of the same name but another
//!   uid, or by none gets the current versions;
//! - a driver created with its own pin token has it replaced by the webhook's;
//! - a driver the watch has not delivered is found with a GET.

use crate::common;
use crate::fake_apiserver;

use std::time::Duration;

use hyper::StatusCode;
use serde_json::{json, Value};

use common::{eventually, fixture_json, patched_object, response_of, to_bytes, Proto};
use fake_apiserver::{configmap, FakeApiServer};
use spark_admission::admission::{PolicySourceConfig, Server};
use spark_admission::engine::{submit_opts_tokens, SUBMIT_OPTS_VAR};
use spark_admission::pinning::{self, DRIVER_POLICIES_ANNOTATION, PIN_SPARK_CONF_KEY};

pub(crate) const POLICY_NS: &str = "spark-admission";
pub(crate) const NS: &str = "spark-jobs";
pub(crate) const WAIT: Duration = Duration::from_secs(30);
pub(crate) const LABEL: &str = "policy-version";
/// The captured executor's name.
const EXECUTOR: &str = "spark-pi-rich-a4afd1a1ff0ee0ce-exec-1";

/// A policy that changes executors, in two versions.
pub(crate) fn versioned(version: &str) -> String {
    format!(
        "apiVersion: spark-admission.io/v1alpha1\nkind: SparkPodPolicy\nmetadata: {{name: pinned-team}}\nspec:\n  namespaces: [\"*\"]\n  all:\n    labels: {{{LABEL}: \"{version}\"}}\n  executor:\n    nodeSelector: {{pinned-pool: \"pool-{version}\"}}\n"
    )
}

pub(crate) fn examples() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?.to_owned();
            name.ends_with(".yaml")
                .then(|| (name, std::fs::read_to_string(&path).unwrap()))
        })
        .collect();
    out.sort();
    out
}

pub(crate) struct Replica {
    pub(crate) server: Server,
    ca: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Replica {
    pub(crate) async fn start(api: &FakeApiServer) -> Replica {
        Self::start_with(api, |_| {}).await
    }

    pub(crate) async fn start_with(
        api: &FakeApiServer,
        f: impl FnOnce(&mut spark_admission::admission::ServerConfig),
    ) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let mut config = common::test_config(dir.path());
        config.policy_source = PolicySourceConfig::ConfigMaps {
            namespace: POLICY_NS.to_owned(),
        };
        f(&mut config);
        let server = Server::start_with_client(config, Some(api.client()))
            .await
            .unwrap();
        let ca = std::fs::read(dir.path().join("certs/ca.crt")).unwrap();
        let r = Replica {
            server,
            ca,
            _dir: dir,
        };
        eventually("the replica is ready", WAIT, || async {
            common::admin_get(r.server.admin_addr(), "/readyz").await.0 == StatusCode::OK
        })
        .await;
        r
    }

    pub(crate) async fn serves(&self, version: &str) {
        let tag = tag_of(&versioned(version));
        eventually(&format!("serving {tag}"), WAIT, || async {
            self.server
                .store()
                .snapshot()
                .policies()
                .iter()
                .any(|p| p.tag == tag)
        })
        .await;
    }

    /// The response to a mutate review, over TLS (h2, as the API server prefers).
    pub(crate) async fn mutate(&self, review: &Value) -> Value {
        let mut conn =
            common::Conn::connect(self.server.webhook_addr(), &self.ca, Proto::H2, None, None)
                .await
                .unwrap();
        let (status, body) = conn.post("/mutate", to_bytes(review)).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        response_of(&body)
    }

    pub(crate) async fn pinned_total(&self, result: &str) -> f64 {
        let (_, text) = common::admin_get(self.server.admin_addr(), "/metrics").await;
        text.lines()
            .filter(|l| l.starts_with("spark_admission_pinned_executors_total{"))
            .filter(|l| l.contains(&format!("result=\"{result}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

pub(crate) fn tag_of(policy: &str) -> String {
    let docs = spark_admission::policy::parse_documents(
        &spark_admission::policy::PolicySource("t.yaml".into()),
        policy,
    )
    .unwrap();
    docs[0].tag.clone()
}

pub(crate) fn patch_of(response: &Value) -> Vec<Value> {
    use base64::Engine as _;
    response
        .get("patch")
        .and_then(Value::as_str)
        .map(|p| {
            let raw = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
            serde_json::from_slice(&raw).unwrap()
        })
        .unwrap_or_default()
}

pub(crate) fn warnings(response: &Value) -> Vec<String> {
    response["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The captured executor review, in `NS`, with `pin` and `owner` (name, uid) as given
/// (`owner` None: the captured owner reference, to a driver that is not stored).
pub(crate) fn executor_review(pin: Option<&str>, owner: Option<(&str, &str)>) -> Value {
    let mut review = fixture_json("mutate-executor-rich-1.json");
    review["request"]["namespace"] = json!(NS);
    let meta = &mut review["request"]["object"]["metadata"];
    meta["namespace"] = json!(NS);
    if let Some(p) = pin {
        meta["annotations"][DRIVER_POLICIES_ANNOTATION] = json!(p);
    }
    match owner {
        Some(("", _)) => {
            meta.as_object_mut().unwrap().remove("ownerReferences");
        }
        Some((name, uid)) => {
            meta["ownerReferences"] = json!([{
                "apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid,
                "controller": true
            }]);
        }
        None => {}
    }
    review
}

/// Admits a driver through `replica`, stores it as the API server would (under `name`)
/// and returns (uid, the pin in its SPARK_SUBMIT_OPTS, the response).
pub(crate) async fn admit_driver(
    api: &FakeApiServer,
    replica: &Replica,
    name: &str,
    submit_opts: Option<&str>,
) -> (String, Option<String>, Value) {
    let mut review = fixture_json("mutate-driver-rich.json");
    review["request"]["namespace"] = json!(NS);
    review["request"]["object"]["metadata"]["namespace"] = json!(NS);
    review["request"]["object"]["metadata"]["name"] = json!(name);
    if let Some(opts) = submit_opts {
        let containers = review["request"]["object"]["spec"]["containers"]
            .as_array_mut()
            .unwrap();
        let spark = containers
            .iter_mut()
            .find(|c| c["name"] == "spark-kubernetes-driver")
            .unwrap();
        let env = spark["env"].as_array_mut().unwrap();
        env.retain(|e| e["name"] != SUBMIT_OPTS_VAR);
        env.push(json!({"name": SUBMIT_OPTS_VAR, "value": opts}));
    }
    let response = replica.mutate(&review).await;
    assert_eq!(response["allowed"], true, "{response}");
    let stored = patched_object(&review, &response);
    let uid = api.apply_pod(stored.clone());
    (uid, submit_opts_pin(&stored), response)
}

fn submit_opts_value(pod: &Value) -> String {
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "spark-kubernetes-driver")
        .and_then(|c| c["env"].as_array())
        .and_then(|env| env.iter().find(|e| e["name"] == SUBMIT_OPTS_VAR))
        .and_then(|e| e["value"].as_str())
        .unwrap_or_default()
        .to_owned()
}

pub(crate) fn submit_opts_pin(pod: &Value) -> Option<String> {
    let tokens = submit_opts_tokens(&submit_opts_value(pod)).unwrap();
    let prefix = format!("-D{PIN_SPARK_CONF_KEY}=");
    let pins: Vec<String> = tokens
        .iter()
        .filter_map(|t| t.strip_prefix(&prefix).map(str::to_owned))
        .collect();
    assert!(pins.len() <= 1, "{pins:?}");
    pins.into_iter().next()
}

/// The `policy-version` label the executor gets, and its warnings.
pub(crate) async fn version_for(replica: &Replica, review: &Value) -> (String, Vec<String>) {
    let response = replica.mutate(review).await;
    assert_eq!(response["allowed"], true, "{response}");
    let pod = patched_object(review, &response);
    let version = pod["metadata"]["labels"][LABEL]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (version, warnings(&response))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_reviews_of_the_issue_get_exactly_the_patch_of_no_pin() {
    let api = FakeApiServer::start().await;
    let examples = examples();
    let data: Vec<(&str, &str)> = examples
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    api.apply(configmap(POLICY_NS, "examples", true, &data));
    let v1 = versioned("1");
    api.apply(configmap(POLICY_NS, "team", true, &[("team.yaml", &v1)]));
    let replica = Replica::start(&api).await;
    replica.serves("1").await;
    // The older valid version: what a v1 driver pinned, still in the history.
    let older_pin = pinning::executor_tags(&replica.server.store().snapshot(), NS).join(",");
    assert!(older_pin.contains(&tag_of(&v1)), "{older_pin}");
    api.apply(configmap(
        POLICY_NS,
        "team",
        true,
        &[("team.yaml", &versioned("2"))],
    ));
    replica.serves("2").await;
    assert!(replica
        .server
        .store()
        .history()
        .lookup(&tag_of(&v1))
        .is_some());

    let none = replica.mutate(&executor_review(None, None)).await;
    let expected = patch_of(&none);
    assert!(expected.len() > 10, "{expected:?}");
    eprintln!("no pin: {} patch operations", expected.len());
    for (what, pin) in [
        ("\",\"", ","),
        ("nonexistent@deadbeef", "nonexistent@deadbeef"),
        ("an older valid version", older_pin.as_str()),
    ] {
        let review = executor_review(Some(pin), None);
        let response = replica.mutate(&review).await;
        assert_eq!(response["allowed"], true);
        let got = patch_of(&response);
        eprintln!(
            "pin {what}: {} patch operations, warning: {:?}",
            got.len(),
            warnings(&response)
        );
        assert_eq!(got, expected, "{what}: the patch of no pin");
        let w = warnings(&response);
        assert!(
            w.iter().any(|w| w.contains(pin) && w.contains(EXECUTOR)),
            "{what}: a warning names the pin and the pod: {w:?}"
        );
        let pod = patched_object(&review, &response);
        assert_eq!(pod["metadata"]["labels"][LABEL], "2", "{what}");
    }
    assert_eq!(replica.pinned_total("malformed").await, 2.0);
    assert_eq!(replica.pinned_total("unverified").await, 1.0);
    assert_eq!(replica.pinned_total("pinned").await, 0.0);
    replica.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_executors_own_stored_driver_can_vouch_for_its_pin_on_any_replica() {
    let api = FakeApiServer::start().await;
    api.apply(configmap(
        POLICY_NS,
        "team",
        true,
        &[("team.yaml", &versioned("1"))],
    ));
    let a = Replica::start(&api).await;
    let b = Replica::start(&api).await;
    a.serves("1").await;
    b.serves("1").await;

    // A driver admitted by replica a under v1, stored.
    let (uid, pin, _) = admit_driver(&api, &a, "job-1-driver", None).await;
    let pin = pin.expect("the driver carries the webhook's pin");
    assert!(pin.contains(&tag_of(&versioned("1"))), "{pin}");

    api.apply(configmap(
        POLICY_NS,
        "team",
        true,
        &[("team.yaml", &versioned("2"))],
    ));
    a.serves("2").await;
    b.serves("2").await;
    // Another driver, admitted under v2.
    let (other_uid, other_pin, _) = admit_driver(&api, &b, "job-2-driver", None).await;
    assert_ne!(other_pin.as_deref(), Some(pin.as_str()));

    // Its own executors keep v1, on the replica that admitted the driver and on the
    // other one (which reads the driver from the API: the watch, else a GET).
    for replica in [&a, &b] {
        let own = executor_review(Some(&pin), Some(("job-1-driver", &uid)));
        let (version, w) = version_for(replica, &own).await;
        assert_eq!(version, "1", "{w:?}");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(replica.pinned_total("pinned").await, 1.0);
    }

    // The same pin anywhere else gets v2.
    let cases = [
        (
            "owned by another driver",
            Some(("job-2-driver", other_uid.as_str())),
            "forged",
        ),
        (
            "owned by a pod of that name with another uid",
            Some(("job-1-driver", "00000000-0000-0000-0000-999999999999")),
            "unverified",
        ),
        ("owned by no pod", Some(("", "")), "unverified"),
        (
            "owned by a pod that is not stored",
            Some(("job-9-driver", "u")),
            "unverified",
        ),
    ];
    for (what, owner, result) in cases {
        let before = a.pinned_total(result).await;
        let review = executor_review(Some(&pin), owner);
        let (version, w) = version_for(&a, &review).await;
        assert_eq!(version, "2", "{what}");
        assert!(
            w.iter().any(|w| w.contains(&pin)),
            "{what}: a warning names the pin: {w:?}"
        );
        assert_eq!(a.pinned_total(result).await, before + 1.0, "{what}");
        if result == "forged" {
            assert!(
                w.iter()
                    .any(|w| w.contains("forged") && w.contains(EXECUTOR)),
                "{what}: {w:?}"
            );
        }
    }

    // A driver created with a pin token of its own (the old one) gets the webhook's.
    let own_token = format!("-Dspark.a=1 -D{PIN_SPARK_CONF_KEY}={pin} '-Dspark.b=x y'");
    let (forger_uid, forger_pin, response) =
        admit_driver(&api, &a, "job-3-driver", Some(&own_token)).await;
    let replaced = forger_pin.expect("the webhook's pin");
    assert_eq!(Some(replaced.as_str()), other_pin.as_deref());
    assert!(
        warnings(&response)
            .iter()
            .any(|w| w.contains(&pin) && w.contains("removed")),
        "{:?}",
        warnings(&response)
    );
    let stored = api.pod(NS, "job-3-driver");
    let tokens = submit_opts_tokens(&submit_opts_value(&stored)).unwrap();
    for kept in ["-Dspark.a=1", "-Dspark.b=x y"] {
        assert!(tokens.iter().any(|t| t == kept), "{kept} lost: {tokens:?}");
    }
    // Its executors' old pin is not vouched for.
    let review = executor_review(Some(&pin), Some(("job-3-driver", &forger_uid)));
    let (version, _) = version_for(&a, &review).await;
    assert_eq!(version, "2");

    a.server.shutdown().await.unwrap();
    b.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_the_watch_has_not_delivered_is_read_with_a_get() {
    let api = FakeApiServer::start().await;
    api.apply(configmap(
        POLICY_NS,
        "team",
        true,
        &[("team.yaml", &versioned("1"))],
    ));
    // The pod watch never lists: the cache stays empty.
    api.hold_pod_lists(true);
    let replica = Replica::start(&api).await;
    replica.serves("1").await;
    let (uid, pin, _) = admit_driver(&api, &replica, "job-1-driver", None).await;
    let pin = pin.expect("pin");
    let gets = api.pod_gets();
    let review = executor_review(Some(&pin), Some(("job-1-driver", &uid)));
    let (version, w) = version_for(&replica, &review).await;
    assert_eq!(version, "1");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(api.pod_gets(), gets + 1);
    assert_eq!(replica.pinned_total("pinned").await, 1.0);
    replica.server.shutdown().await.unwrap();
}
