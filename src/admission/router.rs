//! The webhook endpoints: `POST /mutate` and `POST /validate` for Spark pods, and
//! `POST /validate-policy` for policy ConfigMaps.
//!
//! Each review runs under one deadline (our `--request-timeout`, shortened to fit the API
//! server's `?timeout=`): reading the body, waiting for a slot and evaluating all count, so
//! a slow client or a busy server gets a clear error before the API server gives up.
//!
//! A body is read before the review takes a slot, so a client that trickles its body holds
//! no slot: slots are for evaluating, which takes well under a millisecond. While bodies
//! arrive, their bytes count against one budget (`--max-body-bytes-in-flight`), and each
//! body must keep coming (`--body-read-timeout` between chunks, `--min-body-rate` on
//! average after that first wait), or the request is cut with 408 and counted.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::FutureExt;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::answer::Answer;
use super::parse_duration;
use super::policy_review;
use super::prescan;
use super::review::{self, Review, AUDIT_APPLIED, AUDIT_CHECKED, AUDIT_FINDINGS};
use crate::engine::{Deadline, Engine, EngineError, MutateRequest, Validation};
use crate::metrics::{role_label, Endpoint, Metrics, Outcome, SlowClient};
use crate::pinning::{self, PinCheck, Unverified};
use crate::policy::model::RuleMode;
use crate::source::{Drivers, PolicyStore};
use crate::spark::{self, SparkRole, APP_NAME_LABEL};

/// Per-request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted body; beyond it the answer is 413.
    pub max_body_bytes: usize,
    /// Longest a review may take, from arrival to answer.
    pub request_timeout: Duration,
    /// Reviews evaluated at once; further ones wait within their deadline. A review takes
    /// its slot once its body has arrived.
    pub max_concurrent_requests: usize,
    /// Body bytes held by all requests at once, from the first byte received until the
    /// review is answered; a request that would exceed it waits within its deadline.
    pub max_body_bytes_in_flight: usize,
    /// Longest wait for the next part of a body (nginx's `client_body_timeout`); also the
    /// grace before `min_body_rate` applies.
    pub body_read_timeout: Duration,
    /// Bytes per second a body must average once `body_read_timeout` has passed; 0: none.
    pub min_body_rate: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 3 * 1024 * 1024,
            request_timeout: Duration::from_secs(8),
            max_concurrent_requests: 64,
            max_body_bytes_in_flight: 32 * 1024 * 1024,
            body_read_timeout: Duration::from_secs(2),
            min_body_rate: 64 * 1024,
        }
    }
}

impl Limits {
    /// The deadline of one review: ours, or 80% of the API server's `timeout` if shorter,
    /// so the answer (or a clear error) reaches it before it gives up.
    pub fn budget(&self, query: Option<&str>) -> Duration {
        let theirs = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|kv| kv.strip_prefix("timeout="))
            .and_then(|v| parse_duration(v).ok())
            .filter(|d| !d.is_zero());
        match theirs {
            Some(t) => self.request_timeout.min(t.mul_f64(0.8)),
            None => self.request_timeout,
        }
    }
}

/// What every review needs, shared by all requests.
#[derive(Debug)]
pub struct AppState {
    engine: Engine,
    store: Arc<PolicyStore>,
    /// Where executors' pins are checked (none: the folder source, every pin unverified).
    drivers: Drivers,
    metrics: Arc<Metrics>,
    limits: Limits,
    slots: Semaphore,
    /// Reviews above [`INLINE_BODY_BYTES`] evaluated at once, on the blocking pool.
    heavy_slots: Arc<Semaphore>,
    /// Of those, reviews above [`LARGE_BODY_BYTES`] evaluated at once.
    large_slots: Arc<Semaphore>,
    /// One permit per body byte held (`Limits::max_body_bytes_in_flight`).
    body_bytes: Arc<Semaphore>,
    /// Raises remembered after OOMKilled pods (ConfigMap source only).
    memory: Option<Arc<crate::memory::MemoryState>>,
}

