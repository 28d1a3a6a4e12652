//! The API: health, decisions and reports, what the node knows, administration and
//! policies, under `/v1` (and `/healthz`, `/readyz`, `/metrics`, `/openapi.json`).
//!
//! Every endpoint is declared once, with its OpenAPI operation ([`router`]): the routes and
//! the document come from the same declarations.

mod admin;
pub(crate) mod creation;
mod decisions;
mod health;
pub(crate) mod openapi;
mod policies;
pub(crate) mod seal;
pub(crate) mod tasks;
pub(crate) mod tickets;
pub(crate) mod views;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{ServerConfig, Shared};

/// The API's router, its OpenAPI operations with it; the frame of the document
/// (title, tags, the admin security scheme) is [`openapi::ApiDoc`].
pub(crate) fn router(config: &ServerConfig) -> OpenApiRouter<Arc<Shared>> {
    let (schemas, paths, restore) = routes!(admin::restore);
    let restore = (schemas, paths, restore.layer(DefaultBodyLimit::max(config.max_restore_bytes)));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(decisions::decide))
        .routes(routes!(decisions::report))
        .routes(routes!(decisions::batch))
        .routes(routes!(tasks::start))
        .routes(routes!(tasks::heartbeat))
        .routes(routes!(tasks::complete))
        .routes(routes!(tasks::release))
        .routes(routes!(views::routes))
        .routes(routes!(views::route))
        .routes(routes!(views::nodes))
        .routes(routes!(admin::open))
        .routes(routes!(admin::close))
        .routes(routes!(admin::release))
        .routes(routes!(admin::reset))
        .routes(routes!(admin::backup))
        .routes(routes!(admin::switch_store))
        .routes(restore)
        .routes(routes!(policies::get_policies, policies::put_policies, policies::post_policy, policies::delete_policy))
        .routes(routes!(policies::ban, policies::unban))
        .routes(routes!(policies::state))
        .routes(routes!(policies::diff))
        .routes(routes!(policies::history))
        .routes(routes!(policies::audit_page))
        .routes(routes!(policies::audit_export))
}
