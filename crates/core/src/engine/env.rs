//! Environment of the Spark container: env merged by name, envFrom by equality, and
//! path-like variables (classpath, PYTHONPATH) extended entry by entry.

use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};

use super::context::{json, Ctx};
use crate::policy::model::PodPatch;

pub(crate) fn apply(ctx: &mut Ctx<'_>, spec: &mut PodSpec, patch: &PodPatch, spark: usize) {
    let container = &mut spec.containers[spark];
    for var in &patch.env {
        set_var(ctx, container, var);
    }
    for source in &patch.env_from {
        let list = container.env_from.get_or_insert_with(Vec::new);
        if !list.contains(source) {
            list.push(source.clone());
            ctx.change(|| {
                (
                    format!("containers[{}].envFrom", container.name),
                    format!("added {}", json(source)),
                )
            });
        }
    }
}

fn set_var(ctx: &mut Ctx<'_>, container: &mut Container, var: &EnvVar) {
    let list = container.env.get_or_insert_with(Vec::new);
    let same = list.iter().position(|e| e.name == var.name);
    let key = ["env", container.name.as_str(), var.name.as_str()];
    let shown = || format!("containers[{}].env[{}]", container.name, var.name);
    let show = |v: &EnvVar| match (&v.value, &v.value_from) {
        (_, Some(from)) => json(from),
        (Some(value), None) => format!("\"{value}\""),
        (None, None) => "\"\"".to_owned(),
    };
    if ctx.decide(key, shown, same.and_then(|i| list.get(i)), var, show) {
        match same {
            Some(i) => list[i] = var.clone(),
            None => list.push(var.clone()),
        }
    }
}

/// Appends `entry` to a `:`-separated variable unless it is already one of its entries.
/// A variable that comes from a secret or field reference cannot be extended: warned.
pub(crate) fn append_path_entry(
    ctx: &mut Ctx<'_>,
    container: &mut Container,
    var: &str,
    entry: &str,
) {
    let list = container.env.get_or_insert_with(Vec::new);
    match list.iter_mut().find(|e| e.name == var) {
        None => {
            list.push(EnvVar {
                name: var.to_owned(),
                value: Some(entry.to_owned()),
                value_from: None,
            });
            ctx.change(|| {
                (
                    format!("containers[{}].env[{var}]", container.name),
                    format!("set to \"{entry}\""),
                )
            });
        }
        Some(e) if e.value_from.is_some() => {
            ctx.warn(format!(
                "policy \"{}\": {var} of container \"{}\" comes from a reference, so {entry} could not be added to it",
                ctx.policy, container.name
            ));
        }
        Some(e) => {
            let current = e.value.clone().unwrap_or_default();
            if current.split(':').any(|p| p == entry) {
                return;
            }
            let value = if current.is_empty() {
                entry.to_owned()
            } else {
                format!("{current}:{entry}")
            };
            e.value = Some(value);
            ctx.change(|| {
                (
                    format!("containers[{}].env[{var}]", container.name),
                    format!("appended \"{entry}\""),
                )
            });
        }
    }
}
