//! Resources of the Spark container: `defaults` fill gaps, `force` replaces. A value that
//! would put a request above its limit is not applied: the API server would reject the pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::Ctx;
use crate::policy::model::{PodPatch, ResourceValues};
use crate::quantity;

pub(crate) fn apply(ctx: &mut Ctx<'_>, spec: &mut PodSpec, patch: &PodPatch, spark: usize) {
    let Some(rp) = &patch.resources else { return };
    let container = &mut spec.containers[spark];
    let before = container.resources.clone().unwrap_or_default();
    let mut res = before.clone();
    let name = container.name.clone();
    // `reconcile` names the policies that set a resource from these records.
    ctx.describe = true;
    if let Some(force) = &rp.force {
        set_all(ctx, &name, &mut res, force, true);
    }
    if let Some(defaults) = &rp.defaults {
        set_all(ctx, &name, &mut res, defaults, false);
    }
    ctx.describe = false;
    if res != before {
        container.resources = Some(res);
    }
}

fn set_all(
    ctx: &mut Ctx<'_>,
    container: &str,
    res: &mut ResourceRequirements,
    values: &ResourceValues,
    force: bool,
) {
    for (kind, wanted) in [("requests", &values.requests), ("limits", &values.limits)] {
        for (resource, q) in wanted {
            let map = match kind {
                "requests" => &mut res.requests,
                _ => &mut res.limits,
            };
            let current = map.as_ref().and_then(|m| m.get(resource));
            let key = format!("resources/{container}/{kind}/{resource}");
            let shown = || format!("containers[{container}].resources.{kind}[{resource}]");
            if !force && current.is_some() {
                // A default never competes with a value that is already there, but it still
                // decides the field: otherwise a lower-priority `force` would win only on the
                // second pass, after the default had written it.
                let _ = ctx.claim(key);
                continue;
            }
            if ctx.decide_with(key, shown, current, q, force, |q| format!("\"{}\"", q.0)) {
                map.get_or_insert_with(BTreeMap::new)
                    .insert(resource.clone(), q.clone());
            }
        }
    }
}

/// After every policy: a resource whose request now exceeds its limit goes back to what
/// the pod had (the API server would reject the pod). Done once over the finished plan, so
/// the outcome does not depend on which section set which half.
pub(crate) fn reconcile(ctx: &mut Ctx<'_>, original: &PodSpec, planned: &mut PodSpec) {
    for c in planned.containers.iter_mut() {
        let Some(res) = c.resources.as_mut() else {
            continue;
        };
        let (Some(requests), Some(limits)) = (res.requests.clone(), res.limits.clone()) else {
            continue;
        };
        let before = original
            .containers
            .iter()
            .find(|o| o.name == c.name)
            .and_then(|o| o.resources.clone())
            .unwrap_or_default();
        for (resource, req) in &requests {
            let Some(lim) = limits.get(resource) else {
                continue;
            };
            let (Some(r), Some(l)) = (quantity::parse(&req.0), quantity::parse(&lim.0)) else {
                continue;
            };
            if r <= l {
                continue;
            }
            // The values go back to the pod's: the policies that set them did not change it.
            let prefix = format!("containers[{}].resources", c.name);
            let suffix = format!("[{resource}]");
            let by: Vec<String> = ctx
                .undo(|field| field.starts_with(&prefix) && field.ends_with(&suffix))
                .iter()
                .map(|p| format!("\"{p}\""))
                .collect();
            ctx.warn(format!(
                "{resource} of container \"{}\" was left as the pod had it: the values from policy {} would make the request ({}) larger than the limit ({})",
                c.name,
                by.join(", "),
                req.0,
                lim.0
            ));
            restore(&mut res.requests, before.requests.as_ref(), resource);
            restore(&mut res.limits, before.limits.as_ref(), resource);
        }
    }
}

fn restore(
    map: &mut Option<BTreeMap<String, Quantity>>,
    before: Option<&BTreeMap<String, Quantity>>,
    resource: &str,
) {
    match before.and_then(|b| b.get(resource)) {
        Some(v) => {
            map.get_or_insert_with(BTreeMap::new)
                .insert(resource.to_owned(), v.clone());
        }
        None => {
            if let Some(m) = map.as_mut() {
                m.remove(resource);
                if m.is_empty() && before.is_none() {
                    *map = None;
                }
            }
        }
    }
}
