//! The `response` of an AdmissionReview, and the body that carries it.
//!
//! Our own type rather than kube's: kube-core 5.0 serialises `patch` as an array of numbers
//! (kube-rs #1781) while the API server wants the JSON Patch as a base64 string.

use std::collections::BTreeMap;

use crate::engine::PlannedPatch;
use serde::Serialize;

/// `response.status`: set when the request is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub code: u16,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The `response` of an AdmissionReview, as the API server reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// The JSON Patch as JSON; written as `patchType` and base64 `patch` by
    /// [`Answer::to_review_json`].
    #[serde(skip)]
    patch: Option<Vec<u8>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

/// Opens the body (`review::API_VERSION` and `review::KIND`, spelled out: a test checks
/// them); the response object follows.
const HEAD: &[u8] =
    b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"response\":";
/// Written before the base64 patch, inside the response object.
const PATCH_FIELDS: &[u8] = b",\"patchType\":\"JSONPatch\",\"patch\":\"";

impl Answer {
    pub fn allow(uid: impl Into<String>) -> Self {
        Self {
            uid: uid.into(),
            allowed: true,
            ..Self::default()
        }
    }

    /// Attaches a patch; an empty patch leaves the answer without patch fields.
    pub fn set_patch(&mut self, patch: &PlannedPatch) -> Result<(), serde_json::Error> {
        if patch.is_empty() {
            return Ok(());
        }
        let mut json = Vec::with_capacity(4096);
        patch.write_json(&mut json)?;
        self.patch = Some(json);
        Ok(())
    }

    /// Whether a (non-empty) patch is attached.
    pub fn has_patch(&self) -> bool {
        self.patch.is_some()
    }

    /// Refuses the request with an HTTP-like code and a message for the submitter. A patch
    /// attached before is dropped: the pod is not created, so it would mean nothing.
    pub fn deny(&mut self, code: u16, reason: &str, message: String) {
        self.allowed = false;
        self.patch = None;
        self.status = Some(Status {
            code,
            message,
            reason: Some(reason.to_owned()),
        });
    }

    /// Room for the whole body, so that it is written without growing: the warnings and
    /// audit annotations of a review that many policies applied are kilobytes, and
    /// growing past a small guess copied the body once or twice (~14k instructions of a
    /// review, BENCHMARKS.md). Escapes can still make it longer; that only grows once.
    fn body_len_hint(&self) -> usize {
        // Quotes, colons and commas of each field, and the fixed field names.
        const FRAME: usize = 128;
        let status = self.status.as_ref().map_or(0, |s| {
            s.message.len() + s.reason.as_ref().map_or(0, String::len) + 48
        });
        let warnings: usize = self.warnings.iter().map(|w| w.len() + 3).sum();
        let annotations: usize = self
            .audit_annotations
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum();
        let patch = self
            .patch
            .as_ref()
            .map_or(0, |p| PATCH_FIELDS.len() + p.len().div_ceil(3) * 4 + 2);
        HEAD.len() + FRAME + self.uid.len() + status + warnings + annotations + patch
    }

    /// The full AdmissionReview body carrying this answer.
    ///
    /// serde writes every field but the patch; the patch is base64-encoded straight into
    /// the body after it. The base64 alphabet needs no JSON escaping, so the patch string
    /// (most of the body) is neither copied into a `String` first nor scanned for escapes.
    pub fn to_review_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(self.body_len_hint());
        out.extend_from_slice(HEAD);
        serde_json::to_writer(&mut out, self)?;
        if let Some(json) = &self.patch {
            // Reopen the response object serde closed: it always has `uid` and `allowed`,
            // so a comma continues it.
            if out.pop() != Some(b'}') {
                return Err(serde::ser::Error::custom(
                    "the response did not serialise as a JSON object",
                ));
            }
            out.extend_from_slice(PATCH_FIELDS);
            // SIMD base64 (instruction set chosen at run time): the scalar encoder was
            // ~40k instructions for a 5 KB patch.
            base64_simd::STANDARD.encode_append(json, &mut out);
            out.extend_from_slice(b"\"}");
        }
        out.push(b'}');
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::admission::review::{API_VERSION, KIND};
    use serde_json::{json, Value};

