//! Proxy mode: a reverse proxy in front of a service, guarded by Atrion, so that a service in
//! any language is protected without a code change.
//!
//! Each request is mapped to a route (`METHOD /path`, the path replaced by the first
//! configured template that matches it, such as `/users/{id}`), decided on, and forwarded to
//! the upstream or answered `503` with `Retry-After` and a problem body (`shed`, or
//! `banned` under a policy's ban), as the API answers its refusals. Its latency and outcome (a 5xx or a
//! body cut half-way is a failure) are reported when the response body ends: the
//! [`atrion::AtrionLayer`] rule. Bodies stream both ways without buffering. Hop-by-hop
//! headers (`Connection` and those it names, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`,
//! `Transfer-Encoding`, `Upgrade`) are not forwarded; `Host` becomes the upstream's, and the
//! client's goes in `X-Forwarded-Host`. Protocol upgrades (WebSocket) are not proxied.
//!
//! Before anything else, the request's path is brought to its normal form
//! ([`normalize_path`]): the ban check, the route and the upstream all see that one
//! spelling, so a variant of a held path is that held route. A path that cannot be
//! normalized is answered `400` and not forwarded; the query is forwarded as it came.

mod forward;
mod path;
mod refuse;

use forward::Forward;
pub use forward::{IDLE_TIMEOUT, MAX_IDLE, forwarding_router};
pub use path::{PathError, normalize_path};
use refuse::{BanGate, ShedAsProblemLayer};

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Ready;
use std::sync::Arc;
use std::task::{Context, Poll};

use atrion::AtrionLayer;
use atrion::layer::RequestHead;
use axum::Router;
use axum::extract::Request;
use axum::http::uri::{PathAndQuery, Scheme};
use axum::http::{HeaderMap, HeaderName, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;

use crate::SidecarAtrion;
use crate::problem::{Problem, ProblemKind};

/// Why a proxy cannot be built from its settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The upstream is not an `http://host:port` URL without a path.
    #[error("upstream `{url}`: {why}")]
    Upstream {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A path template is not `/segment/{param}/...`.
    #[error("path template `{template}`: {why}")]
    Template {
        /// The template given.
        template: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// A path template: literal segments and `{param}` segments, such as `/users/{id}/orders`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    text: String,
    /// `None` for a parameter.
    segments: Vec<Option<String>>,
}

impl PathTemplate {
    /// Parses a template: it starts with `/`; a segment is literal or a whole `{name}`.
    pub fn parse(text: &str) -> Result<PathTemplate, ProxyError> {
        let bad = |why| ProxyError::Template { template: text.to_owned(), why };
        let rest = text.strip_prefix('/').ok_or_else(|| bad("it must start with `/`"))?;
        let mut segments = Vec::new();
        for seg in rest.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if name.is_empty() || name.contains(['{', '}']) {
                    return Err(bad("a parameter is `{name}`"));
                }
                segments.push(None);
            } else if seg.contains(['{', '}']) {
                return Err(bad("a parameter must be a whole segment"));
            } else if seg.is_empty() {
                segments.push(Some(String::new()));
            } else {
                // Compared with normal paths, so kept in normal form (`café` as `caf%C3%A9`).
                match normalize_path(&format!("/{seg}")) {
                    Ok(n) if n.len() > 1 && !n[1..].contains('/') => segments.push(Some(n[1..].to_owned())),
                    _ => return Err(bad("a literal segment is not `.`, `..` nor an escape that has no normal form")),
                }
            }
        }
        Ok(PathTemplate { text: text.to_owned(), segments })
    }

    /// Whether `path` (without its query) matches.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else { return false };
        let mut parts = rest.split('/');
        for seg in &self.segments {
            match (seg, parts.next()) {
                (_, None) => return false,
                (None, Some("")) => return false,
                (Some(lit), Some(p)) if lit != p => return false,
                _ => {}
            }
        }
        parts.next().is_none()
    }

    /// The template's text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The settings of proxy mode.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxyConfig {
    /// Where requests go: `http://host:port`.
    pub upstream: Uri,
    /// Path templates, tried in order; a path no template matches is its own route.
    pub templates: Vec<PathTemplate>,
    /// The cluster's policies: bans (a banned request is answered `503` with `Retry-After`
    /// until the ban's deadline) and VIP lanes (a VIP client's requests run as critical).
    pub policy: Option<crate::PolicyHandle>,
    /// The header that carries a request's client key, for bans and VIP lanes.
    pub client_header: HeaderName,
}

impl ProxyConfig {
    /// A proxy to `upstream` (`http://host:port`, no path) with these path templates.
    pub fn new(upstream: &str, templates: &[String]) -> Result<ProxyConfig, ProxyError> {
        let bad = |why| ProxyError::Upstream { url: upstream.to_owned(), why };
        let uri: Uri = upstream.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(bad("only http:// upstreams are proxied"));
        }
        if uri.authority().is_none() {
            return Err(bad("no host"));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(bad("an upstream has no path or query"));
        }
        let templates = templates.iter().map(|t| PathTemplate::parse(t)).collect::<Result<_, _>>()?;
        Ok(ProxyConfig {
            upstream: uri,
            templates,
            policy: None,
            client_header: HeaderName::from_static("x-atrion-client"),
        })
    }

    /// The route of a request, written into `out`: `METHOD /template` or `METHOD /path`.
    pub fn route(&self, head: &RequestHead<'_>, out: &mut String) {
        let path = head.uri.path();
        let shown = self.templates.iter().find(|t| t.matches(path)).map_or(path, |t| t.as_str());
        let _ = write!(out, "{} {shown}", head.method);
    }
}

