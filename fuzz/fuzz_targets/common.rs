//! The fuzz targets' bodies, shared with `tests/engine/fuzz_regressions.rs`, which replays the
//! seeds and every past finding as ordinary tests. A panic here is a finding.

// Each target uses only some of these.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use serde::de::{MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use spark_admission::admission::answer::Answer;
use spark_admission::admission::review::{self, EnvelopeError, Review, ReviewError};
use spark_admission::engine::{Engine, MutateRequest};
use spark_admission::matching::PolicySet;
use spark_admission::policy::{parse_documents, PolicySource};

/// The repository root, whether built from fuzz/ (cargo-fuzz) or from the root (tests).
fn repo_root() -> &'static Path {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    if here.join("policies").is_dir() {
        here
    } else {
        here.parent().unwrap_or(here)
    }
}

pub fn example_policies() -> &'static PolicySet {
    static SET: OnceLock<PolicySet> = OnceLock::new();
    SET.get_or_init(|| {
        let (policies, errors) =
            spark_admission::source::load_paths(&[repo_root().join("policies")]);
        assert!(errors.is_empty(), "example policies must load: {errors:?}");
        PolicySet::new(policies)
    })
}

/// Plans, applies and re-plans: the patch applies to the JSON as received, the result is a
/// Pod, and a second pass is empty.
pub fn check_plan(engine: &Engine, set: &PolicySet, raw: &Value, pod: &Pod, namespace: &str) {
    let m = engine
        .mutate(MutateRequest::new(set, pod, namespace))
        .expect("the engine plans the pod");
    let _ = engine.validate(set, pod, namespace);
    if m.patch.0.is_empty() {
        return;
    }
    let mut patched = raw.clone();
    if let Err(e) = json_patch::patch(&mut patched, &m.patch) {
        panic!(
            "patch does not apply: {e}: {}",
            serde_json::to_string(&m.patch).unwrap_or_default()
        );
    }
    // The webhook never reads managedFields (the API server validates and owns them), so
    // their content may be anything here: read the result as the webhook reads a pod.
    if let Some(meta) = patched.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    let again: Pod = match serde_json::from_value(patched) {
        Ok(p) => p,
        Err(e) => panic!("patched object is not a Pod: {e}"),
    };
    let second = engine
        .mutate(MutateRequest::new(set, &again, namespace))
        .expect("the engine plans the pod");
    assert!(
        second.patch.0.is_empty(),
        "second pass not empty: {}",
        serde_json::to_string(&second.patch).unwrap_or_default()
    );
}

/// AdmissionReview bytes -> decode -> mutate + validate -> encoded answer.
pub fn review(data: &[u8]) {
    let Ok(Review::PodCreate(create)) = review::decode(data) else {
        return;
    };
    let engine = Engine::default();
    let set = example_policies();
    let raw: Value = serde_json::from_slice(data).expect("a decoded body is JSON");
    check_plan(
        &engine,
        set,
        &raw["request"]["object"],
        &create.pod,
        &create.namespace,
    );

    let m = engine
        .mutate(MutateRequest::new(set, &create.pod, &create.namespace))
        .expect("the engine plans the pod");
    let mut answer = Answer::allow(create.uid.clone());
    answer.set_patch(&m.patch).expect("the patch serialises");
    let v = engine.validate(set, &create.pod, &create.namespace);
    if v.denied() {
        answer.deny(403, "Forbidden", v.denial_message());
    }
    let out = answer.to_review_json().expect("the answer serialises");
    let back: Value = serde_json::from_slice(&out).expect("the answer is JSON");
    assert_eq!(back["response"]["uid"], Value::String(create.uid.clone()));
}

/// Arbitrary pod JSON through the planner with the example policies.
pub fn planner(data: &[u8]) {
    let Ok(raw) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(pod) = serde_json::from_value::<Pod>(raw.clone()) else {
        return;
    };
    let engine = Engine::default();
    for ns in ["spark-jobs", "team-ml", "default"] {
        check_plan(&engine, example_policies(), &raw, &pod, ns);
    }
}

