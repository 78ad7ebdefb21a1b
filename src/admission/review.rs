//! AdmissionReview `admission.k8s.io/v1` in (the answer is in `answer.rs`).
//!
//! Requests decode into our own lean mirror of kube's `AdmissionRequest<Pod>` ([`PodRequest`]).

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::core::admission::Operation;
use kube::core::gvk::{GroupVersionKind, GroupVersionResource};
use serde::de::IgnoredAny;
use serde::Deserialize;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// Audit annotation with the `name@hash` of the policies that changed the pod.
pub const AUDIT_APPLIED: &str = "applied-policies";
/// Audit annotation with the `name@hash` of the policies whose rules were checked.
pub const AUDIT_CHECKED: &str = "checked-policies";
/// Audit annotation with the audit-mode findings, `; `-separated.
pub const AUDIT_FINDINGS: &str = "audit-findings";

/// The AdmissionReview envelope, generic over what `request` decodes into: kube's
/// `AdmissionRequest<Pod>` for pods, a `RequestHead` for other kinds, the ConfigMap request
/// of `/validate-policy`. Unlike kube's `AdmissionReview`, no `#[serde(flatten)]` type meta,
/// which would make serde buffer the whole object before decoding it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Envelope<R> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    // Absent is None without `#[serde(default)]`, which would ask `R: Default`.
    request: Option<R>,
}