impl AppState {
    pub fn new(
        engine: Engine,
        store: Arc<PolicyStore>,
        metrics: Arc<Metrics>,
        limits: Limits,
    ) -> Self {
        let slots = Semaphore::new(limits.max_concurrent_requests.max(1));
        // A review of a few MiB takes up to ~100 MiB to decode and plan. Spark pods are a
        // few KiB, so such reviews are rare or hostile: one at a time keeps a burst of them
        // under the Deployment's memory limit (two at once peaked at 249 MiB).
        let large_slots = Arc::new(Semaphore::new(LARGE_AT_ONCE));
        let heavy_slots = Arc::new(Semaphore::new(heavy_at_once()));
        // At least one whole body must fit, or a review at the limit could never be read.
        let body_bytes = limits
            .max_body_bytes_in_flight
            .max(limits.max_body_bytes)
            .min(Semaphore::MAX_PERMITS);
        let body_bytes = Arc::new(Semaphore::new(body_bytes));
        Self {
            engine,
            store,
            drivers: Drivers::None,
            metrics,
            limits,
            slots,
            heavy_slots,
            large_slots,
            body_bytes,
            memory: None,
        }
    }

    /// This state with the raises remembered after OOMKilled pods applied to new pods.
    pub fn with_memory(mut self, memory: Arc<crate::memory::MemoryState>) -> Self {
        self.memory = Some(memory);
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Checks executors' pins against these stored drivers.
    pub fn with_drivers(mut self, drivers: Drivers) -> Self {
        self.drivers = drivers;
        self
    }
}

/// The webhook router; serve it over TLS, or call it with `tower::ServiceExt::oneshot`.
pub fn webhook_router(state: Arc<AppState>) -> Router {
    let metrics = Arc::clone(&state.metrics);
    Router::new()
        .route(MUTATE_PATH, post(mutate))
        .route(VALIDATE_PATH, post(validate))
        .route(VALIDATE_POLICY_PATH, post(validate_policy))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(metrics, catch_panic))
}

/// A panic in a handler is a bug. Without this layer hyper drops the connection (h2: the
/// stream), which the API server reports as an unclear transport error; with it, the
/// client gets a 500 (the webhook's failurePolicy decides), the panic is counted and
/// logged, and the process and the connection carry on.
async fn catch_panic(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let endpoint = match req.uri().path() {
        MUTATE_PATH => Some(Endpoint::Mutate),
        VALIDATE_PATH => Some(Endpoint::Validate),
        VALIDATE_POLICY_PATH => Some(Endpoint::ValidatePolicy),
        _ => None,
    };
    // Unwind safety: what a handler shares (semaphores, atomics, the policy snapshot) is
    // released or left consistent by drops during the unwind.
    let panic = match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(response) => return response,
        Err(panic) => panic,
    };
    let what = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    metrics.record_handler_panic();
    if let Some(endpoint) = endpoint {
        metrics.record_request(
            endpoint,
            None,
            Outcome::Error,
            started.elapsed().as_secs_f64(),
        );
    }
    tracing::error!(
        endpoint = endpoint.map_or("other", Endpoint::as_str),
        panic = what,
        "webhook handler panicked; answered 500"
    );
    plain(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error in spark-admission while evaluating the review".to_owned(),
    )
}

/// The webhook paths, as the webhook configurations in `deploy/` name them.
pub const MUTATE_PATH: &str = "/mutate";
pub const VALIDATE_PATH: &str = "/validate";
pub const VALIDATE_POLICY_PATH: &str = "/validate-policy";

async fn mutate(State(state): State<Arc<AppState>>, req: Request) -> Response {
    serve_review(state, Endpoint::Mutate, req).await
}

async fn validate(State(state): State<Arc<AppState>>, req: Request) -> Response {
    serve_review(state, Endpoint::Validate, req).await
}

async fn validate_policy(State(state): State<Arc<AppState>>, req: Request) -> Response {
    serve_review(state, Endpoint::ValidatePolicy, req).await
}

