//! # atrion-server
//!
//! The Atrion sidecar as a library: an HTTP decision service that a service in any language
//! asks "may I call this route now?" over loopback, built as an axum [`Router`] from an
//! [`Atrion`] instance, so that a Rust service can mount it too. `atrion serve` runs it.
//!
//! Health, decisions and reports, what the node knows, administration, policies, and the
//! decision dashboard (a page at `/`, fed live by server-sent events; see
//! [`DashboardConfig`]). The API is JSON, versioned under `/v1`:
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /healthz` | | `{"status": "ok"}` while the process serves |
//! | `GET /readyz` | | `{"ready": true, "degraded": false}`; degraded (the store is away) is still ready: decisions go on on local state |
//! | `POST /v1/decide` | `{"route", "priority"?}` | `{"verdict", "reason", "mode", "resistance", "retry_after_ms", "ticket"}` (a ticket when admitted) |
//! | `POST /v1/report` | `{"ticket", "ok", "saturation"?}` or `{"route", "latency_ms", "ok" \| "error_rate", "saturation"?}` | `{"route", "mode", "resistance", "scar"}` |
//! | `POST /v1/batch` | `{"decide": [..], "report": [..]}` (at most 1,000 items) | `{"decide": [..], "report": [..]}`: each item's answer, or `{"problem"}` for that item alone |
//! | `POST /v1/tasks` | `{"route", "priority"?, "profile"?, "max_duration_ms"?, "heartbeat_ms"?}` | a task lease: `{"verdict", ..., "id", "expires_in_ms", "heartbeat_within_ms"}`, or the shed decision |
//! | `POST /v1/tasks/{id}/heartbeat`, `POST /v1/tasks/{id}/complete` `{"ok"}`, `DELETE /v1/tasks/{id}` | | the new deadlines; the outcome; `204`. A task no longer live (aborted, ended) answers `410` |
//! | `GET /v1/routes?limit=&after=`, `GET /v1/routes/{route}` | | resistance, mode, scar, momentum, break point, the tuner's mean and deviation, updates, the cluster's scar; the list a page at a time (`{"routes", "next"}`) |
//! | `GET /` | | the decision dashboard (its files under `/assets/`, built into the binary) |
//! | `GET /v1/dashboard/stream` | | the dashboard's live feed: server-sent `update` events, one per sample |
//! | `GET /v1/dashboard/routes/{route}`, `…/chart.svg?kind=resistance\|tuner` | | a route's page: transitions, latest decisions; its charts as SVG |
//!
//! A ticket carries the decision's time: reporting by ticket, the server measures the
//! latency, so clients need no clock. It is signed by the node (HMAC-SHA256), good once and
//! for `ServerConfig::ticket_ttl`. A decision or report that would create a route takes one
//! of its client's budget of new routes (`ServerConfig::route_creation_rate`): past it, `429`. Errors are `application/problem+json` (RFC 9457) with
//! a machine-readable `type` and the offending field; client mistakes are 4xx, and an error
//! changes no state.
//!
//! Mounted in a service of your own, the router answers like any axum router:
//!
//! ```
//! use std::sync::Arc;
//!
//! use atrion::Atrion;
//! use atrion_server::{ServerConfig, SidecarObserver};
//! use axum::body::Body;
//! use axum::http::Request;
//! use tower::ServiceExt as _;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let atrion = Arc::new(Atrion::builder().observer(SidecarObserver::new()).build().unwrap());
//! let app = atrion_server::router(atrion, &ServerConfig::default());
//!
//! let ask = Request::post("/v1/decide")
//!     .header("content-type", "application/json")
//!     .body(Body::from(r#"{"route": "GET /users"}"#))
//!     .unwrap();
//! let answer = app.oneshot(ask).await.unwrap();
//! assert_eq!(answer.status(), 200);
//! let body = axum::body::to_bytes(answer.into_body(), 64 * 1024).await.unwrap();
//! let decision: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(decision["verdict"], "admit");
//! assert!(decision["ticket"].is_string(), "report with it, and the server measures the latency");
//! # }
//! ```
//!
//! ## How it is composed
//!
//! Three jobs, one module tree and one router each:
//!
//! - `api/`: the JSON API ([`router`]'s operations: health, decisions, routes,
//!   administration, policies), an `OpenApiRouter` whose declarations are both the routes
//!   and `GET /openapi.json`. Its tickets and route-creation budgets live there too.
//! - `dashboard/`: the page at `/` with its files, and its data under `/v1/dashboard`
//!   (declared as API operations, in the same document).
//! - `proxy/`: proxy mode ([`proxy_router`]), a reverse proxy guarded by Atrion, and the
//!   plain forwarding it is measured against ([`forwarding_router`]). It shares nothing with
//!   the other two but the problems and the engine.
//!
//! What they share sits beside them: `problem` (every refusal is an RFC 9457 problem of one
//! `ProblemKind`, which fixes its status, type and title), `guard` (Host, Origin, media
//! type and client tokens, checked before any handler), `http` (each request's time limit,
//! span and duration), `auth` (admin tokens and the limit on failed attempts), `observer`
//! (decision counts per route) and `conn` (the accept loop and its connection limits,
//! behind [`serve`]).
//!
//! [`router`] merges the API's router and the dashboard's, adds the `not-found` fallback
//! and the `http` middleware to the routes, and wraps the whole once in the guard, CORS and
//! the body limit (a `tower::ServiceBuilder` behind `Router::fallback_service`: a global
//! layer put on with `Router::layer` would wrap, and clone per request, every route).
//! [`serve`] runs that router on the connection layer.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::sync::Arc;
use std::time::Duration;

