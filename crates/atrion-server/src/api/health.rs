//! Liveness, readiness and metrics: what probes and scrapers read.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::Shared;
use crate::problem::{Problem, ProblemKind};

/// The answer to `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok` while the process serves.
    status: &'static str,
}

/// The answer to `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Ready {
    /// Ready to decide (after the warm start).
    ready: bool,
    /// The store is away: decisions go on, on local state.
    degraded: bool,
}

/// Liveness: the process serves.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: ready after the warm start; degraded mode is reported, and decisions keep
/// working in it.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = Ready)))]
pub(crate) async fn readyz(State(s): State<Arc<Shared>>) -> Json<Ready> {
    let degraded = s.atrion.sync_stats().await.is_some_and(|st| st.degraded);
    Json(Ready { ready: true, degraded })
}

/// Atrion's metrics in Prometheus' text format (the sync counters read just now).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
        (status = 404, description = "No metrics exporter", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let Some(render) = &s.config.metrics else {
        return Problem::new(ProblemKind::MetricsDisabled, "this server was built without a metrics exporter")
            .into_response();
    };
    if let Some(stats) = s.atrion.sync_stats().await {
        atrion::metrics::record_sync(&stats);
    }
    let mut response = (render.0)().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
