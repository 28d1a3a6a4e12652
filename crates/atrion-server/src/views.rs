//! What the node knows: routes.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::problem::Problem;
use crate::{DecisionCounts, Shared};

/// A route as `/v1/routes` shows it.
#[derive(Debug, Serialize)]
pub(crate) struct RouteView {
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
    decisions: DecisionCounts,
    held: atrion::Hold,
    /// The other nodes' contributions, as they reported them.
    nodes: Vec<NodeContribution>,
}

/// One other node's contribution to a route.
#[derive(Debug, Serialize)]
pub(crate) struct NodeContribution {
    node: String,
    scar: f64,
    momentum: f64,
    at_ms: u64,
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
        nodes,
    })
}

/// `GET /v1/routes`: every tracked route, sorted by id.
pub(crate) async fn routes(State(s): State<Arc<Shared>>) -> Json<Vec<RouteView>> {
    let mut ids = s.atrion.engine().route_ids();
    ids.sort_unstable();
    let mut views = Vec::with_capacity(ids.len());
    for id in &ids {
        views.extend(route_view(&s, id).await);
    }
    Json(views)
}

/// `GET /v1/nodes`: the cluster as this node sees it, itself first.
pub(crate) async fn nodes(State(s): State<Arc<Shared>>) -> Json<Vec<atrion::state::NodeInfo>> {
    Json(s.atrion.nodes().await.unwrap_or_default())
}

/// `GET /v1/routes/{route}` (the route percent-encoded).
pub(crate) async fn route(
    State(s): State<Arc<Shared>>,
    axum::extract::Path(route): axum::extract::Path<String>,
) -> Result<Json<RouteView>, Problem> {
    route_view(&s, &route).await.map(Json).ok_or_else(|| {
        let mut p =
            Problem::new(StatusCode::NOT_FOUND, "unknown-route", "No such route", format!("no route `{route}`"));
        p.field = Some("route".into());
        p
    })
}
