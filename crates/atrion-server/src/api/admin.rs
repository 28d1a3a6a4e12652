//! Administration, behind an admin token: hold a route open or closed, release it, reset
//! it; back the store up as streamed JSON lines and restore it. Every action is recorded in
//! the audit trail with the token's name: in the store when the server runs policies, and
//! in the log (`tracing` target `atrion::audit`) always.

use std::sync::Arc;

use atrion::Hold;
use atrion::state::{BACKUP_CHUNK, BackupError, BackupLine, BackupWriter, KeyFamilies, cluster_families};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::policies::{Act, audit};
use super::views::{RouteView, route_view};
use crate::Shared;
use crate::auth::Admin;
use crate::problem::{AdminProblems, BodyProblems, Problem, ProblemKind, check_route, parse, read_body};

/// `POST /v1/admin/{open,close,release,reset}`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteAction {
    /// The route, 1 to 1,024 bytes.
    #[schema(min_length = 1, max_length = 1024)]
    route: String,
}

/// The answer to `POST /v1/admin/restore`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Restored {
    /// Entries written.
    restored: u64,
}

async fn hold_route(
    s: &Shared,
    admin: &Admin,
    body: Result<Bytes, BytesRejection>,
    hold: Hold,
) -> Result<Json<RouteView>, Problem> {
    let req: RouteAction = parse(body)?;
    check_route("route", &req.route)?;
    let now = s.atrion.now();
    let before = s.atrion.engine().held(&req.route).unwrap_or_default();
    s.atrion.engine().hold(&req.route, hold, now).map_err(|e| match e {
        atrion::EngineError::TableFull { .. } => Problem::new(ProblemKind::RouteTableFull, e.to_string()),
        e => Problem::invalid("route", e.to_string()),
    })?;
    let action = match hold {
        Hold::Open => "route.open",
        Hold::Closed => "route.close",
        Hold::Shadow => "route.shadow",
        _ => "route.release",
    };
    audit(s, &admin.0, Act::new(action, Some(req.route.clone())).change(before, hold)).await;
    route_view(s, &req.route)
        .await
        .map(Json)
        .ok_or_else(|| Problem::invalid("route", "the route was evicted meanwhile"))
}

/// Holds a route open: every request is shed until it is released.
#[utoipa::path(post, path = "/v1/admin/open", tag = "admin", security(("admin" = [])), request_body = RouteAction,
    responses((status = 200, body = RouteView), BodyProblems, AdminProblems))]
pub(crate) async fn open(
    State(s): State<Arc<Shared>>,
    admin: Admin,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RouteView>, Problem> {
    hold_route(&s, &admin, body, Hold::Open).await
}

/// Holds a route closed: every request is admitted until it is released.
#[utoipa::path(post, path = "/v1/admin/close", tag = "admin", security(("admin" = [])), request_body = RouteAction,
    responses((status = 200, body = RouteView), BodyProblems, AdminProblems))]
pub(crate) async fn close(
    State(s): State<Arc<Shared>>,
    admin: Admin,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RouteView>, Problem> {
    hold_route(&s, &admin, body, Hold::Closed).await
}

/// Releases a route's hold: its physics decides again.
#[utoipa::path(post, path = "/v1/admin/release", tag = "admin", security(("admin" = [])), request_body = RouteAction,
    responses((status = 200, body = RouteView), BodyProblems, AdminProblems))]
pub(crate) async fn release(
    State(s): State<Arc<Shared>>,
    admin: Admin,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RouteView>, Problem> {
    hold_route(&s, &admin, body, Hold::Released).await
}

/// Resets a route: it forgets what it learned and starts again as new.
#[utoipa::path(post, path = "/v1/admin/reset", tag = "admin", security(("admin" = [])), request_body = RouteAction,
    responses((status = 200, body = RouteView), (status = 404, description = "No such route", body = Problem, content_type = "application/problem+json"), BodyProblems, AdminProblems))]