use atrion::Atrion;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use utoipa_axum::router::OpenApiRouter;

// The three jobs, one module tree and one router each.
mod api;
mod dashboard;
mod proxy;

// What they share: problems, the guard, the request middleware, tokens, the observer and
// the connection layer.
mod auth;
mod conn;
mod guard;
mod http;
mod observer;
mod problem;

pub use api::tickets::{REPLAY_WINDOW, Taken, TicketBook, TicketError};
pub use auth::{AdminToken, AuthLimits, MIN_SECRET_LEN, TokenError};
pub use conn::{BACKLOG, ConnLimits, RELEASE_AFTER, bind, serve_router};
pub use dashboard::{DashboardAuth, DashboardConfig};
pub use http::HTTP_DURATION;
pub use observer::{DecisionCounts, SidecarObserver};
pub use problem::{Problem, ProblemIssue};
pub use proxy::{
    IDLE_TIMEOUT, MAX_IDLE, PathError, PathTemplate, ProxyConfig, ProxyError, forwarding_router, normalize_path,
    proxy_router,
};

/// The [`Atrion`] the sidecar serves: its observer counts decisions per route.
pub type SidecarAtrion = Atrion<SidecarObserver>;

/// The policy layer of the sidecar's engine.
pub type PolicyHandle = Arc<atrion_policy::PolicyNode<SidecarObserver>>;

/// Renders the metrics registry in Prometheus' text format (the exporter's handle, installed
/// by the application).
#[derive(Clone)]
pub struct MetricsRender(pub Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for MetricsRender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsRender")
    }
}

/// Opens a store from its URL, for `POST /v1/admin/store` (the application decides which
/// backends it can build, and in which namespace).
pub type OpenStore = Arc<
    dyn Fn(
            String,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Arc<dyn atrion::state::StateStore>, String>> + Send>,
        > + Send
        + Sync,
>;

/// What `POST /v1/admin/store` needs: the service the engine's state goes through, and how
/// to open the store to switch to.
#[derive(Clone)]
pub struct StoreSwitch {
    /// The state service the sidecar's `Atrion` was built over.
    pub service: atrion::state::StateService,
    /// Opens a store from its URL.
    pub open: OpenStore,
}

impl std::fmt::Debug for StoreSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSwitch").field("service", &self.service).finish()
    }
}

