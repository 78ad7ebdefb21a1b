//! What an UPDATE of a Spark pod is judged on: `kubectl set image`, an ephemeral container
//! added through `pods/ephemeralcontainers` (`kubectl debug`), a `pods/resize`. Mutation
//! stays CREATE-only; only the rules run here.
//!
//! - Nothing the rules read changed (finalizers, annotations, owner references, a label no
//!   rule reads such as Spark's decommission label): not judged, so controllers' metadata
//!   updates never wait on or fail for policies written after the pod was created.
//! - The spec changed: the pod as it will be is judged like a new one, all of it.
//! - A label the rules find the pod by (`spark-role`, `spark-app-name`, a policy selector's
//!   `matchLabels` key) removed or changed: refused. `spark-role` added to a pod created
//!   without it: refused, always (it was never mutated nor checked as a Spark pod). The webhook's objectSelector matches an
//!   UPDATE when the old or the new pod carries `spark-role`, so such an UPDATE is the last
//!   one the webhook would see of that pod.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;

use super::rules::{self, Finding, Validation};
use crate::matching::PolicySet;
use crate::policy::model::RuleMode;
use crate::policy::CompiledPolicy;
use crate::spark::{ContainerNames, SparkPod, APP_NAME_LABEL, ROLE_LABEL};

/// The rule name of the label guard, in findings.
pub const SPARK_LABELS_RULE: &str = "sparkLabels";

/// Judges an UPDATE; `None` when nothing the rules read changed (allowed, not judged).
pub(crate) fn check(
    set: &PolicySet,
    names: &ContainerNames,
    old: &Pod,
    new: &Pod,
    namespace: &str,
) -> Option<Validation> {
    let old_spark = SparkPod::recognise(old, names).ok();
    let new_spark = SparkPod::recognise(new, names).ok();
    let with_rules = |s: &Option<SparkPod<'_>>| -> Vec<&CompiledPolicy> {
        s.as_ref()
            .map(|s| set.matching(s, namespace))
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.rules.is_some())
            .collect()
    };
    let governing = with_rules(&old_spark);
    let judging = with_rules(&new_spark);

    // Labels the rules find the pod by, which must not move.
    let mut keyed: BTreeSet<&str> = BTreeSet::new();
    for p in &governing {
        keyed.insert(ROLE_LABEL);
        if p.app_name.is_some() {
            keyed.insert(APP_NAME_LABEL);
        }
        keyed.extend(p.match_labels.iter().map(|(k, _)| k.as_str()));
    }
    // Every label a rule reads, for telling whether the update matters.
    let mut read: BTreeSet<&str> = keyed.clone();
    for p in governing.iter().chain(&judging) {
        read.insert(ROLE_LABEL);
        read.insert(APP_NAME_LABEL);
        read.extend(p.match_labels.iter().map(|(k, _)| k.as_str()));
        if let Some(r) = &p.rules {
            read.extend(r.rules.required_labels.iter().map(String::as_str));
        }
    }
    let label = |pod: &Pod, k: &str| -> Option<String> {
        pod.metadata.labels.as_ref().and_then(|l| l.get(k)).cloned()
    };
    let moved: Vec<(&str, Option<String>, Option<String>)> = keyed
        .iter()
        .map(|k| (*k, label(old, k), label(new, k)))
        .filter(|(_, o, n)| o != n)
        .collect();
    let spec_changed = old.spec != new.spec;
    let labels_changed = read.iter().any(|k| label(old, k) != label(new, k));
    let role_added = label(old, ROLE_LABEL).is_none() && label(new, ROLE_LABEL).is_some();
    if !spec_changed && !labels_changed && moved.is_empty() && !role_added {
        return None;
    }

    let mut out = match &new_spark {
        Some(s) => rules::check(&judging, s, namespace),
        None => Validation::default(),
    };
    // A pod that was not a Spark pod becoming one: it was never mutated nor checked as one,
    // and a driver claimed this way could vouch for executors (job pins). Spark never
    // relabels a pod; a Spark pod is created as one.
    if let (true, Some(now)) = (role_added, label(new, ROLE_LABEL)) {
        out.findings.push(Finding {
            policy: "spark-admission".to_owned(),
            rule: SPARK_LABELS_RULE,
            mode: RuleMode::Enforce,
            message: format!(
                "spark-admission ({SPARK_LABELS_RULE}): label \"{ROLE_LABEL}\" cannot be added to an existing pod (here \"{now}\"): a Spark pod must be created as one, so that the platform's policies apply to it"
            ),
        });
    }
    if let (Some(guard), Some(old_spark)) = (strictest(&governing), &old_spark) {
        let role = old_spark.role;
        for (key, was, now) in moved {
            let change = match now {
                Some(v) => format!("changed from {} to \"{v}\"", shown(&was)),
                None => format!("removed (it was {})", shown(&was)),
            };
            out.findings.push(Finding {
                policy: guard.name.clone(),
                rule: SPARK_LABELS_RULE,
                mode: mode_of(guard),
                message: format!(
                    "policy \"{}\" ({SPARK_LABELS_RULE}): label \"{key}\" of this Spark {role} pod cannot be {change}: the platform's rules find the pod by it, so later changes would go unchecked; delete the pod and let Spark create a new one instead",
                    guard.name
                ),
            });
        }
        if !out.checked.contains(&guard.tag) {
            out.checked.push(guard.tag.clone());
        }
    }
    Some(out)
}

fn shown(v: &Option<String>) -> String {
    v.as_deref()
        .map_or_else(|| "unset".to_owned(), |v| format!("\"{v}\""))
}

fn mode_of(p: &CompiledPolicy) -> RuleMode {
    p.rules.as_ref().map_or(RuleMode::Audit, |r| r.rules.mode)
}

/// The governing policy whose rules are the strictest (enforce before warn before audit):
/// the label guard is as strict as the rules it protects.
fn strictest<'a>(policies: &[&'a CompiledPolicy]) -> Option<&'a CompiledPolicy> {
    let rank = |m: RuleMode| match m {
        RuleMode::Enforce => 0,
        RuleMode::Warn => 1,
        RuleMode::Audit => 2,
    };
    policies.iter().copied().min_by_key(|p| rank(mode_of(p)))
}
