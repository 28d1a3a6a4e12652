//! Task leases over HTTP (docs/DESIGN.md §2, task leases): `POST /v1/tasks` starts one,
//! `POST /v1/tasks/{id}/heartbeat` keeps it alive, `POST /v1/tasks/{id}/complete` ends it
//! and reports it, `DELETE /v1/tasks/{id}` gives it up (cancelled: nothing reported).
//!
//! A task's id is `t1.<lease>.<mac>`: the engine's lease id (16 hex digits) and an
//! HMAC-SHA256 of what precedes it, cut to 128 bits (base64url), under a key made when the
//! node starts: unguessable, good on this node in this life. An authentic id whose lease is
//! no longer live (aborted for running past its longest duration or missing its
//! heartbeats, completed or released) answers `410`; anything else `404`.
//!
//! Over HTTP the abort of a lease reaches its holder as the `410` of its next heartbeat:
//! the sidecar holds the lease's abort handle for it (so heavy and extreme work, which
//! needs one, is taken, and their profiles require heartbeats). The sidecar's sweeper
//! (the facade's, from `connect`) aborts overdue leases on time, and reports them as
//! failures, whether or not their holders call again.
//!
//! Live tasks are bounded per client (`ServerConfig::max_tasks_per_client`, the client
//! keyed as for its budget of new routes, hashed into [`super::creation::CLIENT_BUCKETS`]
//! buckets) and over the node (`EngineLimits::max_leases`): past either, `429` or `503`.
//! A lease's client slot is given back when it ends, however it ends (an abort gives it
//! back from the abort's callback).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use atrion::{AbortHandle, AbortReason, LeaseError, LeaseId, LeaseOptions, LeaseStart, Priority, Profile, Timestamp};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::creation::Client;
use super::seal::{Seal, TAG_BYTES};
use crate::Shared;
use crate::problem::{BodyProblems, Problem, ProblemKind, check_route, parse};

/// Aborts remembered to say why a task is gone (the newest; older ones are just gone).
const RECENT_ABORTS: usize = 4_096;

/// The sidecar's live tasks: their ids' key, and who holds how many.
pub(crate) struct TaskBook {
    seal: Seal,
    hasher: foldhash::fast::RandomState,
    max_per_client: u32,
    live: Arc<Mutex<Holders>>,
}

#[derive(Default)]
struct Holders {
    /// Lease id → its client's bucket and its start.
    owner: HashMap<u64, (u64, Timestamp), foldhash::fast::RandomState>,
    /// Client bucket → its live tasks (absent: none).
    count: HashMap<u64, u32, foldhash::fast::RandomState>,
    /// The latest aborts, newest last.
    aborted: VecDeque<(u64, AbortReason)>,
}

impl Holders {
    /// The lease ended: its client's slot is free again (once, however many call it).
    /// Returns its start.
    fn release(&mut self, lease: u64) -> Option<Timestamp> {
        let (bucket, started) = self.owner.remove(&lease)?;
        self.give_back(bucket);
        Some(started)
    }

    fn give_back(&mut self, bucket: u64) {
        if let Some(n) = self.count.get_mut(&bucket) {
            *n -= 1;
            if *n == 0 {
                self.count.remove(&bucket);
            }
        }
    }
}

impl TaskBook {
    /// A book with a fresh random key; at most `max_per_client` live tasks per client (0:
    /// no bound but the engine's).
    pub(crate) fn new(max_per_client: u32) -> Self {
        TaskBook {
            seal: Seal::new(),
            hasher: foldhash::fast::RandomState::default(),
            max_per_client,
            live: Arc::new(Mutex::new(Holders::default())),
        }
    }

    fn holders(&self) -> std::sync::MutexGuard<'_, Holders> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The id a client is given for `lease`.
    fn id(&self, lease: LeaseId) -> String {
        let mut text = format!("t1.{:016x}", lease.as_u64());
        let tag = self.seal.tag(&[text.as_bytes()]);
        text.push('.');
        URL_SAFE_NO_PAD.encode_string(tag, &mut text);
        text
    }

    /// The lease an id names, if this node issued it.
    fn lease(&self, id: &str) -> Result<LeaseId, Problem> {
        let unknown = || Problem::new(ProblemKind::TaskUnknown, "not a task id of this node").at("id");
        let (signed, tag_text) = id.rsplit_once('.').ok_or_else(unknown)?;
        let hex = signed.strip_prefix("t1.").filter(|h| h.len() == 16).ok_or_else(unknown)?;
        let lease = u64::from_str_radix(hex, 16).map_err(|_| unknown())?;
        let mut tag = [0u8; TAG_BYTES + 2];
        let n = URL_SAFE_NO_PAD.decode_slice(tag_text, &mut tag).map_err(|_| unknown())?;
        if !self.seal.verify(&[signed.as_bytes()], &tag[..n]) {
            return Err(unknown());
        }
        Ok(LeaseId::from_u64(lease))
    }

