//! What a browser must not be able to do to the API: what every request passes before it
//! reaches a handler.
//!
//! - A path whose percent-escapes do not decode to UTF-8 is a `400` problem.
//! - **Host** (the DNS-rebinding defence): when the server knows its names (the listen
//!   address, `localhost` on loopback, [`ServerConfig::allowed_hosts`]), a request for another
//!   host gets `421 Misdirected Request`. A library user's [`crate::router`] checks no Host
//!   unless names are configured; [`crate::serve`] always adds its listen address.
//! - **Cross-origin**: an `Origin` that is neither the server's own (the same host and port
//!   as the request's `Host`) nor one of [`ServerConfig::cors_origins`], or
//!   `Sec-Fetch-Site: cross-site` (but for a page navigation), gets `403`. CORS headers are
//!   sent for the configured origins only.
//! - **Content type**: a `POST`, `PUT` or `PATCH` with a body must be `application/json`
//!   (`application/x-ndjson` too for a restore), or it gets `415`: a page's form or
//!   `text/plain` fetch cannot reach a handler.
//! - **Client tokens**: with [`ServerConfig::client_tokens`], decide, report, batch and tasks need a
//!   bearer token (`401`).
//!
//! `/healthz` and `/readyz` skip the Host and Origin checks: probes address the server by
//! whatever name they were given, and the answers reveal nothing.
//!
//! Each check is a few byte comparisons on the request's headers: nothing is allocated unless
//! the request is refused.

use std::net::SocketAddr;
use std::sync::Arc;

use std::future::{Ready, ready};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, Version, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

use crate::problem::{Problem, ProblemKind};
use crate::{AdminToken, ServerConfig};

/// The names a request's `Host` may carry.
#[derive(Debug, Default)]
struct Hosts {
    /// `host:port` (or a name alone, which then means port 80), lowercase.
    exact: Vec<String>,
    /// Names allowed on any port, lowercase.
    names: Vec<String>,
    /// Listening on every address: any IP literal with this port (a rebinding attack needs
    /// a name; a literal is its own origin).
    any_ip_on: Option<u16>,
}

impl Hosts {
    fn allows(&self, host: &str) -> bool {
        if self.exact.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return true;
        }
        if self.names.iter().any(|n| n.eq_ignore_ascii_case(without_port(host))) {
            return true;
        }
        self.any_ip_on.is_some_and(|port| host.parse::<SocketAddr>().is_ok_and(|a| a.port() == port))
    }
}

/// `host` without its `:port`, if it has one (`[::1]:80` gives `[::1]`).
fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !name.contains(':') => {
            name
        }
        Some((name, port))
            if name.starts_with('[') && name.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            name
        }
        _ => host,
    }
}

/// The checks, built once from the server's config.
#[derive(Debug)]
pub(crate) struct Guard {
    /// `None`: no Host check (a router of a library user's, with no names configured).
    hosts: Option<Hosts>,
    /// Origins allowed cross-origin (CORS), lowercase.
    cors: Vec<String>,
    client_tokens: Vec<AdminToken>,
}

