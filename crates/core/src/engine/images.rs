//! Images: pull secrets (by name), registry prefix rewrites and imagePullPolicy.

use k8s_openapi::api::core::v1::{LocalObjectReference, Pod, PodSpec};

use super::context::{quoted, Ctx};
use crate::policy::model::PodPatch;
use crate::policy::CompiledPolicy;
use crate::spark::SparkRole;

pub(crate) fn apply_pull_secrets(ctx: &mut Ctx<'_>, spec: &mut PodSpec, patch: &PodPatch) {
    for name in &patch.image_pull_secrets {
        let list = spec.image_pull_secrets.get_or_insert_with(Vec::new);
        if !list.iter().any(|s| &s.name == name) {
            list.push(LocalObjectReference { name: name.clone() });
            ctx.change(|| ("imagePullSecrets", format!("added \"{name}\"")));
        }
    }
}

/// Rewrites and pull policies of all matching policies, over every container and init
/// container, after every other step.
pub(crate) fn apply_image_rules<'p>(
    ctx: &mut Ctx<'p>,
    pod: &mut Pod,
    policies: &[&'p CompiledPolicy],
    role: SparkRole,
) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    // An image already under any rewrite target is left alone, so rules never chain.
    let targets: Vec<&str> = policies
        .iter()
        .flat_map(|p| p.patches_for(role))
        .filter_map(|s| s.image.as_ref())
        .flat_map(|i| i.rewrite.iter().map(|r| r.to.as_str()))
        .collect();
    for policy in policies {
        for section in policy.patches_for(role) {
            let Some(image) = &section.image else {
                continue;
            };
            ctx.policy = &policy.name;
            ctx.overwrite = section.overwrite;
            let containers = spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten());
            for c in containers {
                if let Some(current) = c.image.as_deref() {
                    // One rewrite per image and pass: the first (highest-priority) rule that matches.
                    let key = ["image", c.name.as_str()];
                    if ctx.claimed_by_other(key).is_none() {
                        if let Some(r) = image
                            .rewrite
                            .iter()
                            .find(|r| current.starts_with(&r.from))
                            .filter(|_| !targets.iter().any(|t| current.starts_with(t)))
                        {
                            let new = format!("{}{}", r.to, &current[r.from.len()..]);
                            let _ = ctx.claim(key);
                            ctx.change(|| {
                                (
                                    format!("containers[{}].image", c.name),
                                    format!("rewrote \"{current}\" to \"{new}\""),
                                )
                            });
                            c.image = Some(new);
                        }
                    }
                }
                if let Some(pp) = image.pull_policy {
                    // Compared as text, made a `String` only when written.
                    let wanted = pp.as_str();
                    let key = ["pullPolicy", c.name.as_str()];
                    let shown = || format!("containers[{}].imagePullPolicy", c.name);
                    let current = c.image_pull_policy.as_deref();
                    if ctx.decide(key, shown, current, wanted, quoted) {
                        c.image_pull_policy = Some(wanted.to_owned());
                    }
                }
            }
        }
    }
}
