//! A Spark pod's CREATE: planned and patched on `/mutate`, judged by the rules on
//! `/validate`. The engine is called once per review, in one place each.

use std::time::Instant;

use super::answer::Answer;
use super::decision::Decision;
use super::pins;
use super::refusal::Refusal;
use super::review::{PodCreate, AUDIT_APPLIED, AUDIT_CHECKED, AUDIT_FINDINGS};
use super::state::AppState;
use super::warnings;
use crate::engine::{Deadline, EngineError, MutateRequest, Validation};
use crate::metrics::{Endpoint, Outcome};
use crate::pinning::{self, PinCheck, Unverified};
use crate::policy::model::RuleMode;

/// The answer to a pod's CREATE on `endpoint`; the engine gives up at `deadline`.
pub(super) async fn answer<'a>(
    state: &AppState,
    endpoint: Endpoint,
    create: &'a PodCreate,
    deadline: Instant,
) -> Result<(Answer, Decision<'a>), Refusal> {
    let verdict = match endpoint {
        Endpoint::Mutate => {
            let check = pins::check(state, create).await;
            mutate(state, create, check, deadline)
        }
        // `/validate-policy` never gets here (service::evaluate); listed for exhaustiveness.
        Endpoint::Validate | Endpoint::ValidatePolicy => validate(state, create, deadline),
    };
    verdict.or_else(|refusal| refused(create, refusal))
}

/// A refused pod's answer (`allowed: false`) and decision; an HTTP refusal goes up as is.
pub(super) fn refused(
    create: &PodCreate,
    refusal: Refusal,
) -> Result<(Answer, Decision<'_>), Refusal> {
    match refusal.answer() {
        Some(answer) => Ok((answer, Decision::unjudged(create, refusal.outcome()))),
        None => Err(refusal),
    }
}

fn mutate<'a>(
    state: &AppState,
    create: &'a PodCreate,
    check: Option<PinCheck>,
    deadline: Instant,
) -> Result<(Answer, Decision<'a>), Refusal> {
    #[cfg(test)]
    if spark_admission_core::fault::injected(&create.pod, spark_admission_core::fault::PANIC) {
        panic!("fault injected by a test");
    }
    let set = state.store.snapshot();
    let mut answer = Answer::allow(create.uid.as_str());
    // A verified pin mutates with the driver's versions; any other pin changes nothing
    // (the current set, with a warning). Validation always uses the current set.
    let claim = pinning::claim_of(&create.pod);
    let pin = state.store.resolve_pin(
        &set,
        &claim,
        check.unwrap_or(PinCheck::Unverified(Unverified::NoOwner)),
    );
    if let Some(result) = pin.result() {
        state.metrics.record_pinned_executor(result);
        if result != "pinned" {
            tracing::warn!(
                uid = create.uid.as_str(),
                namespace = create.namespace.as_str(),
                pod = create.name.as_str(),
                result,
                pin = pin.describe().unwrap_or_default().as_str(),
                "executor pin not honoured as given"
            );
        }
    }
    let remembered = state
        .memory
        .as_ref()
        .and_then(|m| m.lookup(&create.namespace, &create.pod, crate::memory::now()));
    let planned = state.engine.mutate(
        MutateRequest::new(&set, &create.pod, &create.namespace)
            .resolved(&pin)
            .remembering(remembered.as_ref())
            .within(Deadline::at(deadline)),
    );
    let mutation = match planned {
        Ok(m) => m,
        Err(e @ (EngineError::TooLarge(_) | EngineError::Deadline)) => {
            return Err(not_evaluated(create, &e))
        }
        // Refused, not admitted unchanged: the cluster's failurePolicy decides, and no pod
        // runs without its policies because of our bug.
        Err(e) => {
            let role = crate::spark::role_of(&create.pod).ok();
            return Err(Refusal::plan_failed(&create.uid, role, &e));
        }
    };
    answer
        .set_patch(&mutation.patch)
        .map_err(|e| Refusal::patch_unencodable(&create.uid, mutation.role, e))?;
    let ops = mutation.patch.len();
    let outcome = if ops > 0 {
        Outcome::Patched
    } else if !mutation.warnings.is_empty() {
        Outcome::Warned
    } else {
        Outcome::Unchanged
    };
    let policies = mutation.applied.join(",");
    if !policies.is_empty() {
        answer
            .audit_annotations
            .insert(AUDIT_APPLIED.to_owned(), policies.clone());
    }
    answer.warnings = warnings::fit(mutation.warnings, warnings::FOR_A_POD);
    state.metrics.record_changes(&mutation.changes_by_policy);
    state.metrics.record_patch_operations(mutation.role, ops);
    if mutation.memory_raised && !create.dry_run {
        state.metrics.record_memory_raise(mutation.role);
    }
    let decision = Decision::judged(create, mutation.role, outcome, policies, ops);
    Ok((answer, decision))
}

fn validate<'a>(
    state: &AppState,
    create: &'a PodCreate,
    deadline: Instant,
) -> Result<(Answer, Decision<'a>), Refusal> {
    let set = state.store.snapshot();
    let validation = state
        .engine
        .validate_within(&set, &create.pod, &create.namespace, Deadline::at(deadline))
        .map_err(|e| not_evaluated(create, &e))?;
    Ok(judged(state, create, &validation))
}

/// A pod the engine would not judge (too large, or its deadline passed).
pub(super) fn not_evaluated(create: &PodCreate, e: &EngineError) -> Refusal {
    Refusal::not_evaluated(&create.uid, crate::spark::role_of(&create.pod).ok(), e)
}

/// The answer to a judged pod: denied for an enforced finding, warnings and audit
/// annotations for the others.
pub(super) fn judged<'a>(
    state: &AppState,
    create: &'a PodCreate,
    validation: &Validation,
) -> (Answer, Decision<'a>) {
    state.metrics.record_findings(validation);
    let mut answer = Answer::allow(create.uid.as_str());
    answer.warnings = warnings::fit(
        validation
            .with_mode(RuleMode::Warn)
            .map(|f| f.message.clone())
            .collect(),
        warnings::FOR_A_POD,
    );
    let audit: Vec<&str> = validation
        .with_mode(RuleMode::Audit)
        .map(|f| f.message.as_str())
        .collect();
    if !audit.is_empty() {
        answer
            .audit_annotations
            .insert(AUDIT_FINDINGS.to_owned(), audit.join("; "));
    }
    let policies = validation.checked.join(",");
    if !policies.is_empty() {
        answer
            .audit_annotations
            .insert(AUDIT_CHECKED.to_owned(), policies.clone());
    }
    let outcome = if validation.denied() {
        answer.deny(403, "Forbidden", validation.denial_message());
        Outcome::Denied
    } else if !answer.warnings.is_empty() {
        Outcome::Warned
    } else {
        Outcome::Unchanged
    };
    let role = crate::spark::role_of(&create.pod).ok();
    (answer, Decision::judged(create, role, outcome, policies, 0))
}
