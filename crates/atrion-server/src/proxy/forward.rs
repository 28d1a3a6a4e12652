//! The forwarding itself: a request sent on to the upstream, its body and the answer's
//! streamed, hop-by-hop headers left on their hop; with no Atrion in front of it, the plain
//! reverse proxy that proxy mode's cost is measured against ([`forwarding_router`]).
//!
//! Upstream connections are kept alive and reused, as nginx's `keepalive`: an idle one waits
//! in a pool (last in, first out, at most [`MAX_IDLE`], none older than [`IDLE_TIMEOUT`]),
//! and every one has `TCP_NODELAY`. A connection is driven by the request that holds it, in
//! that request's own task (while its answer's body streams too), not by a task of its own:
//! a forwarded request costs no wake-up of another task, and no lookup in a pool keyed by
//! host. A request that a pooled connection could not even start (the upstream had closed
//! it) is sent again on a new connection; anything else the upstream fails is a `502`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::ProxyConfig;
use crate::problem::{Problem, ProblemKind};

/// The most idle upstream connections kept for reuse.
pub const MAX_IDLE: usize = 1_024;

/// How long an idle upstream connection is kept (the legacy hyper client's default; nginx's
/// `keepalive_timeout` for upstreams is 60 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

type Conn = http1::Connection<TokioIo<tokio::net::TcpStream>, Body>;

/// One upstream connection: the handle requests are sent with, and the connection itself,
/// which someone must poll for anything to move.
struct Upstream {
    sender: http1::SendRequest<Body>,
    /// `None` once it has completed (closed).
    conn: Option<Conn>,
}

impl Upstream {
    /// Moves the connection along; `false` when it has closed.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(conn) = self.conn.as_mut() else { return false };
        match Pin::new(conn).poll(cx) {
            Poll::Pending => true,
            Poll::Ready(result) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "an upstream connection ended");
                }
                self.conn = None;
                false
            }
        }
    }

    /// Whether it can take a request now (driven once first, so that a close the upstream
    /// sent while it was idle is seen).
    fn usable(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx) && self.sender.is_ready()
    }
}

/// The forwarding's state, shared by every request.
pub(super) struct Proxy {
    host: HeaderValue,
    /// Where connections go: the upstream's host and port.
    target: (String, u16),
    idle: Mutex<Vec<(Upstream, Instant)>>,
}

impl Proxy {
    fn new(config: &ProxyConfig) -> Proxy {
        let authority = config.upstream.authority().cloned().unwrap_or_else(|| Authority::from_static("127.0.0.1"));
        let host = HeaderValue::from_str(authority.as_str()).unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        let name = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let target = (name, authority.port_u16().unwrap_or(80));
        Proxy { host, target, idle: Mutex::new(Vec::new()) }
    }

    /// A pooled connection that can take a request now, if any.
    fn pooled(&self, cx: &mut Context<'_>) -> Option<Upstream> {
        loop {
            let (mut up, _) = {
                let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                // The oldest are first: drop those kept too long.
                let expired = idle.iter().take_while(|(_, since)| since.elapsed() >= IDLE_TIMEOUT).count();
                if expired > 0 {
                    idle.drain(..expired);
                }
                idle.pop()?
            };
            // Outside the lock: this may read from the socket (a close the upstream sent).
            if up.usable(cx) {
                return Some(up);
            }
        }
    }

    /// A connection given back after its answer ended: kept if it can take another request.
    fn give_back(&self, mut up: Upstream) {
        let mut cx = Context::from_waker(Waker::noop());
        if !up.usable(&mut cx) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push((up, Instant::now()));
        }
    }

    /// A new connection, with `TCP_NODELAY`.
    async fn connect(&self) -> Result<Upstream, Box<dyn std::error::Error + Send + Sync>> {
        let stream = tokio::net::TcpStream::connect((self.target.0.as_str(), self.target.1)).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(Upstream { sender, conn: Some(conn) })
    }
}

/// The forwarding service: every request goes to the upstream.
#[derive(Clone)]
pub(super) struct Forward {
    proxy: Arc<Proxy>,
}

impl Forward {
    pub(super) fn new(config: &ProxyConfig) -> Forward {
        Forward { proxy: Arc::new(Proxy::new(config)) }
    }
}

impl tower::Service<Request> for Forward {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let proxy = self.proxy.clone();
        Box::pin(async move { Ok(forward(proxy, request).await) })
    }
}