pub(crate) async fn reset(
    State(s): State<Arc<Shared>>,
    admin: Admin,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RouteView>, Problem> {
    let req: RouteAction = parse(body)?;
    check_route("route", &req.route)?;
    let before = s
        .atrion
        .engine()
        .snapshot(&req.route)
        .ok()
        .map(|v| serde_json::json!({"mode": v.mode, "scar": v.scar, "updates": v.updates}));
    s.atrion.engine().reset(&req.route, s.atrion.now()).map_err(|e| Problem::unknown_route(e.to_string()))?;
    let after = serde_json::json!({"mode": atrion::Mode::Bootstrap, "scar": 0.0, "updates": 0});
    audit(&s, &admin.0, Act::new("route.reset", Some(req.route.clone())).change(before, after)).await;
    route_view(&s, &req.route)
        .await
        .map(Json)
        .ok_or_else(|| Problem::invalid("route", "the route was evicted meanwhile"))
}

/// `GET /v1/admin/backup`: every entry of the store, streamed as JSON lines (the format of
/// `StateService::backup`), read a chunk at a time; sealed with the store's keys when it is
/// encrypted at rest (`atrion_state::BackupWriter`).
#[utoipa::path(get, path = "/v1/admin/backup", tag = "admin", security(("admin" = [])),
    responses((status = 200, description = "JSON lines: {key, value (base64), ttl_ms}", body = String, content_type = "application/x-ndjson"),
        (status = 503, description = "The store cannot be reached", body = Problem, content_type = "application/problem+json"), AdminProblems))]
pub(crate) async fn backup(State(s): State<Arc<Shared>>, admin: Admin) -> Result<Response, Problem> {
    let store = s.atrion.store().clone();
    let keys = store.list_keys("").await.map_err(|e| Problem::new(ProblemKind::StoreUnavailable, e.to_string()))?;
    audit(&s, &admin.0, Act::new("backup", Some(format!("{} keys", keys.len())))).await;
    // Sealed with the store's keys when it is encrypted at rest.
    let writer = BackupWriter::new(store.backup_seal());
    let chunks =
        futures_util::stream::unfold((store, keys, 0usize, Some(writer)), |(store, keys, at, writer)| async move {
            let mut writer = writer?;
            if at >= keys.len() {
                // The end (a sealed backup's count of entries), then nothing.
                return Some((Ok(Bytes::from(writer.finish())), (store, keys, at, None)));
            }
            let end = (at + BACKUP_CHUNK).min(keys.len());
            let chunk =
                BackupLine::read(store.as_ref(), &keys[at..end]).await.map(|lines| Bytes::from(writer.chunk(&lines)));
            // A failed read ends the stream (the body is cut off: a sealed backup then lacks its
            // end and is refused at restore).
            let next = chunk.is_ok().then_some(writer);
            Some((chunk, (store, keys, end, next)))
        });
    let mut response = Body::from_stream(chunks).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(response)
}

/// Every family of keys the sidecar writes in its namespace, each checked by the owner of
/// its format: what a restore accepts. A new key format adds its family here.
fn restore_families(s: &Shared) -> KeyFamilies {
    let keys = s.atrion.keys();
    let validator = match &s.config.policy {
        Some(p) => p.desired().validator().clone(),
        None => atrion_policy::Validator::new(s.atrion.engine().config().clone(), atrion_policy::Limits::default()),
    };
    let policy_keys = atrion_policy::PolicyKeys::new(keys.namespace(), keys.node_id());
    KeyFamilies::new().with(cluster_families(&keys)).with(atrion_policy::key_families(&policy_keys, validator))
}

/// `POST /v1/admin/restore`: JSON lines as `backup` writes them, plain or sealed (a sealed
/// backup opens with the store's keys; a plain one restores into any store). Every line is decoded and
/// checked before anything is written: its key must belong to a family of the namespace
/// ([`restore_families`]), and its value must decode as that family's owner reads it.
/// Then all are written, or none (a failed write puts back what was there). Existing keys
/// are overwritten. The engine's own state is not rewritten (it warm-starts from the store
/// at the next start).
#[utoipa::path(post, path = "/v1/admin/restore", tag = "admin", security(("admin" = [])),
    request_body(content = String, content_type = "application/x-ndjson", description = "JSON lines as the backup writes them"),
    responses((status = 200, body = Restored), (status = 400, description = "A line is not valid JSON lines of the backup format", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A line's key is foreign to the namespace, or its value is not what its key holds, or the backup is sealed with a key the store does not hold (`backup-key`, naming the key id): nothing was written", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store cannot be reached: nothing was written", body = Problem, content_type = "application/problem+json"), AdminProblems))]
pub(crate) async fn restore(
    State(s): State<Arc<Shared>>,
    admin: Admin,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let body = read_body(body)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::new(ProblemKind::EmptyBackup, "no line to restore"));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|e| Problem::new(ProblemKind::MalformedBackup, format!("the backup is not UTF-8: {e}")))?;
    let seal = s.atrion.store().backup_seal();
    let lines = BackupLine::decode_backup(text, seal.as_deref()).map_err(|e| match e {
        BackupError::Malformed { line, reason } => {
            Problem::new(ProblemKind::MalformedBackup, reason).at(format!("line {line}"))
        }
        BackupError::Incomplete(_) => Problem::new(ProblemKind::MalformedBackup, e.to_string()),
        other => Problem::new(ProblemKind::BackupKey, other.to_string()),
    })?;
    let families = restore_families(&s);
    BackupLine::check_all(&lines, &families).map_err(|refused| {
        let kind = match families.family(&refused.key) {
            None => ProblemKind::ForeignKey,
            Some(_) => ProblemKind::InvalidBackupValue,
        };
        Problem::new(kind, refused.to_string()).at(format!("line {}", refused.line))
    })?;
    let lines = lines.into_iter().map(|(_, line)| line).collect();
    let written = BackupLine::write_all(s.atrion.store().as_ref(), lines).await;
    let n = match written {
        Ok(n) => n,
        Err(e) => {
            audit(&s, &admin.0, Act::new("restore", None).failed(&e)).await;
            return Err(Problem::new(ProblemKind::StoreUnavailable, e.to_string()));
        }
    };
    audit(&s, &admin.0, Act::new("restore", Some(format!("{n} keys")))).await;
    Ok(Json(Restored { restored: n }).into_response())
}

