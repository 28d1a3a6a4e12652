//! What the node knows: routes.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::problem::{Problem, ProblemKind, query};
use crate::{DecisionCounts, Shared};

/// A route as `/v1/routes` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RouteView {
    /// The route.
    route: String,
    /// `bootstrap`, `operational`, `open`, `half_open`.
    #[schema(value_type = String, example = "operational")]
    mode: atrion::Mode,
    /// Resistance after the last report (ohms).
    resistance: f64,
    /// Scar tissue (ohms).
    scar: f64,
    /// Momentum.
    momentum: f64,
    /// The tuner's break point (ohms).
    break_point: f64,
    /// The tuner's mean resistance.
    tuner_mean: f64,
    /// The tuner's standard deviation.
    tuner_sd: f64,
    /// Reports absorbed.
    updates: u64,
    /// The cluster's scar for the route now, when other nodes report on it.
    cluster_scar: Option<f64>,
    /// Decisions on this node, by verdict.
    decisions: DecisionCounts,
    /// An operator's or a policy's hold: `released`, `open`, `closed`, `shadow`.
    #[schema(value_type = String, example = "released")]
    held: atrion::Hold,
    /// Decisions a shadow hold turned from shed into admit (what the route would have shed).
    shadowed: u32,
    /// The pattern of the policy the route runs (its applicable policy); none: the defaults.
    policy: Option<String>,
    /// The other nodes' contributions, as they reported them.
    nodes: Vec<NodeContribution>,
}

/// One other node's contribution to a route.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NodeContribution {
    /// The node.
    node: String,
    /// Its local scar (ohms).
    scar: f64,
    /// Its local momentum.
    momentum: f64,
    /// When it computed them (ms since the Unix epoch).
    at_ms: u64,
}

/// A node of the cluster, as `GET /v1/nodes` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NodeView {
    /// The node's id.
    id: String,
    /// Whether it is the node answering.
    this_node: bool,
    /// `healthy`, `suspect` (late heartbeats, or this node degraded) or `gone`.
    #[schema(value_type = String, example = "healthy")]
    status: atrion::state::NodeStatus,
    /// Its last heartbeat (this node: its last acknowledged push), ms since the Unix epoch.
    last_seen_ms: u64,
    /// Its software version.
    version: Option<String>,
    /// How far behind the present this node's view of it is (ms).
    sync_lag_ms: Option<u64>,
}

impl From<atrion::state::NodeInfo> for NodeView {
    fn from(n: atrion::state::NodeInfo) -> Self {
        NodeView {
            id: n.id,
            this_node: n.this_node,
            status: n.status,
            last_seen_ms: n.last_seen_ms,
            version: n.version,
            sync_lag_ms: n.sync_lag_ms,
        }
    }
}

pub(crate) async fn route_view(s: &Shared, route: &str) -> Option<RouteView> {
    let nodes = s
        .atrion
        .route_nodes(route)
        .await
        .into_iter()
        .map(|(node, c)| NodeContribution { node, scar: c.scar, momentum: c.momentum, at_ms: c.at_ms })
        .collect();
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
        decisions: engine.observer().counts(route),
        held: engine.held(route).unwrap_or_default(),
        shadowed: engine.shadowed(route).unwrap_or_default(),
        policy: engine.route_pattern(route),
        nodes,
    })
}

/// Routes a page holds when the query does not say.
pub const ROUTES_PAGE: usize = 100;

/// The most routes one page holds.
pub const MAX_ROUTES_PAGE: usize = 1_000;

/// `GET /v1/routes?limit=&after=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RoutesQuery {
    /// Routes in the page, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// The page starts after this route id: the `next` of the page before.
    #[param(min_length = 1, max_length = 1024)]
    after: Option<String>,
}

/// One page of `GET /v1/routes`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RoutePage {
    /// The routes of the page, sorted by id.
    routes: Vec<RouteView>,
    /// When there are more: pass it as `?after=` for the next page; `null` on the last.
    next: Option<String>,
}

/// The tracked routes, sorted by id, one page at a time: `?limit=` routes (100 unless said,
/// at most 1,000) after the route `?after=` (the `next` of the page before).
#[utoipa::path(get, path = "/v1/routes", tag = "routes", params(RoutesQuery),
    responses((status = 200, body = RoutePage),
        (status = 400, description = "A limit or cursor that is not valid", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn routes(
    State(s): State<Arc<Shared>>,
    q: Result<axum::extract::Query<RoutesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RoutePage>, Problem> {
    let q = query(q)?;
    let limit = match q.limit {
        None => ROUTES_PAGE,
        Some(n) if (1..=MAX_ROUTES_PAGE as u64).contains(&n) => n as usize,
        Some(n) => return Err(bad_query("limit", format!("{n}: expected 1 to {MAX_ROUTES_PAGE}"))),
    };
    if let Some(after) = &q.after
        && let Err(e) = atrion::limits::check_route_id(after)
    {
        return Err(bad_query("after", e.to_string()));
    }
    // One more than the page says whether there is a next one.
    let mut ids = s.atrion.engine().route_ids_after(q.after.as_deref(), limit + 1);
    let more = ids.len() > limit;
    ids.truncate(limit);
    let next = more.then(|| ids.last().cloned()).flatten();
    let mut views = Vec::with_capacity(ids.len());
    for id in &ids {
        views.extend(route_view(&s, id).await);
    }
    Ok(Json(RoutePage { routes: views, next }))
}

fn bad_query(field: &str, detail: String) -> Problem {
    Problem::new(ProblemKind::InvalidQuery, detail).at(field)
}

/// The cluster as this node sees it, itself first.
#[utoipa::path(get, path = "/v1/nodes", tag = "cluster", responses((status = 200, body = Vec<NodeView>)))]
pub(crate) async fn nodes(State(s): State<Arc<Shared>>) -> Json<Vec<NodeView>> {
    Json(s.atrion.nodes().await.unwrap_or_default().into_iter().map(NodeView::from).collect())
}

/// One route (its id percent-encoded: `GET%20%2Fusers`).
#[utoipa::path(get, path = "/v1/routes/{route}", tag = "routes",
    params(("route" = String, Path, description = "The route id, percent-encoded")),
    responses((status = 200, body = RouteView), (status = 404, description = "No such route", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn route(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(route): axum::extract::Path<String>,
) -> Result<Json<RouteView>, Problem> {
    route_view(&s, &route).await.map(Json).ok_or_else(|| Problem::unknown_route(format!("no route `{route}`")))
}
