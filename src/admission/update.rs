//! A Spark pod's UPDATE (the pod, or a subresource that changes what it runs): judged on
//! `/validate` only when it changes what the rules read; never patched.

use std::time::Instant;

use super::answer::Answer;
use super::decision::Decision;
use super::pods;
use super::refusal::Refusal;
use super::review::PodUpdate;
use super::state::AppState;
use crate::engine::Deadline;
use crate::metrics::{Endpoint, Outcome};

/// The answer to a pod's UPDATE on `endpoint`; the engine gives up at `deadline`.
pub(super) fn answer<'a>(
    state: &AppState,
    endpoint: Endpoint,
    update: &'a PodUpdate,
    deadline: Instant,
) -> Result<(Answer, Decision<'a>), Refusal> {
    let new = &update.new;
    match endpoint {
        // Mutation is CREATE-only: an UPDATE sent to /mutate (a misconfigured webhook) is
        // allowed unchanged, never patched.
        Endpoint::Mutate => Ok((
            Answer::allow(new.uid.as_str()),
            Decision {
                role: None,
                ..Decision::unjudged(new, Outcome::Unchanged)
            },
        )),
        Endpoint::Validate | Endpoint::ValidatePolicy => {
            validate(state, update, deadline).or_else(|refusal| pods::refused(new, refusal))
        }
    }
}

/// Judged only when the UPDATE changes what the rules read (`Engine::validate_update`);
/// otherwise allowed at once, as for finalizer and annotation updates.
fn validate<'a>(
    state: &AppState,
    update: &'a PodUpdate,
    deadline: Instant,
) -> Result<(Answer, Decision<'a>), Refusal> {
    let new = &update.new;
    let set = state.store.snapshot();
    let judged = state.engine.validate_update(
        &set,
        &update.old,
        &new.pod,
        &new.namespace,
        Deadline::at(deadline),
    );
    match judged {
        Err(e) => Err(pods::not_evaluated(new, &e)),
        Ok(Some(validation)) => Ok(pods::judged(state, new, &validation)),
        Ok(None) => Ok((
            Answer::allow(new.uid.as_str()),
            Decision::unjudged(new, Outcome::Unchanged),
        )),
    }
}