/// The proxy: every request's path is normalized, then the request is decided on, and
/// forwarded to `config.upstream` or shed. The stack is plain tower services around the
/// forwarding, served as the router's fallback: nothing of it is boxed or cloned per
/// request but the forwarding's own future.
pub fn proxy_router(atrion: Arc<SidecarAtrion>, config: &ProxyConfig) -> Router {
    use tower::Layer as _;
    let routes = config.clone();
    let default = atrion.default_priority();
    let mut layer = AtrionLayer::new(atrion).route(move |head, out| routes.route(head, out));
    let forward = Forward::new(config);
    let Some(policy) = config.policy.clone() else {
        let guarded = ShedAsProblemLayer(layer).layer(forward);
        return Router::new().fallback_service(NormalizePath { inner: guarded });
    };
    let (cfg, p) = (config.clone(), policy.clone());
    layer = layer.priority(move |head| {
        let vip = client_key(head.headers, &cfg.client_header).is_some_and(|c| {
            let mut route = String::new();
            cfg.route(head, &mut route);
            p.gate().vip(&route, c)
        });
        if vip { atrion::Priority::Critical } else { default }
    });
    let guarded = ShedAsProblemLayer(layer).layer(forward);
    let gated = BanGate { inner: guarded, state: Arc::new((config.clone(), policy)) };
    Router::new().fallback_service(NormalizePath { inner: gated })
}

/// Puts every request's path in normal form ([`normalize_path`]) before the services it
/// wraps see it, or answers `400` (`bad-path`) in their stead.
#[derive(Debug, Clone)]
struct NormalizePath<S> {
    inner: S,
}

impl<S> tower::Service<Request> for NormalizePath<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match normal_uri(request.uri()) {
            Ok(None) => {}
            Ok(Some(uri)) => *request.uri_mut() = uri,
            Err(problem) => return Either::Left(std::future::ready(Ok(problem.into_response()))),
        }
        Either::Right(self.inner.call(request))
    }
}

/// The URI with its path normalized; `None` when it already was (the common case: no
/// allocation).
fn normal_uri(uri: &Uri) -> Result<Option<Uri>, Problem> {
    let bad = |why: String| Problem::new(ProblemKind::BadPath, why);
    let path = match normalize_path(uri.path()) {
        Ok(Cow::Borrowed(_)) => return Ok(None),
        Ok(Cow::Owned(path)) => path,
        Err(e) => return Err(bad(e.to_string())),
    };
    let target = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(target).map_err(|e| bad(e.to_string()))?);
    Uri::from_parts(parts).map(Some).map_err(|e| bad(e.to_string()))
}

pub(super) fn client_key<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_whole_segments() {
        let t = PathTemplate::parse("/users/{id}/orders").unwrap();
        assert!(t.matches("/users/42/orders"));
        assert!(!t.matches("/users/42"));
        assert!(!t.matches("/users//orders"));
        assert!(!t.matches("/users/42/orders/7"));
        assert!(PathTemplate::parse("/").unwrap().matches("/"));
        let t = PathTemplate::parse("/caf%c3%a9/{id}/%7Eraw").unwrap();
        assert!(t.matches("/caf%C3%A9/1/~raw"), "literals in normal form, as the paths they meet");
        assert!(PathTemplate::parse("/café/{id}").unwrap().matches("/caf%C3%A9/1"));
        for bad in ["users", "/users/{}", "/users/id{x}", "/a/{b{c}}", "/a/../{b}", "/./a", "/a%2Fb", "/a%zz"] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
        for bad in ["https://x", "http://", "http://h:1/base", "not a url"] {
            assert!(ProxyConfig::new(bad, &[]).is_err(), "{bad}");
        }
        assert!(ProxyConfig::new("http://127.0.0.1:8080", &["/a/{b}".into()]).is_ok());
    }

    #[test]
    fn the_path_is_normalized_and_the_query_kept_as_it_came() {
        let uri: Uri = "/x/../%66ile.txt?a=%2e%2E/..&b=//".parse().unwrap();
        assert_eq!(normal_uri(&uri).unwrap().unwrap(), "/file.txt?a=%2e%2E/..&b=//");
        let uri: Uri = "http://h:1//a?q".parse().unwrap();
        assert_eq!(normal_uri(&uri).unwrap().unwrap(), "http://h:1/a?q");
        assert_eq!(normal_uri(&"/file.txt?x=1".parse().unwrap()).unwrap(), None, "already normal");
        let refused = normal_uri(&"/a%2Fb?x".parse().unwrap()).unwrap_err();
        assert_eq!((refused.status, refused.kind.as_str()), (400, "tag:atrion,2026:problem/bad-path"));
    }
}
