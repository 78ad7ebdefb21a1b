//! The one way a review is refused. A request we cannot answer (not ready, a body too
//! large, slow or unreadable, no slot in time) gets an HTTP error with a one-line reason,
//! and the cluster's failurePolicy decides. A pod we will not admit unevaluated (larger
//! than any Spark pod, its deadline passed, our own failure) gets `allowed: false` with the
//! status its submitter sees: admitting it unchanged would skip its policies.

use std::fmt::Display;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::answer::Answer;
use crate::engine::EngineError;
use crate::metrics::{role_label, Endpoint, Metrics, Outcome, SlowClient};
use crate::spark::SparkRole;

#[derive(Debug)]
pub(super) enum Refusal {
    /// An HTTP error with `reason` as a plain-text body.
    Request {
        status: StatusCode,
        outcome: Outcome,
        reason: String,
        /// HTTP/1.1: close the connection after this answer (a body cut mid-way).
        close: bool,
    },
    /// `allowed: false` in the AdmissionReview, with `code`, `reason` and `message`.
    Pod {
        uid: String,
        role: Option<SparkRole>,
        code: u16,
        reason: &'static str,
        message: String,
        /// Why, for the log line (the message says it to the submitter).
        error: String,
        outcome: Outcome,
    },
}

impl Refusal {
    fn request(status: StatusCode, outcome: Outcome, reason: String) -> Self {
        Refusal::Request {
            status,
            outcome,
            reason,
            close: false,
        }
    }

    /// Checking a review needs its policies.
    pub(super) fn not_ready() -> Self {
        Self::request(
            StatusCode::SERVICE_UNAVAILABLE,
            Outcome::Error,
            "policies are not loaded yet".to_owned(),
        )
    }

    pub(super) fn body_too_large(limit: usize) -> Self {
        Self::request(
            StatusCode::PAYLOAD_TOO_LARGE,
            Outcome::BadRequest,
            format!("request body is larger than {limit} bytes"),
        )
    }

    pub(super) fn unreadable_body(error: impl Display) -> Self {
        Self::request(
            StatusCode::BAD_REQUEST,
            Outcome::BadRequest,
            format!("cannot read the request body: {error}"),
        )
    }

    /// A body cut for arriving too slowly (`why`) after `received` bytes in `elapsed`.
    pub(super) fn slow_body(
        why: SlowClient,
        received: usize,
        elapsed: Duration,
        idle: Duration,
        min_rate: u64,
        close: bool,
    ) -> Self {
        let reason = match why {
            SlowClient::BodyRate => format!(
                "request body too slow: {received} bytes in {elapsed:?}, below {min_rate} bytes/s"
            ),
            _ => format!(
                "request body stalled: nothing received for {idle:?} ({received} bytes so far)"
            ),
        };
        Refusal::Request {
            status: StatusCode::REQUEST_TIMEOUT,
            outcome: Outcome::Error,
            reason,
            close,
        }
    }

    pub(super) fn body_late(budget: Duration) -> Self {
        Self::request(
            StatusCode::REQUEST_TIMEOUT,
            Outcome::Error,
            format!("request body not received within {budget:?}"),
        )
    }

    /// No `what` (a slot, room for the body) freed up within the review's `budget`.
    pub(super) fn busy(what: &str, budget: Duration) -> Self {
        Self::request(
            StatusCode::SERVICE_UNAVAILABLE,
            Outcome::Error,
            format!("server busy: no {what} within {budget:?}"),
        )
    }

    pub(super) fn evaluated_too_late(budget: Duration) -> Self {
        Self::request(
            StatusCode::SERVICE_UNAVAILABLE,
            Outcome::Error,
            format!("review not evaluated within {budget:?}"),
        )
    }

    /// The body is not a review we can answer.
    pub(super) fn not_a_review(reason: String) -> Self {
        Self::request(StatusCode::BAD_REQUEST, Outcome::BadRequest, reason)
    }

    /// The evaluation itself failed (its task ended without an answer).
    pub(super) fn evaluation_failed(endpoint: Endpoint, error: impl Display) -> Self {
        tracing::error!(endpoint = endpoint.as_str(), error = %error, "review evaluation failed");
        Self::request(
            StatusCode::INTERNAL_SERVER_ERROR,
            Outcome::Error,
            "internal error while evaluating the review".to_owned(),
        )
    }

    /// A handler panicked (counted and logged where it is caught).
    pub(super) fn panicked() -> Self {
        Self::request(
            StatusCode::INTERNAL_SERVER_ERROR,
            Outcome::Error,
            "internal error in spark-admission while evaluating the review".to_owned(),
        )
    }

    pub(super) fn unencodable(uid: &str, error: impl Display) -> Self {
        tracing::error!(uid, error = %error, "cannot encode the admission response");
        Self::request(
            StatusCode::INTERNAL_SERVER_ERROR,
            Outcome::Error,
            "cannot encode the admission response".to_owned(),
        )
    }

