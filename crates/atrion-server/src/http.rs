//! What every request to the API and the dashboard goes through (a time limit, the
//! request-duration histogram), and the answer to a path neither has.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::problem::{Problem, ProblemKind};

/// When the request must be answered by (past it, the answer is `408` and the handler is
/// dropped): work that must not be cut off in the middle checks it first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(pub tokio::time::Instant);

/// The request-duration histogram's name.
pub const HTTP_DURATION: &str = "atrion_http_request_duration_seconds";

/// Bounds a request's time (body included) and records its duration by method, path
/// template and status.
///
/// Each request runs in a span `atrion.request` (method, path template, status; a decision
/// adds the route, verdict and reason), which OpenTelemetry exports when it is installed.
pub(crate) async fn observe(State(limit): State<Duration>, mut request: Request, next: Next) -> Response {
    let start = Instant::now();
    request.extensions_mut().insert(Deadline(tokio::time::Instant::from_std(start) + limit));
    let method = request.method().as_str().to_owned();
    let path =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!(
        "atrion.request",
        otel.kind = "server",
        http.request.method = %method,
        http.route = %path,
        http.response.status_code = tracing::field::Empty,
        atrion.route = tracing::field::Empty,
        atrion.verdict = tracing::field::Empty,
        atrion.reason = tracing::field::Empty,
    );
    let response = match tokio::time::timeout(limit, next.run(request)).instrument(span.clone()).await {
        Ok(response) => response,
        Err(_) => Problem::new(
            ProblemKind::RequestTimeout,
            format!("a request may take at most {} ms, its body included", limit.as_millis()),
        )
        .into_response(),
    };
    span.record("http.response.status_code", response.status().as_u16());
    metrics::histogram!(
        HTTP_DURATION,
        "method" => method,
        "path" => path,
        "status" => response.status().as_str().to_owned(),
    )
    .record(start.elapsed().as_secs_f64());
    response
}

/// A path the API does not have.
pub(crate) async fn not_found(request: Request) -> Problem {
    Problem::new(ProblemKind::NotFound, format!("{} {} is not part of the API", request.method(), request.uri().path()))
}