/// Limits and options of the HTTP API.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The largest request body, in bytes.
    pub max_body_bytes: usize,
    /// The most items in one `/v1/batch` (decisions and reports together).
    pub max_batch: usize,
    /// The longest a request may take, body included; past it the answer is `408`.
    pub request_timeout: Duration,
    /// Serves `GET /metrics` when set.
    pub metrics: Option<MetricsRender>,
    /// The tokens that open `/v1/admin/*`; none disables administration (`403`).
    pub admin_tokens: Vec<AdminToken>,
    /// The largest body of `POST /v1/admin/restore`, in bytes.
    pub max_restore_bytes: usize,
    /// Serves `POST /v1/admin/store` when set.
    pub store_switch: Option<StoreSwitch>,
    /// The policy layer: serves `/v1/policies`, `/v1/bans`, `/v1/state*` and `/v1/audit*`,
    /// applies bans and VIP lanes to decisions, and keeps the audit trail in the store.
    pub policy: Option<PolicyHandle>,
    /// Serves the decision dashboard at `/` and its feed under `/v1/dashboard` when set
    /// (the default).
    pub dashboard: Option<DashboardConfig>,
    /// How failed admin authentications are limited per source (`429` with `Retry-After`,
    /// backing off) and counted for the audit trail.
    pub auth: AuthLimits,
    /// Timeouts and caps of the connections [`serve`] accepts (see [`ConnLimits`]).
    pub connections: ConnLimits,
    /// Host names the API answers for besides the listen address (and `localhost` on
    /// loopback): `name` (any port) or `name:port`. A request for any other host gets `421`.
    /// A [`router`] without names and without [`serve`] checks no Host. Default none.
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://app.example`) whose browser pages may call the API (CORS); any
    /// other cross-origin request from a browser gets `403`. Default none.
    pub cors_origins: Vec<String>,
    /// Tokens that decide, report and batch require (`Authorization: Bearer`); none: no
    /// token needed (the default, for a sidecar on loopback).
    pub client_tokens: Vec<AdminToken>,
    /// The address [`serve`] listens on: its Host names.
    listen: Option<std::net::SocketAddr>,
    /// New routes a client may create per second (decisions and reports on routes not
    /// tracked yet; a route that exists costs nothing); past its budget the answer is `429`
    /// with `Retry-After`. 0: no limit. Default 100.
    pub route_creation_rate: u32,
    /// The most new routes a client may create at once (its budget's burst). Default 1,000.
    pub route_creation_burst: u32,
    /// How long a decision's ticket may be reported by (default 5 minutes); tickets are also
    /// single-use, within the last [`REPLAY_WINDOW`] tickets issued.
    pub ticket_ttl: Duration,
    /// The most live task leases (`POST /v1/tasks`) a client may hold at once (keyed as for
    /// its budget of new routes); past it, `429`. 0: only the engine's bound
    /// (`EngineLimits::max_leases`). Default 1,024.
    pub max_tasks_per_client: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 1024 * 1024,
            max_batch: 1_000,
            request_timeout: Duration::from_secs(10),
            metrics: None,
            admin_tokens: Vec::new(),
            max_restore_bytes: 256 * 1024 * 1024,
            store_switch: None,
            policy: None,
            dashboard: Some(DashboardConfig::default()),
            auth: AuthLimits::default(),
            connections: ConnLimits::default(),
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
            client_tokens: Vec::new(),
            listen: None,
            route_creation_rate: 100,
            route_creation_burst: 1_000,
            ticket_ttl: Duration::from_secs(300),
            max_tasks_per_client: 1_024,
        }
    }
}

struct Shared {
    atrion: Arc<SidecarAtrion>,
    config: ServerConfig,
    /// Each client's budget of new routes.
    creation: api::creation::RouteCreation,
    /// This node's tickets.
    tickets: api::tickets::TicketBook,
    /// This node's task leases: their ids' key and each client's count.
    tasks: api::tasks::TaskBook,
    openapi: utoipa::openapi::OpenApi,
    dashboard: Option<Arc<dashboard::Dashboard>>,
    /// Failed authentications: their limit and their counts.
    refusals: auth::Guard,
}