impl Guard {
    pub(crate) fn new(config: &ServerConfig) -> Guard {
        let mut hosts = Hosts::default();
        for h in &config.allowed_hosts {
            let h = h.trim().to_ascii_lowercase();
            if without_port(&h).len() == h.len() {
                hosts.names.push(h);
            } else {
                hosts.exact.push(h);
            }
        }
        if let Some(at) = config.listen {
            if at.ip().is_unspecified() {
                hosts.any_ip_on = Some(at.port());
                hosts.exact.push(format!("localhost:{}", at.port()));
            } else {
                hosts.exact.push(at.to_string());
                if at.ip().is_loopback() {
                    hosts.exact.push(format!("localhost:{}", at.port()));
                }
            }
        }
        let check_hosts = config.listen.is_some() || !config.allowed_hosts.is_empty();
        Guard {
            hosts: check_hosts.then_some(hosts),
            cors: config.cors_origins.iter().map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase()).collect(),
            client_tokens: config.client_tokens.clone(),
        }
    }

    /// The CORS layer for the configured origins, if any.
    pub(crate) fn cors(&self) -> Option<tower_http::cors::CorsLayer> {
        use tower_http::cors::{AllowOrigin, CorsLayer};
        let origins: Vec<HeaderValue> = self.cors.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
        (!origins.is_empty()).then(|| {
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
                .allow_headers([
                    header::CONTENT_TYPE,
                    header::AUTHORIZATION,
                    header::HeaderName::from_static("x-atrion-client"),
                ])
                .max_age(std::time::Duration::from_secs(600))
        })
    }

    fn check(&self, request: &Request) -> Result<(), Problem> {
        let path = request.uri().path();
        if path.contains('%') && percent_encoding::percent_decode_str(path).decode_utf8().is_err() {
            return Err(Problem::new(
                ProblemKind::InvalidPath,
                "a percent-escape of the path does not decode to UTF-8",
            ));
        }
        if !matches!(path, "/healthz" | "/readyz") {
            let host = self.check_host(request)?;
            self.check_origin(request.method(), request.headers(), host)?;
        }
        check_content_type(request.method(), path, request.headers())?;
        if !self.client_tokens.is_empty()
            && (matches!(path, "/v1/decide" | "/v1/report" | "/v1/batch") || path.starts_with("/v1/tasks"))
        {
            self.check_client(request.headers())?;
        }
        Ok(())
    }

    /// The request's host (`Host`, or the authority of an absolute URI), checked.
    fn check_host<'r>(&self, request: &'r Request) -> Result<Option<&'r str>, Problem> {
        let host = match request.headers().get(header::HOST) {
            Some(h) => Some(h.to_str().map_err(|_| misdirected("the Host header is not text"))?),
            None => request.uri().authority().map(|a| a.as_str()),
        };
        let Some(hosts) = &self.hosts else { return Ok(host) };
        match host {
            Some(h) if hosts.allows(h) => Ok(host),
            Some(h) => Err(misdirected(format!("this server does not answer for the host `{h}`"))),
            // HTTP/1.0 may omit it; a browser never does.
            None if request.version() <= Version::HTTP_10 => Ok(None),
            None => Err(misdirected("an HTTP/1.1 request needs a Host header")),
        }
    }

    fn check_origin(&self, method: &Method, headers: &HeaderMap, host: Option<&str>) -> Result<(), Problem> {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.as_bytes();
            if self.cors.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(origin)) {
                return Ok(());
            }
            let authority = origin.strip_prefix(b"http://").or_else(|| origin.strip_prefix(b"https://"));
            let same = matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h.as_bytes()));
            if !same {
                return Err(cross_origin("the request's Origin is neither this server nor an allowed origin"));
            }
            return Ok(());
        }
        let cross_site = headers.get(FETCH_SITE).is_some_and(|v| v.as_bytes() == b"cross-site");
        if cross_site && !is_navigation(method, headers) {
            return Err(cross_origin("a browser sent this request from another site"));
        }
        Ok(())
    }

    fn check_client(&self, headers: &HeaderMap) -> Result<(), Problem> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .and_then(|v| (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| &v[7..]));
        // Every token is compared, each in constant time.
        let known = presented.is_some_and(|p| self.client_tokens.iter().fold(false, |ok, t| t.matches(p) | ok));
        if known {
            Ok(())
        } else {
            Err(Problem::new(
                ProblemKind::ClientTokenRequired,
                "decide, report and batch need `Authorization: Bearer <client token>` on this server",
            ))
        }
    }
}

/// `Sec-Fetch-Site` and `Sec-Fetch-Mode`, made once (a lookup by `&str` parses the name).
const FETCH_SITE: header::HeaderName = header::HeaderName::from_static("sec-fetch-site");
const FETCH_MODE: header::HeaderName = header::HeaderName::from_static("sec-fetch-mode");

/// A page navigation (a link followed from another site): not a cross-origin call.
fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
        && headers.get(FETCH_MODE).is_some_and(|v| v.as_bytes() == b"navigate")
}

/// The media types a body may have on `path`.
fn accepts(path: &str, media: &[u8]) -> bool {
    media.eq_ignore_ascii_case(b"application/json")
        || (path == "/v1/admin/restore" && media.eq_ignore_ascii_case(b"application/x-ndjson"))
}

fn check_content_type(method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Problem> {
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        return Ok(());
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get(header::CONTENT_LENGTH).is_some_and(|l| l.as_bytes() != b"0");
    if !has_body {
        return Ok(());
    }
    let media = headers.get(header::CONTENT_TYPE).map(|v| {
        let v = v.as_bytes();
        v[..v.iter().position(|&b| b == b';').unwrap_or(v.len())].trim_ascii()
    });
    if media.is_some_and(|m| accepts(path, m)) {
        return Ok(());
    }
    Err(Problem::new(
        ProblemKind::UnsupportedMediaType,
        format!("{method} {path} takes a body of type application/json"),
    ))
}

fn misdirected(detail: impl Into<String>) -> Problem {
    Problem::new(ProblemKind::MisdirectedRequest, detail)
}

fn cross_origin(detail: &str) -> Problem {
    Problem::new(ProblemKind::CrossOrigin, detail)
}

/// The guard as a tower layer: each request passes [`Guard`]'s checks, or is answered with
/// a problem and reaches no handler. A service of its own rather than `from_fn`, so that a
/// request that passes costs no allocation.
#[derive(Debug, Clone)]
pub(crate) struct GuardLayer(pub(crate) Arc<Guard>);

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded { guard: self.0.clone(), inner }
    }
}

