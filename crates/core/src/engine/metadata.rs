//! Labels and annotations: merged by key; a key the pod already has keeps its value unless
//! the policy says `overwrite`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::context::{quoted, Ctx};
use super::APPLIED_ANNOTATION;
use crate::pinning::MISSING_POLICIES_ANNOTATION;
use crate::policy::model::PodPatch;

pub(crate) fn apply(ctx: &mut Ctx<'_>, pod: &mut Pod, patch: &PodPatch) {
    merge_map(ctx, "labels", &mut pod.metadata.labels, &patch.labels);
    merge_map(
        ctx,
        "annotations",
        &mut pod.metadata.annotations,
        &patch.annotations,
    );
}

/// Merges `wanted` into a string map field named `field` (labels, annotations, nodeSelector).
pub(crate) fn merge_map(
    ctx: &mut Ctx<'_>,
    field: &str,
    map: &mut Option<BTreeMap<String, String>>,
    wanted: &BTreeMap<String, String>,
) {
    for (k, v) in wanted {
        let key = [field, k.as_str()];
        let shown = || format!("{field}[{k}]");
        let current = map.as_ref().and_then(|m| m.get(k));
        if ctx.decide(key, shown, current, v, quoted) {
            map.get_or_insert_with(BTreeMap::new)
                .insert(k.clone(), v.clone());
        }
    }
}

/// The `name@hash` entries of the applied annotation the pod already has.
pub(crate) fn applied_tags(pod: &Pod) -> Vec<&str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(APPLIED_ANNOTATION))
        .map(|v| v.split(',').filter(|t| !t.is_empty()).collect())
        .unwrap_or_default()
}

/// Records which policies were applied; always ours to set.
pub(crate) fn record_applied(ctx: &mut Ctx<'_>, pod: &mut Pod, value: &str) {
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if annotations.get(APPLIED_ANNOTATION).map(String::as_str) != Some(value) {
        annotations.insert(APPLIED_ANNOTATION.to_owned(), value.to_owned());
        ctx.change(|| {
            (
                format!("annotations[{APPLIED_ANNOTATION}]"),
                format!("set to \"{value}\""),
            )
        });
    }
}

/// Names the pinned versions that could not be found; always ours to set.
pub(crate) fn record_missing(ctx: &mut Ctx<'_>, pod: &mut Pod, value: &str) {
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if annotations
        .get(MISSING_POLICIES_ANNOTATION)
        .map(String::as_str)
        != Some(value)
    {
        annotations.insert(MISSING_POLICIES_ANNOTATION.to_owned(), value.to_owned());
        ctx.change(|| {
            (
                format!("annotations[{MISSING_POLICIES_ANNOTATION}]"),
                format!("set to \"{value}\""),
            )
        });
    }
}
