//! Where a review runs, once its body is here. The review slot is taken then: a slow
//! client never holds one, and at most `max_concurrent_requests` reviews are decoded and
//! planned at once.
//!
//! Decoding and the engine are CPU work, and cost grows with the body (the engine refuses
//! pods whose lists are larger than a Spark pod's, so no shape costs much more than its
//! size). A review of ordinary size (a Spark pod's review is 10-25 KB) costs well under a
//! millisecond, less than a hop to the blocking pool, and runs on the async worker. Larger
//! bodies go to the blocking pool, at most `heavy_at_once()` at a time, so that however
//! many a tenant sends, a core stays free for everyone's ordinary reviews; they wait their
//! turn in order, within their deadline. The engine checks the deadline too, so a review
//! that outlives it stops there and is refused, wherever it runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::response::Response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::refusal::{discarded, Refusal};
use super::service;
use super::state::{AppState, Clock, INLINE_BODY_BYTES, LARGE_BODY_BYTES};
use crate::metrics::{Endpoint, Metrics};

/// Evaluates the review in `body` (holding `body_bytes` of the byte budget) within its
/// deadline: on this worker, or on the blocking pool when it is large.
pub(super) async fn run(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    body: Vec<u8>,
    body_bytes: Option<OwnedSemaphorePermit>,
    clock: Clock,
) -> Result<Response, Refusal> {
    let _slot = match state.slots.try_acquire() {
        Ok(slot) => slot,
        Err(_) => {
            state.metrics.record_slot_wait("review");
            let Ok(Ok(slot)) = tokio::time::timeout_at(clock.deadline, state.slots.acquire()).await
            else {
                return Err(Refusal::busy("review slot", clock.budget));
            };
            slot
        }
    };
    // Whoever sets `answered` first (the job when done, or the deadline) counts and logs
    // the review, so a late job never reports an answer the client did not get.
    let answered = Arc::new(AtomicBool::new(false));
    let until = clock.deadline.into_std();
    if body.len() <= INLINE_BODY_BYTES {
        let result =
            service::evaluate(state, endpoint, &body, clock.started, until, &answered).await;
        drop(body_bytes);
        return result;
    }
    // The large slot first: it bounds memory, the heavy slot bounds CPU, and taking them
    // always in this order means no review holds one while another holds the other.
    let large_slot = if body.len() > LARGE_BODY_BYTES {
        match take_slot(&state.metrics, &state.large_slots, "large_review", clock).await {
            Some(slot) => Some(slot),
            None => return Err(Refusal::busy("large-review slot", clock.budget)),
        }
    } else {
        None
    };
    let Some(heavy_slot) =
        take_slot(&state.metrics, &state.heavy_slots, "heavy_review", clock).await
    else {
        return Err(Refusal::busy("large-review slot", clock.budget));
    };
    let worker = Arc::clone(state);
    let job_answered = Arc::clone(&answered);
    // The evaluation may wait for a driver lookup (a pinned executor): on this runtime.
    let runtime = tokio::runtime::Handle::current();
    // The slot and the body's bytes go with the job: they are released when the
    // evaluation ends, even one that outlives its deadline.
    let mut job = tokio::task::spawn_blocking(move || {
        let _slots = (large_slot, heavy_slot);
        let _body_bytes = body_bytes;
        // Waited past the deadline for the pool: the client has had its 503.
        if job_answered.load(Ordering::Acquire) {
            return Ok(discarded());
        }
        runtime.block_on(service::evaluate(
            &worker,
            endpoint,
            &body,
            clock.started,
            until,
            &job_answered,
        ))
    });
    let failed = |join| Err(Refusal::evaluation_failed(endpoint, join));
    match tokio::time::timeout_at(clock.deadline, &mut job).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => failed(join),
        // The job finished at the deadline and has recorded its answer: send it.
        Err(_) if answered.swap(true, Ordering::AcqRel) => job.await.unwrap_or_else(failed),
        Err(_) => Err(Refusal::evaluated_too_late(clock.budget)),
    }
}

/// A permit of `slots`, if one frees up before the deadline; a wait is counted as `which`.
async fn take_slot(
    metrics: &Metrics,
    slots: &Arc<Semaphore>,
    which: &'static str,
    clock: Clock,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(slot) = Arc::clone(slots).try_acquire_owned() {
        return Some(slot);
    }
    metrics.record_slot_wait(which);
    tokio::time::timeout_at(clock.deadline, Arc::clone(slots).acquire_owned())
        .await
        .ok()?
        .ok()
}