/// Why a body is not an AdmissionReview with a request: the same for every endpoint
/// (HTTP 400, the message is the reason).
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("body is not UTF-8 text: {0}")]
    NotUtf8(#[source] std::str::Utf8Error),
    #[error("body is not an AdmissionReview: {0}")]
    NotAReview(#[source] serde_json::Error),
    #[error("expected apiVersion {API_VERSION} and kind {KIND}, got apiVersion {api_version:?} and kind {kind:?}")]
    WrongType { api_version: String, kind: String },
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

/// The body as text. serde_json skips unknown fields without checking their UTF-8, so a
/// body that is not text could otherwise pass; checking once up front also lets serde
/// parse a `str`.
pub(super) fn text(body: &[u8]) -> Result<&str, EnvelopeError> {
    std::str::from_utf8(body).map_err(EnvelopeError::NotUtf8)
}

impl<R: serde::de::DeserializeOwned> Envelope<R> {
    /// Parses the envelope, telling broken JSON from JSON of the wrong shape.
    pub(super) fn parse(body: &str) -> Result<Self, EnvelopeError> {
        serde_json::from_str(body).map_err(|e| {
            if is_not_json(&e) {
                EnvelopeError::NotJson(e)
            } else {
                EnvelopeError::NotAReview(e)
            }
        })
    }
}

impl<R> Envelope<R> {
    /// The request of an `admission.k8s.io/v1` AdmissionReview.
    pub(super) fn into_request(self) -> Result<R, EnvelopeError> {
        if self.api_version != API_VERSION || self.kind != KIND {
            return Err(EnvelopeError::WrongType {
                api_version: self.api_version,
                kind: self.kind,
            });
        }
        self.request.ok_or(EnvelopeError::NoRequest)
    }
}

/// Whether a body that did not decode is broken JSON (else it is JSON of the wrong shape).
pub(super) fn is_not_json(e: &serde_json::Error) -> bool {
    e.is_syntax() || e.is_eof()
}

/// Just enough of a request to answer one whose object is not a Pod.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestHead {
    uid: String,
    kind: KindIn,
    #[serde(default)]
    sub_resource: Option<String>,
    operation: String,
}

/// `request.kind`, read leniently: a missing part is empty.
#[derive(Deserialize)]
pub(super) struct KindIn {
    #[serde(default)]
    pub(super) group: String,
    #[serde(default)]
    pub(super) version: String,
    #[serde(default)]
    pub(super) kind: String,
}

impl KindIn {
    /// `kind` of the core API group, version v1 (Pod, ConfigMap).
    pub(super) fn is_core_v1(&self, kind: &str) -> bool {
        is_core_v1(&self.group, &self.version, &self.kind, kind)
    }
}

fn is_core_v1(group: &str, version: &str, kind: &str, wanted: &str) -> bool {
    group.is_empty() && version == "v1" && kind == wanted
}

/// A review the webhook can answer.
#[derive(Debug)]
pub enum Review {
    /// A pod being created: mutated, then validated.
    PodCreate(Box<PodCreate>),
    /// A pod being changed (`pods`, `pods/ephemeralcontainers`, `pods/resize`): validated
    /// only, never mutated.
    PodUpdate(Box<PodUpdate>),
    /// Anything else (another kind, another subresource such as `status`, another
    /// operation): allowed unchanged.
    PassThrough { uid: String, what: String },
}

impl Review {
    pub fn uid(&self) -> &str {
        match self {
            Review::PodCreate(p) => &p.uid,
            Review::PodUpdate(p) => &p.new.uid,
            Review::PassThrough { uid, .. } => uid,
        }
    }
}

#[derive(Debug)]
pub struct PodCreate {
    pub uid: String,
    /// The request's namespace, else the pod's, else `default`.
    pub namespace: String,
    /// The request's name, else the pod's name or generateName (for logs).
    pub name: String,
    pub dry_run: bool,
    pub pod: Pod,
}

/// An UPDATE of a pod or of one of the subresources that change what it runs.
#[derive(Debug)]
pub struct PodUpdate {
    /// The pod as it will be (`request.object`), with the request's uid, namespace and name.
    pub new: PodCreate,
    /// The pod as it was (`request.oldObject`).
    pub old: Pod,
    /// `ephemeralcontainers`, `resize`, or `None` for the pod itself.
    pub sub_resource: Option<String>,
}

/// Pod subresources whose UPDATE changes what the pod runs (images, containers,
/// resources): judged like the pod itself. `status`, `binding` and the rest are not.
pub const JUDGED_SUBRESOURCES: [&str; 2] = ["ephemeralcontainers", "resize"];

/// Whether a pod request with this operation and subresource is judged (else passed through).
fn is_judged(operation: &str, sub_resource: Option<&str>) -> bool {
    match (operation, sub_resource) {
        ("CREATE", None) => true,
        ("UPDATE", None) => true,
        ("UPDATE", Some(s)) => JUDGED_SUBRESOURCES.contains(&s),
        _ => false,
    }
}

/// Why a body is not a review we can answer (HTTP 400, the message is the reason).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("invalid pod admission request: {0}")]
    InvalidPodRequest(#[source] serde_json::Error),
    #[error("a CREATE or UPDATE request without request.object")]
    NoObject,
    #[error("an UPDATE request without request.oldObject")]
    NoOldObject,
}

/// `request` of a pod review: kube's `AdmissionRequest<Pod>` with the same required
/// fields and shapes, minus what nothing here reads: `options` is skipped unparsed and the
/// pod's `metadata.managedFields` (a third of a real pod, hundreds of small maps) is never
/// built ([`PodIn`]). Decoding was the largest single cost of a review (BENCHMARKS.md).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodRequest {
    uid: String,
    kind: GroupVersionKind,
    // Required and checked for shape as kube does, though nothing reads them.
    #[allow(dead_code)]
    resource: GroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    request_kind: Option<GroupVersionKind>,
    #[serde(default)]
    #[allow(dead_code)]
    request_resource: Option<GroupVersionResource>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    #[allow(dead_code)]
    user_info: UserInfo,
    object: Option<PodIn>,
    old_object: Option<PodIn>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    #[allow(dead_code)]
    options: Option<IgnoredAny>,
}

/// A Pod as k8s-openapi decodes it (`apiVersion`/`kind` checked when present, unknown
/// fields ignored, null metadata is empty) but with `metadata.managedFields` skipped: no
/// merge step, rule or diff reads it (the engine's working copy drops it too).
#[derive(Deserialize)]
#[serde(try_from = "PodFields")]
struct PodIn(Pod);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodFields {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<MetaIn>,
    #[serde(default)]
    spec: Option<PodSpec>,
    #[serde(default)]
    status: Option<PodStatus>,
}

impl TryFrom<PodFields> for PodIn {
    type Error = String;

    fn try_from(f: PodFields) -> Result<Self, String> {
        if let Some(v) = f.api_version.filter(|v| v != "v1") {
            return Err(format!("invalid value: string {v:?}, expected v1"));
        }
        if let Some(k) = f.kind.filter(|k| k != "Pod") {
            return Err(format!("invalid value: string {k:?}, expected Pod"));
        }
        Ok(PodIn(Pod {
            metadata: f.metadata.map(MetaIn::into_meta).unwrap_or_default(),
            spec: f.spec,
            status: f.status,
        }))
    }
}