    fn patch() -> json_patch::Patch {
        serde_json::from_value(json!([
            {"op": "add", "path": "/metadata/labels/team", "value": "data \"quoted\" é"},
            {"op": "replace", "path": "/spec/priority", "value": 1000}
        ]))
        .unwrap()
    }

    fn planned(p: &json_patch::Patch) -> PlannedPatch {
        PlannedPatch::try_from(p).unwrap()
    }

    fn body(answer: &Answer) -> Value {
        serde_json::from_slice(&answer.to_review_json().unwrap()).unwrap()
    }

    #[test]
    fn the_body_is_the_review_with_a_base64_patch_the_api_server_decodes() {
        let mut answer = Answer::allow("uid-\"1\"");
        answer.set_patch(&planned(&patch())).unwrap();
        answer.warnings.push("careful: \u{1F600}".to_owned());
        answer
            .audit_annotations
            .insert("applied-policies".to_owned(), "a@1,b@2".to_owned());
        let body = body(&answer);
        assert_eq!(body["apiVersion"], API_VERSION);
        assert_eq!(body["kind"], KIND);
        let response = &body["response"];
        assert_eq!(response["uid"], "uid-\"1\"");
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        assert_eq!(response["warnings"], json!(["careful: \u{1F600}"]));
        assert_eq!(response["auditAnnotations"]["applied-policies"], "a@1,b@2");
        let encoded = response["patch"].as_str().unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let decoded: json_patch::Patch = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(decoded, patch());
        assert_eq!(response.as_object().unwrap().len(), 6, "{response}");
    }

    #[test]
    fn patch_lengths_of_every_remainder_encode_with_their_padding() {
        // 3n, 3n+1 and 3n+2 bytes of JSON: the buffer is sized for the padded length.
        for extra in ["", "x", "xy"] {
            let p: json_patch::Patch = serde_json::from_value(
                json!([{"op": "add", "path": "/metadata/labels/a", "value": extra}]),
            )
            .unwrap();
            let mut answer = Answer::allow("u");
            answer.set_patch(&planned(&p)).unwrap();
            let encoded = body(&answer)["response"]["patch"]
                .as_str()
                .unwrap()
                .to_owned();
            let json = serde_json::to_vec(&p).unwrap();
            assert_eq!(
                encoded,
                base64::engine::general_purpose::STANDARD.encode(&json)
            );
        }
    }

    #[test]
    fn the_room_made_for_a_body_holds_it_without_escapes() {
        // Plain text: the hint is the most the body can take without growing.
        let mut answer = Answer::allow("0a1b2c3d-uid");
        let patch = json_patch::Patch(
            (0..40)
                .map(|i| {
                    serde_json::from_value(json!(
                        {"op": "add", "path": format!("/metadata/labels/l{i}"), "value": "v".repeat(i)}
                    ))
                    .unwrap()
                })
                .collect(),
        );
        answer.set_patch(&planned(&patch)).unwrap();
        for i in 0..30 {
            answer
                .warnings
                .push(format!("policy p{i}: set cpu to {}", "9".repeat(i)));
        }
        answer
            .audit_annotations
            .insert("applied-policies".to_owned(), "p@1,".repeat(50));
        let hint = answer.body_len_hint();
        let written = answer.to_review_json().unwrap().len();
        assert!(written <= hint, "{written} > {hint}");
        answer.deny(403, "Forbidden", "denied: ".repeat(40));
        let written = answer.to_review_json().unwrap().len();
        assert!(written <= answer.body_len_hint(), "{written}");
    }

    #[test]
    fn no_patch_and_a_refusal_carry_no_patch_fields() {
        let mut answer = Answer::allow("u");
        answer.set_patch(&PlannedPatch::default()).unwrap();
        assert!(!answer.has_patch());
        let response = body(&answer)["response"].clone();
        assert!(response.get("patch").is_none() && response.get("patchType").is_none());

        answer.set_patch(&planned(&patch())).unwrap();
        answer.deny(403, "Forbidden", "no".to_owned());
        let response = body(&answer)["response"].clone();
        assert!(response.get("patch").is_none(), "{response}");
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 403);
        assert_eq!(response["status"]["reason"], "Forbidden");
    }
}
