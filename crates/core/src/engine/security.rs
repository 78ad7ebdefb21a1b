//! Security contexts, pod-level and Spark-container-level: merged field by field, so a
//! policy adding `runAsNonRoot` keeps the `fsGroup` the pod already has.

use k8s_openapi::api::core::v1::PodSpec;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use super::context::{json, Ctx};
use crate::policy::model::PodPatch;

pub(crate) fn apply_pod(ctx: &mut Ctx<'_>, spec: &mut PodSpec, patch: &PodPatch) {
    if let Some(want) = &patch.pod_security_context {
        merge_fields(ctx, None, &mut spec.security_context, want);
    }
}

pub(crate) fn apply_container(
    ctx: &mut Ctx<'_>,
    spec: &mut PodSpec,
    patch: &PodPatch,
    spark: usize,
) {
    if let Some(want) = &patch.security_context {
        let Some(c) = spec.containers.get_mut(spark) else {
            return;
        };
        merge_fields(ctx, Some(&c.name), &mut c.security_context, want);
    }
}

/// Sets each top-level field of `want` with the usual scalar rule: the pod's security
/// context (`container` None) or that container's.
fn merge_fields<T: Serialize + DeserializeOwned + PartialEq>(
    ctx: &mut Ctx<'_>,
    container: Option<&str>,
    current: &mut Option<T>,
    want: &T,
) {
    let Ok(Value::Object(wanted)) = serde_json::to_value(want) else {
        return;
    };
    let mut merged = match current.as_ref().map(serde_json::to_value) {
        Some(Ok(Value::Object(m))) => m,
        _ => Map::new(),
    };
    let mut changed = false;
    for (k, v) in wanted {
        if v.is_null() {
            continue;
        }
        // The field's text is written only when a change is described or warned about.
        let shown = || match container {
            Some(name) => format!("containers[{name}].securityContext.{k}"),
            None => format!("securityContext.{k}"),
        };
        let decided = match container {
            Some(name) => {
                let claim = ["securityContext", "container", name, k.as_str()];
                ctx.decide(claim, shown, merged.get(&k), &v, json)
            }
            None => {
                let claim = ["securityContext", "pod", k.as_str()];
                ctx.decide(claim, shown, merged.get(&k), &v, json)
            }
        };
        if decided {
            merged.insert(k, v);
            changed = true;
        }
    }
    if changed {
        if let Ok(v) = serde_json::from_value(Value::Object(merged)) {
            *current = Some(v);
        }
    }
}
