//! Init containers and sidecars added by policies, merged by name.

use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::context::{json, Ctx};
use crate::policy::model::PodPatch;

pub(crate) fn apply(ctx: &mut Ctx<'_>, spec: &mut PodSpec, patch: &PodPatch, spark_name: &str) {
    for c in &patch.init_containers {
        // Container names are unique across init and regular containers.
        if spec.containers.iter().any(|e| e.name == c.name) {
            ctx.warn(format!(
                "policy \"{}\": init container \"{}\" was not added because a container has that name",
                ctx.policy, c.name
            ));
            continue;
        }
        let list = spec.init_containers.get_or_insert_with(Vec::new);
        merge_container(ctx, "initContainers", list, c);
    }
    for c in &patch.sidecars {
        if c.name == spark_name {
            ctx.warn(format!(
                "policy \"{}\": sidecar \"{}\" was not added because that is the Spark container's name",
                ctx.policy, c.name
            ));
            continue;
        }
        if spec
            .init_containers
            .iter()
            .flatten()
            .any(|i| i.name == c.name)
        {
            ctx.warn(format!(
                "policy \"{}\": sidecar \"{}\" was not added because an init container has that name",
                ctx.policy, c.name
            ));
            continue;
        }
        merge_container(ctx, "containers", &mut spec.containers, c);
    }
}

/// Appends the container, or replaces a different one of the same name when the policy
/// may overwrite. Appending keeps the Spark container where Spark put it.
pub(crate) fn merge_container(
    ctx: &mut Ctx<'_>,
    field: &str,
    list: &mut Vec<Container>,
    c: &Container,
) {
    let same = list.iter().position(|e| e.name == c.name);
    let key = format!("{field}/{}", c.name);
    let shown = || format!("{field}[{}]", c.name);
    if ctx.decide(key, shown, same.and_then(|i| list.get(i)), c, |c| {
        json(&c.image)
    }) {
        match same {
            Some(i) => list[i] = c.clone(),
            None => list.push(c.clone()),
        }
    }
}
