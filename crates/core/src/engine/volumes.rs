//! Volumes (merged by name) and their mounts (merged by mountPath). A clash with a different
//! existing volume or mount is reported, never written: the pod stays valid.

use std::borrow::Cow;

use k8s_openapi::api::core::v1::{Container, PodSpec, Volume, VolumeMount};

use super::context::{json, Ctx};
use crate::policy::model::{ContainerTarget, Mount, PodPatch};

pub(crate) fn apply(ctx: &mut Ctx<'_>, spec: &mut PodSpec, patch: &PodPatch, spark: Option<usize>) {
    for vp in &patch.volumes {
        let spark_target = match (vp.mount.is_some(), vp.containers, spark) {
            (true, ContainerTarget::Spark, None) => continue, // warned once by the caller
            (true, ContainerTarget::Spark, Some(i)) => Some(i),
            _ => None,
        };
        if !add_volume(ctx, spec, Cow::Borrowed(&vp.volume)) {
            continue;
        }
        let Some(m) = &vp.mount else { continue };
        let mount = to_volume_mount(m, &vp.volume.name);
        match spark_target {
            Some(i) => {
                add_mount(ctx, &mut spec.containers[i], &mount);
            }
            // Sidecars may still be added by this or a later policy: mount at the end.
            None => ctx.mounts_for_all.push((ctx.policy, mount)),
        }
    }
}

pub(crate) fn to_volume_mount(m: &Mount, volume: &str) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: m.mount_path.clone(),
        read_only: m.read_only,
        sub_path: m.sub_path.clone(),
        sub_path_expr: m.sub_path_expr.clone(),
        mount_propagation: m.mount_propagation.clone(),
        recursive_read_only: None,
    }
}

/// Adds the volume unless one with that name exists. Returns false when the name is taken
/// by a different volume (then its mounts must not be added either). A volume made for
/// this pod comes owned and is moved in; a policy's is cloned.
pub(crate) fn add_volume(ctx: &mut Ctx<'_>, spec: &mut PodSpec, volume: Cow<'_, Volume>) -> bool {
    let list = spec.volumes.get_or_insert_with(Vec::new);
    match list.iter().find(|v| v.name == volume.name) {
        Some(existing) if is_ours_after_admission(existing, &volume) => true,
        Some(existing) => {
            let by = ctx
                .claimed_by_other(["volume", volume.name.as_str()])
                .map(|p| format!("policy \"{p}\""))
                .unwrap_or_else(|| "the pod".to_owned());
            ctx.warn(format!(
                "policy \"{}\": volume \"{}\" was not added because {by} already has a different volume of that name ({})",
                ctx.policy,
                volume.name,
                json(existing)
            ));
            false
        }
        None => {
            let _ = ctx.claim(["volume", volume.name.as_str()]);
            ctx.change(|| ("volumes", format!("added \"{}\"", volume.name)));
            list.push(volume.into_owned());
            true
        }
    }
}

/// Adds the mount unless the container already mounts something at that path.
pub(crate) fn add_mount(ctx: &mut Ctx<'_>, container: &mut Container, mount: &VolumeMount) -> bool {
    let list = container.volume_mounts.get_or_insert_with(Vec::new);
    match list.iter().find(|m| m.mount_path == mount.mount_path) {
        Some(existing) if existing == mount => true,
        Some(existing) => {
            ctx.warn(format!(
                "policy \"{}\": {} was not mounted at {} in container \"{}\" because \"{}\" is already mounted there",
                ctx.policy, mount.name, mount.mount_path, container.name, existing.name
            ));
            false
        }
        None => {
            list.push(mount.clone());
            ctx.change(|| {
                (
                    format!("containers[{}].volumeMounts", container.name),
                    format!("mounted \"{}\" at {}", mount.name, mount.mount_path),
                )
            });
            true
        }
    }
}

/// The deferred `containers: all` mounts, over every container the pod ends up with.
pub(crate) fn apply_mounts_for_all(ctx: &mut Ctx<'_>, spec: &mut PodSpec) {
    for (policy, mount) in std::mem::take(&mut ctx.mounts_for_all) {
        ctx.policy = policy;
        for c in spec.containers.iter_mut() {
            if ctx.watch.tick() {
                return;
            }
            add_mount(ctx, c, &mount);
        }
    }
}

/// Whether `existing` is `wanted` as added on an earlier pass, after the API server
/// defaulted what the policy left unset (`defaultMode: 420`, an image volume's
/// `pullPolicy`, a hostPath's `type`): the reinvocation pass must neither warn nor skip it.
fn is_ours_after_admission(existing: &Volume, wanted: &Volume) -> bool {
    if existing == wanted {
        return true;
    }
    let mut e = existing.clone();
    if let (Some(have), Some(want)) = (e.config_map.as_mut(), wanted.config_map.as_ref()) {
        if want.default_mode.is_none() {
            have.default_mode = None;
        }
    }
    if let (Some(have), Some(want)) = (e.secret.as_mut(), wanted.secret.as_ref()) {
        if want.default_mode.is_none() {
            have.default_mode = None;
        }
    }
    if let (Some(have), Some(want)) = (e.projected.as_mut(), wanted.projected.as_ref()) {
        if want.default_mode.is_none() {
            have.default_mode = None;
        }
    }
    if let (Some(have), Some(want)) = (e.downward_api.as_mut(), wanted.downward_api.as_ref()) {
        if want.default_mode.is_none() {
            have.default_mode = None;
        }
    }
    if let (Some(have), Some(want)) = (e.image.as_mut(), wanted.image.as_ref()) {
        if want.pull_policy.is_none() {
            have.pull_policy = None;
        }
    }
    if let (Some(have), Some(want)) = (e.host_path.as_mut(), wanted.host_path.as_ref()) {
        if want.type_.is_none() {
            have.type_ = None;
        }
    }
    e == *wanted
}