/// A service behind [`GuardLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Guarded<S> {
    guard: Arc<Guard>,
    inner: S,
}

impl<S> tower::Service<Request> for Guarded<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.guard.check(&request) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(problem) => Either::Left(ready(Ok(problem.into_response()))),
        }
    }
}

/// Declares the guard's answers in the OpenAPI document, on every operation they can come
/// from, and the reserve's `503` (past the connection cap).
pub(crate) fn declare(doc: &mut OpenApi) {
    let problem = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
                )
                .build(),
        )
    };
    for (path, item) in &mut doc.paths.paths {
        let probe = matches!(path.as_str(), "/healthz" | "/readyz");
        let reserved = probe || path.starts_with("/v1/admin/");
        let client =
            matches!(path.as_str(), "/v1/decide" | "/v1/report" | "/v1/batch") || path.starts_with("/v1/tasks");
        let ops = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch, &mut item.head];
        for op in ops.into_iter().flatten() {
            let with_param = path.contains('{');
            let with_body = op.request_body.is_some();
            let r = &mut op.responses.responses;
            if with_param {
                r.entry("400".into()).or_insert_with(|| problem("A percent-escape of the path is not UTF-8"));
            }
            if !probe {
                r.entry("421".into()).or_insert_with(|| problem("The Host is not one of this server's names"));
                r.entry("403".into()).or_insert_with(|| problem("A cross-origin request from a browser"));
            }
            if with_body {
                r.entry("415".into()).or_insert_with(|| problem("The body is not application/json"));
            }
            if client {
                r.entry("401".into()).or_insert_with(|| problem("This server needs a client token"));
            }
            if !reserved {
                r.entry("503".into()).or_insert_with(|| {
                    let mut busy = problem("Over the connection cap: only health and administration are served");
                    if let RefOr::T(response) = &mut busy {
                        let seconds = HeaderBuilder::new()
                            .schema(<u64 as utoipa::PartialSchema>::schema())
                            .description(Some("Seconds to wait"))
                            .build();
                        response.headers.insert("Retry-After".into(), seconds);
                    }
                    busy
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_split_from_names_and_literals() {
        assert_eq!(without_port("localhost:7878"), "localhost");
        assert_eq!(without_port("[::1]:7878"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
        assert_eq!(without_port("atrion.internal"), "atrion.internal");
    }

    #[test]
    fn hosts_are_the_listen_address_localhost_and_names() {
        let mut c = ServerConfig {
            listen: Some("127.0.0.1:7878".parse().unwrap()),
            allowed_hosts: vec!["Atrion.Internal".into(), "sidecar:9000".into()],
            ..ServerConfig::default()
        };
        let g = Guard::new(&c);
        let hosts = g.hosts.as_ref().unwrap();
        for ok in ["127.0.0.1:7878", "localhost:7878", "LOCALHOST:7878", "atrion.internal:1", "sidecar:9000"] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for refused in ["evil.example:7878", "127.0.0.1:7879", "localhost", "sidecar:9001", "127.0.0.2:7878"] {
            assert!(!hosts.allows(refused), "{refused}");
        }
        c.listen = Some("0.0.0.0:7878".parse().unwrap());
        let g = Guard::new(&c);
        let hosts = g.hosts.as_ref().unwrap();
        assert!(hosts.allows("10.1.2.3:7878") && hosts.allows("[fe80::1]:7878"));
        assert!(!hosts.allows("10.1.2.3:80") && !hosts.allows("rebound.example:7878"));
    }

    #[test]
    fn json_with_parameters_passes_and_text_does_not() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("Application/JSON ; charset=utf-8"));
        assert!(check_content_type(&Method::POST, "/v1/decide", &h).is_ok());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(check_content_type(&Method::POST, "/v1/decide", &h).unwrap_err().status, 415);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        assert!(check_content_type(&Method::POST, "/v1/admin/restore", &h).is_ok());
        assert!(check_content_type(&Method::POST, "/v1/decide", &h).is_err());
        h.remove(header::CONTENT_TYPE);
        assert!(check_content_type(&Method::POST, "/v1/decide", &h).is_err(), "no type is not JSON");
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(check_content_type(&Method::POST, "/v1/admin/open", &h).is_ok(), "no body, nothing to type");
    }
}