async fn serve_review(state: Arc<AppState>, endpoint: Endpoint, req: Request) -> Response {
    let started = Instant::now();
    let _in_flight = state.metrics.in_flight();
    let budget = state.limits.budget(req.uri().query());
    let deadline = tokio::time::Instant::now() + budget;
    let fail = |status: StatusCode, outcome: Outcome, reason: String| {
        state
            .metrics
            .record_request(endpoint, None, outcome, started.elapsed().as_secs_f64());
        tracing::warn!(
            endpoint = endpoint.as_str(),
            status = status.as_u16(),
            decision = outcome.as_str(),
            reason = reason.as_str(),
            "admission review refused"
        );
        plain(status, reason)
    };

    // Checking a policy ConfigMap needs no policies: it must work before they load, or a
    // broken set could never be replaced through the webhook.
    if endpoint != Endpoint::ValidatePolicy && !state.store.is_loaded() {
        return fail(
            StatusCode::SERVICE_UNAVAILABLE,
            Outcome::Error,
            "policies are not loaded yet".to_owned(),
        );
    }
    let limit = state.limits.max_body_bytes;
    let declared = declared_length(&req);
    if declared.is_some_and(|n| n > limit as u64) {
        // Reading the rest (without keeping it) lets an HTTP/1.1 client that is still
        // sending see the 413 instead of a reset connection. A client waiting for
        // `100 Continue` has sent nothing yet and must not be invited to.
        let expects_continue = req.headers().contains_key(header::EXPECT);
        let mut body = req.into_body();
        if !expects_continue {
            let _ = tokio::time::timeout_at(deadline, discard(&mut body, drain_cap(limit))).await;
        }
        return fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            Outcome::BadRequest,
            format!("request body is larger than {limit} bytes"),
        );
    }
    let busy = |what: &str| {
        fail(
            StatusCode::SERVICE_UNAVAILABLE,
            Outcome::Error,
            format!("server busy: no {what} within {budget:?}"),
        )
    };
    // HTTP/1.1: a request cut while its body is still arriving closes its connection, so
    // the client cannot go on using it (h2 resets the stream by itself).
    let close_after = req.version() <= http::Version::HTTP_11;
    let pace = Pace {
        idle: state.limits.body_read_timeout,
        min_rate: state.limits.min_body_rate,
    };
    let read = read_body(req.into_body(), limit, pace, &state.body_bytes, deadline).await;
    // `body_bytes` is the body's share of the byte budget, held until the review is answered.
    let (body, body_bytes) = match read {
        Ok(read) => read,
        Err(BodyError::TooLarge) => {
            return fail(
                StatusCode::PAYLOAD_TOO_LARGE,
                Outcome::BadRequest,
                format!("request body is larger than {limit} bytes"),
            )
        }
        Err(BodyError::Read(e)) => {
            return fail(
                StatusCode::BAD_REQUEST,
                Outcome::BadRequest,
                format!("cannot read the request body: {e}"),
            )
        }
        Err(BodyError::Slow(why, received)) => {
            state.metrics.record_slow_client(why);
            let reason = match why {
                SlowClient::BodyRate => format!(
                    "request body too slow: {received} bytes in {:?}, below {} bytes/s",
                    started.elapsed(),
                    pace.min_rate
                ),
                _ => format!(
                    "request body stalled: nothing received for {:?} ({received} bytes so far)",
                    pace.idle
                ),
            };
            let mut response = fail(StatusCode::REQUEST_TIMEOUT, Outcome::Error, reason);
            if close_after {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return response;
        }
        Err(BodyError::Deadline) => {
            return fail(
                StatusCode::REQUEST_TIMEOUT,
                Outcome::Error,
                format!("request body not received within {budget:?}"),
            )
        }
        Err(BodyError::NoBudget) => return busy("room for the request body"),
    };
    // The slot is taken once the body is here: a slow client never holds one, and at most
    // `max_concurrent_requests` reviews are decoded and planned at once.
    let _slot = match state.slots.try_acquire() {
        Ok(slot) => slot,
        Err(_) => {
            state.metrics.record_slot_wait("review");
            let Ok(Ok(slot)) = tokio::time::timeout_at(deadline, state.slots.acquire()).await
            else {
                return busy("review slot");
            };
            slot
        }
    };
    // Decoding and the engine are CPU work, and cost grows with the body (the engine
    // refuses pods whose lists are larger than a Spark pod's, so no shape costs much more
    // than its size). A review of ordinary size (a Spark pod's review is 10-25 KB) costs
    // well under a millisecond, less than a hop to the blocking pool, and runs here. Larger
    // bodies go to the blocking pool, at most `heavy_at_once()` at a time, so that however
    // many a tenant sends, a core stays free for everyone's ordinary reviews; they wait
    // their turn in order, within their deadline. The engine checks the deadline too, so a
    // review that outlives it stops there and is refused, wherever it runs.
    // Whoever sets `answered` first (the job when done, or the deadline) counts and logs
    // the review, so a late job never reports an answer the client did not get.
    let answered = Arc::new(AtomicBool::new(false));
    let until = deadline.into_std();
    if body.len() <= INLINE_BODY_BYTES {
        let response = evaluate(&state, endpoint, &body, started, until, &answered).await;
        drop(body_bytes);
        return response;
    }
    // The large slot first: it bounds memory, the heavy slot bounds CPU, and taking them
    // always in this order means no review holds one while another holds the other.
    let large_slot = if body.len() > LARGE_BODY_BYTES {
        match take_slot(&state.metrics, &state.large_slots, "large_review", deadline).await {
            Some(slot) => Some(slot),
            None => return busy("large-review slot"),
        }
    } else {
        None
    };
    let Some(heavy_slot) =
        take_slot(&state.metrics, &state.heavy_slots, "heavy_review", deadline).await
    else {
        return busy("large-review slot");
    };
    let worker = Arc::clone(&state);
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
            return plain(StatusCode::SERVICE_UNAVAILABLE, String::new());
        }
        runtime.block_on(evaluate(
            &worker,
            endpoint,
            &body,
            started,
            until,
            &job_answered,
        ))
    });
    let internal_error = |join: tokio::task::JoinError| {
        tracing::error!(endpoint = endpoint.as_str(), error = %join, "review evaluation failed");
        fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            Outcome::Error,
            "internal error while evaluating the review".to_owned(),
        )
    };
    match tokio::time::timeout_at(deadline, &mut job).await {
        Ok(Ok(response)) => response,
        Ok(Err(join)) => internal_error(join),
        Err(_) if answered.swap(true, Ordering::AcqRel) => {
            // The job finished at the deadline and has recorded its answer: send it.
            job.await.unwrap_or_else(internal_error)
        }
        Err(_) => fail(
            StatusCode::SERVICE_UNAVAILABLE,
            Outcome::Error,
            format!("review not evaluated within {budget:?}"),
        ),
    }
}