/// `ObjectMeta` without `managedFields` (skipped, not built).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaIn {
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    creation_timestamp: Option<Time>,
    #[serde(default)]
    deletion_grace_period_seconds: Option<i64>,
    #[serde(default)]
    deletion_timestamp: Option<Time>,
    #[serde(default)]
    finalizers: Option<Vec<String>>,
    #[serde(default)]
    generate_name: Option<String>,
    #[serde(default)]
    generation: Option<i64>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    owner_references: Option<Vec<OwnerReference>>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    self_link: Option<String>,
    #[serde(default)]
    uid: Option<String>,
}

impl MetaIn {
    fn into_meta(self) -> ObjectMeta {
        // Every field named: a field added by a new k8s-openapi must be decided on here.
        ObjectMeta {
            annotations: self.annotations,
            creation_timestamp: self.creation_timestamp,
            deletion_grace_period_seconds: self.deletion_grace_period_seconds,
            deletion_timestamp: self.deletion_timestamp,
            finalizers: self.finalizers,
            generate_name: self.generate_name,
            generation: self.generation,
            labels: self.labels,
            managed_fields: None,
            name: self.name,
            namespace: self.namespace,
            owner_references: self.owner_references,
            resource_version: self.resource_version,
            self_link: self.self_link,
            uid: self.uid,
        }
    }
}

/// Decodes a request body into what to do with it.
pub fn decode(body: &[u8]) -> Result<Review, ReviewError> {
    let body = text(body)?;
    match serde_json::from_str::<Envelope<PodRequest>>(body) {
        Ok(review) => classify(review.into_request()?),
        // The object is not a Pod (or the body is broken): decode only the envelope to tell
        // another kind, which we let through, from a malformed body, which we refuse.
        Err(full) => {
            let head = Envelope::<RequestHead>::parse(body)?.into_request()?;
            if head.kind.is_core_v1("Pod")
                && is_judged(&head.operation, head.sub_resource.as_deref())
            {
                return Err(ReviewError::InvalidPodRequest(full));
            }
            Ok(Review::PassThrough {
                what: format!("{} {}", head.kind.kind, head.operation),
                uid: head.uid,
            })
        }
    }
}

fn classify(req: PodRequest) -> Result<Review, ReviewError> {
    let is_pod = is_core_v1(&req.kind.group, &req.kind.version, &req.kind.kind, "Pod");
    let operation = operation_name(&req.operation);
    if !is_pod || !is_judged(operation, req.sub_resource.as_deref()) {
        let what = match &req.sub_resource {
            Some(sub) => format!("{}/{sub} {operation}", req.kind.kind),
            None => format!("{} {operation}", req.kind.kind),
        };
        return Ok(Review::PassThrough { uid: req.uid, what });
    }
    let update = req.operation == Operation::Update;
    let old = if update {
        Some(req.old_object.ok_or(ReviewError::NoOldObject)?.0)
    } else {
        None
    };
    let pod = req.object.ok_or(ReviewError::NoObject)?.0;
    let namespace = req
        .namespace
        .filter(|n| !n.is_empty())
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| "default".to_owned());
    let name = if !req.name.is_empty() {
        req.name
    } else {
        pod.metadata
            .name
            .clone()
            .or_else(|| pod.metadata.generate_name.clone())
            .unwrap_or_default()
    };
    let create = PodCreate {
        uid: req.uid,
        namespace,
        name,
        dry_run: req.dry_run,
        pod,
    };
    Ok(match old {
        Some(old) => Review::PodUpdate(Box::new(PodUpdate {
            new: create,
            old,
            sub_resource: req.sub_resource,
        })),
        None => Review::PodCreate(Box::new(create)),
    })
}

fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

#[cfg(test)]
mod tests {
    use kube::core::admission::AdmissionRequest;

    use super::*;

