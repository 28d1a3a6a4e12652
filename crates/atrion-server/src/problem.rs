//! RFC 9457 problems, and reading a JSON body into a request type with the offending field named.
//!
//! Every refusal of the server, the API's, the dashboard's and proxy mode's alike, is a
//! [`Problem`] of one [`ProblemKind`] (its status, type and title are the kind's), answered
//! as `application/problem+json`; a problem that says when to come back carries
//! `retry_after_ms` and the `Retry-After` header, and a `401` the `WWW-Authenticate`
//! challenge.

mod kind;

pub(crate) use kind::ProblemKind;

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
    /// A machine-readable type: `tag:atrion,2026:problem/<kind>`. Each kind has one status
    /// and one title; clients match on the type.
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
    /// When to try again, in milliseconds (a limit's `429`, a `503` that will pass); the
    /// answer's `Retry-After` header says it in whole seconds. (32 bits, so that a problem
    /// stays small.)
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
    /// A problem of `kind`: its status, type and title, with what exactly was wrong.
    pub(crate) fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("{}{}", kind::TYPE_PREFIX, kind.slug()),
            title: kind.title(),
            status: kind.status().as_u16(),
            detail: detail.into(),
            field: None,
            issues: Vec::new(),
            retry_after_ms: None,
        }
    }

    /// The same, naming the offending field (its path in the body, or a query parameter).
    pub(crate) fn at(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The same, saying when to try again: `retry_after_ms` (at least 1, at most
    /// `u32::MAX`), and the answer's `Retry-After` in whole seconds, rounded up.
    pub(crate) fn retry_after(mut self, retry: Duration) -> Self {
        let ms = u32::try_from(retry.as_millis()).unwrap_or(u32::MAX);
        self.retry_after_ms = std::num::NonZeroU32::new(ms.max(1));
        self
    }

    /// `404`: the route named in the request is not tracked.
    pub(crate) fn unknown_route(detail: impl Into<String>) -> Self {
        Problem::new(ProblemKind::UnknownRoute, detail).at("route")
    }

    /// `422`: the value of `field` is not valid.
    pub(crate) fn invalid(field: &str, detail: impl Into<String>) -> Self {
        Problem::new(ProblemKind::InvalidValue, detail).at(field)
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
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(ms) = retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(ms.get().div_ceil(1_000)));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"atrion\""));
        }
        response
    }
}

/// The body as `T`, or a problem naming the field.
pub(crate) fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, Problem> {
    let body = read_body(body)?;
    not_an_array(&body)?;
    deserialize(&body).map_err(|(path, inner)| {
        let kind =
            if inner.is_syntax() || inner.is_eof() { ProblemKind::MalformedJson } else { ProblemKind::InvalidBody };
        let p = Problem::new(kind, inner.to_string());
        if path == "." { p } else { p.at(path) }
    })
}

/// `json` read as a `T`: by serde_json alone in the common case; a refused document is read
/// again through serde_path_to_error, for the path of the field at fault (`.`: the document
/// itself). The one reader of request bodies and of a batch's items.
pub(crate) fn deserialize<T: DeserializeOwned>(json: &[u8]) -> Result<T, (String, serde_json::Error)> {
    if let Ok(value) = serde_json::from_slice(json) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(&mut de)
        .map_err(|e| (e.path().to_string(), e.into_inner()))
        .and_then(|v| de.end().map(|()| v).map_err(|e| (".".to_owned(), e)))
}

/// Every request body is a JSON object: serde would also read a struct from an array of its
/// fields in order (`[]` as a batch of nothing), which the schema does not allow.
pub(crate) fn not_an_array(json: &[u8]) -> Result<(), Problem> {
    if json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(Problem::new(ProblemKind::InvalidBody, "a JSON object is expected, not an array"));
    }
    Ok(())
}

/// The body as JSON, or the problem of a body that is not JSON (for a body read as a
/// `serde_json::Value` before its schema is checked).
pub(crate) fn json_value(body: &[u8]) -> Result<serde_json::Value, Problem> {
    serde_json::from_slice(body).map_err(|e| Problem::new(ProblemKind::MalformedJson, e.to_string()))
}

/// The body, or the problem of a body that could not be read (too large, cut off).
pub(crate) fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Problem> {
    body.map_err(|r| {
        // axum's body rejections: past the limit (`413`), or cut off (`400`).
        let kind = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ProblemKind::BodyTooLarge
        } else {
            ProblemKind::UnreadableBody
        };
        Problem::new(kind, r.body_text())
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
    q.map(|axum::extract::Query(t)| t).map_err(|e| Problem::new(ProblemKind::InvalidQuery, e.body_text()).at("query"))
}