/// Bodies up to this size are evaluated on the async worker that read them: four times
/// the largest Spark pod review seen (a rich executor, 24 KB pretty-printed).
const INLINE_BODY_BYTES: usize = 64 * 1024;
/// Bodies above this size are large (see [`LARGE_AT_ONCE`]).
const LARGE_BODY_BYTES: usize = 256 * 1024;
/// Large reviews evaluated at once.
const LARGE_AT_ONCE: usize = 1;

/// Reviews above [`INLINE_BODY_BYTES`] evaluated at once: one core fewer than the machine
/// has (at least one), so that the async workers always have a core for ordinary reviews.
fn heavy_at_once() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .saturating_sub(1)
        .max(1)
}

/// A permit of `slots`, if one frees up before the deadline; a wait is counted as `which`.
async fn take_slot(
    metrics: &Metrics,
    slots: &Arc<Semaphore>,
    which: &'static str,
    deadline: tokio::time::Instant,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(slot) = Arc::clone(slots).try_acquire_owned() {
        return Some(slot);
    }
    metrics.record_slot_wait(which);
    tokio::time::timeout_at(deadline, Arc::clone(slots).acquire_owned())
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

/// What one evaluated review leads to, for the log line and the metrics.
struct Decision<'a> {
    role: Option<SparkRole>,
    outcome: Outcome,
    namespace: &'a str,
    pod: &'a str,
    app: &'a str,
    policies: String,
    ops: usize,
    dry_run: bool,
}

