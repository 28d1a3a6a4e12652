//! tower integration: [`AtrionLayer`] guards an HTTP service.
//!
//! Each request is mapped to a route (by default its method and matched path), decided on
//! at once, and either passed to the service — whose latency and outcome (5xx = failure by
//! default) are then reported — or answered `503 Service Unavailable` with `Retry-After`,
//! without calling the service. Nothing is queued.
//!
//! The outcome is reported when the response **body ends** ([`ReportBody`]), not when its
//! headers leave: a streamed response that takes ten seconds, or fails half-way, counts as
//! such. A body that fails while streaming is a failure; a body the client drops before its
//! end is reported then, with the status's outcome.
//!
//! An admitted request allocates nothing here: its route id is written into a buffer that
//! each thread reuses, and the request holds the route's handle (not a copy of its id) until
//! it reports.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use atrion_core::{Decision, MAX_ROUTE_ID, OwnedRouteHandle, PhysicsObserver, Priority, SilentObserver, Timestamp};
use http::{Extensions, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use tower::{Layer, Service};

use crate::Atrion;

/// What a route or priority function sees of a request.
#[derive(Debug)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions (axum's `MatchedPath` lives here).
    pub extensions: &'a Extensions,
}

type RouteFn = Arc<dyn Fn(&RequestHead<'_>, &mut String) + Send + Sync>;
type PriorityFn = Arc<dyn Fn(&RequestHead<'_>) -> Priority + Send + Sync>;
type ClassifyFn = Arc<dyn Fn(StatusCode) -> bool + Send + Sync>;

/// The default route, written into `out`: `METHOD /matched/{path}` when axum has matched one
/// (feature `axum`), else `METHOD /raw/path` (unbounded ids are pooled by the engine's route
/// limit).
pub fn default_route(head: &RequestHead<'_>, out: &mut String) {
    #[cfg(feature = "axum")]
    if let Some(matched) = head.extensions.get::<axum::extract::MatchedPath>() {
        let _ = write!(out, "{} {}", head.method, matched.as_str());
        return;
    }
    let _ = write!(out, "{} {}", head.method, head.uri.path());
}

pub use crate::retry::RETRY_ATTEMPT_HEADER;

/// The retry's number a request carries in [`RETRY_ATTEMPT_HEADER`] (0 when none, or not a
/// number: [`crate::parse_retry_attempt`]).
pub fn retry_attempt(headers: &HeaderMap) -> u32 {
    headers.get(RETRY_ATTEMPT_HEADER).and_then(|v| v.to_str().ok()).map_or(0, crate::parse_retry_attempt)
}

thread_local! {
    /// The route id being named, reused by every request on this thread.
    static ROUTE_ID: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The handle of the route that `name` writes, named in this thread's reused buffer (or in a
/// fresh one if a route function itself names a route through a layer); `now` on the
/// facade's clock.
fn resolve<O: PhysicsObserver + 'static>(
    atrion: &crate::Atrion<O>,
    now: Timestamp,
    name: impl FnOnce(&mut String),
) -> OwnedRouteHandle<O> {
    let named = |id: &mut String| {
        id.clear();
        name(id);
        atrion.route_handle_at(id, now)
    };
    ROUTE_ID.with(|cell| match cell.try_borrow_mut() {
        Ok(mut id) => {
            let handle = named(&mut id);
            if id.capacity() > 4 * MAX_ROUTE_ID {
                // An id that long is pooled anyway; do not keep its buffer.
                *id = String::new();
            }
            handle
        }
        Err(_) => named(&mut String::new()),
    })
}

/// Guards an HTTP service with Atrion. Cheap to clone.
pub struct AtrionLayer<O: PhysicsObserver + 'static = SilentObserver> {
    atrion: Arc<Atrion<O>>,
    route: RouteFn,
    priority: PriorityFn,
    is_failure: ClassifyFn,
}

impl<O: PhysicsObserver + 'static> Clone for AtrionLayer<O> {
    fn clone(&self) -> Self {
        AtrionLayer {
            atrion: self.atrion.clone(),
            route: self.route.clone(),
            priority: self.priority.clone(),
            is_failure: self.is_failure.clone(),
        }
    }
}

