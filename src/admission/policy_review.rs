//! `POST /validate-policy`: checks a policy ConfigMap on CREATE and UPDATE, so that
//! `kubectl apply` of a broken policy fails with the schema errors instead of the watcher
//! quietly keeping the last good version.
//!
//! Every data key ending in `.yaml`/`.yml` goes through the same `parse_documents` as the
//! watcher. Errors deny with 403 and one line per problem, `key#doc (name): /path: message`.
//! Ignored keys and policy names defined elsewhere come back as warnings, which kubectl prints.
//! DELETE, other kinds and ConfigMaps without the policy label are allowed unchanged.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::admission::Operation;
use serde::Deserialize;
use serde_json::Value;

use super::answer::Answer;
use super::review::{text, Envelope, EnvelopeError, KindIn};
use super::warnings;
use crate::matching::PolicySet;
use crate::policy::{parse_documents, PolicyError, PolicySource};
use crate::source::configmap::{has_policy_label, is_policy_key, origin_prefix, POLICY_LABEL};

/// At most this many error lines in a denial; kubectl shows the whole message.
const MAX_LINES: usize = 40;

/// Why a body is not a review this endpoint can answer (HTTP 400, the message is the reason).
#[derive(Debug, thiserror::Error)]
pub enum PolicyReviewError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("a {0} request without request.object")]
    NoObject(&'static str),
    #[error("request.object is not a ConfigMap: {0}")]
    NotAConfigMap(#[source] serde_json::Error),
}

/// `request` of a review sent to `/validate-policy`; the object is decoded as a ConfigMap
/// only once it is known to be one.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn {
    uid: String,
    kind: KindIn,
    #[serde(default)]
    sub_resource: Option<String>,
    operation: Operation,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    object: Option<Value>,
}

/// The answer to one review, with what the log line needs.
#[derive(Debug)]
pub struct PolicyVerdict {
    pub answer: Answer,
    pub namespace: String,
    /// The ConfigMap's name, or a short description of what passed through.
    pub name: String,
    /// Names of the policies in the ConfigMap (when it was checked).
    pub policies: Vec<String>,
    pub errors: usize,
}

/// Decodes and answers one review. `current` is the set in force, to warn about policy
/// names that another ConfigMap defines too.
pub fn review(body: &[u8], current: &PolicySet) -> Result<PolicyVerdict, PolicyReviewError> {
    let req = Envelope::<RequestIn>::parse(text(body)?)?.into_request()?;
    let pass = |what: String| PolicyVerdict {
        answer: Answer::allow(req.uid.as_str()),
        namespace: req.namespace.clone().unwrap_or_default(),
        name: what,
        policies: Vec::new(),
        errors: 0,
    };
    let is_configmap = req.kind.is_core_v1("ConfigMap") && req.sub_resource.is_none();
    let operation = match req.operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        // Deleting a policy ConfigMap removes its policies; nothing to check.
        Operation::Delete | Operation::Connect => {
            return Ok(pass(format!("{} {:?}", req.kind.kind, req.operation)))
        }
    };
    if !is_configmap {
        return Ok(pass(format!("{} {operation}", req.kind.kind)));
    }
    let object = req
        .object
        .clone()
        .ok_or(PolicyReviewError::NoObject(operation))?;
    let cm: ConfigMap = serde_json::from_value(object).map_err(PolicyReviewError::NotAConfigMap)?;
    let namespace = req
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| cm.metadata.namespace.clone())
        .unwrap_or_default();
    let name = if req.name.is_empty() {
        cm.metadata.name.clone().unwrap_or_default()
    } else {
        req.name.clone()
    };
    if !has_policy_label(&cm) {
        // The label was removed (the webhook is called when either version matches):
        // the watcher drops its policies, nothing to check.
        return Ok(pass(name));
    }
    let checked = check(&cm, &namespace, &name, current);
    let mut answer = Answer::allow(req.uid.as_str());
    answer.warnings = warnings::fit(checked.warnings, warnings::FOR_A_POLICY_CONFIGMAP);
    if !checked.errors.is_empty() {
        answer.deny(
            403,
            "Forbidden",
            denial_message(&namespace, &name, &checked.errors),
        );
    }
    Ok(PolicyVerdict {
        answer,
        namespace,
        name,
        policies: checked.policies,
        errors: checked.errors.len(),
    })
}

/// What checking one ConfigMap found.
#[derive(Debug, Default)]
pub struct Checked {
    pub policies: Vec<String>,
    pub errors: Vec<PolicyError>,
    pub warnings: Vec<String>,
}