/// Decodes, evaluates and encodes one review; the engine gives up at `deadline`. Only a
/// pinned executor's driver lookup waits (on the cache, or one bounded GET); everything
/// else is CPU work.
async fn evaluate(
    state: &AppState,
    endpoint: Endpoint,
    body: &[u8],
    started: Instant,
    deadline: Instant,
    answered: &AtomicBool,
) -> Response {
    if endpoint == Endpoint::ValidatePolicy {
        return evaluate_policy(state, body, started, answered);
    }
    // A large body is counted before it is decoded: decoding a crafted one (thousands of
    // containers) would cost many times a benign body of its size (see prescan.rs).
    if body.len() > INLINE_BODY_BYTES {
        if let Some(refused) = prescan::too_large(body, &state.engine.limits) {
            return refuse_counted(state, endpoint, started, answered, &refused);
        }
    }
    let review = match review::decode(body) {
        Ok(r) => r,
        Err(e) => {
            if answered_late(answered, endpoint) {
                return plain(StatusCode::SERVICE_UNAVAILABLE, String::new());
            }
            return refuse_body(state, endpoint, started, e.to_string());
        }
    };
    let (answer, decision) = match &review {
        Review::PassThrough { uid, what } => (
            Answer::allow(uid.as_str()),
            Decision {
                role: None,
                outcome: Outcome::Unchanged,
                namespace: "",
                pod: what,
                app: "",
                policies: String::new(),
                ops: 0,
                dry_run: false,
            },
        ),
        Review::PodCreate(create) => match endpoint {
            Endpoint::Mutate => {
                let check = check_pin(state, create).await;
                mutate_pod(state, create, check, deadline)
            }
            // ValidatePolicy returned above (evaluate_policy); listed for exhaustiveness.
            Endpoint::Validate | Endpoint::ValidatePolicy => validate_pod(state, create, deadline),
        },
        Review::PodUpdate(update) => match endpoint {
            // Mutation is CREATE-only: an UPDATE sent to /mutate (a misconfigured
            // webhook) is allowed unchanged, never patched.
            Endpoint::Mutate => (
                Answer::allow(update.new.uid.as_str()),
                Decision {
                    role: None,
                    outcome: Outcome::Unchanged,
                    namespace: &update.new.namespace,
                    pod: &update.new.name,
                    app: app_name(&update.new.pod),
                    policies: String::new(),
                    ops: 0,
                    dry_run: update.new.dry_run,
                },
            ),
            Endpoint::Validate | Endpoint::ValidatePolicy => {
                validate_update(state, update, deadline)
            }
        },
    };
    if answered_late(answered, endpoint) {
        return plain(StatusCode::SERVICE_UNAVAILABLE, String::new());
    }
    let Some(encoded) = encode(state, endpoint, decision.role, started, &answer) else {
        return unencodable();
    };
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
    json_ok(encoded)
}

/// `/validate-policy`: decodes the ConfigMap review and checks its policies.
fn evaluate_policy(
    state: &AppState,
    body: &[u8],
    started: Instant,
    answered: &AtomicBool,
) -> Response {
    let endpoint = Endpoint::ValidatePolicy;
    let current = state.store.snapshot();
    let verdict = policy_review::review(body, &current);
    if answered_late(answered, endpoint) {
        return plain(StatusCode::SERVICE_UNAVAILABLE, String::new());
    }
    let verdict = match verdict {
        Ok(v) => v,
        Err(e) => return refuse_body(state, endpoint, started, e.to_string()),
    };
    let outcome = if !verdict.answer.allowed {
        Outcome::Denied
    } else if !verdict.answer.warnings.is_empty() {
        Outcome::Warned
    } else {
        Outcome::Unchanged
    };
    let Some(encoded) = encode(state, endpoint, None, started, &verdict.answer) else {
        return unencodable();
    };
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
    json_ok(encoded)
}

/// The answer for a Spark pod the scan found larger than any Spark pod: as the engine
/// would refuse it (422 with the field, count and limit), counted and logged.
fn refuse_counted(
    state: &AppState,
    endpoint: Endpoint,
    started: Instant,
    answered: &AtomicBool,
    refused: &prescan::Refused,
) -> Response {
    if answered_late(answered, endpoint) {
        return plain(StatusCode::SERVICE_UNAVAILABLE, String::new());
    }
    let mut answer = Answer::allow(refused.uid.as_str());
    answer.deny(
        422,
        "Invalid",
        format!("spark-admission: {}", refused.error),
    );
    let Some(encoded) = encode(state, endpoint, Some(refused.role), started, &answer) else {
        return unencodable();
    };
    let seconds = started.elapsed().as_secs_f64();
    state
        .metrics
        .record_request(endpoint, Some(refused.role), Outcome::Denied, seconds);
    tracing::warn!(
        endpoint = endpoint.as_str(),
        uid = refused.uid.as_str(),
        role = role_label(Some(refused.role)),
        error = %refused.error,
        decision = Outcome::Denied.as_str(),
        duration_ms = (seconds * 1e6).round() / 1e3,
        "pod not evaluated"
    );
    json_ok(encoded)
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

/// A body that is not a review we can answer: counted, logged, and a 400 with the reason.
fn refuse_body(state: &AppState, endpoint: Endpoint, started: Instant, reason: String) -> Response {
    state.metrics.record_request(
        endpoint,
        None,
        Outcome::BadRequest,
        started.elapsed().as_secs_f64(),
    );
    tracing::warn!(
        endpoint = endpoint.as_str(),
        status = 400u16,
        decision = Outcome::BadRequest.as_str(),
        reason = reason.as_str(),
        "admission review refused"
    );
    plain(StatusCode::BAD_REQUEST, reason)
}

/// The response body; `None` (counted and logged) when it cannot be encoded.
fn encode(
    state: &AppState,
    endpoint: Endpoint,
    role: Option<SparkRole>,
    started: Instant,
    answer: &Answer,
) -> Option<Vec<u8>> {
    match answer.to_review_json() {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            state.metrics.record_request(
                endpoint,
                role,
                Outcome::Error,
                started.elapsed().as_secs_f64(),
            );
            tracing::error!(uid = answer.uid.as_str(), error = %e, "cannot encode the admission response");
            None
        }
    }
}

