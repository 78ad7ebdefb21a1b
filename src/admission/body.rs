//! Reading a review's body. A body is read before the review takes a slot, so a client
//! that trickles its body holds no slot. While bodies arrive, their bytes count against
//! one budget (`--max-body-bytes-in-flight`), and each body must keep coming
//! (`--body-read-timeout` between chunks, `--min-body-rate` on average after that first
//! wait), or the request is cut with 408 and counted.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::refusal::Refusal;
use super::state::{AppState, Clock, INLINE_BODY_BYTES};
use crate::metrics::SlowClient;

/// The request's body, at most `--max-body-bytes`, with its bytes' share of the budget
/// (held until the review is answered).
pub(super) async fn receive(
    state: &AppState,
    req: Request,
    clock: Clock,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), Refusal> {
    let limit = state.limits.max_body_bytes;
    if declared_length(&req).is_some_and(|n| n > limit as u64) {
        // Reading the rest (without keeping it) lets an HTTP/1.1 client that is still
        // sending see the 413 instead of a reset connection. A client waiting for
        // `100 Continue` has sent nothing yet and must not be invited to.
        let expects_continue = req.headers().contains_key(header::EXPECT);
        let mut body = req.into_body();
        if !expects_continue {
            let drained = discard(&mut body, drain_cap(limit));
            let _ = tokio::time::timeout_at(clock.deadline, drained).await;
        }
        return Err(Refusal::body_too_large(limit));
    }
    // Receiving is CPU work too (TLS, copying): large bodies are read a few at a time, as
    // they are evaluated, so that a flood of them, refused in microseconds once read,
    // cannot take the cores from everyone's ordinary reviews. Small bodies never wait.
    let _large_read = match declared_length(&req) {
        Some(n) if n > INLINE_BODY_BYTES as u64 => match take_large_read(state, clock).await {
            Some(permit) => Some(permit),
            None => return Err(Refusal::busy("large-body read", clock.budget)),
        },
        _ => None,
    };
    // HTTP/1.1: a request cut while its body is still arriving closes its connection, so
    // the client cannot go on using it (h2 resets the stream by itself).
    let close_after = req.version() <= http::Version::HTTP_11;
    let pace = Pace {
        idle: state.limits.body_read_timeout,
        min_rate: state.limits.min_body_rate,
    };
    let read = read_body(
        req.into_body(),
        limit,
        pace,
        &state.body_bytes,
        clock.deadline,
    )
    .await;
    read.map_err(|e| match e {
        BodyError::TooLarge => Refusal::body_too_large(limit),
        BodyError::Read(e) => Refusal::unreadable_body(e),
        BodyError::Slow(why, received) => {
            state.metrics.record_slow_client(why);
            let elapsed = clock.started.elapsed();
            Refusal::slow_body(
                why,
                received,
                elapsed,
                pace.idle,
                pace.min_rate,
                close_after,
            )
        }
        BodyError::Deadline => Refusal::body_late(clock.budget),
        BodyError::NoBudget => Refusal::busy("room for the request body", clock.budget),
    })
}

/// A large-body read permit, if one frees up before the deadline (a wait is counted).
async fn take_large_read(state: &AppState, clock: Clock) -> Option<OwnedSemaphorePermit> {
    let reads = Arc::clone(&state.large_reads);
    if let Ok(permit) = Arc::clone(&reads).try_acquire_owned() {
        return Some(permit);
    }
    state.metrics.record_slot_wait("large_read");
    tokio::time::timeout_at(clock.deadline, reads.acquire_owned())
        .await
        .ok()?
        .ok()
}

fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

enum BodyError {
    TooLarge,
    Read(axum::BoxError),
    /// Cut for being too slow, after this many bytes.
    Slow(SlowClient, usize),
    /// The review's deadline passed.
    Deadline,
    /// No room in the body byte budget within the deadline.
    NoBudget,
}

/// How a body must keep arriving.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Longest gap between two parts of the body, and the grace before `min_rate`.
    idle: Duration,
    /// Bytes per second on average after the grace; 0: no minimum.
    min_rate: u64,
}

impl Pace {
    /// When the body is due to have sent more than `received` bytes, given when reading
    /// began and when the last part came; and which rule that time comes from.
    fn due(
        &self,
        began: tokio::time::Instant,
        last: tokio::time::Instant,
        received: usize,
    ) -> (tokio::time::Instant, SlowClient) {
        let idle = last + self.idle;
        if self.min_rate == 0 {
            return (idle, SlowClient::BodyIdle);
        }
        let earned = Duration::from_secs_f64(received as f64 / self.min_rate as f64);
        let rate = began + self.idle + earned;
        if rate < idle {
            (rate, SlowClient::BodyRate)
        } else {
            (idle, SlowClient::BodyIdle)
        }
    }
}

/// The whole body, at most `limit` bytes, with its bytes' share of the budget (held until
/// the review is answered). The body must keep to `pace`, and end before `deadline`.
async fn read_body(
    mut body: Body,
    limit: usize,
    pace: Pace,
    budget: &Arc<Semaphore>,
    deadline: tokio::time::Instant,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), BodyError> {
    // No capacity from the declared length: a client may announce megabytes and send
    // nothing, and memory follows what has arrived.
    let mut buf = Vec::new();
    let mut held: Option<OwnedSemaphorePermit> = None;
    let began = tokio::time::Instant::now();
    let mut last = began;
    loop {
        let (due, why) = pace.due(began, last, buf.len());
        let frame = match tokio::time::timeout_at(due.min(deadline), body.frame()).await {
            Ok(Some(frame)) => frame.map_err(|e| BodyError::Read(e.into()))?,
            Ok(None) => return Ok((buf, held)),
            Err(_) if due < deadline => return Err(BodyError::Slow(why, buf.len())),
            Err(_) => return Err(BodyError::Deadline),
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            let _ = tokio::time::timeout_at(deadline, discard(&mut body, drain_cap(limit))).await;
            return Err(BodyError::TooLarge);
        }
        // `data.len() <= limit`, which fits the budget (see AppState::new) and a u32.
        let n = u32::try_from(data.len()).map_err(|_| BodyError::TooLarge)?;
        let permit = match Arc::clone(budget).try_acquire_many_owned(n) {
            Ok(p) => p,
            Err(_) => {
                match tokio::time::timeout_at(deadline, Arc::clone(budget).acquire_many_owned(n))
                    .await
                {
                    Ok(Ok(p)) => p,
                    _ => return Err(BodyError::NoBudget),
                }
            }
        };
        match held.as_mut() {
            Some(h) => h.merge(permit),
            None => held = Some(permit),
        }
        buf.extend_from_slice(data);
        last = tokio::time::Instant::now();
    }
}

/// How much of an oversized body is read and dropped before giving up on the connection.
fn drain_cap(limit: usize) -> usize {
    limit.saturating_mul(2)
}

/// Reads and drops the rest of a body, up to `budget` bytes; true if it ended in time.
async fn discard(body: &mut Body, mut budget: usize) -> bool {
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return false };
        if let Some(data) = frame.data_ref() {
            let Some(left) = budget.checked_sub(data.len()) else {
                return false;
            };
            budget = left;
        }
    }
    true
}
