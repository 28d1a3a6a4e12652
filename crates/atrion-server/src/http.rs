//! What every request to the API and the dashboard goes through (a time limit, the
//! request-duration histogram), and the answer to a path neither has.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use metrics::SharedString;
use tracing::Instrument;

use crate::problem::{Problem, ProblemKind};

/// When the request must be answered by (past it, the answer is `408` and the handler is
/// dropped): work that must not be cut off in the middle checks it first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(pub tokio::time::Instant);

/// The request-duration histogram's name.
pub const HTTP_DURATION: &str = "atrion_http_request_duration_seconds";

/// Bounds a request's time (body included) and records its duration by method, path
/// template and status: a tower layer with its own future (no boxed `Next`, no boxed
/// future, no copy of the state per request; a standard method's name is not copied).
///
/// Each request runs in a span `atrion.request` (method, path template, status; a decision
/// adds the route, verdict and reason), which OpenTelemetry exports when it is installed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ObserveLayer(pub Duration);

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, limit: self.0 }
    }
}

/// The service of [`ObserveLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    limit: Duration,
}

/// A method's name as a metric label: borrowed for the standard ones.
fn method_label(method: &Method) -> SharedString {
    const STANDARD: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::PATCH, "PATCH"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    match STANDARD.iter().find(|(m, _)| m == method) {
        Some((_, name)) => SharedString::const_str(name),
        None => SharedString::from(method.as_str().to_owned()),
    }
}

impl<S> tower::Service<Request> for Observe<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let start = Instant::now();
        request.extensions_mut().insert(Deadline(tokio::time::Instant::from_std(start) + self.limit));
        let method = method_label(request.method());
        let path = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
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
        let inner = span.in_scope(|| self.inner.call(request));
        ObserveFuture {
            inner: tokio::time::timeout(self.limit, inner.instrument(span.clone())),
            span,
            method: Some(method),
            path,
            start,
            limit: self.limit,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Observe`].
    pub(crate) struct ObserveFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<tracing::instrument::Instrumented<F>>,
        span: tracing::Span,
        method: Option<SharedString>,
        path: String,
        start: Instant,
        limit: Duration,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for ObserveFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match std::task::ready!(this.inner.poll(cx)) {
            Ok(Ok(response)) => response,
            Ok(Err(never)) => match never {},
            Err(_) => Problem::new(
                ProblemKind::RequestTimeout,
                format!("a request may take at most {} ms, its body included", this.limit.as_millis()),
            )
            .into_response(),
        };
        this.span.record("http.response.status_code", response.status().as_u16());
        let method = this.method.take().unwrap_or_else(|| SharedString::const_str("?"));
        metrics::histogram!(
            HTTP_DURATION,
            "method" => method,
            "path" => std::mem::take(this.path),
            "status" => response.status().as_str().to_owned(),
        )
        .record(this.start.elapsed().as_secs_f64());
        Poll::Ready(Ok(response))
    }
}

/// A path the API does not have.
pub(crate) async fn not_found(request: Request) -> Problem {
    Problem::new(ProblemKind::NotFound, format!("{} {} is not part of the API", request.method(), request.uri().path()))
}
