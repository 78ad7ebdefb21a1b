//! Init containers and sidecars added by policies, merged by name.

use std::borrow::Cow;

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
        merge_container(ctx, "initContainers", list, Cow::Borrowed(c));
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
        merge_container(ctx, "containers", &mut spec.containers, Cow::Borrowed(c));
    }
}

/// Appends the container, or replaces a different one of the same name when the policy
/// may overwrite. Appending keeps the Spark container where Spark put it. A container
/// made for this pod comes owned and is moved in; a policy's is cloned.
pub(crate) fn merge_container(
    ctx: &mut Ctx<'_>,
    field: &str,
    list: &mut Vec<Container>,
    c: Cow<'_, Container>,
) {
    let same = list.iter().position(|e| e.name == c.name);
    let key = [field, c.name.as_str()];
    if same
        .and_then(|i| list.get(i))
        .is_some_and(|e| is_ours_after_admission(ctx, e, &c))
    {
        // Our own container, back on the API server's reinvocation: nothing to do, and
        // nothing to tell the submitter, who did not write it.
        let _ = ctx.claim(key);
        return;
    }
    let shown = || format!("{field}[{}]", c.name);
    if ctx.decide(key, shown, same.and_then(|i| list.get(i)), &*c, |c| {
        json(&c.image)
    }) {
        match same.and_then(|i| list.get_mut(i)) {
            Some(e) => *e = c.into_owned(),
            None => list.push(c.into_owned()),
        }
    }
}

/// Whether `existing` is `wanted` as this webhook added it, after the API server and the
/// later steps of the chain had their turn: defaulted `imagePullPolicy` and
/// `terminationMessagePath`/`Policy`, the service account token mount, LimitRange
/// defaults for resources it did not set, mounts added for every container, and the
/// policies' image rewrites. Anything the submitter could have written differently (a
/// command, an argument, a mount of ours missing, another image) makes it theirs.
fn is_ours_after_admission(ctx: &Ctx<'_>, existing: &Container, wanted: &Container) -> bool {
    if existing == wanted {
        return true;
    }
    let mut e = existing.clone();
    if wanted.image_pull_policy.is_none() {
        e.image_pull_policy = None;
    }
    if wanted.termination_message_path.is_none() {
        e.termination_message_path = None;
    }
    if wanted.termination_message_policy.is_none() {
        e.termination_message_policy = None;
    }
    if wanted.resources.is_none() {
        e.resources = None;
    }
    let mounts = wanted.volume_mounts.as_deref().unwrap_or_default();
    let has_all = mounts
        .iter()
        .all(|m| e.volume_mounts.iter().flatten().any(|x| x == m));
    if has_all {
        e.volume_mounts = wanted.volume_mounts.clone();
    }
    if let (Some(have), Some(want)) = (e.image.as_deref(), wanted.image.as_deref()) {
        let rewritten = ctx.image_rewrites.iter().any(|(from, to)| {
            want.strip_prefix(from)
                .is_some_and(|rest| have.strip_prefix(to) == Some(rest))
        });
        if rewritten {
            e.image = wanted.image.clone();
        }
    }
    e == *wanted
}
