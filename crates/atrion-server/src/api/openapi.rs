//! The OpenAPI document's frame (title, tags, the admin security scheme) and the endpoint
//! that serves it. The operations and schemas come from the handlers' own declarations.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use crate::Shared;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Atrion sidecar", description = "Admission decisions over HTTP: may I call this route now?"),
    modifiers(&AdminScheme),
    tags(
        (name = "decisions", description = "Decide, report, batch"),
        (name = "tasks", description = "Leases of long-running tasks: start, heartbeat, complete, release"),
        (name = "routes", description = "What this node knows of each route"),
        (name = "cluster", description = "The cluster's nodes"),
        (name = "health", description = "Liveness, readiness, metrics, this document"),
        (name = "admin", description = "Behind a bearer token"),
        (name = "policies", description = "Desired, applicable and current state across the cluster; bans; the audit trail")
    )
)]
pub(crate) struct ApiDoc;

struct AdminScheme;

impl utoipa::Modify for AdminScheme {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme("admin", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// This document: OpenAPI 3.1, generated from the handlers' types.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub(crate) async fn openapi_json(State(s): State<Arc<Shared>>) -> Json<utoipa::openapi::OpenApi> {
    Json(s.openapi.clone())
}