/// Checks every policy key of a ConfigMap as the watcher would load it.
pub fn check(cm: &ConfigMap, namespace: &str, name: &str, current: &PolicySet) -> Checked {
    let mut out = Checked::default();
    // name -> origin of its first definition in this ConfigMap.
    let mut here: BTreeMap<String, String> = BTreeMap::new();
    for (key, text) in cm.data.iter().flatten() {
        if !is_policy_key(key) {
            out.warnings.push(format!(
                "key {key:?} is ignored: only keys ending in .yaml or .yml hold policies"
            ));
            continue;
        }
        // Messages name the key only: the ConfigMap is the one being applied.
        match parse_documents(&PolicySource(key.clone()), text) {
            Ok(policies) => {
                for p in policies {
                    if let Some(first) = here.get(&p.name) {
                        out.warnings.push(format!(
                            "policy {:?} is defined twice in this ConfigMap ({first} and {}); only one is used",
                            p.name, p.origin
                        ));
                    } else {
                        here.insert(p.name.clone(), p.origin.clone());
                    }
                    out.policies.push(p.name);
                }
            }
            Err(errors) => out.errors.extend(errors),
        }
    }
    for key in cm.binary_data.iter().flat_map(|b| b.keys()) {
        if is_policy_key(key) {
            out.warnings.push(format!(
                "binaryData key {key:?} is ignored: put policies under data"
            ));
        }
    }
    // The origin the watcher will give these policies, to compare as PolicySet::new does.
    let ours = origin_prefix(namespace, name);
    for (policy, origin) in &here {
        let full = format!("{ours}{origin}");
        for other in current
            .policies()
            .iter()
            .filter(|p| &p.name == policy && !p.origin.starts_with(&ours))
        {
            // Same rule as PolicySet::new: the alphabetically first origin wins.
            let verdict = if full.as_str() < other.origin.as_str() {
                "this definition will be used"
            } else {
                "that one stays in use and this one will be ignored"
            };
            out.warnings.push(format!(
                "policy {policy:?} is also defined in {}; {verdict}",
                other.origin
            ));
        }
    }
    // Labelled, but nothing to load: most likely a key named without .yaml.
    if out.policies.is_empty() && out.errors.is_empty() {
        out.warnings.push(format!(
            "no policy in this ConfigMap: it has the {POLICY_LABEL} label but no .yaml/.yml key with a SparkPodPolicy"
        ));
    }
    out
}

fn denial_message(namespace: &str, name: &str, errors: &[PolicyError]) -> String {
    let mut lines: Vec<String> = errors
        .iter()
        .take(MAX_LINES)
        .map(|e| format!("{}: {}: {}", e.origin, e.path, e.message))
        .collect();
    if errors.len() > MAX_LINES {
        lines.push(format!("… and {} more", errors.len() - MAX_LINES));
    }
    format!(
        "spark-admission: configmap {namespace}/{name} has {} policy error(s); fix them and apply again (`spark-admission check-policies` checks files before they go in):\n{}",
        errors.len(),
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> String {
        match review(body.as_bytes(), &PolicySet::default()) {
            Ok(v) => panic!("{body}: answered {:?}", v.answer),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_envelope_is_checked_as_for_pod_reviews() {
        assert!(refused("{").starts_with("body is not JSON"));
        assert!(refused("[1]").starts_with("body is not an AdmissionReview"));
        assert_eq!(
            refused(r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}"#),
            r#"expected apiVersion admission.k8s.io/v1 and kind AdmissionReview, got apiVersion "admission.k8s.io/v1beta1" and kind "AdmissionReview""#
        );
        assert_eq!(
            refused(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#),
            "the AdmissionReview has no request"
        );
        assert_eq!(
            refused(
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}"#
            ),
            "the AdmissionReview has no request"
        );
        // The same envelope errors as /mutate and /validate give.
        let pod_review = crate::admission::review::decode(
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        );
        assert_eq!(
            pod_review.map(|_| ()).map_err(|e| e.to_string()),
            Err("the AdmissionReview has no request".to_owned())
        );
    }

    #[test]
    fn invalid_utf8_is_refused_even_in_a_field_nobody_reads() {
        let mut body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","ignored":"x","request":{"uid":"u","operation":"DELETE"}}"#.to_vec();
        let at = body.iter().position(|b| *b == b'x').unwrap();
        body[at] = 0xff;
        let err = review(&body, &PolicySet::default()).map(|v| v.answer.allowed);
        assert!(
            matches!(
                err,
                Err(PolicyReviewError::Envelope(EnvelopeError::NotUtf8(_)))
            ),
            "{err:?}"
        );
    }
}
