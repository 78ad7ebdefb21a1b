//! The JSON Patch: the difference between the pod as received and the planned pod.

use json_patch::{Patch, PatchOperation};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

/// Both sides are serialised from the same typed model, so fields the model does not know
/// and formatting of the original never show up as differences.
pub(crate) fn diff(original: &Pod, planned: &Pod) -> Patch {
    if original == planned {
        return Patch(Vec::new());
    }
    let (Ok(before), Ok(after)) = (
        serde_json::to_value(original),
        serde_json::to_value(planned),
    ) else {
        return Patch(Vec::new());
    };
    let mut patch = json_patch::diff(&before, &after);
    // Containers created on the way but left empty ({} or []) carry no meaning: drop them.
    patch.0.retain(|op| match op {
        PatchOperation::Add(add) => !is_empty_container(&add.value),
        _ => true,
    });
    patch
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}