/// The same forwarding without Atrion: a plain reverse proxy on the same stack, what
/// proxy mode's cost is measured against.
pub fn forwarding_router(config: &ProxyConfig) -> Router {
    Router::new().fallback_service(Forward::new(config))
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

const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // The common case: no `Connection` header naming others, nothing to collect.
    let named: Vec<HeaderName> = match headers.get(header::CONNECTION) {
        None => Vec::new(),
        Some(_) => headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect(),
    };
    for name in HOP_BY_HOP.iter().chain(&named) {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
}

fn unavailable() -> Response {
    Problem::new(ProblemKind::UpstreamUnavailable, "the proxied service did not answer").into_response()
}

/// The request target in origin form (`/path?query`), which the low-level client writes as
/// the URI's own text. An absolute-form target with nothing after its authority (`h://b#`,
/// `http://host`) has an empty path-and-query, which alone would be written as an empty
/// request target (found by the fuzz corpus: `GET  HTTP/1.1`): it goes out as `/`.
fn origin_form(uri: &Uri) -> Uri {
    if let Some(p) = uri.path_and_query() {
        let origin = Uri::from(p.clone());
        if !origin.path().is_empty() {
            return origin;
        }
    }
    let target = match uri.query() {
        Some(q) => format!("/?{q}"),
        None => "/".to_owned(),
    };
    Uri::try_from(target).unwrap_or_else(|_| Uri::from_static("/"))
}

async fn forward(proxy: Arc<Proxy>, mut request: Request) -> Response {
    // In origin form (`/path?query`), as a client that is not talking to a proxy sends it;
    // the upstream is named by `Host`.
    *request.uri_mut() = origin_form(request.uri());
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    if let Some(original) = headers.remove(header::HOST) {
        headers.insert(X_FORWARDED_HOST, original);
    }
    headers.insert(header::HOST, proxy.host.clone());
    let mut pooled = true;
    loop {
        let reused = if pooled { std::future::poll_fn(|cx| Poll::Ready(proxy.pooled(cx))).await } else { None };
        let fresh = reused.is_none();
        let mut up = match reused {
            Some(up) => up,
            None => match proxy.connect().await {
                Ok(up) => up,
                Err(e) => {
                    tracing::debug!(error = %e, "the upstream cannot be reached");
                    return unavailable();
                }
            },
        };
        let mut sending = std::pin::pin!(up.sender.try_send_request(request));
        // The connection is driven here, by this request, until its answer's head is in.
        let sent = std::future::poll_fn(|cx| {
            up.drive(cx);
            sending.as_mut().poll(cx)
        })
        .await;
        match sent {
            Ok(response) => {
                let mut response = response.map(|inner| Body::new(UpstreamBody { inner, up: Some(up), proxy }));
                strip_hop_by_hop(response.headers_mut());
                return response;
            }
            Err(mut e) => match e.take_message() {
                // Not sent at all: a pooled connection the upstream had closed. Once more, anew.
                Some(again) if !fresh => {
                    request = again;
                    pooled = false;
                }
                _ => {
                    tracing::debug!(error = %e.error(), "the upstream failed the request");
                    return unavailable();
                }
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The upstream's answer's body, which drives its connection while it streams, and gives
    /// the connection back to the pool at its end.
    struct UpstreamBody {
        #[pin]
        inner: Incoming,
        up: Option<Upstream>,
        proxy: Arc<Proxy>,
    }

    impl PinnedDrop for UpstreamBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // An answer without a body may never be polled; one dropped half-way leaves its
            // connection unusable (dropped, so closed).
            let ended = http_body::Body::is_end_stream(&*this.inner);
            match this.up.take() {
                Some(up) if ended => this.proxy.give_back(up),
                _ => {}
            }
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        if let Some(up) = this.up.as_mut() {
            up.drive(cx);
        }
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            if let Some(up) = this.up.take() {
                this.proxy.give_back(up);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_goes_upstream_in_origin_form_never_empty() {
        // What the client writes on the request line: the URI's text.
        let origin = |target: &[u8]| origin_form(&Uri::try_from(target).unwrap()).to_string();
        assert_eq!(origin(b"/users/7?x=1"), "/users/7?x=1");
        assert_eq!(origin(b"http://host:80/a?b"), "/a?b");
        // Found by the fuzz corpus: nothing after the authority went out as `GET  HTTP/1.1`.
        assert_eq!(origin(b"h://b#"), "/");
        assert_eq!(origin(b"http://host"), "/");
        assert_eq!(origin(b"h://bb?"), "/?");
        assert_eq!(origin(b"http://host?q=1"), "/?q=1");
    }

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

    #[tokio::test]
    async fn upstream_connections_have_tcp_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = ProxyConfig::new(&format!("http://{}", listener.local_addr().unwrap()), &[]).unwrap();
        let accepted = tokio::spawn(async move { listener.accept().await.unwrap().0 });
        let mut up = Proxy::new(&config).connect().await.unwrap();
        let stream = up.conn.take().unwrap().into_parts().io.into_inner();
        assert!(stream.nodelay().unwrap(), "TCP_NODELAY on the upstream socket");
        drop(accepted.await.unwrap());
    }
}
