//! # atrion-server
//!
//! The Atrion sidecar as a library: an HTTP decision service that a service in any language
//! asks "may I call this route now?" over loopback, built as an axum [`Router`] from an
//! [`Atrion`] instance, so that a Rust service can mount it too. `atrion serve` runs it.
//!
//! This is the first part of the sidecar: health, decisions and reports. The API is JSON,
//! versioned under `/v1`:
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /healthz` | | `{"status": "ok"}` while the process serves |
//! | `GET /readyz` | | `{"ready": true, "degraded": false}`; degraded (the store is away) is still ready: decisions go on on local state |
//! | `POST /v1/decide` | `{"route", "priority"?}` | `{"verdict", "reason", "mode", "resistance", "retry_after_ms", "ticket"}` (a ticket when admitted) |
//! | `POST /v1/report` | `{"ticket", "ok", "saturation"?}` or `{"route", "latency_ms", "ok" \| "error_rate", "saturation"?}` | `{"route", "mode", "resistance", "scar"}` |
//! | `POST /v1/batch` | `{"decide": [..], "report": [..]}` (at most 1,000 items) | `{"decide": [..], "report": [..]}`: each item's answer, or `{"problem"}` for that item alone |
//! | `GET /v1/routes`, `GET /v1/routes/{route}` | | resistance, mode, scar, momentum, break point, the tuner's mean and deviation, updates, the cluster's scar |
//!
//! A ticket carries the decision's time: reporting by ticket, the server measures the
//! latency, so clients need no clock. Errors are `application/problem+json` (RFC 9457) with
//! a machine-readable `type` and the offending field; client mistakes are 4xx, and an error
//! changes no state.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::sync::Arc;
use std::time::Duration;

use atrion::{Atrion, Decision, Priority, Telemetry, Timestamp};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The longest route id the API takes, in bytes (the engine's own limit).
pub const MAX_ROUTE_LEN: usize = 1024;

/// Limits of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The largest request body, in bytes.
    pub max_body_bytes: usize,
    /// The most items in one `/v1/batch` (decisions and reports together).
    pub max_batch: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { max_body_bytes: 1024 * 1024, max_batch: 1_000 }
    }
}

struct Shared {
    atrion: Arc<Atrion>,
    max_batch: usize,
}

/// The sidecar's HTTP API over `atrion`.
pub fn router(atrion: Arc<Atrion>, config: &ServerConfig) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/decide", post(decide))
        .route("/v1/report", post(report))
        .route("/v1/batch", post(batch))
        .route("/v1/routes", get(routes))
        .route("/v1/routes/{*route}", get(route))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(Arc::new(Shared { atrion, max_batch: config.max_batch }))
}

/// An RFC 9457 problem: what the client got wrong, where, and that nothing changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// A machine-readable type: `tag:atrion,2026:problem/<kind>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short, human-readable summary of the kind.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What exactly was wrong.
    pub detail: String,
    /// The path of the offending field in the body, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Problem {
    fn new(status: StatusCode, kind: &str, title: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("tag:atrion,2026:problem/{kind}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
        }
    }

    fn invalid(field: &str, detail: impl Into<String>) -> Self {
        let mut p = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-value", "A value is not valid", detail);
        p.field = Some(field.to_owned());
        p
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response = (status, Json(self)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        response
    }
}

/// The body as `T`, or a problem naming the field.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, Problem> {
    let body = body.map_err(|r| {
        let status = r.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE { "body-too-large" } else { "unreadable-body" };
        Problem::new(status, kind, "The request body cannot be read", r.body_text())
    })?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| (e.path().to_string(), e.into_inner()))
        .and_then(|v| de.end().map(|()| v).map_err(|e| (".".to_owned(), e)));
    value.map_err(|(path, inner)| {
        let (kind, title) = if inner.is_syntax() || inner.is_eof() {
            ("malformed-json", "The body is not valid JSON")
        } else {
            ("invalid-body", "The body does not match the request's schema")
        };
        let mut p = Problem::new(StatusCode::BAD_REQUEST, kind, title, inner.to_string());
        if path != "." {
            p.field = Some(path);
        }
        p
    })
}

fn check_route(field: &str, route: &str) -> Result<(), Problem> {
    if route.is_empty() || route.len() > MAX_ROUTE_LEN {
        return Err(Problem::invalid(field, format!("a route is 1 to {MAX_ROUTE_LEN} bytes, got {}", route.len())));
    }
    Ok(())
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let degraded = s.atrion.sync_stats().await.is_some_and(|st| st.degraded);
    Json(serde_json::json!({ "ready": true, "degraded": degraded }))
}

/// `POST /v1/decide`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideRequest {
    route: String,
    #[serde(default)]
    priority: Option<String>,
}

/// The answer to `POST /v1/decide`.
#[derive(Debug, Serialize)]
struct DecideResponse {
    verdict: atrion::Verdict,
    reason: atrion::Reason,
    mode: atrion::Mode,
    resistance: f64,
    retry_after_ms: Option<u64>,
    ticket: Option<String>,
}

