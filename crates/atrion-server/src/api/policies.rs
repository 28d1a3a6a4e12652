//! Policies across the cluster: desired state (read by anyone, changed behind an admin
//! token), the state dump, diff and history, bans, and the audit trail.

use std::sync::Arc;

use atrion_policy::{AuditEntry, Ban, Change, PolicyError, PolicySet, Rejected, Source};
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Admin, Reader};
use crate::http::Deadline;
use crate::problem::{
    AdminProblems, BodyProblems, Problem, ProblemIssue, ProblemKind, json_value, parse, query, read_body,
};
use crate::{PolicyHandle, Shared};

fn node(s: &Shared) -> Result<&PolicyHandle, Problem> {
    s.config
        .policy
        .as_ref()
        .ok_or_else(|| Problem::new(ProblemKind::PoliciesUnavailable, "it was built without a policy node"))
}

/// The problem of a failed policy operation.
pub(crate) fn policy_problem(e: &PolicyError) -> Problem {
    match e {
        PolicyError::Rejected(r) => rejected(r),
        PolicyError::Conflict { .. } | PolicyError::Contended { .. } => {
            Problem::new(ProblemKind::VersionConflict, e.to_string())
        }
        PolicyError::NotFound { .. } => Problem::new(ProblemKind::NoSuchPolicy, e.to_string()),
        PolicyError::Late => Problem::new(ProblemKind::ChangeTooSlow, e.to_string()),
        _ => Problem::new(ProblemKind::StoreUnavailable, e.to_string()),
    }
}

fn rejected(r: &Rejected) -> Problem {
    let mut p = Problem::new(ProblemKind::PolicyRejected, r.to_string());
    p.field = r.issues.first().map(|i| i.path.clone());
    p.issues = r
        .issues
        .iter()
        .map(|i| ProblemIssue {
            stage: serde_json::to_value(i.stage).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            path: i.path.clone(),
            message: i.message.clone(),
        })
        .collect();
    p
}

/// What `updated_by` reads to a reader without an admin token: token names are not public.
const HIDDEN: &str = "(hidden)";

/// The body of `PUT /v1/policies`, as the OpenAPI document states it (the validation
/// pipeline reads the body itself, for the paths of its issues).
#[derive(ToSchema)]
#[allow(dead_code)] // never built: it describes the body
pub(crate) struct PolicySetBody {
    /// The policies: `{"route", "physics"?, "lanes"?, "state"?, "note"?}` each.
    #[schema(max_items = 5000, value_type = Option<Vec<Object>>)]
    policies: Option<Vec<serde_json::Value>>,
    /// The bans: `{"route"?, "client"?, "until_ms", "reason"?}` each.
    #[schema(max_items = 10000, value_type = Option<Vec<Object>>)]
    bans: Option<Vec<serde_json::Value>>,
}

/// The problems of a read of the policy layer, as the OpenAPI document lists them.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it describes responses
pub(crate) enum ReadProblems {
    /// This server runs no policies
    #[response(status = 404, content_type = "application/problem+json")]
    NoPolicies(Problem),
    /// The store cannot be reached
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// The problem of a query string that does not parse (a negative `limit`, a missing
/// `route`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it describes responses
pub(crate) enum QueryProblem {
    /// The query string is not valid
    #[response(status = 400, content_type = "application/problem+json")]
    Invalid(Problem),
}

/// The problems of a change of desired state, as the OpenAPI document lists them.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it describes responses
pub(crate) enum ChangeProblems {
    /// This server runs no policies, or nothing to remove
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// Desired state moved on (`expected_version`), or writers kept racing
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// The change is rejected by the validation pipeline (every issue listed), a policy set
    /// larger than the server takes among them
    #[response(status = 422, content_type = "application/problem+json")]
    Rejected(Problem),
    /// The store cannot be reached, or the change could not be made in time: nothing was
    /// written
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// An admin action as the audit trail records it.
pub(crate) struct Act<'a> {
    action: &'a str,
    target: Option<String>,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
    error: Option<String>,
}

impl<'a> Act<'a> {
    /// `action` on `target`, done.
    pub(crate) fn new(action: &'a str, target: Option<String>) -> Self {
        Act { action, target, before: None, after: None, error: None }
    }

    /// What it changed, from and to.
    pub(crate) fn change(mut self, before: impl Serialize, after: impl Serialize) -> Self {
        self.before = serde_json::to_value(before).ok();
        self.after = serde_json::to_value(after).ok();
        self
    }

