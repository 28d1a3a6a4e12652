//! Decisions, reports and batches: the sidecar's hot path.

use std::sync::Arc;

use atrion::{Decision, Priority, Telemetry};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::creation::Client;
use crate::Shared;
use crate::problem::{BodyProblems, Problem, ProblemKind, check_route, parse};

/// The largest retry number `/v1/decide` takes (a retry past the fourth is bulk already).
const MAX_ATTEMPT: u32 = 100;

/// `POST /v1/decide`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecideRequest {
    /// The route, 1 to 1,024 bytes.
    #[schema(min_length = 1, max_length = 1024)]
    route: String,
    /// `critical`, `high`, `normal`, `low` or `bulk`; the server's default when absent.
    #[serde(default)]
    #[schema(pattern = "^(critical|high|normal|low|bulk)$")]
    priority: Option<String>,
    /// The caller's client key, for cluster-wide bans and VIP lanes (policies).
    #[serde(default)]
    client: Option<String>,
    /// The retry's number when the request is a client's retry (`1` for the first retry;
    /// absent or `0`: a first try). A retry is decided one priority tier lower per retry
    /// (critical stays critical), so that retries are shed before first tries.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100)]
    attempt: Option<u32>,
}

/// The answer to `POST /v1/decide`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DecideResponse {
    /// `admit` or `shed`.
    #[schema(value_type = String, example = "admit")]
    verdict: atrion::Verdict,
    /// Why: `healthy`, `bootstrap`, `probe`, `keepalive`, `open`, `probe_quota`,
    /// `overloaded`, `soft_limit`, `throttled`, `held`, `banned` (a policy's ban), `shadow`
    /// (admitted: the route runs in shadow mode and would have shed), `untracked` (admitted
    /// on no state: the route table is full).
    #[schema(value_type = String, example = "healthy")]
    reason: atrion::Reason,
    /// The route's mode: `bootstrap`, `operational`, `open`, `half_open`.
    #[schema(value_type = String, example = "operational")]
    mode: atrion::Mode,
    /// The resistance the decision saw (ohms).
    resistance: f64,
    /// When shed: retry after this many milliseconds.
    retry_after_ms: Option<u64>,
    /// When admitted: give it back with the report, and the server measures the latency.
    /// Signed by this node, good once, within the ticket time to live.
    ticket: Option<String>,
}

/// The problem of a client past its budget of new routes.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it describes responses
pub(crate) enum CreationProblems {
    /// The client created too many new routes: try again after `Retry-After`
    #[response(status = 429, content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Limited(Problem),
}

/// The problems of a refused ticket.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it describes responses
pub(crate) enum TicketProblems {
    /// The ticket was already reported
    #[response(status = 409, content_type = "application/problem+json")]
    Replayed(Problem),
    /// The ticket has expired
    #[response(status = 410, content_type = "application/problem+json")]
    Expired(Problem),
}

/// May I call this route now? Admitted requests carry a ticket for the report. A decision
/// that would create a route past the client's budget of new routes is `429`.
#[utoipa::path(post, path = "/v1/decide", tag = "decisions", request_body = DecideRequest,
    params(("X-Atrion-Client" = Option<String>, Header, description = "The caller, for its budget of new routes (else its address)")),
    responses((status = 200, body = DecideResponse), BodyProblems, CreationProblems))]
pub(crate) async fn decide(
    State(s): State<Arc<Shared>>,
    client: Client,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let req: DecideRequest = parse(body)?;
    let answer = decide_one(&s, &req, &client)?;
    let span = tracing::Span::current();
    span.record("atrion.route", req.route.as_str());
    span.record("atrion.verdict", answer.verdict.as_str());
    span.record("atrion.reason", answer.reason.as_str());
    Ok(Json(answer).into_response())
}