fn fixture_pods() -> &'static [(Value, Pod)] {
    static PODS: OnceLock<Vec<(Value, Pod)>> = OnceLock::new();
    PODS.get_or_init(|| {
        [
            "mutate-driver-rich.json",
            "mutate-executor-client-extra.json",
        ]
        .iter()
        .map(|f| {
            let path = repo_root().join("tests/fixtures/admission").join(f);
            let review: Value =
                serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("json");
            let raw = review["request"]["object"].clone();
            let pod = serde_json::from_value(raw.clone()).expect("pod");
            (raw, pod)
        })
        .collect()
    })
}

/// Policy YAML -> schema check -> compile -> real pods planned with the result.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policies) = parse_documents(&PolicySource("fuzz.yaml".into()), text) else {
        return;
    };
    let set = PolicySet::new(policies.into_iter().map(Arc::new));
    let engine = Engine::default();
    for (raw, pod) in fixture_pods() {
        check_plan(&engine, &set, raw, pod, "spark-jobs");
    }
}

/// Differential: `review::decode` against the reference, kube's plain typed decode
/// (`AdmissionReview<Pod>` through serde_json). They must agree on accept/refuse and on
/// every field the engine reads. Where `decode` differs on purpose, the rule is below.
pub fn decoder(data: &[u8]) {
    let ours = review::decode(data);
    let Ok(text) = std::str::from_utf8(data) else {
        // Rule: decode refuses any body that is not UTF-8; serde_json skips the strings no
        // type reads without checking their UTF-8, so the reference may accept it.
        assert!(
            matches!(ours, Err(ReviewError::Envelope(EnvelopeError::NotUtf8(_)))),
            "not UTF-8 but {ours:?}"
        );
        return;
    };
    // Rule: decode never builds what nothing reads, so whatever the reference would
    // refuse inside it, decode accepts as long as it is JSON: the pods'
    // `metadata.managedFields` (the API server validates and owns them), `request.options`,
    // `request.requestSubResource` and the envelope's `response`. The reference reads the
    // body without them (duplicates, order and every other byte's text kept).
    let reference = unread_removed(text).and_then(|t| kube_decode(&t));
    match &ours {
        Ok(Review::PodCreate(c)) => {
            let req = reference.unwrap_or_else(|| panic!("decode accepts, kube refuses"));
            assert!(is_judged_pod(&req), "decode judges what kube would not");
            assert_eq!(req.operation, Operation::Create);
            assert_eq!(req.sub_resource, None);
            same_create(c, &req, req.object.as_ref());
        }
        Ok(Review::PodUpdate(u)) => {
            let req = reference.unwrap_or_else(|| panic!("decode accepts, kube refuses"));
            assert!(is_judged_pod(&req), "decode judges what kube would not");
            assert_eq!(req.operation, Operation::Update);
            assert_eq!(u.sub_resource, req.sub_resource);
            same_create(&u.new, &req, req.object.as_ref());
            assert_eq!(Some(&u.old), req.old_object.as_ref(), "oldObject differs");
        }
        Ok(Review::PassThrough { uid, .. }) => {
            // The reference may refuse (decode lets any other kind through without reading
            // its object as a Pod); where it accepts, the request is not one decode judges.
            if let Some(req) = reference {
                assert!(!is_judged_pod(&req), "decode passes through a judged pod");
                assert_eq!(uid, &req.uid);
            }
        }
        Err(e) => {
            let Some(req) = reference else { return };
            match e {
                // Rule: decode also checks the envelope's apiVersion and kind, which kube
                // leaves to the caller.
                ReviewError::Envelope(EnvelopeError::WrongType { .. }) => assert!(
                    req.types.api_version != review::API_VERSION || req.types.kind != review::KIND,
                    "WrongType for the right type"
                ),
                // Rule: decode refuses a judged CREATE/UPDATE without its object(s); kube's
                // fields are optional.
                ReviewError::NoObject => {
                    assert!(is_judged_pod(&req) && req.object.is_none(), "NoObject")
                }
                ReviewError::NoOldObject => assert!(
                    is_judged_pod(&req)
                        && req.operation == Operation::Update
                        && req.old_object.is_none(),
                    "NoOldObject"
                ),
                // Rule: decode refuses a key given twice in the review, the request, a pod
                // or its metadata (ROBUSTNESS.md, "Bad input"); k8s-openapi's decoders of
                // the pod and its metadata take the last one.
                ReviewError::InvalidPodRequest(_) if repeated_key(text) => {}
                _ => panic!("decode refuses ({e}), kube accepts"),
            }
        }
    }
}