fn unencodable() -> Response {
    plain(
        StatusCode::INTERNAL_SERVER_ERROR,
        "cannot encode the admission response".to_owned(),
    )
}

fn json_ok(encoded: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        encoded,
    )
        .into_response()
}

fn app_name(pod: &k8s_openapi::api::core::v1::Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(APP_NAME_LABEL))
        .map_or("", String::as_str)
}

/// The check of an executor's pin against its stored driver; `None` when the pod claims
/// no pin (nothing to look up).
async fn check_pin(state: &AppState, create: &review::PodCreate) -> Option<PinCheck> {
    let claim = pinning::claim_of(&create.pod);
    if !matches!(claim, pinning::Claim::Pin { .. }) {
        return None;
    }
    if !state.engine.pin_jobs {
        return Some(PinCheck::Unverified(Unverified::PinningOff));
    }
    Some(
        state
            .drivers
            .check(&claim, &create.pod, &create.namespace)
            .await,
    )
}

fn mutate_pod<'a>(
    state: &AppState,
    create: &'a review::PodCreate,
    check: Option<PinCheck>,
    deadline: Instant,
) -> (Answer, Decision<'a>) {
    #[cfg(test)]
    if spark_admission_core::fault::injected(&create.pod, spark_admission_core::fault::PANIC) {
        panic!("fault injected by a test");
    }
    let set = state.store.snapshot();
    let mut answer = Answer::allow(create.uid.as_str());
    // A verified pin mutates with the driver's versions; any other pin changes nothing
    // (the current set, with a warning). Validation (validate_pod) always uses the
    // current set.
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
            return refuse_pod(answer, create, &e)
        }
        Err(e) => {
            // Refused, not admitted unchanged: the cluster's failurePolicy decides, and no
            // pod runs without its policies because of our bug.
            tracing::error!(uid = create.uid.as_str(), error = %e, cause = ?std::error::Error::source(&e), "cannot plan the pod");
            answer.deny(
                500,
                "InternalError",
                format!("spark-admission {e}; the pod was not admitted"),
            );
            let decision = Decision {
                role: spark::role_of(&create.pod).ok(),
                outcome: Outcome::Error,
                namespace: &create.namespace,
                pod: &create.name,
                app: app_name(&create.pod),
                policies: String::new(),
                ops: 0,
                dry_run: create.dry_run,
            };
            return (answer, decision);
        }
    };
    let ops = mutation.patch.len();
    let mut outcome = if mutation.warnings.is_empty() {
        Outcome::Unchanged
    } else {
        Outcome::Warned
    };
    if let Err(e) = answer.set_patch(&mutation.patch) {
        // Cannot happen for a Patch built from serde values; refusing beats a silent no-op.
        tracing::error!(uid = create.uid.as_str(), error = %e, "cannot encode the patch");
        answer.deny(
            500,
            "InternalError",
            "spark-admission could not encode its patch".to_owned(),
        );
        outcome = Outcome::Error;
    } else if ops > 0 {
        outcome = Outcome::Patched;
    }
    let policies = mutation.applied.join(",");
    if !policies.is_empty() {
        answer
            .audit_annotations
            .insert(AUDIT_APPLIED.to_owned(), policies.clone());
    }
    answer.warnings = mutation.warnings;
    state.metrics.record_changes(&mutation.changes_by_policy);
    state.metrics.record_patch_operations(mutation.role, ops);
    if mutation.memory_raised && !create.dry_run {
        state.metrics.record_memory_raise(mutation.role);
    }
    let decision = Decision {
        role: mutation.role,
        outcome,
        namespace: &create.namespace,
        pod: &create.name,
        app: app_name(&create.pod),
        policies,
        ops,
        dry_run: create.dry_run,
    };
    (answer, decision)
}