impl<O: PhysicsObserver + 'static> AtrionLayer<O> {
    /// A layer with the default route (method and path), the default priority, and 5xx as
    /// failure.
    pub fn new(atrion: Arc<Atrion<O>>) -> Self {
        let p = atrion.default_priority();
        AtrionLayer {
            atrion,
            route: Arc::new(default_route),
            priority: Arc::new(move |_| p),
            is_failure: Arc::new(|status| status.is_server_error()),
        }
    }

    /// Maps requests to routes: `f` writes the route id into the (empty) string it is given,
    /// a buffer reused from request to request, so that naming a route allocates nothing.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use atrion::{Atrion, layer::AtrionLayer};
    /// # let atrion = Arc::new(Atrion::builder().build().unwrap());
    /// use std::fmt::Write;
    /// let layer = AtrionLayer::new(atrion).route(|head, id| {
    ///     let tenant = head.headers.get("x-tenant").and_then(|v| v.to_str().ok()).unwrap_or("-");
    ///     let _ = write!(id, "tenant:{tenant}");
    /// });
    /// ```
    pub fn route(mut self, f: impl Fn(&RequestHead<'_>, &mut String) + Send + Sync + 'static) -> Self {
        self.route = Arc::new(f);
        self
    }

    /// Gives requests a priority (say, from a header).
    pub fn priority(mut self, f: impl Fn(&RequestHead<'_>) -> Priority + Send + Sync + 'static) -> Self {
        self.priority = Arc::new(f);
        self
    }

    /// Decides which response statuses count as failures.
    pub fn failure(mut self, f: impl Fn(StatusCode) -> bool + Send + Sync + 'static) -> Self {
        self.is_failure = Arc::new(f);
        self
    }
}

impl<S, O: PhysicsObserver + 'static> Layer<S> for AtrionLayer<O> {
    type Service = AtrionService<S, O>;

    fn layer(&self, inner: S) -> Self::Service {
        AtrionService { inner, layer: self.clone() }
    }
}

/// The service made by [`AtrionLayer`].
pub struct AtrionService<S, O: PhysicsObserver + 'static = SilentObserver> {
    inner: S,
    layer: AtrionLayer<O>,
}

impl<S: Clone, O: PhysicsObserver + 'static> Clone for AtrionService<S, O> {
    fn clone(&self) -> Self {
        AtrionService { inner: self.inner.clone(), layer: self.layer.clone() }
    }
}

/// A `503 Service Unavailable` with `Retry-After` (whole seconds, at least 1) and an empty body.
pub fn shed_response<B: Default>(decision: &Decision) -> Response<B> {
    let secs = decision.retry_after.map_or(1, |d| d.as_secs_f64().ceil().max(1.0) as u64);
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

impl<S, O, ReqB, ResB> Service<Request<ReqB>> for AtrionService<S, O>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    O: PhysicsObserver + 'static,
    ResB: Default,
{
    type Response = Response<ReportBody<ResB, O>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, O>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let head =
            RequestHead { method: req.method(), uri: req.uri(), headers: req.headers(), extensions: req.extensions() };
        let atrion = &self.layer.atrion;
        let started = atrion.now();
        let handle = resolve(atrion, started, |id| (self.layer.route)(&head, id));
        let priority = (self.layer.priority)(&head).for_attempt(retry_attempt(head.headers));
        let decision = handle.decide(started, priority);
        if !decision.is_admitted() {
            return ResponseFuture { state: State::Shed { decision: Some(decision) } };
        }
        ResponseFuture {
            state: State::Called {
                future: self.inner.call(req),
                report: Some(Report {
                    atrion: self.layer.atrion.clone(),
                    is_failure: self.layer.is_failure.clone(),
                    handle,
                    started,
                }),
            },
        }
    }
}

/// What a request needs to report: only the parts of the layer it uses, so that a request
/// clones two shared pointers, not four.
struct Report<O: PhysicsObserver + 'static> {
    atrion: Arc<Atrion<O>>,
    is_failure: ClassifyFn,
    handle: OwnedRouteHandle<O>,
    started: Timestamp,
}

impl<O: PhysicsObserver + 'static> Report<O> {
    fn send(self, failed: bool) {
        // Saturation is not known here: the neutral baseline.
        let _ = self.atrion.report_handle_since(&self.handle, self.started, !failed, None);
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports the request's outcome to Atrion when it ends: at its
    /// last frame, at an error (a failure), or when it is dropped before its end (with the
    /// status's outcome). A shed response's body reports nothing.
    pub struct ReportBody<B, O> where O: PhysicsObserver, O: 'static {
        #[pin]
        inner: B,
        report: Option<Report<O>>,
        failed: bool,
    }

    impl<B, O> PinnedDrop for ReportBody<B, O> where O: PhysicsObserver, O: 'static {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(r) = this.report.take() {
                r.send(*this.failed);
            }
        }
    }
}

impl<B: Default, O: PhysicsObserver + 'static> Default for ReportBody<B, O> {
    fn default() -> Self {
        ReportBody { inner: B::default(), report: None, failed: false }
    }
}

impl<B, O> http_body::Body for ReportBody<B, O>
where
    B: http_body::Body,
    O: PhysicsObserver + 'static,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        let ended = match &frame {
            None => true,
            Some(Err(_)) => {
                *this.failed = true;
                true
            }
            Some(Ok(_)) => false,
        };
        if let Some(r) = this.report.take_if(|_| ended) {
            r.send(*this.failed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`AtrionService`].
    pub struct ResponseFuture<F, O> where O: PhysicsObserver, O: 'static {
        #[pin]
        state: State<F, O>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, O> where O: PhysicsObserver, O: 'static {
        Shed { decision: Option<Decision> },
        Called { #[pin] future: F, report: Option<Report<O>> },
    }
}