async fn decide(State(s): State<Arc<Shared>>, body: Result<Bytes, BytesRejection>) -> Result<Response, Problem> {
    let req: DecideRequest = parse(body)?;
    Ok(Json(decide_one(&s, &req)?).into_response())
}

fn decide_one(s: &Shared, req: &DecideRequest) -> Result<DecideResponse, Problem> {
    check_route("route", &req.route)?;
    let priority = match &req.priority {
        None => s.atrion.default_priority(),
        Some(p) => p.parse::<Priority>().map_err(|e| Problem::invalid("priority", e.to_string()))?,
    };
    let now = s.atrion.now();
    let d: Decision = s.atrion.engine().decide(&req.route, now, priority);
    let ticket = d.is_admitted().then(|| Ticket { at: now, route: req.route.as_str() }.encode());
    let retry_after_ms = d.retry_after.map(|r| u64::try_from(r.as_millis()).unwrap_or(u64::MAX).max(1));
    Ok(DecideResponse {
        verdict: d.verdict,
        reason: d.reason,
        mode: d.mode,
        resistance: d.resistance,
        retry_after_ms,
        ticket,
    })
}

/// `POST /v1/report`: by ticket, or by route with the latency measured by the client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportRequest {
    #[serde(default)]
    ticket: Option<String>,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    latency_ms: Option<f64>,
    #[serde(default)]
    ok: Option<bool>,
    #[serde(default)]
    error_rate: Option<f64>,
    #[serde(default)]
    saturation: Option<f64>,
}

/// The answer to `POST /v1/report`.
#[derive(Debug, Serialize)]
struct ReportResponse {
    route: String,
    mode: atrion::Mode,
    resistance: f64,
    scar: f64,
}

async fn report(State(s): State<Arc<Shared>>, body: Result<Bytes, BytesRejection>) -> Result<Response, Problem> {
    let req: ReportRequest = parse(body)?;
    Ok(Json(report_one(&s, &req)?).into_response())
}

fn report_one(s: &Shared, req: &ReportRequest) -> Result<ReportResponse, Problem> {
    let now = s.atrion.now();
    let (route, telemetry) = match (&req.ticket, &req.route) {
        (Some(ticket), None) => {
            if req.latency_ms.is_some() || req.error_rate.is_some() {
                return Err(Problem::invalid(
                    "latency_ms",
                    "a report by ticket gives `ok` only: the server measures the latency",
                ));
            }
            let ok = req.ok.ok_or_else(|| Problem::invalid("ok", "a report by ticket needs `ok`"))?;
            let t = Ticket::decode(ticket).ok_or_else(|| Problem::invalid("ticket", "not a ticket of this server"))?;
            (t.route, s.atrion.telemetry(now.saturating_since(t.at), ok, req.saturation))
        }
        (None, Some(route)) => {
            check_route("route", route)?;
            let latency =
                req.latency_ms.ok_or_else(|| Problem::invalid("latency_ms", "a report by route needs `latency_ms`"))?;
            let error = match (req.ok, req.error_rate) {
                (Some(ok), None) => f64::from(u8::from(!ok)),
                (None, Some(rate)) => rate,
                _ => return Err(Problem::invalid("ok", "give exactly one of `ok` and `error_rate`")),
            };
            let saturation = req.saturation.unwrap_or(s.atrion.neutral_saturation());
            (route.clone(), Telemetry::new(latency, error, saturation))
        }
        _ => return Err(Problem::invalid("ticket", "give exactly one of `ticket` and `route`")),
    };
    let telemetry = telemetry.map_err(|e| {
        let field = match e {
            atrion::TelemetryError::NotFinite { field, .. } | atrion::TelemetryError::OutOfRange { field, .. } => field,
            _ => "telemetry",
        };
        Problem::invalid(field, e.to_string())
    })?;
    let status = s.atrion.engine().report(&route, telemetry, now);
    Ok(ReportResponse { route, mode: status.mode, resistance: status.resistance, scar: status.scar })
}

/// `POST /v1/batch`: many decisions and reports in one body. Each item is answered on its
/// own (a result, or a problem whose field is the item's path); one bad item changes nothing
/// and does not fail the others.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    #[serde(default)]
    decide: Vec<serde_json::Value>,
    #[serde(default)]
    report: Vec<serde_json::Value>,
}

/// One item's answer in a batch.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Item<T> {
    Ok(T),
    Problem { problem: Problem },
}

fn item<Req: DeserializeOwned, T>(
    list: &str,
    i: usize,
    value: serde_json::Value,
    run: impl FnOnce(&Req) -> Result<T, Problem>,
) -> Item<T> {
    let at = |p: &mut Problem, field: Option<&str>| {
        p.field = Some(match field {
            Some(f) if f != "." => format!("{list}[{i}].{f}"),
            _ => format!("{list}[{i}]"),
        });
    };
    let parsed: Result<Req, Problem> = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let mut p = Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-body",
            "The body does not match the request's schema",
            e.into_inner().to_string(),
        );
        at(&mut p, Some(&path));
        p
    });
    match parsed.and_then(|req| {
        run(&req).map_err(|mut p| {
            let f = p.field.take();
            at(&mut p, f.as_deref());
            p
        })
    }) {
        Ok(t) => Item::Ok(t),
        Err(problem) => Item::Problem { problem },
    }
}

