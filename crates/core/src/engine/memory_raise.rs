//! A remembered raise after an OOMKilled pod (see [`crate::memory_on_oom`]) applied to the
//! Spark container's memory: never above the policy's `max` nor above what an enforced
//! `maxResources` rule allows, and only ever up, so never below what the submitter asked.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::Ctx;
use crate::memory_on_oom::{format_bytes, settings_for, RememberedMemory, RAISED_ANNOTATION};
use crate::policy::model::RuleMode;
use crate::policy::CompiledPolicy;
use crate::quantity;
use crate::spark::SparkPod;

pub(crate) fn apply<'p>(
    ctx: &mut Ctx<'p>,
    planned: &mut Pod,
    spark: &SparkPod<'_>,
    policies: &[&'p CompiledPolicy],
    validating: &[&CompiledPolicy],
    remembered: &RememberedMemory,
) -> bool {
    let Some((policy, settings)) = settings_for(policies, spark.role) else {
        return false;
    };
    let Some(idx) = spark.spark_container else {
        return false;
    };
    let Some(container) = planned
        .spec
        .as_mut()
        .and_then(|s| s.containers.get_mut(idx))
    else {
        return false;
    };
    let Some(resources) = container.resources.as_mut() else {
        return false;
    };
    let memory_of = |m: &Option<BTreeMap<String, Quantity>>| {
        m.as_ref()
            .and_then(|m| m.get("memory"))
            .and_then(|q| quantity::parse(&q.0))
            .filter(|v| *v >= 0.0 && *v < u64::MAX as f64)
            .map(|v| v.ceil() as u64)
    };
    let limit = memory_of(&resources.limits);
    let request = memory_of(&resources.requests);
    // Spark sets request = limit; a container without any memory value is left alone.
    let Some(current) = limit.or(request) else {
        return false;
    };
    let mut target = remembered.memory.min(settings.max);
    let role = spark.role;
    let oom_at = k8s_openapi::jiff::Timestamp::from_second(remembered.oom_at)
        .map_or_else(|_| remembered.oom_at.to_string(), |t| t.to_string());
    if let Some((cap, by)) = enforced_cap(validating, spark) {
        if cap < target {
            ctx.warn(format!(
                "spark-admission: this {role}'s memory would have been raised to {} after pod {} was OOMKilled, but policy \"{by}\" (maxResources, enforce) allows at most {} for {role}s; raised to that limit instead",
                format_bytes(target),
                remembered.oom_pod,
                format_bytes(cap)
            ));
            target = cap;
        }
    }
    if target <= current {
        return false;
    }
    let delta = target - current;
    ctx.policy = &policy.name;
    let name = container.name.clone();
    for (kind, map, value) in [
        ("limits", &mut resources.limits, limit),
        ("requests", &mut resources.requests, request),
    ] {
        let Some(value) = value else { continue };
        // A request below its limit keeps its distance; it never passes the new limit.
        let raised = value.saturating_add(delta).min(target);
        if raised <= value {
            continue;
        }
        let text = format_bytes(raised);
        map.get_or_insert_with(BTreeMap::new)
            .insert("memory".to_owned(), Quantity(text.clone()));
        ctx.change(|| {
            (
                format!("containers[{name}].resources.{kind}.memory"),
                format!(
                    "raised from {} to {text} (memoryOnOOM: pod {} was OOMKilled at {oom_at})",
                    format_bytes(value),
                    remembered.oom_pod
                ),
            )
        });
    }
    let note = format!(
        "memory {} -> {} after pod {} ({}) was OOMKilled at {oom_at}; policy {}",
        format_bytes(current),
        format_bytes(target),
        remembered.oom_pod,
        format_bytes(remembered.from),
        policy.name
    );
    let annotations = planned
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    annotations.insert(RAISED_ANNOTATION.to_owned(), note.clone());
    ctx.change(|| {
        (
            format!("annotations[{RAISED_ANNOTATION}]"),
            format!("set to \"{note}\""),
        )
    });
    ctx.warn(format!(
        "spark-admission: this {role}'s memory was raised from {} to {} because pod {} of this application was OOMKilled (policy \"{}\", memoryOnOOM)",
        format_bytes(current),
        format_bytes(target),
        remembered.oom_pod,
        policy.name
    ));
    true
}

/// The lowest memory bound (requests or limits) of an enforced `maxResources` rule of the
/// matching policies for this role, and the policy setting it: a raise validation would
/// deny is not made.
fn enforced_cap(policies: &[&CompiledPolicy], spark: &SparkPod<'_>) -> Option<(u64, String)> {
    let mut cap: Option<(u64, String)> = None;
    for p in policies {
        let Some(rules) = p.rules.as_ref().map(|r| &r.rules) else {
            continue;
        };
        if rules.mode != RuleMode::Enforce {
            continue;
        }
        let Some(max) = rules
            .max_resources
            .as_ref()
            .and_then(|m| m.for_role(spark.role))
        else {
            continue;
        };
        for q in [max.requests.get("memory"), max.limits.get("memory")]
            .into_iter()
            .flatten()
        {
            let Some(v) = quantity::parse(&q.0).filter(|v| *v >= 0.0) else {
                continue;
            };
            let v = v.floor() as u64;
            if cap.as_ref().is_none_or(|(c, _)| v < *c) {
                cap = Some((v, p.name.clone()));
            }
        }
    }
    cap
}
