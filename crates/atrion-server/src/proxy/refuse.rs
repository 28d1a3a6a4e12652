//! Proxy mode's refusals, in the API's shape: a shed request and a banned one are each
//! answered `503` with `Retry-After` and an `application/problem+json` body (`shed`,
//! `banned`), and the upstream is not called.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Ready;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use atrion::AtrionLayer;
use atrion::layer::{AtrionService, RequestHead};
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;
use futures_util::future::{Either, Map};

use super::{ProxyConfig, client_key};
use crate::SidecarObserver;
use crate::problem::{Problem, ProblemKind};

thread_local! {
    /// Whether the service behind Atrion's layer was called by the request being decided on
    /// this thread: the layer calls it within its own `call` when it admits, and never
    /// when it sheds.
    static FORWARDED: Cell<bool> = const { Cell::new(false) };
}

/// [`AtrionLayer`] with its sheds answered as problems. Atrion's layer answers a shed with
/// an empty `503` and `Retry-After`; a shed is told from the upstream's own `503` by
/// whether the upstream was called (the upstream's answers pass untouched).
#[derive(Clone)]
pub(super) struct ShedAsProblemLayer(pub(super) AtrionLayer<SidecarObserver>);

impl<S> tower::Layer<S> for ShedAsProblemLayer {
    type Service = ShedAsProblem<AtrionService<Forwarded<S>, SidecarObserver>>;

    fn layer(&self, inner: S) -> Self::Service {
        ShedAsProblem { inner: self.0.layer(Forwarded(inner)) }
    }
}

/// The service behind Atrion's layer, marking that it was called.
#[derive(Clone)]
pub(super) struct Forwarded<S>(S);

impl<S: tower::Service<Request>> tower::Service<Request> for Forwarded<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> S::Future {
        let future = self.0.call(request);
        // After the call: a proxy nested in the upstream's own call cannot clear it.
        FORWARDED.set(true);
        future
    }
}

/// The service of [`ShedAsProblemLayer`].
#[derive(Clone)]
pub(super) struct ShedAsProblem<S> {
    inner: S,
}

type Answer<B> = fn(Result<Response<B>, Infallible>) -> Result<Response, Infallible>;

impl<S, B> tower::Service<Request> for ShedAsProblem<S>
where
    S: tower::Service<Request, Response = Response<B>, Error = Infallible>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Map<S::Future, Answer<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        FORWARDED.set(false);
        let future = self.inner.call(request);
        let answer: Answer<B> = if FORWARDED.get() { passed } else { shed };
        future.map(answer)
    }
}

fn passed<B>(response: Result<Response<B>, Infallible>) -> Result<Response, Infallible>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    response.map(|r| r.map(Body::new))
}

/// Atrion's shed (`503`, `Retry-After` in whole seconds) as a `shed` problem.
fn shed<B>(response: Result<Response<B>, Infallible>) -> Result<Response, Infallible>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let response = response?;
    if response.status() != StatusCode::SERVICE_UNAVAILABLE {
        return passed(Ok(response));
    }
    let secs = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1)
        .max(1);
    Ok(Problem::new(ProblemKind::Shed, format!("the route is shed: the upstream was not called; retry in {secs} s"))
        .retry_after(Duration::from_secs(secs))
        .into_response())
}

/// Answers a banned request `503` with `Retry-After` (whole seconds to the deadline) and a
/// `banned` problem, before it reaches the engine; the route is only worked out while a ban
/// is in force. A tower service with a plain future: no boxing, no clone of the settings per
/// request.
#[derive(Clone)]
pub(super) struct BanGate<S> {
    pub(super) inner: S,
    pub(super) state: Arc<(ProxyConfig, crate::PolicyHandle)>,
}

impl<S> tower::Service<Request> for BanGate<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let (config, policy) = &*self.state;
        match banned(config, policy, &request) {
            Some(refusal) => Either::Left(std::future::ready(Ok(refusal))),
            None => Either::Right(self.inner.call(request)),
        }
    }
}

/// The refusal of a banned request, if it is one.
fn banned(config: &ProxyConfig, policy: &crate::PolicyHandle, request: &Request) -> Option<Response> {
    let gate = policy.gate();
    if gate.no_bans() {
        return None;
    }
    let now = policy.wall_ms();
    let head = RequestHead {
        method: request.method(),
        uri: request.uri(),
        headers: request.headers(),
        extensions: request.extensions(),
    };
    let mut route = String::new();
    config.route(&head, &mut route);
    let until = gate.banned(&route, client_key(request.headers(), &config.client_header), now)?;
    let left = until.saturating_sub(now);
    let mut r = Problem::new(ProblemKind::Banned, format!("`{route}` is banned for this client"))
        .retry_after(Duration::from_millis(left))
        .into_response();
    // To the second even past the body's `retry_after_ms` (at most 49 days).
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(left.div_ceil(1_000).max(1)));
    Some(r)
}
