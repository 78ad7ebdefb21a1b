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
    /// A pod being created: the only thing policies act on.
    PodCreate(Box<PodCreate>),
    /// Anything else (another kind, a subresource, another operation): allowed unchanged.
    PassThrough { uid: String, what: String },
}

impl Review {
    pub fn uid(&self) -> &str {
        match self {
            Review::PodCreate(p) => &p.uid,
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

/// Why a body is not a review we can answer (HTTP 400, the message is the reason).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("invalid pod admission request: {0}")]
    InvalidPodRequest(#[source] serde_json::Error),
    #[error("a CREATE request without request.object")]
    NoObject,
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
    #[allow(dead_code)]
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
                && head.sub_resource.is_none()
                && head.operation == "CREATE"
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
    if !is_pod || req.sub_resource.is_some() || req.operation != Operation::Create {
        let what = format!("{} {}", req.kind.kind, operation_name(&req.operation));
        return Ok(Review::PassThrough { uid: req.uid, what });
    }
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
    Ok(Review::PodCreate(Box::new(PodCreate {
        uid: req.uid,
        namespace,
        name,
        dry_run: req.dry_run,
        pod,
    })))
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