/// The sidecar's HTTP API over `atrion`. Every endpoint is declared once, with its OpenAPI
/// operation: the router and `GET /openapi.json` come from the same declarations.
///
/// With the dashboard on, its sampler runs while the router lives (when built inside a
/// tokio runtime); its live feeds stay open until the client leaves, so a graceful
/// shutdown of a server of your own should close them: [`serve`] does.
pub fn router(atrion: Arc<SidecarAtrion>, config: &ServerConfig) -> Router {
    build(atrion, config).0
}

fn build(atrion: Arc<SidecarAtrion>, config: &ServerConfig) -> (Router, Arc<Shared>) {
    let (router, mut api) = routes(config).split_for_parts();
    guard::declare(&mut api);
    let checks = Arc::new(guard::Guard::new(config));
    let cors = checks.cors();
    let dashboard =
        config.dashboard.clone().map(|d| dashboard::Dashboard::new(atrion.clone(), config.policy.clone(), d));
    let shared = Arc::new(Shared {
        atrion,
        config: config.clone(),
        creation: api::creation::RouteCreation::new(config.route_creation_rate, config.route_creation_burst),
        tickets: api::tickets::TicketBook::new(config.ticket_ttl),
        tasks: api::tasks::TaskBook::new(config.max_tasks_per_client),
        openapi: api,
        dashboard,
        refusals: auth::Guard::new(config.auth.clone()),
    });
    auth::spawn_flusher(&shared);
    let routes = router
        .fallback(http::not_found)
        .route_layer(http::ObserveLayer(config.request_timeout))
        .with_state(shared.clone());
    // What every request passes, wrapped once around the routes: `Router::layer` would wrap
    // each route, and each request would clone (and allocate) every layer of its route.
    let stack = tower::ServiceBuilder::new()
        .layer(guard::GuardLayer(checks))
        .option_layer(cors)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .service(routes);
    (Router::new().fallback_service(stack), shared)
}

/// The API's OpenAPI 3.1 document, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut api = routes(&ServerConfig::default()).split_for_parts().1;
    guard::declare(&mut api);
    api
}

/// The API's routes and the dashboard's, with the OpenAPI document of both.
fn routes(config: &ServerConfig) -> OpenApiRouter<Arc<Shared>> {
    api::router(config).merge(dashboard::router())
}

/// Serves the API on `listener` until `shutdown` completes, then drains in-flight requests
/// and leaves the cluster (the last pulse is flushed).
///
/// Connections get [`ServerConfig::connections`]' limits; the Host check answers for the
/// listener's address.
pub async fn serve(
    listener: tokio::net::TcpListener,
    atrion: Arc<SidecarAtrion>,
    config: &ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut config = config.clone();
    config.listen = Some(listener.local_addr()?);
    let (app, shared) = build(atrion.clone(), &config);
    let flushed = shared.clone();
    let stopping = async move {
        shutdown.await;
        // The dashboard's feeds would hold the drain open: they end first.
        if let Some(d) = &shared.dashboard {
            d.close().await;
        }
    };
    serve_router(listener, app, &config.connections, stopping).await?;
    // The counts of refused attempts of the minute under way.
    flushed.refusals.flush(&flushed, true).await;
    // Bounded: a store that is away must not hold the exit forever.
    let _ = tokio::time::timeout(Duration::from_secs(10), atrion.shutdown()).await;
    Ok(())
}

/// The listener with `TCP_NODELAY` on every connection: small answers leave at once,
/// instead of waiting for the client's delayed acknowledgement (tens of milliseconds).
pub fn nodelay(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    fn set(tcp: &mut tokio::net::TcpStream) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set");
        }
    }
    listener.tap_io(set as fn(&mut tokio::net::TcpStream))
}

/// Completes on ctrl-c or, on Unix, SIGTERM. The handlers are installed when this is
/// called (inside a tokio runtime), not when the future is first polled: call it before
/// announcing that the server listens, so that a signal sent right after is not lost.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(term) => {},
                () = wait(int) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