/// The answer for a pod the engine would not evaluate: larger than any Spark pod (422,
/// the field, count and limit), or still being evaluated at its deadline (503: retrying
/// later may succeed). Refused either way: admitting it unchanged would skip its policies.
fn refuse_pod<'a>(
    mut answer: Answer,
    create: &'a review::PodCreate,
    e: &EngineError,
) -> (Answer, Decision<'a>) {
    let (code, reason, outcome) = match e {
        EngineError::TooLarge(_) => (422, "Invalid", Outcome::Denied),
        _ => (503, "ServiceUnavailable", Outcome::Error),
    };
    tracing::warn!(uid = create.uid.as_str(), error = %e, "pod not evaluated");
    answer.deny(code, reason, format!("spark-admission: {e}"));
    let decision = Decision {
        role: spark::role_of(&create.pod).ok(),
        outcome,
        namespace: &create.namespace,
        pod: &create.name,
        app: app_name(&create.pod),
        policies: String::new(),
        ops: 0,
        dry_run: create.dry_run,
    };
    (answer, decision)
}

fn validate_pod<'a>(
    state: &AppState,
    create: &'a review::PodCreate,
    deadline: Instant,
) -> (Answer, Decision<'a>) {
    let set = state.store.snapshot();
    let answer = Answer::allow(create.uid.as_str());
    let validation = match state.engine.validate_within(
        &set,
        &create.pod,
        &create.namespace,
        Deadline::at(deadline),
    ) {
        Ok(v) => v,
        Err(e) => return refuse_pod(answer, create, &e),
    };
    judged(create, &validation)
}

/// An UPDATE: judged only when it changes what the rules read (`Engine::validate_update`);
/// otherwise allowed at once, as for finalizer and annotation updates.
fn validate_update<'a>(
    state: &AppState,
    update: &'a review::PodUpdate,
    deadline: Instant,
) -> (Answer, Decision<'a>) {
    let new = &update.new;
    let set = state.store.snapshot();
    let answer = Answer::allow(new.uid.as_str());
    match state.engine.validate_update(
        &set,
        &update.old,
        &new.pod,
        &new.namespace,
        Deadline::at(deadline),
    ) {
        Err(e) => refuse_pod(answer, new, &e),
        Ok(Some(validation)) => judged(new, &validation),
        Ok(None) => (
            answer,
            Decision {
                role: spark::role_of(&new.pod).ok(),
                outcome: Outcome::Unchanged,
                namespace: &new.namespace,
                pod: &new.name,
                app: app_name(&new.pod),
                policies: String::new(),
                ops: 0,
                dry_run: new.dry_run,
            },
        ),
    }
}

/// The answer to a judged pod: denied for an enforced finding, warnings and audit
/// annotations for the others.
fn judged<'a>(create: &'a review::PodCreate, validation: &Validation) -> (Answer, Decision<'a>) {
    let mut answer = Answer::allow(create.uid.as_str());
    answer.warnings = validation
        .with_mode(RuleMode::Warn)
        .map(|f| f.message.clone())
        .collect();
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
    let decision = Decision {
        role: spark::role_of(&create.pod).ok(),
        outcome,
        namespace: &create.namespace,
        pod: &create.name,
        app: app_name(&create.pod),
        policies,
        ops: 0,
        dry_run: create.dry_run,
    };
    (answer, decision)
}

