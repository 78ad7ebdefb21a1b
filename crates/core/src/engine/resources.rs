//! Resources of the Spark container: `defaults` fill gaps, `force` replaces. A value that
//! would put a request above its limit is not applied: the API server would reject the pod.

use std::collections::{BTreeMap, HashMap};

use foldhash::fast::RandomState;
use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::context::resource_field;
use super::Ctx;
use crate::policy::model::{PodPatch, ResourceValues};
use crate::quantity;

pub(crate) fn apply(ctx: &mut Ctx<'_>, spec: &mut PodSpec, patch: &PodPatch, spark: usize) {
    let Some(rp) = &patch.resources else { return };
    let Some(container) = spec.containers.get_mut(spark) else {
        return;
    };
    // Edited in place, not cloned: a pod without resources gets them only when a value
    // was set (an empty `resources: {}` would be a change to the pod).
    let had = container.resources.is_some();
    let mut res = container.resources.take().unwrap_or_default();
    if let Some(force) = &rp.force {
        set_all(ctx, &container.name, &mut res, force, true);
    }
    if let Some(defaults) = &rp.defaults {
        set_all(ctx, &container.name, &mut res, defaults, false);
    }
    if had || res != ResourceRequirements::default() {
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
            let key = ["resources", container, kind, resource.as_str()];
            let shown = || resource_field(container, kind, resource);
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
                // `reconcile` takes it back if it puts a request above its limit.
                ctx.set_resource(container, kind, resource);
            }
        }
    }
}

/// After every policy: a resource whose request now exceeds its limit goes back to what
/// the pod had (the API server would reject the pod). Done once over the finished plan, so
/// the outcome does not depend on which section set which half. The pod's containers are
/// looked up by name through an index (the first of a name, as a search would find).
pub(crate) fn reconcile(ctx: &mut Ctx<'_>, original: &PodSpec, planned: &mut PodSpec) {
    let mut by_name: HashMap<&str, &Container, RandomState> =
        HashMap::with_capacity_and_hasher(original.containers.len(), RandomState::default());
    for o in &original.containers {
        by_name.entry(o.name.as_str()).or_insert(o);
    }
    for c in planned.containers.iter_mut() {
        if ctx.watch.tick() {
            return;
        }
        let Some(res) = c.resources.as_mut() else {
            continue;
        };
        // Found first without copying the maps: most pods have no request above its limit.
        let over: Vec<(String, String, String)> = match (&res.requests, &res.limits) {
            (Some(requests), Some(limits)) => requests
                .iter()
                .filter_map(|(resource, req)| {
                    let lim = limits.get(resource)?;
                    let (r, l) = (quantity::parse(&req.0)?, quantity::parse(&lim.0)?);
                    (r > l).then(|| (resource.clone(), req.0.clone(), lim.0.clone()))
                })
                .collect(),
            _ => continue,
        };
        let before = by_name
            .get(c.name.as_str())
            .and_then(|o| o.resources.as_ref());
        for (resource, req, lim) in &over {
            // The values go back to the pod's: the policies that set them did not change it.
            let by: Vec<String> = ctx
                .undo(&c.name, resource)
                .iter()
                .map(|p| format!("\"{p}\""))
                .collect();
            ctx.warn(format!(
                "{resource} of container \"{}\" was left as the pod had it: the values from policy {} would make the request ({}) larger than the limit ({})",
                c.name,
                by.join(", "),
                req,
                lim
            ));
            restore(
                &mut res.requests,
                before.and_then(|b| b.requests.as_ref()),
                resource,
            );
            restore(
                &mut res.limits,
                before.and_then(|b| b.limits.as_ref()),
                resource,
            );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Deadline;
    use proptest::prelude::*;

    /// `reconcile` as it was before the index: each container's original found by a search.
    fn reconcile_by_search(ctx: &mut Ctx<'_>, original: &PodSpec, planned: &mut PodSpec) {
        let only = |name: &str| {
            let first = original.containers.iter().find(|o| o.name == name);
            PodSpec {
                containers: first.cloned().into_iter().collect(),
                ..PodSpec::default()
            }
        };
        // One container at a time against its searched-for original gives the search's
        // outcome through the function under test's own per-container rule.
        for c in planned.containers.iter_mut() {
            let one = only(&c.name);
            let mut alone = PodSpec {
                containers: vec![c.clone()],
                ..PodSpec::default()
            };
            reconcile(ctx, &one, &mut alone);
            *c = alone.containers.remove(0);
        }
    }

    fn values() -> impl Strategy<Value = Option<BTreeMap<String, Quantity>>> {
        prop::option::of(prop::collection::btree_map(
            prop::sample::select(&["cpu", "memory"][..]).prop_map(str::to_owned),
            prop::sample::select(&["1", "2", "500m", "3"][..]).prop_map(|q| Quantity(q.to_owned())),
            0..3,
        ))
    }

    fn container() -> impl Strategy<Value = Container> {
        (
            prop::sample::select(&["spark-kubernetes-driver", "side", "x"][..]),
            prop::option::of((values(), values())),
        )
            .prop_map(|(name, res)| Container {
                name: name.to_owned(),
                resources: res.map(|(requests, limits)| ResourceRequirements {
                    requests,
                    limits,
                    ..ResourceRequirements::default()
                }),
                ..Container::default()
            })
    }

    proptest! {
        /// The indexed lookup restores the same values and warns the same warnings, in the
        /// same order, as the search, duplicate container names included.
        #[test]
        fn indexed_lookup_equals_the_search(
            original in prop::collection::vec(container(), 0..6),
            planned in prop::collection::vec(container(), 0..6),
        ) {
            let original = PodSpec { containers: original, ..PodSpec::default() };
            let mut a = PodSpec { containers: planned.clone(), ..PodSpec::default() };
            let mut b = PodSpec { containers: planned, ..PodSpec::default() };
            let mut ca = Ctx::new(false, Deadline::none());
            let mut cb = Ctx::new(false, Deadline::none());
            reconcile(&mut ca, &original, &mut a);
            reconcile_by_search(&mut cb, &original, &mut b);
            prop_assert_eq!(a, b);
            prop_assert_eq!(ca.warnings, cb.warnings);
        }
    }

    #[test]
    fn a_pod_past_its_deadline_is_not_reconciled() {
        let c = Container {
            name: "c".to_owned(),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "cpu".to_owned(),
                    Quantity("2".to_owned()),
                )])),
                limits: Some(BTreeMap::from([(
                    "cpu".to_owned(),
                    Quantity("1".to_owned()),
                )])),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        };
        let original = PodSpec {
            containers: vec![c; 200],
            ..PodSpec::default()
        };
        let mut planned = original.clone();
        let past = std::time::Instant::now();
        let mut ctx = Ctx::new(false, Deadline::at(past));
        reconcile(&mut ctx, &original, &mut planned);
        assert!(ctx.warnings.is_empty(), "{:?}", ctx.warnings);
        let mut ctx = Ctx::new(false, Deadline::none());
        reconcile(&mut ctx, &original, &mut planned);
        // 200 containers, one warning: each is given once.
        assert_eq!(ctx.warnings.len(), 1, "{:?}", ctx.warnings);
    }
}