    /// It failed, for this reason.
    pub(crate) fn failed(mut self, error: impl std::fmt::Display) -> Self {
        self.error = Some(error.to_string());
        self
    }
}

/// Records an admin action in the audit trail when the server runs policies (and in the
/// log in any case).
pub(crate) async fn audit(s: &Shared, who: &str, act: Act<'_>) {
    let Act { action, target, before, after, error } = act;
    let ok = error.is_none();
    let Some(p) = &s.config.policy else {
        tracing::info!(target: "atrion::audit", who, action, target = ?target, before = ?before, after = ?after, ok, error = ?error, "admin action");
        return;
    };
    let entry = AuditEntry {
        at_ms: p.wall_ms(),
        who: who.to_owned(),
        action: action.to_owned(),
        target,
        before,
        after,
        ok,
        error,
        node: p.node_id().to_owned(),
        count: None,
    };
    if let Err(e) = p.audit(entry).await {
        tracing::warn!(target: "atrion::audit", error = %e, "the audit entry could not be written");
    }
}

/// `?expected_version=N`: change only if desired state is still at version N.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Expected {
    /// The desired version the change is based on (a conflict otherwise).
    expected_version: Option<u64>,
}

/// `?route=…&expected_version=N`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RouteQuery {
    /// The policy's pattern.
    route: String,
    /// The desired version the change is based on.
    expected_version: Option<u64>,
}

/// The answer to a change: the desired version now, and whether it changed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChangeAnswer {
    /// The desired version after the change.
    version: u64,
    /// False when the change changed nothing (no new version).
    changed: bool,
    /// The API layer after the change.
    #[schema(value_type = Object)]
    api: PolicySet,
}

/// Makes a change so that the answer never contradicts the store: the write runs in a task
/// of its own (the request's time limit drops the handler, never the write), and starts
/// only while the request has time left for it (the store's timeout, at most a quarter of
/// the request's limit): a change answered with an error was not made. This node applies
/// it before the answer while the request has time; else just after.
async fn change(
    s: &Shared,
    admin: &Admin,
    c: Change,
    expected: Option<u64>,
    deadline: Option<Deadline>,
) -> Result<Json<ChangeAnswer>, Problem> {
    let p = node(s)?.clone();
    let deadline = deadline.map(|d| d.0);
    let reserve = p.store_timeout().min(s.config.request_timeout / 4);
    let cutoff = deadline.map(|d| d.checked_sub(reserve).unwrap_or_else(tokio::time::Instant::now));
    let who = admin.0.clone();
    let (committed, answer) = tokio::sync::oneshot::channel();
    let (applied, done) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let result = p.commit(Source::Api, &c, &who, expected, cutoff).await;
        let ok = result.is_ok();
        let _ = committed.send(result);
        if ok {
            p.apply_now().await;
        }
        let _ = applied.send(());
    });
    let done_change = answer
        .await
        .map_err(|_| Problem::new(ProblemKind::ChangeLost, "its task ended early"))?
        .map_err(|e| policy_problem(&e))?;
    let margin = s.config.request_timeout / 20;
    let left = deadline.map_or(s.config.request_timeout, |d| d.saturating_duration_since(tokio::time::Instant::now()));
    let _ = tokio::time::timeout(left.saturating_sub(margin), done).await;
    Ok(Json(ChangeAnswer {
        version: done_change.after.version,
        changed: done_change.after != done_change.before,
        api: done_change.after.api,
    }))
}

/// A body through the schema stage of the pipeline, for the paths of its issues. The
/// validation of a large set runs off the async workers (it is CPU work: decisions on the
/// same worker must not wait for it, and the request's time limit must be able to fire).
async fn checked(
    s: &Shared,
    body: Result<Bytes, BytesRejection>,
    wrap: impl Fn(serde_json::Value) -> serde_json::Value,
) -> Result<PolicySet, Problem> {
    let p = node(s)?;
    let body = read_body(body)?;
    let value = json_value(&body)?;
    let (validator, now, value) = (p.desired().validator().clone(), p.wall_ms(), wrap(value));
    tokio::task::spawn_blocking(move || validator.check_value(&value, now))
        .await
        .map_err(|e| Problem::new(ProblemKind::ValidationLost, e.to_string()))?
        .map_err(|r| rejected(&r))
}

/// The cluster's desired policies: both layers, their version, and who changed them last.
///
/// Token names are not public: `updated_by` reads `(hidden)` unless the request carries a
/// valid admin token.
#[utoipa::path(get, path = "/v1/policies", tag = "policies",
    responses((status = 200, description = "The desired state", body = Object), ReadProblems))]
pub(crate) async fn get_policies(State(s): State<Arc<Shared>>, reader: Reader) -> Result<Response, Problem> {
    let p = node(&s)?;
    let (mut d, _) = p.desired().read().await.map_err(|e| policy_problem(&e))?;
    if !reader.admin {
        d.updated_by = HIDDEN.into();
    }
    Ok(Json(d).into_response())
}

