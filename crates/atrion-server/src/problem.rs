//! RFC 9457 problems, and reading a JSON body into a request type with the offending field named.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// An RFC 9457 problem: what the client got wrong, where, and that nothing changed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A machine-readable type: `tag:atrion,2026:problem/<kind>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short, human-readable summary of the kind.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What exactly was wrong.
    pub detail: String,
    /// The path of the offending field in the body, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every issue a validation found, each with its path (a rejected policy change).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<ProblemIssue>,
    /// When to try again, in milliseconds (a limit: `429`); the answer's `Retry-After`
    /// header says it in whole seconds. (32 bits, so that a problem stays small.)
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u32>, minimum = 1)]
    pub retry_after_ms: Option<std::num::NonZeroU32>,
}

/// One issue of a rejected change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ProblemIssue {
    /// `schema`, `semantic` or `resource`.
    pub stage: String,
    /// Where, in the document (`policies[3].physics.tuner.k`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, kind: &str, title: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("tag:atrion,2026:problem/{kind}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            issues: Vec::new(),
            retry_after_ms: None,
        }
    }

    /// `429`: a limit of the caller's; try again after `retry`.
    pub(crate) fn limited(kind: &str, title: &'static str, detail: impl Into<String>, retry: Duration) -> Self {
        let mut p = Problem::new(StatusCode::TOO_MANY_REQUESTS, kind, title, detail);
        let ms = u32::try_from(retry.as_millis()).unwrap_or(u32::MAX);
        p.retry_after_ms = std::num::NonZeroU32::new(ms.max(1));
        p
    }

    /// `404`: the route named in the request is not tracked.
    pub(crate) fn unknown_route(detail: impl Into<String>) -> Self {
        let mut p = Problem::new(StatusCode::NOT_FOUND, "unknown-route", "No such route", detail);
        p.field = Some("route".into());
        p
    }

    pub(crate) fn invalid(field: &str, detail: impl Into<String>) -> Self {
        let mut p = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-value", "A value is not valid", detail);
        p.field = Some(field.to_owned());
        p
    }
}

/// The problems a request body can cause, as the OpenAPI document lists them (a schema
/// only: handlers answer with [`Problem`] itself).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it describes responses
pub(crate) enum BodyProblems {
    /// Malformed JSON or a body that does not match the schema
    #[response(status = 400, content_type = "application/problem+json")]
    Malformed(Problem),
    /// The body is too large
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// A value is not valid
    #[response(status = 422, content_type = "application/problem+json")]
    Invalid(Problem),
}

/// The problems of an admin request without a valid token, as the OpenAPI document lists
/// them.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // never built: it describes responses
pub(crate) enum AdminProblems {
    /// No token, or not one of ours
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// Administration is disabled (no tokens)
    #[response(status = 403, content_type = "application/problem+json")]
    Disabled(Problem),
    /// This source failed to authenticate too often: retry after `Retry-After` seconds
    #[response(status = 429, content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait")))]
    RateLimited(Problem),
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let retry = self.retry_after_ms;
        let mut response = (status, Json(self)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(ms) = retry {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(ms.get().div_ceil(1_000)));
        }
        response
    }
}

/// The body as `T`, or a problem naming the field.
pub(crate) fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, Problem> {
    let body = read_body(body)?;
    not_an_array(&body)?;
    // The common case first; a refused body is read again to find the field at fault.
    if let Ok(value) = serde_json::from_slice(&body) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(&body);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| (e.path().to_string(), e.into_inner()))
        .and_then(|v| de.end().map(|()| v).map_err(|e| (".".to_owned(), e)));
    value.map_err(|(path, inner)| {
        let (kind, title) = if inner.is_syntax() || inner.is_eof() {
            ("malformed-json", "The body is not valid JSON")
        } else {
            ("invalid-body", "The body does not match the request's schema")
        };
        let mut p = Problem::new(StatusCode::BAD_REQUEST, kind, title, inner.to_string());
        if path != "." {
            p.field = Some(path);
        }
        p
    })
}

/// Every request body is a JSON object: serde would also read a struct from an array of its
/// fields in order (`[]` as a batch of nothing), which the schema does not allow.
pub(crate) fn not_an_array(json: &[u8]) -> Result<(), Problem> {
    if json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-body",
            "The body does not match the request's schema",
            "a JSON object is expected, not an array",
        ));
    }
    Ok(())
}

/// The body, or the problem of a body that could not be read (too large, cut off).
pub(crate) fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Problem> {
    body.map_err(|r| {
        let status = r.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE { "body-too-large" } else { "unreadable-body" };
        Problem::new(status, kind, "The request body cannot be read", r.body_text())
    })
}

/// A route id of 1 to [`atrion::limits::MAX_ROUTE_ID`] bytes, or the problem naming `field`.
pub(crate) fn check_route(field: &str, route: &str) -> Result<(), Problem> {
    atrion::limits::check_route_id(route).map_err(|e| Problem::invalid(field, e.to_string()))
}

/// The query string as `T`, or a problem naming what is wrong with it.
pub(crate) fn query<T>(
    q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, Problem> {
    q.map(|axum::extract::Query(t)| t).map_err(|e| {
        let mut p =
            Problem::new(StatusCode::BAD_REQUEST, "invalid-query", "The query string is not valid", e.body_text());
        p.field = Some("query".into());
        p
    })
}
