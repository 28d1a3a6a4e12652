//! Who may read the dashboard's data: its feed, route pages and charts. The page itself
//! (`/`, `/assets/*`) holds no data and is always served, so that it can ask for a token.
//!
//! Tokens travel in `Authorization: Bearer`, never in a URL: the page reads the feed with
//! `fetch` (an `EventSource` cannot send headers) and keeps the token in `sessionStorage`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use crate::Shared;
use crate::auth::{Admin, AdminToken};
use crate::problem::{Problem, ProblemKind};

/// Who may read the dashboard's data (its feed, route pages and charts). Failed attempts
/// go through the admin check when the server has admin tokens, and share its limit per
/// source (`429`).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum DashboardAuth {
    /// Anyone who reaches the server: the default, meant for a sidecar on loopback.
    #[default]
    Open,
    /// A holder of an admin token ([`crate::ServerConfig::admin_tokens`]); with none set,
    /// nobody (`403`).
    Admin,
    /// A holder of one of these read-only tokens, which open the dashboard and nothing
    /// else, or of an admin token.
    Tokens(Vec<AdminToken>),
}

/// A request allowed to read the dashboard's data.
pub(crate) struct Viewer;

impl FromRequestParts<Arc<Shared>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Shared>) -> Result<Self, Self::Rejection> {
        // Without a dashboard the handler answers 404 itself.
        let Some(d) = &s.dashboard else { return Ok(Viewer) };
        match &d.config.auth {
            DashboardAuth::Open => Ok(Viewer),
            DashboardAuth::Admin => admin(parts, s).await,
            DashboardAuth::Tokens(tokens) => {
                if bearer(&parts.headers).is_some_and(|p| crate::auth::who(tokens, p.as_bytes()).is_some()) {
                    return Ok(Viewer);
                }
                if s.config.admin_tokens.is_empty() {
                    return Err(unauthorized());
                }
                // Not a read-only token: an admin token, or refused (and recorded) as one.
                admin(parts, s).await
            }
        }
    }
}

async fn admin(parts: &mut Parts, s: &Arc<Shared>) -> Result<Viewer, Response> {
    Admin::from_request_parts(parts, s).await.map(|_| Viewer).map_err(IntoResponse::into_response)
}

/// The bearer token of a request (the scheme is case-insensitive, RFC 9110).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized() -> Response {
    Problem::new(ProblemKind::MissingToken, "send `Authorization: Bearer <token>` with a dashboard or admin token")
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_nothing_else_passes() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            m
        };
        assert_eq!(bearer(&h("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&h("bearer abc")), Some("abc"));
        assert_eq!(bearer(&h("Basic abc")), None);
        assert_eq!(bearer(&h("Bearerabc")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