/// `POST /v1/admin/store`
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreRequest {
    /// The store to switch to: `memory`, `file:PATH`, `redis://…`, `rediss://…`, `postgres://…`.
    url: String,
}

/// The answer to `POST /v1/admin/store`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Switched {
    /// The store active before (its URL, password hidden).
    from: String,
    /// The store active now.
    to: String,
    /// Keys copied (the rest were written through during the switch).
    copied: u64,
    /// Keys verified equal before the flip.
    verified: u64,
}

/// A `file:PATH` store whose folder does not exist: refused, and nothing is created (the
/// switch opens stores; it does not make folders where an admin mistyped a path).
fn missing_folder(url: &str) -> Result<(), Problem> {
    let Some(path) = url.strip_prefix("file:") else { return Ok(()) };
    let parent = std::path::Path::new(path).parent().filter(|p| !p.as_os_str().is_empty());
    match parent {
        Some(dir) if !dir.is_dir() => {
            let why = format!("the folder {} does not exist: create it first", dir.display());
            Err(Problem::new(ProblemKind::StoreUnopenable, why).at("url"))
        }
        _ => Ok(()),
    }
}

/// Switches the state to another store, with migration: every key is copied while writes
/// go on (mirrored to both), verified, and only then does the new store become active.
/// A switch that fails leaves the old store active.
#[utoipa::path(post, path = "/v1/admin/store", tag = "admin", security(("admin" = [])), request_body = StoreRequest,
    responses((status = 200, body = Switched),
        (status = 404, description = "This server cannot switch stores", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "That store is already the active one", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The URL is not a store, or the store cannot be opened (a `file:` path whose folder does not exist among them: nothing is created)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The copy could not be made or verified: the old store stays", body = Problem, content_type = "application/problem+json"),
        AdminProblems))]
pub(crate) async fn switch_store(
    State(s): State<Arc<Shared>>,
    admin: Admin,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Switched>, Problem> {
    let req: StoreRequest = parse(body)?;
    let Some(switch) = &s.config.store_switch else {
        return Err(Problem::new(ProblemKind::SwitchUnavailable, "it was built without a state service"));
    };
    let name = atrion::redacted_url(&req.url);
    if switch.service.active_name() == name {
        return Err(Problem::new(ProblemKind::AlreadyActive, name));
    }
    if !switch.service.backend_names().contains(&name) {
        missing_folder(&req.url)?;
        let store = (switch.open)(req.url.clone()).await.map_err(|why| {
            // Whatever the opener says, the URL's password does not leave.
            Problem::new(ProblemKind::StoreUnopenable, why.replace(&req.url, &name)).at("url")
        })?;
        switch.service.add_backend(name.clone(), store).map_err(|e| Problem::invalid("url", e.to_string()))?;
    }
    let report = match switch.service.switch_backend(&name).await {
        Ok(r) => r,
        Err(e) => {
            audit(&s, &admin.0, Act::new("store.switch", Some(name)).failed(&e)).await;
            return Err(Problem::new(ProblemKind::SwitchFailed, e.to_string()));
        }
    };
    let act = Act::new("store.switch", None).change(&report.from, &report.to);
    audit(&s, &admin.0, act).await;
    Ok(Json(Switched { from: report.from, to: report.to, copied: report.copied, verified: report.verified }))
}
