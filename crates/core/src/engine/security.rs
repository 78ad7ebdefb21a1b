//! Security contexts, pod-level and Spark-container-level: merged field by field, so a
//! policy adding `runAsNonRoot` keeps the `fsGroup` the pod already has.

use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, SecurityContext};

use super::context::{json, Ctx};
use crate::policy::model::PodPatch;

/// Decides each field `want` sets, in the order of their JSON names (the order the
/// changes are described in), with the usual scalar rule; returns whether any was written.
/// The destructuring names every field of the type, so a field added by a new k8s-openapi
/// fails to compile here instead of being silently left out of the merge.
macro_rules! merge {
    ($ctx:expr, $claim:expr, $shown:expr, $cur:expr, $want:expr,
     $ty:ident [$($field:ident $key:literal),* $(,)?]) => {{
        let (ctx, cur, want): (&mut Ctx<'_>, &mut $ty, &$ty) = ($ctx, $cur, $want);
        let $ty { $($field: _),* } = want;
        let mut changed = false;
        $(
            if let Some(w) = &want.$field {
                if ctx.decide($claim($key), || $shown($key), cur.$field.as_ref(), w, json) {
                    cur.$field = Some(w.clone());
                    changed = true;
                }
            }
        )*
        changed
    }};
}

pub(crate) fn apply_pod(ctx: &mut Ctx<'_>, spec: &mut PodSpec, patch: &PodPatch) {
    let Some(want) = &patch.pod_security_context else {
        return;
    };
    let claim = |k: &'static str| ["securityContext", "pod", k];
    let shown = |k: &str| format!("securityContext.{k}");
    merge_into(&mut spec.security_context, |cur| {
        merge!(ctx, claim, shown, cur, want, PodSecurityContext [
            app_armor_profile "appArmorProfile",
            fs_group "fsGroup",
            fs_group_change_policy "fsGroupChangePolicy",
            run_as_group "runAsGroup",
            run_as_non_root "runAsNonRoot",
            run_as_user "runAsUser",
            se_linux_change_policy "seLinuxChangePolicy",
            se_linux_options "seLinuxOptions",
            seccomp_profile "seccompProfile",
            supplemental_groups "supplementalGroups",
            supplemental_groups_policy "supplementalGroupsPolicy",
            sysctls "sysctls",
            windows_options "windowsOptions",
        ])
    });
}

pub(crate) fn apply_container(
    ctx: &mut Ctx<'_>,
    spec: &mut PodSpec,
    patch: &PodPatch,
    spark: usize,
) {
    let Some(want) = &patch.security_context else {
        return;
    };
    let Some(c) = spec.containers.get_mut(spark) else {
        return;
    };
    let name = c.name.as_str();
    let claim = |k: &'static str| ["securityContext", "container", name, k];
    let shown = |k: &str| format!("containers[{name}].securityContext.{k}");
    merge_into(&mut c.security_context, |cur| {
        merge!(ctx, claim, shown, cur, want, SecurityContext [
            allow_privilege_escalation "allowPrivilegeEscalation",
            app_armor_profile "appArmorProfile",
            capabilities "capabilities",
            privileged "privileged",
            proc_mount "procMount",
            read_only_root_filesystem "readOnlyRootFilesystem",
            run_as_group "runAsGroup",
            run_as_non_root "runAsNonRoot",
            run_as_user "runAsUser",
            se_linux_options "seLinuxOptions",
            seccomp_profile "seccompProfile",
            windows_options "windowsOptions",
        ])
    });
}

/// Runs `merge` on the context in `slot` (an empty one when there is none), which returns
/// whether it wrote anything; a context made for it and left empty is taken away again.
fn merge_into<T: Default>(slot: &mut Option<T>, merge: impl FnOnce(&mut T) -> bool) {
    let was_set = slot.is_some();
    let changed = merge(slot.get_or_insert_with(T::default));
    if !changed && !was_set {
        *slot = None;
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Container;
    use serde_json::{json, Map, Value};

    use super::*;
    use crate::engine::Deadline;

    /// Every field of both contexts, with a value (the typed merge names each field; this
    /// list is its oracle's input).
    fn full_pod() -> Value {
        json!({
            "appArmorProfile": {"type": "RuntimeDefault"}, "fsGroup": 185,
            "fsGroupChangePolicy": "OnRootMismatch", "runAsGroup": 185, "runAsNonRoot": true,
            "runAsUser": 185, "seLinuxChangePolicy": "MountOption",
            "seLinuxOptions": {"level": "s0:c1"}, "seccompProfile": {"type": "RuntimeDefault"},
            "supplementalGroups": [1000], "supplementalGroupsPolicy": "Strict",
            "sysctls": [{"name": "net.core.somaxconn", "value": "1024"}],
            "windowsOptions": {"runAsUserName": "spark"},
        })
    }

    fn full_container() -> Value {
        json!({
            "allowPrivilegeEscalation": false, "appArmorProfile": {"type": "RuntimeDefault"},
            "capabilities": {"drop": ["ALL"]}, "privileged": false, "procMount": "Default",
            "readOnlyRootFilesystem": true, "runAsGroup": 185, "runAsNonRoot": true,
            "runAsUser": 185, "seLinuxOptions": {"level": "s0:c1"},
            "seccompProfile": {"type": "RuntimeDefault"},
            "windowsOptions": {"runAsUserName": "spark"},
        })
    }

    /// Each field's value changed, so that a field both sides have differs.
    fn other(v: &Value) -> Value {
        match v {
            Value::Bool(b) => Value::Bool(!b),
            Value::Number(n) => json!(n.as_i64().unwrap_or_default() + 1),
            Value::String(s) => json!(format!("{s}-other")),
            Value::Array(a) => Value::Array(a.iter().map(other).collect()),
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), other(v))).collect())
            }
            Value::Null => Value::Null,
        }
    }

    /// The rule on JSON objects, as the step was first written: each field the policy
    /// sets is written when the pod lacks it, or when it differs and `overwrite` is on.
    fn json_merge(
        current: Option<&Value>,
        want: &Value,
        overwrite: bool,
    ) -> (Option<Value>, Vec<String>) {
        let mut merged = current
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut set = Vec::new();
        for (k, v) in want.as_object().into_iter().flatten() {
            let write = match merged.get(k) {
                None => true,
                Some(c) => c != v && overwrite,
            };
            if write {
                merged.insert(k.clone(), v.clone());
                set.push(k.clone());
            }
        }
        let out = (current.is_some() || !set.is_empty()).then_some(Value::Object(merged));
        (out, set)
    }

    /// Subsets of the fields by a bit mask over their (sorted) names.
    fn subset(full: &Value, mask: u32, change: bool) -> Value {
        let m: Map<String, Value> = full
            .as_object()
            .into_iter()
            .flatten()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, (k, v))| (k.clone(), if change { other(v) } else { v.clone() }))
            .collect();
        Value::Object(m)
    }

    fn run(
        container: bool,
        current: Option<&Value>,
        want: &Value,
        overwrite: bool,
    ) -> (Option<Value>, Vec<String>) {
        let mut ctx = Ctx::new(true, Deadline::none());
        ctx.policy = "p";
        ctx.overwrite = overwrite;
        let mut spec = PodSpec {
            containers: vec![Container {
                name: "spark-kubernetes-driver".to_owned(),
                ..Container::default()
            }],
            ..PodSpec::default()
        };
        let mut patch = PodPatch::default();
        let got = if container {
            spec.containers[0].security_context =
                current.map(|c| serde_json::from_value(c.clone()).unwrap());
            patch.security_context = Some(serde_json::from_value(want.clone()).unwrap());
            apply_container(&mut ctx, &mut spec, &patch, 0);
            spec.containers[0]
                .security_context
                .as_ref()
                .map(|c| serde_json::to_value(c).unwrap())
        } else {
            spec.security_context = current.map(|c| serde_json::from_value(c.clone()).unwrap());
            patch.pod_security_context = Some(serde_json::from_value(want.clone()).unwrap());
            apply_pod(&mut ctx, &mut spec, &patch);
            spec.security_context
                .as_ref()
                .map(|c| serde_json::to_value(c).unwrap())
        };
        let described = ctx
            .changes
            .iter()
            .filter(|c| c.applied)
            .map(|c| c.field.rsplit('.').next().unwrap_or_default().to_owned())
            .collect();
        (got, described)
    }

    /// Every field of both contexts, over many subsets on each side (the pod without a
    /// context, with the same values, with other values), with and without `overwrite`:
    /// the typed merge writes what the JSON merge wrote, and describes the fields it set
    /// in the order of their names.
    #[test]
    fn the_typed_merge_is_the_json_merge_for_every_field() {
        for (container, full) in [(false, full_pod()), (true, full_container())] {
            let n = full.as_object().map_or(0, Map::len) as u32;
            assert!(n >= 12, "{n} fields");
            // Each field alone, all of them, and a spread of mixed subsets.
            let masks: Vec<u32> = (0..n)
                .map(|i| 1 << i)
                .chain([(1 << n) - 1, 0])
                .chain((0..40u32).map(|i| i.wrapping_mul(2_654_435_761) % (1 << n)))
                .collect();
            for &w in &masks {
                let want = subset(&full, w, false);
                for &c in &masks {
                    for current in [
                        None,
                        Some(subset(&full, c, false)),
                        Some(subset(&full, c, true)),
                    ] {
                        for overwrite in [false, true] {
                            let expected = json_merge(current.as_ref(), &want, overwrite);
                            let got = run(container, current.as_ref(), &want, overwrite);
                            assert_eq!(got, expected, "container {container}, want {want}, current {current:?}, overwrite {overwrite}");
                        }
                    }
                }
            }
        }
    }
}