impl<F, O, ResB, E> Future for ResponseFuture<F, O>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    O: PhysicsObserver + 'static,
    ResB: Default,
{
    type Output = Result<Response<ReportBody<ResB, O>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Shed { decision } => {
                let d = decision.take().unwrap_or_else(|| panic!("ResponseFuture polled after completion"));
                Poll::Ready(Ok(shed_response(&d)))
            }
            StateProj::Called { future, report } => {
                let out = std::task::ready!(future.poll(cx));
                let report = report.take();
                Poll::Ready(match out {
                    Ok(response) => {
                        // The outcome is known now; it is reported when the body ends.
                        let failed = report.as_ref().is_some_and(|r| (r.is_failure)(response.status()));
                        Ok(response.map(|inner| ReportBody { inner, report, failed }))
                    }
                    Err(e) => {
                        if let Some(r) = report {
                            r.send(true);
                        }
                        Err(e)
                    }
                })
            }
        }
    }
}

/// For services that are not HTTP: a shed request fails at once with
/// [`ShedError::Shed`], carrying the decision; the inner service's own errors come back as
/// [`ShedError::Inner`] and count as failures.
pub struct ShedLayer<O: PhysicsObserver + 'static, F> {
    atrion: Arc<Atrion<O>>,
    route: Arc<F>,
}

impl<O: PhysicsObserver + 'static, F> Clone for ShedLayer<O, F> {
    fn clone(&self) -> Self {
        ShedLayer { atrion: self.atrion.clone(), route: self.route.clone() }
    }
}

impl<O: PhysicsObserver + 'static, F> ShedLayer<O, F> {
    /// A layer that maps each request to a route with `route`, which writes the route id
    /// into the (empty, reused) string it is given.
    pub fn new(atrion: Arc<Atrion<O>>, route: F) -> Self {
        ShedLayer { atrion, route: Arc::new(route) }
    }
}

impl<S, O: PhysicsObserver + 'static, F> Layer<S> for ShedLayer<O, F> {
    type Service = ShedService<S, O, F>;

    fn layer(&self, inner: S) -> Self::Service {
        ShedService { inner, layer: self.clone() }
    }
}

/// The service made by [`ShedLayer`].
pub struct ShedService<S, O: PhysicsObserver + 'static, F> {
    inner: S,
    layer: ShedLayer<O, F>,
}

impl<S: Clone, O: PhysicsObserver + 'static, F> Clone for ShedService<S, O, F> {
    fn clone(&self) -> Self {
        ShedService { inner: self.inner.clone(), layer: self.layer.clone() }
    }
}

/// The error of a [`ShedService`].
#[derive(Debug)]
pub enum ShedError<E> {
    /// Atrion shed the request; `retry_after` says when to try again.
    Shed(Decision),
    /// The inner service failed.
    Inner(E),
}

impl<E: std::fmt::Display> std::fmt::Display for ShedError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShedError::Shed(d) => write!(f, "shed ({}), retry after {:?}", d.reason.as_str(), d.retry_after),
            ShedError::Inner(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ShedError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ShedError::Shed(_) => None,
            ShedError::Inner(e) => Some(e),
        }
    }
}

impl<S, O, F, Req> Service<Req> for ShedService<S, O, F>
where
    S: Service<Req>,
    O: PhysicsObserver + 'static,
    F: Fn(&Req, &mut String),
{
    type Response = S::Response;
    type Error = ShedError<S::Error>;
    type Future = ShedFuture<S::Future, O>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(ShedError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let atrion = &self.layer.atrion;
        let started = atrion.now();
        let handle = resolve(atrion, started, |id| (self.layer.route)(&req, id));
        let decision = handle.decide(started, atrion.default_priority());
        if !decision.is_admitted() {
            return ShedFuture { state: ShedState::Shed { decision: Some(decision) } };
        }
        let report = (atrion.clone(), handle, started);
        ShedFuture { state: ShedState::Called { future: self.inner.call(req), report: Some(report) } }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`ShedService`].
    pub struct ShedFuture<F, O> where O: PhysicsObserver, O: 'static {
        #[pin]
        state: ShedState<F, O>,
    }
}

pin_project_lite::pin_project! {
    #[project = ShedStateProj]
    enum ShedState<F, O> where O: PhysicsObserver, O: 'static {
        Shed { decision: Option<Decision> },
        Called { #[pin] future: F, report: Option<(Arc<Atrion<O>>, OwnedRouteHandle<O>, Timestamp)> },
    }
}

impl<F, O, T, E> Future for ShedFuture<F, O>
where
    F: Future<Output = Result<T, E>>,
    O: PhysicsObserver + 'static,
{
    type Output = Result<T, ShedError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            ShedStateProj::Shed { decision } => {
                let d = decision.take().unwrap_or_else(|| panic!("ShedFuture polled after completion"));
                Poll::Ready(Err(ShedError::Shed(d)))
            }
            ShedStateProj::Called { future, report } => {
                let out = std::task::ready!(future.poll(cx));
                if let Some((atrion, handle, started)) = report.take() {
                    let _ = atrion.report_handle_since(&handle, started, out.is_ok(), None);
                }
                Poll::Ready(out.map_err(ShedError::Inner))
            }
        }
    }
}
