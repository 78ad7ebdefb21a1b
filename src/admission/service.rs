//! The review service: decode → recognise → plan or judge → answer. Only a pinned
//! executor's driver lookup waits (on the cache, or one bounded GET); everything else is
//! CPU work, stopped by the engine at the review's deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::response::Response;

use super::answer::Answer;
use super::decision::Decision;
use super::policy_review;
use super::prescan;
use super::refusal::{discarded, json_ok, Refusal};
use super::review::{self, Review};
use super::state::{AppState, INLINE_BODY_BYTES};
use super::{pods, update};
use crate::metrics::{role_label, Endpoint, Outcome};

/// Decodes, evaluates and encodes one review. The result is sent only if this
/// evaluation claims `answered` first (see `schedule::run`); a refusal returned here is
/// counted and logged by the handler as it goes out.
pub(super) async fn evaluate(
    state: &AppState,
    endpoint: Endpoint,
    body: &[u8],
    started: Instant,
    deadline: Instant,
    answered: &AtomicBool,
) -> Result<Response, Refusal> {
    if endpoint == Endpoint::ValidatePolicy {
        return evaluate_policy(state, body, started, answered);
    }
    // A large body is counted before it is decoded: decoding a crafted one (thousands of
    // containers) would cost many times a benign body of its size (see prescan.rs).
    if body.len() > INLINE_BODY_BYTES {
        if let Some(refused) = prescan::too_large(body, &state.engine.limits) {
            if answered_late(answered, endpoint) {
                return Ok(discarded());
            }
            return Err(Refusal::too_large(
                &refused.uid,
                Some(refused.role),
                &refused.error,
            ));
        }
    }
    let review = review::decode(body);
    if review.is_err() && answered_late(answered, endpoint) {
        return Ok(discarded());
    }
    let review = review.map_err(|e| Refusal::not_a_review(e.to_string()))?;
    let verdict = match &review {
        Review::PassThrough { uid, what } => {
            Ok((Answer::allow(uid.as_str()), Decision::pass_through(what)))
        }
        Review::PodCreate(create) => pods::answer(state, endpoint, create, deadline).await,
        Review::PodUpdate(change) => update::answer(state, endpoint, change, deadline),
    };
    if answered_late(answered, endpoint) {
        return Ok(discarded());
    }
    let (answer, decision) = verdict?;
    let encoded = answer
        .to_review_json()
        .map_err(|e| Refusal::unencodable(&answer.uid, e))?;
    let seconds = started.elapsed().as_secs_f64();
    state
        .metrics
        .record_request(endpoint, decision.role, decision.outcome, seconds);
    tracing::info!(
        endpoint = endpoint.as_str(),
        uid = review.uid(),
        namespace = decision.namespace,
        pod = decision.pod,
        role = role_label(decision.role),
        app = decision.app,
        policies = decision.policies.as_str(),
        ops = decision.ops,
        decision = decision.outcome.as_str(),
        dry_run = decision.dry_run,
        body_bytes = body.len(),
        duration_ms = (seconds * 1e6).round() / 1e3,
        "admission review"
    );
    Ok(json_ok(encoded))
}

/// `/validate-policy`: decodes the ConfigMap review and checks its policies.
fn evaluate_policy(
    state: &AppState,
    body: &[u8],
    started: Instant,
    answered: &AtomicBool,
) -> Result<Response, Refusal> {
    let endpoint = Endpoint::ValidatePolicy;
    let current = state.store.snapshot();
    let verdict = policy_review::review(body, &current);
    if answered_late(answered, endpoint) {
        return Ok(discarded());
    }
    let verdict = verdict.map_err(|e| Refusal::not_a_review(e.to_string()))?;
    let outcome = if !verdict.answer.allowed {
        Outcome::Denied
    } else if !verdict.answer.warnings.is_empty() {
        Outcome::Warned
    } else {
        Outcome::Unchanged
    };
    let encoded = verdict
        .answer
        .to_review_json()
        .map_err(|e| Refusal::unencodable(&verdict.answer.uid, e))?;
    let seconds = started.elapsed().as_secs_f64();
    state
        .metrics
        .record_request(endpoint, None, outcome, seconds);
    tracing::info!(
        endpoint = endpoint.as_str(),
        uid = verdict.answer.uid.as_str(),
        namespace = verdict.namespace.as_str(),
        configmap = verdict.name.as_str(),
        policies = verdict.policies.join(",").as_str(),
        errors = verdict.errors,
        decision = outcome.as_str(),
        duration_ms = (seconds * 1e6).round() / 1e3,
        "policy review"
    );
    Ok(json_ok(encoded))
}

/// Claims the answer for the evaluation; true when the deadline got there first (the
/// client has had its error, and this result goes nowhere).
fn answered_late(answered: &AtomicBool, endpoint: Endpoint) -> bool {
    let late = answered.swap(true, Ordering::AcqRel);
    if late {
        tracing::warn!(
            endpoint = endpoint.as_str(),
            "review evaluated after its deadline; the client got an error instead"
        );
    }
    late
}