fn decide_one(s: &Shared, req: &DecideRequest, client: &Client) -> Result<DecideResponse, Problem> {
    check_route("route", &req.route)?;
    let priority = match &req.priority {
        None => s.atrion.default_priority(),
        Some(p) => p.parse::<Priority>().map_err(|e| Problem::invalid("priority", e.to_string()))?,
    };
    let attempt = req.attempt.unwrap_or(0);
    if attempt > MAX_ATTEMPT {
        return Err(Problem::invalid("attempt", format!("{attempt} is over the largest retry number, {MAX_ATTEMPT}")));
    }
    let now = s.atrion.now();
    let mut priority = priority.for_attempt(attempt);
    if let Some(p) = &s.config.policy {
        let gate = p.gate();
        if let Some(until) = gate.banned(&req.route, req.client.as_deref(), p.wall_ms()) {
            let answer = banned(s, &req.route, until.saturating_sub(p.wall_ms()));
            let decision = Decision {
                verdict: answer.verdict,
                reason: answer.reason,
                mode: answer.mode,
                resistance: answer.resistance,
                retry_after: None,
            };
            s.atrion.engine().observer().count_outside(&req.route, now, &decision);
            return Ok(answer);
        }
        if req.client.as_deref().is_some_and(|c| gate.vip(&req.route, c)) {
            priority = Priority::Critical;
        }
    }
    let mut wait = None;
    let d: Decision = s
        .atrion
        .engine()
        .decide_gated(&req.route, now, priority, || s.creation.take(client).map_err(|w| wait = Some(w)).is_ok())
        .ok_or_else(|| too_many_routes(wait))?;
    let ticket = d.is_admitted().then(|| s.tickets.issue(&req.route, now));
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

/// The answer to a banned request: shed until the ban's deadline, at the route's state as
/// last published (a ban does not create a route).
fn banned(s: &Shared, route: &str, left_ms: u64) -> DecideResponse {
    let engine = s.atrion.engine();
    let status = engine.status(route).ok();
    DecideResponse {
        verdict: atrion::Verdict::Shed,
        reason: atrion::Reason::Banned,
        // A route never seen would start in bootstrap, at its base resistance.
        mode: status.as_ref().map_or(atrion::Mode::Bootstrap, |st| st.mode),
        resistance: status.map_or_else(|| engine.route_config(route).r_base, |st| st.resistance),
        retry_after_ms: Some(left_ms.max(1)),
        ticket: None,
    }
}

/// `POST /v1/report`: by ticket (`ticket`, `ok`, `saturation`?), or by route with the
/// latency measured by the client (`route`, `latency_ms`, `ok` or `error_rate`,
/// `saturation`?).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportRequest {
    /// The ticket of the decision (then the server measures the latency).
    #[serde(default)]
    ticket: Option<String>,
    /// The route, when reporting without a ticket (1 to 1,024 bytes).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 1024)]
    route: Option<String>,
    /// The latency in milliseconds, when reporting by route (finite, not negative).
    #[serde(default)]
    latency_ms: Option<f64>,
    /// Whether the call succeeded.
    #[serde(default)]
    ok: Option<bool>,
    /// Instead of `ok`, by route: the share of failed calls, in [0, 1].
    #[serde(default)]
    error_rate: Option<f64>,
    /// The route's saturation, in [0, 1]; a neutral value when absent.
    #[serde(default)]
    saturation: Option<f64>,
}

/// The answer to `POST /v1/report`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReportResponse {
    /// The route.
    route: String,
    /// Its mode after the report.
    #[schema(value_type = String, example = "operational")]
    mode: atrion::Mode,
    /// Its resistance after the report (ohms).
    resistance: f64,
    /// Its scar tissue after the report (ohms).
    scar: f64,
}

/// The `429` of a client past its budget of new routes.
fn too_many_routes(wait: Option<std::time::Duration>) -> Problem {
    let wait = wait.unwrap_or(std::time::Duration::from_secs(1));
    Problem::new(
        ProblemKind::TooManyNewRoutes,
        format!("this client's budget of new routes is spent; try again in {} ms", wait.as_millis().max(1)),
    )
    .retry_after(wait)
}

/// How a call went: by ticket, or by route with the latency. A ticket is taken once: a
/// forged, foreign or malformed ticket is `422`, a replayed one `409`, an expired one `410`,
/// and none of them changes anything. A report that would create a route past the client's
/// budget of new routes is `429`.
#[utoipa::path(post, path = "/v1/report", tag = "decisions", request_body = ReportRequest,
    params(("X-Atrion-Client" = Option<String>, Header, description = "The caller, for its budget of new routes (else its address)")),
    responses((status = 200, body = ReportResponse), BodyProblems, TicketProblems, CreationProblems))]
pub(crate) async fn report(
    State(s): State<Arc<Shared>>,
    client: Client,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let req: ReportRequest = parse(body)?;
    let answer = report_one(&s, &req, &client)?;
    tracing::Span::current().record("atrion.route", answer.route.as_str());
    Ok(Json(answer).into_response())
}

