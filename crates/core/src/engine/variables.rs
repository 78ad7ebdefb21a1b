//! Variables in policy values, rendered for one pod. A section without variables is used
//! as loaded (no copy); a section with some is copied once and its values filled in. An
//! item whose variable has no usable value on this pod (a missing label, or one that is not
//! a valid label value) is left out with a warning: writing it with a hole
//! (`s3a://logs//x`) would be worse than not writing it.

use std::borrow::Cow;
use std::collections::BTreeSet;

use super::context::Ctx;
use crate::policy::model::{DependencySource, PodPatch};
use crate::policy::template::{Var, Vars};
use crate::policy::{CompiledPatch, Site};
use crate::spark::SparkRole;

/// The section as it applies to this pod.
pub(crate) fn render<'s>(
    ctx: &mut Ctx<'_>,
    section: &'s CompiledPatch,
    vars: &Vars<'_>,
) -> Cow<'s, PodPatch> {
    if section.templated.is_empty() {
        return Cow::Borrowed(&section.patch);
    }
    let mut p = section.patch.clone();
    // Items left out, by list and index (removed last, so indices stay valid meanwhile).
    let mut drop_env = BTreeSet::new();
    let mut drop_volumes = BTreeSet::new();
    let mut drop_dependencies = BTreeSet::new();
    for t in &section.templated {
        match t.template.render(vars) {
            Ok(value) => write(&mut p, &t.site, value),
            Err(missing) => {
                // sparkConf of an `all` section is never written on executors: no warning.
                let unused =
                    matches!(t.site, Site::SparkConf(_)) && vars.role == SparkRole::Executor;
                if !unused {
                    let item = describe(&p, &t.site);
                    warn_missing(ctx, &item, missing, vars.value(missing).is_some());
                }
                match &t.site {
                    Site::Label(k) => {
                        p.labels.remove(k);
                    }
                    Site::Annotation(k) => {
                        p.annotations.remove(k);
                    }
                    Site::SparkConf(k) => {
                        p.spark_conf.remove(k);
                    }
                    Site::Env(i) => {
                        drop_env.insert(*i);
                    }
                    Site::ClaimName(i)
                    | Site::ConfigMapName(i)
                    | Site::SecretName(i)
                    | Site::SubPath(i) => {
                        drop_volumes.insert(*i);
                    }
                    Site::DependencySource(i) => {
                        drop_dependencies.insert(*i);
                    }
                }
            }
        }
    }
    for i in drop_env.into_iter().rev() {
        p.env.remove(i);
    }
    for i in drop_volumes.into_iter().rev() {
        p.volumes.remove(i);
    }
    for i in drop_dependencies.into_iter().rev() {
        p.dependencies.remove(i);
    }
    Cow::Owned(p)
}

fn write(p: &mut PodPatch, site: &Site, value: String) {
    let slot = match site {
        Site::Label(k) => p.labels.get_mut(k),
        Site::Annotation(k) => p.annotations.get_mut(k),
        Site::SparkConf(k) => p.spark_conf.get_mut(k),
        Site::Env(i) => p.env.get_mut(*i).and_then(|e| e.value.as_mut()),
        Site::ClaimName(i) => p
            .volumes
            .get_mut(*i)
            .and_then(|v| v.volume.persistent_volume_claim.as_mut())
            .map(|s| &mut s.claim_name),
        Site::ConfigMapName(i) => p
            .volumes
            .get_mut(*i)
            .and_then(|v| v.volume.config_map.as_mut())
            .map(|s| &mut s.name),
        Site::SecretName(i) => p
            .volumes
            .get_mut(*i)
            .and_then(|v| v.volume.secret.as_mut())
            .and_then(|s| s.secret_name.as_mut()),
        Site::SubPath(i) => p
            .volumes
            .get_mut(*i)
            .and_then(|v| v.mount.as_mut())
            .and_then(|m| m.sub_path.as_mut()),
        Site::DependencySource(i) => p
            .dependencies
            .get_mut(*i)
            .and_then(|d| match &mut d.source {
                DependencySource::PersistentVolumeClaim(s) => Some(&mut s.claim_name),
                DependencySource::ConfigMap(s) => Some(&mut s.name),
                DependencySource::Secret(s) => s.secret_name.as_mut(),
                DependencySource::Image(_) | DependencySource::Download(_) => None,
            }),
    };
    // Sites are taken from this very patch when it is loaded, so the slot is always there.
    if let Some(slot) = slot {
        *slot = value;
    }
}

fn describe(p: &PodPatch, site: &Site) -> String {
    let volume = |i: &usize| {
        p.volumes
            .get(*i)
            .map_or_else(String::new, |v| v.volume.name.clone())
    };
    match site {
        Site::Label(k) => format!("label \"{k}\""),
        Site::Annotation(k) => format!("annotation \"{k}\""),
        Site::SparkConf(k) => format!("sparkConf \"{k}\""),
        Site::Env(i) => format!("env \"{}\"", p.env.get(*i).map_or("", |e| e.name.as_str())),
        Site::ClaimName(i) | Site::ConfigMapName(i) | Site::SecretName(i) | Site::SubPath(i) => {
            format!("volume \"{}\"", volume(i))
        }
        Site::DependencySource(i) => format!(
            "dependency \"{}\"",
            p.dependencies.get(*i).map_or("", |d| d.name.as_str())
        ),
    }
}

fn warn_missing(ctx: &mut Ctx<'_>, item: &str, missing: Var, present: bool) {
    let why = match missing.label() {
        Some(label) if present => format!(
            "this pod's {label} label is not a valid label value (at most 63 letters, digits, \
             '-', '_' or '.', starting and ending with a letter or digit)"
        ),
        Some(label) => format!("this pod has no {label} label"),
        None => "it has no value for this pod".to_owned(),
    };
    ctx.warn(format!(
        "policy \"{}\": {item} was not applied because its value uses ${{{}}} and {why}",
        ctx.policy,
        missing.name()
    ));
}