/// Replaces the API's policies and bans (the policy file's stay; the API's win on a pattern
/// both set). The whole set goes through the validation pipeline; a rejected set changes
/// nothing and lists every issue with its path.
#[utoipa::path(put, path = "/v1/policies", tag = "policies", security(("admin" = [])), params(Expected),
    request_body(content = PolicySetBody, description = "`{\"policies\": [..], \"bans\": [..]}`: at most 5,000 policies (the server's `max-policies`) and 10,000 bans"),
    responses((status = 200, body = ChangeAnswer), BodyProblems, ChangeProblems, AdminProblems))]
pub(crate) async fn put_policies(
    State(s): State<Arc<Shared>>,
    admin: Admin,
    deadline: Option<Extension<Deadline>>,
    q: Result<Query<Expected>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ChangeAnswer>, Problem> {
    let q = query(q)?;
    let set = match checked(&s, body, |v| v).await {
        Ok(set) => set,
        Err(p) => return Err(refused(&s, &admin, "policy.replace", None, p).await),
    };
    change(&s, &admin, Change::Replace(set), q.expected_version, deadline.map(|d| d.0)).await
}

/// Sets one policy (replacing the API's policy on its pattern).
#[utoipa::path(post, path = "/v1/policies", tag = "policies", security(("admin" = [])), params(Expected),
    request_body(content = Object, description = "One policy: `{\"route\", \"physics\"?, \"lanes\"?, \"state\"?, \"note\"?}`"),
    responses((status = 200, body = ChangeAnswer), BodyProblems, ChangeProblems, AdminProblems))]
pub(crate) async fn post_policy(
    State(s): State<Arc<Shared>>,
    admin: Admin,
    deadline: Option<Extension<Deadline>>,
    q: Result<Query<Expected>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ChangeAnswer>, Problem> {
    let q = query(q)?;
    let mut set = match checked(&s, body, |v| serde_json::json!({ "policies": [v] })).await {
        Ok(set) => set,
        Err(p) => return Err(refused(&s, &admin, "policy.set", None, p).await),
    };
    let Some(policy) = set.policies.pop() else {
        return Err(Problem::invalid("route", "a policy is needed"));
    };
    change(&s, &admin, Change::Upsert(policy), q.expected_version, deadline.map(|d| d.0)).await
}

/// Removes the API's policy on a pattern.
#[utoipa::path(delete, path = "/v1/policies", tag = "policies", security(("admin" = [])), params(RouteQuery),
    responses((status = 200, body = ChangeAnswer), QueryProblem, ChangeProblems, AdminProblems))]
pub(crate) async fn delete_policy(
    State(s): State<Arc<Shared>>,
    admin: Admin,
    deadline: Option<Extension<Deadline>>,
    q: Result<Query<RouteQuery>, QueryRejection>,
) -> Result<Json<ChangeAnswer>, Problem> {
    let q = query(q)?;
    change(&s, &admin, Change::Remove(q.route), q.expected_version, deadline.map(|d| d.0)).await
}

/// The longest `for_ms` of a ban: 100 years (so that its deadline fits the schema's int64).
const MAX_BAN_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// `POST /v1/bans`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BanRequest {
    /// The routes banned (a pattern); every route when absent.
    route: Option<String>,
    /// The client key banned (as `client` in `/v1/decide`); every client when absent.
    client: Option<String>,
    /// The deadline, ms since the Unix epoch; or
    #[schema(maximum = 9_223_372_036_854_775_807_i64)]
    until_ms: Option<u64>,
    /// how long from now, in ms (at most 100 years).
    #[schema(maximum = 3_153_600_000_000_i64)]
    for_ms: Option<u64>,
    /// Why.
    reason: Option<String>,
}

/// Bans a route, a client key, or a client key on a route, on every node until a deadline
/// (a ban on the same target moves its deadline).
#[utoipa::path(post, path = "/v1/bans", tag = "policies", security(("admin" = [])), request_body = BanRequest,
    responses((status = 200, body = ChangeAnswer), BodyProblems, ChangeProblems, AdminProblems))]
pub(crate) async fn ban(
    State(s): State<Arc<Shared>>,
    admin: Admin,
    deadline: Option<Extension<Deadline>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ChangeAnswer>, Problem> {
    let req: BanRequest = parse(body)?;
    let now = node(&s)?.wall_ms();
    let until_ms = match (req.until_ms, req.for_ms) {
        (Some(u), None) if u > i64::MAX as u64 => {
            return Err(Problem::invalid("until_ms", format!("at most {}", i64::MAX)));
        }
        (Some(u), None) => u,
        (None, Some(f)) if f > MAX_BAN_MS => {
            return Err(Problem::invalid("for_ms", format!("at most {MAX_BAN_MS} (100 years)")));
        }
        (None, Some(f)) => now.saturating_add(f),
        _ => return Err(Problem::invalid("until_ms", "give one of `until_ms` and `for_ms`")),
    };
    let b = Ban { route: req.route, client: req.client, until_ms, reason: req.reason };
    change(&s, &admin, Change::Ban(b), None, deadline.map(|d| d.0)).await
}

/// `?route=…&client=…`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct BanTarget {
    /// The ban's route pattern, if it has one.
    route: Option<String>,
    /// The ban's client key, if it has one.
    client: Option<String>,
}

