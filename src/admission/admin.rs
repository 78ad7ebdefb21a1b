//! The admin port (plain HTTP): `/healthz`, `/readyz`, `/metrics`. Probes do not log.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::metrics::{Metrics, CONTENT_TYPE};
use crate::shutdown::ShutdownHandle;
use crate::source::PolicyStore;

/// What readiness depends on.
#[derive(Debug, Clone)]
pub struct Health {
    pub store: Arc<PolicyStore>,
    pub shutdown: ShutdownHandle,
    /// State read from the cluster that a review needs, each ready once listed.
    pub gates: Vec<ReadyGate>,
}

/// One piece of state readiness waits for: a replica serving before its first list
/// would admit pods without what other replicas already know.
#[derive(Debug, Clone)]
pub struct ReadyGate {
    /// Says why not ready, e.g. "memory state not listed".
    pub waiting: &'static str,
    pub done: crate::watch::Listed,
}

impl Health {
    /// `Ok` when the webhook should get traffic, else why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.shutdown.is_triggered() {
            Err("shutting down")
        } else if !self.store.is_loaded() {
            Err("policies not loaded")
        } else if let Some(g) = self.gates.iter().find(|g| !g.done.is_done()) {
            Err(g.waiting)
        } else {
            Ok(())
        }
    }
}

#[derive(Debug, Clone)]
struct AdminState {
    health: Health,
    metrics: Arc<Metrics>,
}

pub fn admin_router(health: Health, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { health, metrics })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AdminState>) -> Response {
    match s.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics_text(State(s): State<AdminState>) -> Response {
    // Read at scrape time: an alert on "no ready replica" sees what the probe sees.
    s.metrics.set_ready(s.health.readiness().is_ok());
    match s.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}