    /// Why an authentic id is not live: the problem `410`.
    fn gone(&self, lease: LeaseId, reason: Option<AbortReason>) -> Problem {
        let reason = reason.or_else(|| {
            let h = self.holders();
            h.aborted.iter().rev().find(|(id, _)| *id == lease.as_u64()).map(|(_, r)| *r)
        });
        let detail = match reason {
            Some(AbortReason::MaxDuration) => "the task was aborted: it ran past its longest duration".to_owned(),
            Some(AbortReason::MissedHeartbeat) => "the task was aborted: it missed its heartbeats".to_owned(),
            Some(r) => format!("the task was aborted ({r})"),
            None => "the task is no longer live (completed, released or aborted)".to_owned(),
        };
        Problem::new(ProblemKind::TaskGone, detail).at("id")
    }

    fn bucket(&self, client: &Client) -> u64 {
        client.hash_with(&self.hasher) % super::creation::CLIENT_BUCKETS
    }
}

/// `POST /v1/tasks`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskRequest {
    /// The route, 1 to 1,024 bytes.
    #[schema(min_length = 1, max_length = 1024)]
    route: String,
    /// `critical`, `high`, `normal`, `low` or `bulk`; the server's default when absent.
    #[serde(default)]
    #[schema(pattern = "^(critical|high|normal|low|bulk)$")]
    priority: Option<String>,
    /// `light`, `standard`, `heavy` or `extreme`: the task's defaults (longest duration,
    /// heartbeat) and the seed of a new route's learned normal; `standard` when absent.
    #[serde(default)]
    #[schema(pattern = "^(light|standard|heavy|extreme)$")]
    profile: Option<String>,
    /// The longest the task may run (ms, 1 to 86,400,000); the profile's when absent.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86_400_000)]
    max_duration_ms: Option<u64>,
    /// How often the holder will heartbeat (ms, at most `max_duration_ms`): three missed in
    /// a row abort the task. The profile's when absent (heavy: 5 s, extreme: 10 s, none for
    /// the others).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86_400_000)]
    heartbeat_ms: Option<u64>,
}

/// The answer to `POST /v1/tasks`: a task, or the decision that shed it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TaskResponse {
    /// `admit` (a task was started) or `shed`.
    #[schema(value_type = String, example = "admit")]
    verdict: atrion::Verdict,
    /// Why, as for `POST /v1/decide`.
    #[schema(value_type = String, example = "healthy")]
    reason: atrion::Reason,
    /// The route's mode.
    #[schema(value_type = String, example = "operational")]
    mode: atrion::Mode,
    /// The resistance the decision saw (ohms).
    resistance: f64,
    /// When shed: retry after this many milliseconds.
    retry_after_ms: Option<u64>,
    /// When admitted: the task's id, for its heartbeats and its completion.
    id: Option<String>,
    /// When admitted: the profile's name (`light`, `standard`, `heavy`, `extreme`).
    profile: Option<String>,
    /// When admitted: the task is aborted this many milliseconds from now, whatever happens.
    expires_in_ms: Option<u64>,
    /// When admitted: the heartbeat interval promised (ms), if the task needs heartbeats.
    heartbeat_ms: Option<u64>,
    /// When admitted and heartbeats are needed: the task is aborted unless a heartbeat comes
    /// within this many milliseconds.
    heartbeat_within_ms: Option<u64>,
}

/// A live task's deadlines, as of now.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TaskDeadlines {
    /// Aborted this many milliseconds from now, whatever happens.
    expires_in_ms: u64,
    /// Aborted unless a heartbeat comes within this many milliseconds (absent: it needs none).
    heartbeat_within_ms: Option<u64>,
}

/// `POST /v1/tasks/{id}/complete`
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteRequest {
    /// Whether the task succeeded.
    ok: bool,
}

/// The answer to `POST /v1/tasks/{id}/complete`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CompleteResponse {
    /// `completed` or `failed`, as reported.
    outcome: String,
    /// How long the task ran (ms): the latency reported.
    duration_ms: u64,
}

/// The problems of a task id.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it describes responses
pub(crate) enum TaskIdProblems {
    /// Not a task id of this node
    #[response(status = 404, content_type = "application/problem+json")]
    Unknown(Problem),
    /// The task is no longer live: aborted (past its longest duration, or its heartbeats
    /// missed), completed or released
    #[response(status = 410, content_type = "application/problem+json")]
    Gone(Problem),
}