/// Lifts a ban before its deadline.
#[utoipa::path(delete, path = "/v1/bans", tag = "policies", security(("admin" = [])), params(BanTarget),
    responses((status = 200, body = ChangeAnswer), QueryProblem, ChangeProblems, AdminProblems))]
pub(crate) async fn unban(
    State(s): State<Arc<Shared>>,
    admin: Admin,
    deadline: Option<Extension<Deadline>>,
    q: Result<Query<BanTarget>, QueryRejection>,
) -> Result<Json<ChangeAnswer>, Problem> {
    let q = query(q)?;
    change(&s, &admin, Change::Unban(q.route, q.client), None, deadline.map(|d| d.0)).await
}

/// Desired, applicable (this node) and current (every node's report) state, and the
/// divergence alerts in force.
///
/// `desired.updated_by` reads `(hidden)` unless the request carries a valid admin token.
#[utoipa::path(get, path = "/v1/state", tag = "policies",
    responses((status = 200, description = "The state dump", body = Object), ReadProblems))]
pub(crate) async fn state(State(s): State<Arc<Shared>>, reader: Reader) -> Result<Response, Problem> {
    let mut dump = node(&s)?.dump().await.map_err(|e| policy_problem(&e))?;
    if !reader.admin {
        dump.desired.updated_by = HIDDEN.into();
    }
    Ok(Json(dump).into_response())
}

/// What each node runs that differs from desired: its version, and the changes of the
/// versions it has not applied.
#[utoipa::path(get, path = "/v1/state/diff", tag = "policies",
    responses((status = 200, description = "One entry per node", body = [Object]), ReadProblems))]
pub(crate) async fn diff(State(s): State<Arc<Shared>>) -> Result<Response, Problem> {
    let diff = node(&s)?.diff().await.map_err(|e| policy_problem(&e))?;
    Ok(Json(diff).into_response())
}

/// `?before=ID&limit=N`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Paging {
    /// Entries older than this id (the `next` of the page before).
    before: Option<String>,
    /// At most this many (default 50, at most 1,000).
    limit: Option<usize>,
}

impl Paging {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(50).clamp(1, 1_000)
    }
}

/// The history of applied changes, newest first: which node applied which version, and
/// what changed, from what to what.
#[utoipa::path(get, path = "/v1/state/history", tag = "policies", params(Paging),
    responses((status = 200, description = "A page: `{entries, next}`", body = Object), QueryProblem, ReadProblems))]
pub(crate) async fn history(
    State(s): State<Arc<Shared>>,
    q: Result<Query<Paging>, QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    let page = node(&s)?.cluster().history(q.before.as_deref(), q.limit()).await.map_err(|e| policy_problem(&e))?;
    Ok(Json(page).into_response())
}

/// The audit trail, newest first: every admin action and every refused attempt, with who,
/// what, before and after.
#[utoipa::path(get, path = "/v1/audit", tag = "policies", security(("admin" = [])), params(Paging),
    responses((status = 200, description = "A page: `{entries, next}`", body = Object), QueryProblem, ReadProblems, AdminProblems))]
pub(crate) async fn audit_page(
    State(s): State<Arc<Shared>>,
    _admin: Admin,
    q: Result<Query<Paging>, QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    let page = node(&s)?.cluster().audit_page(q.before.as_deref(), q.limit()).await.map_err(|e| policy_problem(&e))?;
    Ok(Json(page).into_response())
}

/// The whole audit trail as JSON lines, oldest first.
#[utoipa::path(get, path = "/v1/audit/export", tag = "policies", security(("admin" = [])),
    responses((status = 200, description = "JSON lines", body = String, content_type = "application/x-ndjson"), ReadProblems, AdminProblems))]
pub(crate) async fn audit_export(State(s): State<Arc<Shared>>, _admin: Admin) -> Result<Response, Problem> {
    let all = node(&s)?.cluster().audit_all().await.map_err(|e| policy_problem(&e))?;
    let mut text = String::new();
    for e in all {
        if let Ok(line) = serde_json::to_string(&e) {
            text.push_str(&line);
            text.push('\n');
        }
    }
    let mut response = Body::from(text).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(response)
}

/// Records a change refused before it reached the store, and returns its problem.
async fn refused(s: &Shared, admin: &Admin, action: &str, target: Option<String>, p: Problem) -> Problem {
    audit(s, &admin.0, Act::new(action, target).failed(&p.detail)).await;
    p
}