/// A one-line plain-text error body.
fn plain(status: StatusCode, mut reason: String) -> Response {
    reason.push('\n');
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        reason,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    //! Internal failures, injected through `crate::fault` (test builds only): each one must
    //! refuse the pod so the cluster's failurePolicy decides, never admit it unpolicied.

    use super::*;
    use crate::matching::PolicySet;
    use crate::policy::{parse_documents, PolicySource};
    use serde_json::Value;
    use tower::ServiceExt;

    const LABEL_POLICY: &str = r#"apiVersion: spark-admission.io/v1alpha1
kind: SparkPodPolicy
metadata: {name: test-labels}
spec:
  namespaces: [spark-jobs]
  all:
    labels: {platform.example.com/managed: "yes"}
"#;

    fn state(limits: Limits) -> Arc<AppState> {
        let docs = parse_documents(&PolicySource("test.yaml".to_owned()), LABEL_POLICY)
            .expect("the test policy is valid");
        let store = Arc::new(PolicyStore::new());
        store.install(PolicySet::new(docs.into_iter().map(Arc::new)));
        let metrics = Arc::new(Metrics::new());
        Arc::new(AppState::new(Engine::default(), store, metrics, limits))
    }

    fn router() -> (Router, Arc<Metrics>) {
        let state = state(Limits::default());
        let metrics = Arc::clone(&state.metrics);
        (webhook_router(state), metrics)
    }

    #[tokio::test]
    async fn with_every_slot_evaluating_a_review_gets_busy_within_its_deadline() {
        let state = state(Limits {
            max_concurrent_requests: 1,
            ..Limits::default()
        });
        let router = webhook_router(Arc::clone(&state));
        // The only slot, as a review being evaluated holds it.
        let _evaluating = state.slots.acquire().await.expect("open semaphore");
        let req = Request::post(format!("{MUTATE_PATH}?timeout=500ms"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(driver_review(None)))
            .expect("request");
        let started = Instant::now();
        let resp = router.oneshot(req).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        // 80% of the API server's 500 ms, not our 8 s.
        assert!(started.elapsed() < Duration::from_secs(5));
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("no review slot"));
    }

    /// The driver review a kube-apiserver sent, its pod marked with `fault` if given.
    fn driver_review(fault: Option<&str>) -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/admission/mutate-driver-scala-sparkpi.json"
        );
        let text = std::fs::read(path).expect("fixture");
        let mut review: Value = serde_json::from_slice(&text).expect("fixture is JSON");
        if let Some(fault) = fault {
            review["request"]["object"]["metadata"]["annotations"] =
                serde_json::json!({ spark_admission_core::fault::ANNOTATION: fault });
        }
        serde_json::to_vec(&review).expect("JSON")
    }

    async fn post(router: &Router, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        let req = Request::post(MUTATE_PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("request");
        let resp = router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        (status, body)
    }

    fn metric_line(metrics: &Metrics, prefix: &str) -> Option<String> {
        let text = metrics.encode().expect("metrics encode");
        text.lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_owned)
    }

    #[tokio::test]
    async fn a_patch_that_cannot_be_computed_refuses_the_pod_with_code_500() {
        let (router, metrics) = router();
        let (status, body) = post(
            &router,
            driver_review(Some(spark_admission_core::fault::SERIALISE)),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let review: Value = serde_json::from_slice(&body).expect("an AdmissionReview");
        let response = &review["response"];
        assert_eq!(response["allowed"], false, "{response}");
        assert_eq!(response["status"]["code"], 500, "{response}");
        let message = response["status"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("could not compute"), "{message}");
        assert!(response.get("patch").is_none(), "{response}");
        assert_eq!(
            metric_line(
                &metrics,
                "spark_admission_requests_total{endpoint=\"mutate\",role=\"driver\",outcome=\"error\"}"
            )
            .as_deref()
            .and_then(|l| l.rsplit(' ').next()),
            Some("1")
        );
    }

    #[tokio::test]
    async fn a_panic_in_a_handler_answers_500_is_counted_and_the_next_review_is_served() {
        let (router, metrics) = router();
        let (status, body) = post(
            &router,
            driver_review(Some(spark_admission_core::fault::PANIC)),
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            String::from_utf8_lossy(&body).contains("internal error"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(
            metric_line(&metrics, "spark_admission_handler_panics_total")
                .as_deref()
                .and_then(|l| l.rsplit(' ').next()),
            Some("1")
        );
        let (status, body) = post(&router, driver_review(None)).await;
        assert_eq!(status, StatusCode::OK);
        let review: Value = serde_json::from_slice(&body).expect("an AdmissionReview");
        assert_eq!(review["response"]["allowed"], true);
        assert!(review["response"]["patch"].is_string(), "{review}");
    }
}