/// The problems of starting a task past a limit.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it describes responses
pub(crate) enum TaskLimitProblems {
    /// The client holds its most live tasks, or created too many new routes: try again
    /// after `Retry-After`
    #[response(status = 429, content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Limited(Problem),
    /// The node holds its most live tasks: try again after `Retry-After`
    #[response(status = 503, content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Full(Problem),
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn deadlines(d: atrion::LeaseDeadlines, now: Timestamp) -> TaskDeadlines {
    TaskDeadlines {
        expires_in_ms: ms(d.expires_at.saturating_since(now)),
        heartbeat_within_ms: d.heartbeat_by.map(|h| ms(h.saturating_since(now))),
    }
}

/// Starts a long-running task on a route: decided like a request at its priority (a route
/// that would shed the request sheds the task: `verdict` `shed`, with `retry_after_ms`),
/// then counted among the route's live tasks until it completes, is released, or is aborted
/// for running past its longest duration or missing its heartbeats (then reported as a
/// failure, and its id answers `410`).
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = TaskRequest,
    params(("X-Atrion-Client" = Option<String>, Header, description = "The caller, for its bound of live tasks and its budget of new routes (else its address)")),
    responses((status = 200, body = TaskResponse), BodyProblems, TaskLimitProblems))]
pub(crate) async fn start(
    State(s): State<Arc<Shared>>,
    client: Client,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TaskResponse>, Problem> {
    let req: TaskRequest = parse(body)?;
    check_route("route", &req.route)?;
    let priority = match &req.priority {
        None => s.atrion.default_priority(),
        Some(p) => p.parse::<Priority>().map_err(|e| Problem::invalid("priority", e.to_string()))?,
    };
    let profile = match &req.profile {
        None => None,
        Some(p) => Some(p.parse::<Profile>().map_err(|e| Problem::invalid("profile", e.to_string()))?),
    };
    let book = &s.tasks;
    let bucket = book.bucket(&client);
    // The client's slot is taken before the decision and given back if no task comes of it.
    {
        let mut h = book.holders();
        let n = h.count.get(&bucket).copied().unwrap_or(0);
        if book.max_per_client > 0 && n >= book.max_per_client {
            return Err(Problem::new(
                ProblemKind::TooManyTasks,
                format!("this client holds {n} live tasks, the most it may; complete or release one"),
            )
            .retry_after(Duration::from_secs(1)));
        }
        *h.count.entry(bucket).or_insert(0) += 1;
    }
    let give_back = || book.holders().give_back(bucket);

    let mut options = LeaseOptions::new().priority(priority);
    if let Some(p) = profile {
        options = options.profile(p);
    }
    if let Some(d) = req.max_duration_ms {
        options = options.max_duration(Duration::from_millis(d));
    }
    if let Some(h) = req.heartbeat_ms {
        options = options.heartbeat(Duration::from_millis(h));
    }
    // The holder hears of an abort from its next heartbeat's 410; the callback gives the
    // client's slot back and remembers why, whoever notices the expiry.
    let live = Arc::downgrade(&book.live);
    let lease_slot: Arc<std::sync::OnceLock<u64>> = Arc::default();
    let slot = lease_slot.clone();
    options = options.abort(AbortHandle::with_callback(move |reason| {
        let (Some(live), Some(&lease)) = (live.upgrade(), slot.get()) else { return };
        let mut h = live.lock().unwrap_or_else(PoisonError::into_inner);
        h.release(lease);
        if h.aborted.len() >= RECENT_ABORTS {
            h.aborted.pop_front();
        }
        h.aborted.push_back((lease, reason));
    }));

    let now = s.atrion.now();
    let mut wait = None;
    let started = s
        .atrion
        .engine()
        .start_lease_gated(&req.route, now, options, || s.creation.take(&client).map_err(|w| wait = Some(w)).is_ok());
    let started = match started {
        None => {
            give_back();
            let wait = wait.unwrap_or(Duration::from_secs(1));
            return Err(Problem::new(
                ProblemKind::TooManyNewRoutes,
                format!("this client's budget of new routes is spent; try again in {} ms", wait.as_millis().max(1)),
            )
            .retry_after(wait));
        }
        Some(Err(e)) => {
            give_back();
            return Err(start_problem(e));
        }
        Some(Ok(started)) => started,
    };
    let grant = match started {
        LeaseStart::Shed(d) => {
            give_back();
            return Ok(Json(TaskResponse {
                verdict: d.verdict,
                reason: d.reason,
                mode: d.mode,
                resistance: d.resistance,
                retry_after_ms: d.retry_after.map(|r| ms(r).max(1)),
                id: None,
                profile: None,
                expires_in_ms: None,
                heartbeat_ms: None,
                heartbeat_within_ms: None,
            }));
        }
        LeaseStart::Granted(g) => g,
    };
    let lease = grant.id.as_u64();
    {
        let mut h = book.holders();
        h.owner.insert(lease, (bucket, now));
        let _ = lease_slot.set(lease);
    }
    // A sweep may have aborted it before the callback could know its id: release is once.
    if grant.abort.is_aborted() {
        book.holders().release(lease);
    }
    // Its deadline may come before the sweeper's next wake.
    s.atrion.wake_task_sweeper();
    let d = deadlines(grant.deadlines, now);
    tracing::Span::current().record("atrion.route", req.route.as_str());
    Ok(Json(TaskResponse {
        verdict: grant.decision.verdict,
        reason: grant.decision.reason,
        mode: grant.decision.mode,
        resistance: grant.decision.resistance,
        retry_after_ms: None,
        id: Some(book.id(grant.id)),
        profile: Some(grant.profile.to_owned()),
        expires_in_ms: Some(d.expires_in_ms),
        heartbeat_ms: grant.heartbeat.map(ms),
        heartbeat_within_ms: d.heartbeat_within_ms,
    }))
}

fn start_problem(e: LeaseError) -> Problem {
    match e {
        LeaseError::TooMany { max } => {
            Problem::new(ProblemKind::TaskTableFull, format!("this node holds {max} live tasks, the most it may"))
                .retry_after(Duration::from_secs(1))
        }
        LeaseError::Config(atrion::ConfigError::OutOfRange { field: "profile.heartbeat", value, .. }) => {
            let detail = if value > 0.0 {
                "the heartbeat interval (the profile's when `heartbeat_ms` is absent) must be at most the longest duration"
            } else {
                "the heartbeat interval must be at least 1 ms"
            };
            Problem::invalid("heartbeat_ms", detail)
        }
        LeaseError::Config(c) => Problem::invalid("max_duration_ms", c.to_string()),
        other => Problem::invalid("route", other.to_string()),
    }
}

/// What a call on a live task that failed answers.
fn call_problem(s: &Shared, e: LeaseError) -> Problem {
    match e {
        LeaseError::Aborted { id, reason } => s.tasks.gone(id, Some(reason)),
        LeaseError::Gone { id } => s.tasks.gone(id, None),
        other => Problem::invalid("id", other.to_string()),
    }
}

/// Keeps a task alive: its heartbeat deadline moves to now plus three intervals. A task
/// that is no longer live (aborted, completed, released) answers `410`: stop its work.
#[utoipa::path(post, path = "/v1/tasks/{id}/heartbeat", tag = "tasks",
    params(("id" = String, Path, description = "The task's id, from `POST /v1/tasks`")),
    responses((status = 200, body = TaskDeadlines), TaskIdProblems))]