async fn batch(State(s): State<Arc<Shared>>, body: Result<Bytes, BytesRejection>) -> Result<Response, Problem> {
    let req: BatchRequest = parse(body)?;
    let n = req.decide.len() + req.report.len();
    if n > s.max_batch {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch-too-large",
            "Too many items in one batch",
            format!("{n} items, at most {}", s.max_batch),
        ));
    }
    let decide: Vec<Item<DecideResponse>> = req
        .decide
        .into_iter()
        .enumerate()
        .map(|(i, v)| item("decide", i, v, |r: &DecideRequest| decide_one(&s, r)))
        .collect();
    let report: Vec<Item<ReportResponse>> = req
        .report
        .into_iter()
        .enumerate()
        .map(|(i, v)| item("report", i, v, |r: &ReportRequest| report_one(&s, r)))
        .collect();
    Ok(Json(serde_json::json!({ "decide": decide, "report": report })).into_response())
}

/// A route as `/v1/routes` shows it.
#[derive(Debug, Serialize)]
struct RouteView {
    route: String,
    mode: atrion::Mode,
    resistance: f64,
    scar: f64,
    momentum: f64,
    break_point: f64,
    tuner_mean: f64,
    tuner_sd: f64,
    updates: u64,
    cluster_scar: Option<f64>,
}

fn route_view(s: &Shared, route: &str) -> Option<RouteView> {
    let engine = s.atrion.engine();
    let v = engine.snapshot(route).ok()?;
    Some(RouteView {
        route: route.to_owned(),
        mode: v.mode,
        resistance: v.resistance,
        scar: v.scar,
        momentum: v.momentum,
        break_point: v.break_point,
        tuner_mean: v.tuner_mean,
        tuner_sd: v.tuner_var.sqrt(),
        updates: v.updates,
        cluster_scar: engine.cluster_scar(route, s.atrion.now()),
    })
}

/// `GET /v1/routes`: every tracked route, sorted by id.
async fn routes(State(s): State<Arc<Shared>>) -> Json<Vec<RouteView>> {
    let mut ids = s.atrion.engine().route_ids();
    ids.sort_unstable();
    Json(ids.iter().filter_map(|id| route_view(&s, id)).collect())
}

/// `GET /v1/routes/{route}` (the route percent-encoded).
async fn route(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(route): axum::extract::Path<String>,
) -> Result<Json<RouteView>, Problem> {
    route_view(&s, &route).map(Json).ok_or_else(|| {
        let mut p =
            Problem::new(StatusCode::NOT_FOUND, "unknown-route", "No such route", format!("no route `{route}`"));
        p.field = Some("route".into());
        p
    })
}

/// A decision's ticket: `v1.<engine nanoseconds>.<route, base64url>`. It proves nothing (a
/// client can report any latency by route anyway); it saves the client a clock.
struct Ticket<R> {
    at: Timestamp,
    route: R,
}

impl Ticket<&str> {
    fn encode(&self) -> String {
        format!("v1.{}.{}", self.at.as_nanos(), URL_SAFE_NO_PAD.encode(self.route))
    }
}

impl Ticket<String> {
    fn decode(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("v1.")?;
        let (at, route) = rest.split_once('.')?;
        let route = String::from_utf8(URL_SAFE_NO_PAD.decode(route).ok()?).ok()?;
        if route.is_empty() || route.len() > MAX_ROUTE_LEN {
            return None;
        }
        Some(Ticket { at: Timestamp::from_nanos(at.parse().ok()?), route })
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then drains in-flight requests
/// and leaves the cluster (the last pulse is flushed).
pub async fn serve(
    listener: tokio::net::TcpListener,
    atrion: Arc<Atrion>,
    config: &ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(atrion.clone(), config);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    // Bounded: a store that is away must not hold the exit forever.
    let _ = tokio::time::timeout(Duration::from_secs(10), atrion.shutdown()).await;
    Ok(())
}

/// Completes on ctrl-c or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_roundtrip_and_garbage_is_refused() {
        let t = Ticket { at: Timestamp::from_nanos(123_456), route: "GET /a.b/{id}" }.encode();
        let back = Ticket::decode(&t).unwrap();
        assert_eq!((back.at, back.route.as_str()), (Timestamp::from_nanos(123_456), "GET /a.b/{id}"));
        for bad in ["", "v1.", "v1.x.YQ", "v2.1.YQ", "v1.1.!!", "v1.1."] {
            assert!(Ticket::decode(bad).is_none(), "{bad}");
        }
    }
}