fn report_one(s: &Shared, req: &ReportRequest, client: &Client) -> Result<ReportResponse, Problem> {
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
            // The telemetry is checked before the ticket is taken: a bad report leaves the
            // ticket good.
            let saturation = req.saturation.unwrap_or(s.atrion.neutral_saturation());
            Telemetry::new(0.0, 0.0, saturation).map_err(telemetry_problem)?;
            let t = s.tickets.take(ticket, now).map_err(super::tickets::TicketError::problem)?;
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
    let telemetry = telemetry.map_err(telemetry_problem)?;
    let mut wait = None;
    let status = s
        .atrion
        .engine()
        .report_gated(&route, telemetry, now, || s.creation.take(client).map_err(|w| wait = Some(w)).is_ok())
        .ok_or_else(|| too_many_routes(wait))?;
    Ok(ReportResponse { route, mode: status.mode, resistance: status.resistance, scar: status.scar })
}

fn telemetry_problem(e: atrion::TelemetryError) -> Problem {
    let field = match e {
        atrion::TelemetryError::NotFinite { field, .. } | atrion::TelemetryError::OutOfRange { field, .. } => field,
        _ => "telemetry",
    };
    Problem::invalid(field, e.to_string())
}

/// `POST /v1/batch`: many decisions and reports in one body. Each item is answered on its
/// own (a result, or a problem whose field is the item's path); one bad item changes nothing
/// and does not fail the others.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchRequest {
    /// Decisions to make, each as `POST /v1/decide` takes it (a `DecideRequest`).
    /// Each item is kept as its raw text and read on its own: any JSON value is taken here,
    /// and one that is not a valid decision is answered by that item's problem, not the
    /// batch's.
    #[serde(default)]
    #[schema(value_type = Vec<Value>)]
    decide: Vec<Box<RawValue>>,
    /// Reports, each as `POST /v1/report` takes it (a `ReportRequest`); like decisions,
    /// any JSON value is taken, and a bad one is that item's problem.
    #[serde(default)]
    #[schema(value_type = Vec<Value>)]
    report: Vec<Box<RawValue>>,
}

/// The answer to `POST /v1/batch`: each item's answer in order, or `{"problem": ..}` for
/// that item alone.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BatchResponse {
    /// A `DecideResponse`, or `{"problem": Problem}`, per decision.
    #[schema(value_type = Vec<Object>)]
    decide: Vec<Item<DecideResponse>>,
    /// A `ReportResponse`, or `{"problem": Problem}`, per report.
    #[schema(value_type = Vec<Object>)]
    report: Vec<Item<ReportResponse>>,
}

/// One item's answer in a batch.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Item<T> {
    Ok(T),
    Problem { problem: Problem },
}

fn item<Req: DeserializeOwned, T>(
    list: &str,
    i: usize,
    raw: &RawValue,
    run: impl FnOnce(&Req) -> Result<T, Problem>,
) -> Item<T> {
    let at = |p: &mut Problem, field: Option<&str>| {
        p.field = Some(match field {
            Some(f) if f != "." => format!("{list}[{i}].{f}"),
            _ => format!("{list}[{i}]"),
        });
    };
    if let Err(mut p) = crate::problem::not_an_array(raw.get().as_bytes()) {
        at(&mut p, None);
        return Item::Problem { problem: p };
    }
    let parsed: Result<Req, Problem> = crate::problem::deserialize(raw.get().as_bytes()).map_err(|(path, e)| {
        let mut p = Problem::new(ProblemKind::InvalidBody, e.to_string());
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

/// Many decisions and reports in one body (an item past the client's budget of new routes
/// is that item's `429` problem, with `retry_after_ms`).
#[utoipa::path(post, path = "/v1/batch", tag = "decisions", request_body = BatchRequest,
    params(("X-Atrion-Client" = Option<String>, Header, description = "The caller, for its budget of new routes (else its address)")),
    responses((status = 200, body = BatchResponse), BodyProblems))]
pub(crate) async fn batch(
    State(s): State<Arc<Shared>>,
    client: Client,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let req: BatchRequest = parse(body)?;
    let n = req.decide.len() + req.report.len();
    if n > s.config.max_batch {
        return Err(Problem::new(ProblemKind::BatchTooLarge, format!("{n} items, at most {}", s.config.max_batch)));
    }
    let decide: Vec<Item<DecideResponse>> = req
        .decide
        .into_iter()
        .enumerate()
        .map(|(i, v)| item("decide", i, &v, |r: &DecideRequest| decide_one(&s, r, &client)))
        .collect();
    let report: Vec<Item<ReportResponse>> = req
        .report
        .into_iter()
        .enumerate()
        .map(|(i, v)| item("report", i, &v, |r: &ReportRequest| report_one(&s, r, &client)))
        .collect();
    Ok(Json(BatchResponse { decide, report }).into_response())
}