    /// A pod the engine would not evaluate: larger than any Spark pod (422, the field, count
    /// and limit), or still being evaluated at its deadline (503: retrying later may succeed).
    pub(super) fn not_evaluated(uid: &str, role: Option<SparkRole>, e: &EngineError) -> Self {
        tracing::warn!(uid, error = %e, "pod not evaluated");
        match e {
            EngineError::TooLarge(too_large) => Self::too_large(uid, role, too_large),
            _ => Self::pod(
                uid,
                role,
                (503, "ServiceUnavailable", Outcome::Error),
                format!("spark-admission: {e}"),
                e,
            ),
        }
    }

    /// A Spark pod with a list longer than any Spark pod has (the engine's or the scan's
    /// count): 422 with the field, count and limit.
    pub(super) fn too_large(uid: &str, role: Option<SparkRole>, error: impl Display) -> Self {
        Self::pod(
            uid,
            role,
            (422, "Invalid", Outcome::Denied),
            format!("spark-admission: {error}"),
            error,
        )
    }

    /// The pod could not be planned: our failure, refused rather than admitted without
    /// its policies.
    pub(super) fn plan_failed(uid: &str, role: Option<SparkRole>, e: &EngineError) -> Self {
        tracing::error!(uid, error = %e, cause = ?std::error::Error::source(e), "cannot plan the pod");
        Self::pod(
            uid,
            role,
            (500, "InternalError", Outcome::Error),
            format!("spark-admission {e}; the pod was not admitted"),
            e,
        )
    }

    /// The planned patch could not be encoded (cannot happen for a patch of serde values;
    /// refusing beats a silent no-op).
    pub(super) fn patch_unencodable(
        uid: &str,
        role: Option<SparkRole>,
        error: impl Display,
    ) -> Self {
        tracing::error!(uid, error = %error, "cannot encode the patch");
        Self::pod(
            uid,
            role,
            (500, "InternalError", Outcome::Error),
            "spark-admission could not encode its patch".to_owned(),
            error,
        )
    }

    fn pod(
        uid: &str,
        role: Option<SparkRole>,
        (code, reason, outcome): (u16, &'static str, Outcome),
        message: String,
        error: impl Display,
    ) -> Self {
        Refusal::Pod {
            uid: uid.to_owned(),
            role,
            code,
            reason,
            message,
            error: error.to_string(),
            outcome,
        }
    }

    pub(super) fn outcome(&self) -> Outcome {
        match self {
            Refusal::Request { outcome, .. } | Refusal::Pod { outcome, .. } => *outcome,
        }
    }

    /// The AdmissionReview answer of a refused pod; `None` for an HTTP refusal.
    pub(super) fn answer(&self) -> Option<Answer> {
        let Refusal::Pod {
            uid,
            code,
            reason,
            message,
            ..
        } = self
        else {
            return None;
        };
        Some(denial(uid, *code, reason, message.clone()))
    }

    /// Counts and logs the refusal as it goes out (once per review), and answers it.
    pub(super) fn respond(
        self,
        metrics: &Metrics,
        endpoint: Endpoint,
        started: Instant,
    ) -> Response {
        let seconds = started.elapsed().as_secs_f64();
        match &self {
            Refusal::Request {
                status,
                outcome,
                reason,
                ..
            } => {
                metrics.record_request(endpoint, None, *outcome, seconds);
                tracing::warn!(
                    endpoint = endpoint.as_str(),
                    status = status.as_u16(),
                    decision = outcome.as_str(),
                    reason = reason.as_str(),
                    "admission review refused"
                );
            }
            Refusal::Pod {
                uid,
                role,
                error,
                outcome,
                ..
            } => {
                metrics.record_request(endpoint, *role, *outcome, seconds);
                tracing::warn!(
                    endpoint = endpoint.as_str(),
                    uid = uid.as_str(),
                    role = role_label(*role),
                    error = error.as_str(),
                    decision = outcome.as_str(),
                    duration_ms = (seconds * 1e6).round() / 1e3,
                    "pod not evaluated"
                );
            }
        }
        self.into_response()
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Request {
                status,
                reason,
                close,
                ..
            } => {
                let mut response = plain(status, reason);
                if close {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
            Refusal::Pod {
                uid,
                code,
                reason,
                message,
                ..
            } => match denial(&uid, code, reason, message).to_review_json() {
                Ok(encoded) => json_ok(encoded),
                Err(e) => Refusal::unencodable(&uid, e).into_response(),
            },
        }
    }
}

fn denial(uid: &str, code: u16, reason: &str, message: String) -> Answer {
    let mut answer = Answer::allow(uid);
    answer.deny(code, reason, message);
    answer
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

/// An encoded AdmissionReview.
pub(super) fn json_ok(encoded: Vec<u8>) -> Response {
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

/// What a late evaluation returns: the client has had its error, and this goes nowhere.
pub(super) fn discarded() -> Response {
    plain(StatusCode::SERVICE_UNAVAILABLE, String::new())
}
