//! The webhook endpoints, HTTP in and HTTP out: `POST /mutate` and `POST /validate` for
//! Spark pods, and `POST /validate-policy` for policy ConfigMaps.
//!
//! Each review runs under one deadline (our `--request-timeout`, shortened to fit the API
//! server's `?timeout=`): reading the body, waiting for a slot and evaluating all count, so
//! a slow client or a busy server gets a clear error before the API server gives up.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::FutureExt;

use super::body;
use super::refusal::Refusal;
use super::schedule;
use super::state::{AppState, Clock};
use crate::metrics::{Endpoint, Metrics, Outcome};

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
    Refusal::panicked().into_response()
}

/// The webhook paths, as the webhook configurations in `deploy/` name them.
pub const MUTATE_PATH: &str = "/mutate";
pub const VALIDATE_PATH: &str = "/validate";
pub const VALIDATE_POLICY_PATH: &str = "/validate-policy";

async fn mutate(State(state): State<Arc<AppState>>, req: Request) -> Response {
    review(state, Endpoint::Mutate, req).await
}

async fn validate(State(state): State<Arc<AppState>>, req: Request) -> Response {
    review(state, Endpoint::Validate, req).await
}

async fn validate_policy(State(state): State<Arc<AppState>>, req: Request) -> Response {
    review(state, Endpoint::ValidatePolicy, req).await
}

/// One review: its body read within its deadline, evaluated where its size says, and
/// answered; a refusal is counted and logged once, here, as it goes out.
async fn review(state: Arc<AppState>, endpoint: Endpoint, req: Request) -> Response {
    let clock = Clock::start(&state.limits, req.uri().query());
    let _in_flight = state.metrics.in_flight();
    match admit(&state, endpoint, req, clock).await {
        Ok(response) => response,
        Err(refusal) => refusal.respond(&state.metrics, endpoint, clock.started),
    }
}

async fn admit(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    req: Request,
    clock: Clock,
) -> Result<Response, Refusal> {
    // Checking a policy ConfigMap needs no policies: it must work before they load, or a
    // broken set could never be replaced through the webhook.
    if endpoint != Endpoint::ValidatePolicy && !state.store.is_loaded() {
        return Err(Refusal::not_ready());
    }
    let (body, body_bytes) = body::receive(state, req, clock).await?;
    schedule::run(state, endpoint, body, body_bytes, clock).await
}

#[cfg(test)]
mod tests {
    //! Internal failures, injected through `crate::fault` (test builds only): each one must
    //! refuse the pod so the cluster's failurePolicy decides, never admit it unpolicied.

    use super::*;
    use crate::admission::state::Limits;
    use crate::engine::Engine;
    use crate::matching::PolicySet;
    use crate::policy::{parse_documents, PolicySource};
    use crate::source::PolicyStore;
    use axum::body::Body;
    use axum::http::{header, StatusCode};
    use http_body_util::BodyExt;
    use serde_json::Value;
    use std::time::Duration;
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

    /// While every large-body read is taken, a body declared over 64 KiB waits (503 at its
    /// deadline, its body never read), and an ordinary review is answered at once.
    #[tokio::test]
    async fn large_bodies_wait_for_a_read_and_ordinary_reviews_do_not() {
        let state = state(Limits::default());
        let router = webhook_router(Arc::clone(&state));
        let reads = state.large_reads.available_permits();
        let _reading = state
            .large_reads
            .acquire_many(u32::try_from(reads).expect("a few permits"))
            .await
            .expect("open semaphore");
        let mut large: Value = serde_json::from_slice(&driver_review(None)).expect("JSON");
        large["request"]["object"]["metadata"]["annotations"] =
            serde_json::json!({"example.com/padding": "x".repeat(100 * 1024)});
        let large = serde_json::to_vec(&large).expect("JSON");
        let req = Request::post(format!("{MUTATE_PATH}?timeout=500ms"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, large.len())
            .body(Body::from(large))
            .expect("request");
        let resp = router.clone().oneshot(req).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains("no large-body read"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        let small = driver_review(None);
        let req = Request::post(MUTATE_PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, small.len())
            .body(Body::from(small))
            .expect("request");
        let resp = router.oneshot(req).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(metric_line(
            &state.metrics,
            "spark_admission_slot_waits_total{slot=\"large_read\"} 1"
        )
        .is_some());
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