/// kube's typed decode of the whole body, the request taken out as kube does.
fn kube_decode(text: &str) -> Option<AdmissionRequest<Pod>> {
    let review: AdmissionReview<Pod> = serde_json::from_str(text).ok()?;
    review.try_into().ok()
}

/// A request `decode` judges: a core v1 Pod, CREATE or UPDATE of the pod or of a
/// subresource that changes what it runs.
fn is_judged_pod(req: &AdmissionRequest<Pod>) -> bool {
    let k = &req.kind;
    let pod = k.group.is_empty() && k.version == "v1" && k.kind == "Pod";
    let judged = match (&req.operation, req.sub_resource.as_deref()) {
        (Operation::Create, None) | (Operation::Update, None) => true,
        (Operation::Update, Some(s)) => review::JUDGED_SUBRESOURCES.contains(&s),
        _ => false,
    };
    pod && judged
}

/// The fields the engine reads of a judged request. Rule (decode's documented defaults):
/// the namespace is the request's, else the pod's, else `default`; the name the request's,
/// else the pod's name, else its generateName.
fn same_create(c: &review::PodCreate, req: &AdmissionRequest<Pod>, object: Option<&Pod>) {
    let pod = object.unwrap_or_else(|| panic!("decode has a pod, kube has no object"));
    assert_eq!(&c.pod, pod, "pod differs");
    assert_eq!(c.uid, req.uid);
    assert_eq!(c.dry_run, req.dry_run);
    let namespace = req
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| "default".to_owned());
    assert_eq!(c.namespace, namespace);
    let name = Some(req.name.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .or_else(|| pod.metadata.generate_name.clone())
        .unwrap_or_default();
    assert_eq!(c.name, name);
}

/// Whether a key is given twice in the pod objects of the request or their metadata.
fn repeated_key(text: &str) -> bool {
    let repeated = |e: &Entries| {
        let mut keys: Vec<&str> = e.0.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        keys.windows(2).any(|w| w[0] == w[1])
    };
    let field = |e: &Entries, key: &str| -> Vec<Entries> {
        e.0.iter()
            .filter(|(k, _)| k == key)
            .filter_map(|(_, v)| Entries::of(v))
            .collect()
    };
    let Some(top) = Entries::of(text) else {
        return false;
    };
    field(&top, "request").iter().any(|request| {
        ["object", "oldObject"].iter().any(|key| {
            field(request, key)
                .iter()
                .any(|pod| repeated(pod) || field(pod, "metadata").iter().any(repeated))
        })
    })
}

/// The body without the parts `decode` never reads (see `decoder`), or None when it is
/// not a JSON object.
fn unread_removed(text: &str) -> Option<String> {
    let managed = &["managedFields"][..];
    let request = |t: &str| {
        let t = without(t, &["object", "metadata"], managed).unwrap_or_else(|| t.to_owned());
        let t = without(&t, &["oldObject", "metadata"], managed).unwrap_or(t);
        without(&t, &[], &["options", "requestSubResource"]).unwrap_or(t)
    };
    let t = without(text, &[], &["response"])?;
    let mut entries = Entries::of(&t)?;
    for (key, value) in &mut entries.0 {
        if key == "request" {
            *value = request(value);
        }
    }
    Some(entries.write())
}

/// The object `text` with the keys `drop` removed from the object at `path` under it;
/// None when `text` is not an object.
fn without(text: &str, path: &[&str], drop: &[&str]) -> Option<String> {
    let mut entries = Entries::of(text)?;
    match path.split_first() {
        None => entries.0.retain(|(k, _)| !drop.contains(&k.as_str())),
        Some((first, rest)) => {
            for (key, value) in &mut entries.0 {
                if key == first {
                    if let Some(v) = without(value, rest, drop) {
                        *value = v;
                    }
                }
            }
        }
    }
    Some(entries.write())
}

/// One JSON object's entries in order, duplicates kept, each value as its text.
struct Entries(Vec<(String, String)>);

impl Entries {
    fn of(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    fn write(&self) -> String {
        let entries: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
            .collect();
        format!("{{{}}}", entries.join(","))
    }
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, &RawValue>()? {
                    entries.push((k, v.get().to_owned()));
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(V)
    }
}
