//! What the node knows: routes.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::Problem;
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

/// Every tracked route, sorted by id.
#[utoipa::path(get, path = "/v1/routes", tag = "routes", responses((status = 200, body = Vec<RouteView>)))]
pub(crate) async fn routes(State(s): State<Arc<Shared>>) -> Json<Vec<RouteView>> {
    let mut ids = s.atrion.engine().route_ids();
    ids.sort_unstable();
    let mut views = Vec::with_capacity(ids.len());
    for id in &ids {
        views.extend(route_view(&s, id).await);
    }
    Json(views)
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