    /// The lean decode gives what kube's `AdmissionRequest<Pod>` gives, `managedFields`
    /// aside, for every real review in the fixtures.
    #[test]
    fn lean_decode_matches_kube_but_for_managed_fields() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let body = std::fs::read(&path).unwrap();
            let kube: Envelope<AdmissionRequest<Pod>> = serde_json::from_slice(&body).unwrap();
            let kube = kube.into_request().unwrap();
            let Review::PodCreate(ours) = decode(&body).unwrap() else {
                panic!("{}: not a pod create", path.display());
            };
            let mut expected = kube.object.unwrap();
            assert!(
                expected.metadata.managed_fields.is_some(),
                "{}",
                path.display()
            );
            expected.metadata.managed_fields = None;
            assert_eq!(ours.pod, expected, "{}", path.display());
            assert_eq!(ours.uid, kube.uid);
            assert_eq!(ours.dry_run, kube.dry_run);
            seen += 1;
        }
        assert!(seen >= 8);
    }

    /// What a decode came to, for comparing decoders.
    fn outcome(r: &Result<Review, ReviewError>) -> &'static str {
        match r {
            Ok(Review::PodCreate(_)) => "pod",
            Ok(Review::PodUpdate(_)) => "update",
            Ok(Review::PassThrough { .. }) => "pass",
            Err(ReviewError::Envelope(EnvelopeError::NotJson(_))) => "NotJson",
            Err(ReviewError::Envelope(EnvelopeError::NotUtf8(_))) => "NotUtf8",
            Err(ReviewError::Envelope(EnvelopeError::NotAReview(_))) => "NotAReview",
            Err(ReviewError::Envelope(EnvelopeError::WrongType { .. })) => "WrongType",
            Err(ReviewError::Envelope(EnvelopeError::NoRequest)) => "NoRequest",
            Err(ReviewError::InvalidPodRequest(_)) => "InvalidPodRequest",
            Err(ReviewError::NoObject) => "NoObject",
            Err(ReviewError::NoOldObject) => "NoOldObject",
        }
    }

    /// `decode` comes to `expected`.
    fn assert_outcome(what: &str, body: &[u8], expected: &str) {
        let ours = decode(body);
        assert_eq!(outcome(&ours), expected, "{what}: {ours:?}");
    }

    #[test]
    fn every_fixture_decodes_to_a_pod_create() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let body = std::fs::read(&path).unwrap();
            assert_outcome(&path.display().to_string(), &body, "pod");
            seen += 1;
        }
        assert!(seen >= 16);
    }

    /// Broken, odd and wrongly shaped bodies keep the outcome they had (measured before any
    /// decoder change). Nesting in a skipped field has no depth limit: serde_json skips
    /// without recursing.
    #[test]
    fn malformed_bodies_keep_their_outcome() {
        let rich = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/admission/mutate-driver-rich.json"),
        )
        .unwrap();
        // `value` as the first element of managedFields, which decode skips.
        let in_managed = |value: &str| {
            rich.replacen(
                "\"managedFields\": [",
                &format!("\"managedFields\": [{value},"),
                1,
            )
        };
        let in_labels =
            |entry: &str| rich.replacen("\"labels\": {", &format!("\"labels\": {{{entry},"), 1);
        let grace = |value: &str| {
            rich.replacen(
                "\"terminationGracePeriodSeconds\": 30",
                &format!("\"terminationGracePeriodSeconds\": {value}"),
                1,
            )
        };
        let nested =
            |depth: usize| in_managed(&format!("{}{}", "[".repeat(depth), "]".repeat(depth)));
        let mut invalid_utf8 = in_managed("\"ab\"").into_bytes();
        let at = invalid_utf8
            .windows(4)
            .position(|w| w == b"\"ab\"")
            .unwrap();
        invalid_utf8[at + 1] = 0xff;
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", b"".to_vec(), "NotJson"),
            (
                "truncated",
                rich.as_bytes()[..rich.len() / 2].to_vec(),
                "NotJson",
            ),
            (
                "truncated in managedFields",
                rich.as_bytes()[..rich.find("\"managedFields\"").unwrap() + 40].to_vec(),
                "NotJson",
            ),
            (
                "trailing garbage",
                format!("{rich} x").into_bytes(),
                "NotJson",
            ),
            ("trailing space", format!("{rich} \n").into_bytes(), "pod"),
            (
                "byte order mark",
                format!("\u{feff}{rich}").into_bytes(),
                "NotJson",
            ),
            ("array", b"[]".to_vec(), "NotAReview"),
            (
                "apiVersion a number",
                br#"{"apiVersion":1}"#.to_vec(),
                "NotAReview",
            ),
            (
                "no request",
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
                "NoRequest",
            ),
            (
                "wrong type",
                rich.replacen("admission.k8s.io/v1", "admission.k8s.io/v1beta1", 1)
                    .into_bytes(),
                "WrongType",
            ),
            (
                "uid a number",
                rich.replacen("\"uid\": \"44dd7825", "\"uid\": 4, \"x\": \"", 1)
                    .into_bytes(),
                "NotAReview",
            ),
            (
                "duplicate uid",
                rich.replacen("\"uid\": \"44dd", "\"uid\": \"a\", \"uid\": \"44dd", 1)
                    .into_bytes(),
                "NotAReview",
            ),
            (
                "duplicate label",
                in_labels("\"spark-role\": \"first\"").into_bytes(),
                "pod",
            ),
            (
                "escapes in a label",
                in_labels(r#""k\u00e9\n": "\ud83d\ude00 \"q\" \/ é""#).into_bytes(),
                "pod",
            ),
            (
                "lone surrogate in a label",
                in_labels(r#""k": "\ud800""#).into_bytes(),
                "InvalidPodRequest",
            ),
            ("invalid UTF-8 in managedFields", invalid_utf8, "NotUtf8"),
            (
                "control character in managedFields",
                in_managed("\"a\u{1}b\"").into_bytes(),
                "NotJson",
            ),
            (
                "bad escape in managedFields",
                in_managed(r#""a\qb""#).into_bytes(),
                "NotJson",
            ),
            (
                "lone surrogate in managedFields",
                in_managed(r#""\udc00""#).into_bytes(),
                "pod",
            ),
            (
                "1e400 in managedFields",
                in_managed("1e400").into_bytes(),
                "pod",
            ),
            (
                "bad number in managedFields",
                in_managed("01").into_bytes(),
                "NotJson",
            ),
            (
                "NaN in managedFields",
                in_managed("NaN").into_bytes(),
                "NotJson",
            ),
            (
                "trailing comma in managedFields",
                in_managed("[1,]").into_bytes(),
                "NotJson",
            ),
            (
                "nested 100 deep in managedFields",
                nested(100).into_bytes(),
                "pod",
            ),
            (
                "nested 200 deep in managedFields",
                nested(200).into_bytes(),
                "pod",
            ),
            (
                "nested 100000 deep in managedFields",
                nested(100_000).into_bytes(),
                "pod",
            ),
            (
                "1e400 as grace period",
                grace("1e400").into_bytes(),
                "InvalidPodRequest",
            ),
            (
                "float grace period",
                grace("30.0").into_bytes(),
                "InvalidPodRequest",
            ),
            (
                "huge grace period",
                grace("99999999999999999999").into_bytes(),
                "InvalidPodRequest",
            ),
            (
                "negative zero grace period",
                grace("-0").into_bytes(),
                "InvalidPodRequest",
            ),
            (
                "string grace period",
                grace("\"30\"").into_bytes(),
                "InvalidPodRequest",
            ),
        ];
        let wrong: Vec<String> = cases
            .into_iter()
            .filter_map(|(what, body, expected)| {
                let got = decode(&body);
                (outcome(&got) != expected)
                    .then(|| format!("{what}: expected {expected}, got {got:?}"))
            })
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn a_pod_of_another_api_version_or_kind_is_refused_as_before() {
        let body = |object: &str| {
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","kind":{{"group":"","version":"v1","kind":"Pod"}},"resource":{{"group":"","version":"v1","resource":"pods"}},"operation":"CREATE","userInfo":{{}},"object":{object}}}}}"#
            )
        };
        assert!(matches!(
            decode(body(r#"{"apiVersion":"v2","kind":"Pod"}"#).as_bytes()),
            Err(ReviewError::InvalidPodRequest(_))
        ));
        assert!(matches!(
            decode(body(r#"{"apiVersion":"v1","kind":"Service"}"#).as_bytes()),
            Err(ReviewError::InvalidPodRequest(_))
        ));
        assert!(matches!(
            decode(
                body(r#"{"metadata":{"managedFields":"skipped"},"spec":{"containers":[]}}"#)
                    .as_bytes()
            ),
            Ok(Review::PodCreate(_))
        ));
        assert!(matches!(
            decode(body("null").as_bytes()),
            Err(ReviewError::NoObject)
        ));
    }
}
