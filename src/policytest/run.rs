//! One case: the pod through the webhook's own engine (mutation, the patch applied, then
//! validation of the mutated pod, as the API server chains the two webhooks), and the
//! expectations checked against what came out.

use serde::Serialize;
use serde_json::Value;

use super::compare::{exact, match_up, subset, Mismatch};
use super::load::LoadedPod;
use super::model::{Expect, RuleRef, Verdict, WarningExpectation};
use crate::engine::Engine;
use crate::explain::{explain_remembering, ExplainError};
use crate::matching::PolicySet;
use crate::policy::model::RuleMode;

/// What the webhook answered for one pod.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Actual {
    pub namespace: String,
    pub result: Verdict,
    pub refused_by: Vec<RuleRef>,
    pub audited: Vec<RuleRef>,
    /// The message the submitter would read when refused.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub denial: String,
    /// Admission warnings of both webhooks, mutating first.
    pub warnings: Vec<String>,
    /// `name@hash` of each policy applied, in order.
    pub applied: Vec<String>,
    pub patch: Value,
    pub pod: Value,
}

/// Runs the pod through the engine exactly as `explain` (and the webhook) does.
pub fn admit(engine: &Engine, set: &PolicySet, pod: &LoadedPod) -> Result<Actual, ExplainError> {
    let report = explain_remembering(engine, set, &pod.input, Some(&pod.namespace), |_| {
        pod.remembered.clone()
    })?;
    let rules = |mode| {
        let mut found: Vec<RuleRef> = report
            .validation
            .with_mode(mode)
            .map(|f| RuleRef {
                policy: f.policy.clone(),
                rule: f.rule.to_owned(),
            })
            .collect();
        found.sort();
        found.dedup();
        found
    };
    let mut warnings = report.mutation.warnings.clone();
    warnings.extend(
        report
            .validation
            .with_mode(RuleMode::Warn)
            .map(|f| f.message.clone()),
    );
    Ok(Actual {
        namespace: report.namespace.clone(),
        result: if report.denied() {
            Verdict::Refused
        } else {
            Verdict::Allowed
        },
        refused_by: rules(RuleMode::Enforce),
        audited: rules(RuleMode::Audit),
        denial: report.validation.denial_message(),
        warnings,
        applied: report.mutation.applied.clone(),
        patch: serde_json::to_value(&report.mutation.patch)
            .map_err(|e| ExplainError::Patch(e.to_string()))?,
        pod: report.mutated,
    })
}

/// The policy name of an applied tag (`name@hash`).
pub fn policy_name(tag: &str) -> &str {
    tag.split_once('@').map_or(tag, |(name, _)| name)
}

/// Every expectation given, against the actual answer.
pub fn check(expect: &Expect, actual: &Actual) -> Vec<Mismatch> {
    let mut out = Vec::new();
    if let Some(want) = expect.result {
        if want != actual.result {
            let m = Mismatch::new(
                "result",
                Some(Value::from(want.as_str())),
                Some(Value::from(actual.result.as_str())),
            );
            out.push(if actual.denial.is_empty() {
                m
            } else {
                m.with_note(format!("denied: {}", actual.denial))
            });
        }
    }
    check_rules(
        &mut out,
        "refusedBy",
        expect.refused_by.as_deref(),
        &actual.refused_by,
    );
    check_rules(
        &mut out,
        "audited",
        expect.audited.as_deref(),
        &actual.audited,
    );
    if let Some(want) = &expect.warnings {
        let (missing, extra) = match_up(
            want,
            &actual.warnings,
            |e, a| e.matches(a),
            |e| matches!(e, WarningExpectation::Exact(_)),
        );
        for i in missing {
            out.push(
                Mismatch::new("warnings", serde_json::to_value(&want[i]).ok(), None)
                    .with_note("no warning matches"),
            );
        }
        for j in extra {
            out.push(
                Mismatch::new(
                    "warnings",
                    None,
                    Some(Value::from(actual.warnings[j].clone())),
                )
                .with_note("a warning not expected"),
            );
        }
    }
    if let Some(want) = &expect.applied {
        let (missing, extra) = match_up(
            want,
            &actual.applied,
            |e, tag| {
                if e.contains('@') {
                    e == tag
                } else {
                    e == policy_name(tag)
                }
            },
            |e| e.contains('@'),
        );
        if !missing.is_empty() || !extra.is_empty() {
            let pinned = want.iter().any(|w| w.contains('@'));
            let actual_list = actual
                .applied
                .iter()
                .map(|t| Value::from(if pinned { t.as_str() } else { policy_name(t) }))
                .collect();
            out.push(Mismatch::new(
                "applied",
                Some(Value::Array(
                    want.iter().cloned().map(Value::from).collect(),
                )),
                Some(Value::Array(actual_list)),
            ));
        }
    }
    if let Some(want) = &expect.pod {
        out.extend(subset("pod", want, &actual.pod));
    }
    if let Some(want) = &expect.full_pod {
        out.extend(exact("fullPod", want, &actual.pod));
    }
    if let Some(want) = &expect.patch {
        out.extend(exact("patch", want, &actual.patch));
    }
    out
}

/// Rule lists compare as sets; `actual` is sorted and without repeats.
fn check_rules(
    out: &mut Vec<Mismatch>,
    field: &'static str,
    want: Option<&[RuleRef]>,
    actual: &[RuleRef],
) {
    let Some(want) = want else { return };
    let mut want = want.to_vec();
    want.sort();
    want.dedup();
    if want != actual {
        let list =
            |r: &[RuleRef]| Value::Array(r.iter().map(|r| Value::from(r.to_string())).collect());
        out.push(Mismatch::new(field, Some(list(&want)), Some(list(actual))));
    }
}