pub(crate) async fn heartbeat(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<TaskDeadlines>, Problem> {
    let lease = s.tasks.lease(&id)?;
    let now = s.atrion.now();
    match s.atrion.engine().heartbeat_lease(lease, now) {
        Ok(d) => Ok(Json(deadlines(d, now))),
        Err(e) => Err(call_problem(&s, e)),
    }
}

/// Completes a task: reported as one sample of its route, its latency the task's duration,
/// a success if `ok`. A task that is no longer live answers `410` (one found overdue now
/// is aborted, and reported as a failure, instead).
#[utoipa::path(post, path = "/v1/tasks/{id}/complete", tag = "tasks", request_body = CompleteRequest,
    params(("id" = String, Path, description = "The task's id, from `POST /v1/tasks`")),
    responses((status = 200, body = CompleteResponse), BodyProblems, TaskIdProblems))]
pub(crate) async fn complete(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CompleteResponse>, Problem> {
    let lease = s.tasks.lease(&id)?;
    let req: CompleteRequest = parse(body)?;
    let now = s.atrion.now();
    let ended = s.atrion.engine().complete_lease(lease, req.ok, now);
    let started = s.tasks.holders().release(lease.as_u64());
    let outcome = ended.map_err(|e| call_problem(&s, e))?;
    let duration_ms = started.map_or(0, |t| ms(now.saturating_since(t)));
    Ok(Json(CompleteResponse { outcome: outcome.name().to_owned(), duration_ms }))
}

/// Gives a task up: it stops counting and nothing is reported (its work was abandoned, not
/// failed). A task that is no longer live answers `410`.
#[utoipa::path(delete, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "The task's id, from `POST /v1/tasks`")),
    responses((status = 204, description = "Released"), TaskIdProblems))]
pub(crate) async fn release(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Response, Problem> {
    let lease = s.tasks.lease(&id)?;
    let ended = s.atrion.engine().cancel_lease(lease, s.atrion.now());
    s.tasks.holders().release(lease.as_u64());
    ended.map_err(|e| call_problem(&s, e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
