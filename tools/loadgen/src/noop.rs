//! `loadgen noop-server`: the webhook's own TLS listener and HTTP stack (`serve`'s flags,
//! limits and timeouts) answering every review with one fixed `allowed: true`, without
//! parsing it. The suite compares the real webhook against it to isolate the cost of our
//! own work; the webhook binary itself has no such mode.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

/// A valid v1 AdmissionReview allowing the request (with an empty uid: not for a real API
/// server, which checks that the uid matches).
const ALLOWED: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":true}}"#;

/// `POST /mutate` and `POST /validate`, both answering [`ALLOWED`].
pub fn noop_router(max_body_bytes: usize) -> Router {
    Router::new()
        .route("/mutate", post(allow))
        .route("/validate", post(allow))
        .with_state(max_body_bytes)
}

async fn allow(State(limit): State<usize>, body: Body) -> Response {
    // The body is still received in full, as the real handler does, so both modes move
    // the same bytes through TLS and HTTP.
    match axum::body::to_bytes(body, limit).await {
        Ok(_) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            ALLOWED,
        )
            .into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}
