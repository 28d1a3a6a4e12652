//! The forwarding itself: a request sent on to the upstream, its body and the answer's
//! streamed, hop-by-hop headers left on their hop; with no Atrion in front of it, the plain
//! reverse proxy that proxy mode's cost is measured against ([`forwarding_router`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::uri::{Authority, PathAndQuery, Scheme};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::ProxyConfig;
use crate::problem::{Problem, ProblemKind};

struct Proxy {
    authority: Authority,
    host: HeaderValue,
    client: Client<HttpConnector, Body>,
}

/// The same forwarding without Atrion: a plain reverse proxy on the same stack, what
/// proxy mode's cost is measured against.
pub fn forwarding_router(config: &ProxyConfig) -> Router {
    let authority = config.upstream.authority().cloned().unwrap_or_else(|| Authority::from_static("127.0.0.1"));
    let host = HeaderValue::from_str(authority.as_str()).unwrap_or_else(|_| HeaderValue::from_static("localhost"));
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let proxy = Arc::new(Proxy { authority, host, client: Client::builder(TokioExecutor::new()).build(connector) });
    Router::new().fallback(forward).with_state(proxy)
}

/// Hop-by-hop headers: meaningful for one connection only, never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
}

async fn forward(State(proxy): State<Arc<Proxy>>, mut request: Request) -> Response {
    let path = request.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let uri = Uri::builder().scheme(Scheme::HTTP).authority(proxy.authority.clone()).path_and_query(path).build();
    let Ok(uri) = uri else {
        return Problem::new(ProblemKind::BadTarget, "").into_response();
    };
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    if let Some(original) = headers.remove(header::HOST) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), original);
    }
    headers.insert(header::HOST, proxy.host.clone());
    match proxy.client.request(request).await {
        Ok(response) => {
            let mut response = response.map(Body::new);
            strip_hop_by_hop(response.headers_mut());
            response
        }
        Err(e) => {
            tracing::debug!(error = %e, "the upstream cannot be reached");
            Problem::new(ProblemKind::UpstreamUnavailable, "the proxied service did not answer").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-secret-hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept"]);
    }
}
