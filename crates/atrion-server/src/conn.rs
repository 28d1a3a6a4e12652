//! The accept loop: HTTP/1.1 connections served by hyper, with the limits a server facing
//! hostile clients needs and `axum::serve` does not have.
//!
//! - A **header timeout**: a request head must arrive whole within it, counted from the
//!   connection's start or from the head's first byte (slowloris).
//! - A **keep-alive timeout**: a connection idle between requests is closed after it.
//! - A **cap on open connections** with a **reserve** for health and administration: past
//!   [`ConnLimits::max_connections`], up to [`ConnLimits::reserved`] more connections are
//!   accepted but serve only `/healthz`, `/readyz` and `/v1/admin/*` (anything else gets a
//!   `503` problem with `Retry-After` and `Connection: close`); past both, a connection is
//!   accepted and closed at once. The loop never stops accepting, so the backlog never fills
//!   and a health check always gets an answer.
//! - A **per-peer cap**: a peer address over [`ConnLimits::max_per_peer`] open connections
//!   is closed at once.
//!
//! Every request carries the caller's address (`ConnectInfo<SocketAddr>`), and every
//! connection has `TCP_NODELAY`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, header};
use axum::response::IntoResponse;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::{TowerToHyperService, TowerToHyperServiceFuture};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::problem::{Problem, ProblemKind};

/// Limits of the connections one listener serves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnLimits {
    /// The longest a request head (request line and headers) may take to arrive, from the
    /// connection's start or the head's first byte; past it the connection is closed.
    /// Default 10 s (nginx's `client_header_timeout` is 60 s; a sidecar's callers are near).
    pub header_timeout: Duration,
    /// The longest a connection may stay idle between requests. Default 75 s, as nginx's
    /// `keepalive_timeout`: longer than the idle timeout of common client pools.
    pub keep_alive_timeout: Duration,
    /// The longest an answer may wait for the client to take its bytes (a write that makes
    /// no progress); past it the connection is closed. A client that stops reading (a
    /// dashboard feed never read) gives its connection back. Default 60 s, as nginx's
    /// `send_timeout`.
    pub send_timeout: Duration,
    /// Open connections served in full. Default 4,096.
    pub max_connections: usize,
    /// Connections past `max_connections` that still serve `/healthz`, `/readyz` and
    /// `/v1/admin/*`; past both, a connection is closed at once. Default 64.
    pub reserved: usize,
    /// Open connections one peer address may hold (the reserve included); more are closed
    /// at once. Default 1,024.
    pub max_per_peer: usize,
    /// Hands freed memory back to the system, called on a blocking thread after many
    /// connections closed (half of the peak, and at least [`RELEASE_AFTER`]): the allocator
    /// may otherwise keep the buffers of a flood that has left. The CLI passes glibc's
    /// `malloc_trim`. Default none.
    pub release_memory: Option<fn()>,
}

/// The fewest closed connections that call [`ConnLimits::release_memory`].
pub const RELEASE_AFTER: usize = 128;

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
            max_connections: 4_096,
            reserved: 64,
            max_per_peer: 1_024,
            release_memory: None,
        }
    }
}

impl ConnLimits {
    /// The most connections open at once: the cap and its reserve.
    pub fn hard_cap(&self) -> usize {
        self.max_connections.saturating_add(self.reserved)
    }
}

/// Open connections, in total and per peer address.
struct Slots {
    limits: ConnLimits,
    open: AtomicUsize,
    /// The most open since memory was last released.
    peak: AtomicUsize,
    peers: Mutex<HashMap<IpAddr, usize>>,
}

/// What an accepted connection may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// Every request.
    Full,
    /// Only health and administration (the reserve).
    Reserve,
}

/// One open connection's place; freed when dropped.
struct Slot {
    slots: Arc<Slots>,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let open = self.slots.open.fetch_sub(1, Ordering::Relaxed) - 1;
        self.slots.closed(open);
        let mut peers = self.slots.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = peers.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.peer);
            }
        }
        metrics::gauge!("atrion_connections_open").decrement(1.0);
    }
}

impl Slots {
    /// A connection closed, leaving `open`: after a flood has left, memory goes back.
    fn closed(&self, open: usize) {
        let Some(release) = self.limits.release_memory else { return };
        let peak = self.peak.load(Ordering::Relaxed);
        if peak - open.min(peak) >= RELEASE_AFTER
            && open <= peak / 2
            && self.peak.compare_exchange(peak, open, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            tracing::debug!(peak, open, "connections closed: releasing memory");
            rt.spawn_blocking(release);
        }
    }

    /// A place for a new connection from `peer`, or why there is none.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<(Slot, Admission), &'static str> {
        let open = self.open.load(Ordering::Relaxed);
        if open >= self.limits.hard_cap() {
            return Err("cap");
        }
        {
            let mut peers = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = peers.entry(peer).or_insert(0);
            if *n >= self.limits.max_per_peer {
                return Err("peer");
            }
            *n += 1;
        }
        // Only the accept loop adds: the count cannot pass the cap between load and add.
        self.peak.fetch_max(self.open.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed);
        metrics::gauge!("atrion_connections_open").increment(1.0);
        let admission = if open < self.limits.max_connections { Admission::Full } else { Admission::Reserve };
        Ok((Slot { slots: self.clone(), peer }, admission))
    }
}

/// The accept queue's length asked of the kernel (which caps it at `net.core.somaxconn`).
/// tokio and the standard library ask for 128: a burst of connections (a flood, or many
/// clients starting at once) while the loop is busy overflows it, and the kernel then drops
/// handshakes, health checks' included, or leaves clients holding connections it forgot.
pub const BACKLOG: u32 = 4_096;

/// A listener on `addr` with an accept queue of [`BACKLOG`] (and `SO_REUSEADDR`, as
/// `tokio::net::TcpListener::bind`).
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves `app` on `listener` with `limits` until `shutdown` completes; then stops accepting,
/// lets every connection finish its request in flight, and returns when all are closed.
///
/// Every request carries the caller's address as `ConnectInfo<SocketAddr>`.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: &ConnLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let slots = Arc::new(Slots {
        limits: limits.clone(),
        open: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        peers: Mutex::new(HashMap::new()),
    });
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let epoch = Instant::now();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
        };
        let (slot, admission) = match slots.admit(peer.ip()) {
            Ok(s) => s,
            Err(reason) => {
                // Closed at once: the loop keeps accepting, so the backlog never fills.
                metrics::counter!("atrion_connections_refused_total", "reason" => reason).increment(1);
                tracing::debug!(%peer, reason, "connection refused");
                drop(stream);
                continue;
            }
        };
        tune(&stream);
        let conn = Connection { app: app.clone(), peer, admission, limits: limits.clone(), epoch };
        tracker.spawn(conn.run(stream, slot, stop.clone()));
    }
    drop(listener);
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// An accepted connection's socket options: `TCP_NODELAY`, so that an answer's last
/// segment leaves at once instead of waiting for the client's acknowledgement of the one
/// before (Nagle's algorithm with delayed acknowledgements: up to 40 ms on Linux).
fn tune(stream: &tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY could not be set");
    }
}

/// An accept error: one connection's (it is gone; go on), or the process's (out of file
/// descriptors: wait a little for some to close).
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// One accepted connection and what it needs.
struct Connection {
    app: Router,
    peer: SocketAddr,
    admission: Admission,
    limits: ConnLimits,
    epoch: Instant,
}

impl Connection {
    async fn run(self, stream: tokio::net::TcpStream, slot: Slot, stop: CancellationToken) {
        let clock = Clock {
            epoch: self.epoch,
            header: self.limits.header_timeout,
            idle: self.limits.keep_alive_timeout,
            send: self.limits.send_timeout,
        };
        let watch = Arc::new(Watch::new(clock.after(clock.header)));
        let io = TokioIo::new(Watched { inner: stream, watch: watch.clone(), clock });
        let service = Service {
            app: TowerToHyperService::new(self.app),
            peer: self.peer,
            admission: self.admission,
            watch: watch.clone(),
            clock,
        };
        let conn = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(io, service);
        let mut conn = std::pin::pin!(conn);
        let mut stopping = false;
        loop {
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::trace!(error = %e, "connection ended");
                    }
                    break;
                }
                () = watch.expired(&clock) => {
                    tracing::debug!(peer = %self.peer, "connection timed out (header or keep-alive)");
                    break;
                }
                () = stop.cancelled(), if !stopping => {
                    // Finishes the request in flight, then closes.
                    conn.as_mut().graceful_shutdown();
                    stopping = true;
                }
            }
        }
        drop(slot);
    }
}

/// Milliseconds since the loop started, and the three timeouts.
#[derive(Debug, Clone, Copy)]
struct Clock {
    epoch: Instant,
    header: Duration,
    idle: Duration,
    send: Duration,
}

impl Clock {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn after(&self, d: Duration) -> u64 {
        self.now().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A connection's deadline. While a request is in flight there is none (the request's own
/// time limit bounds it); when the answer is done the keep-alive deadline starts, and the
/// first byte of the next head replaces it with the header deadline.
struct Watch {
    /// When the connection is closed, in [`Clock`] milliseconds; `u64::MAX` for none.
    deadline: AtomicU64,
    /// Requests whose answer is not done yet.
    busy: AtomicU32,
    /// Idle between requests: the next byte read starts a head.
    idle: AtomicBool,
    /// Since when a write has been waiting for the client to take bytes, in [`Clock`]
    /// milliseconds (at least 1); 0 when writes go through.
    stalled: AtomicU64,
}

impl Watch {
    fn new(deadline: u64) -> Self {
        // A new connection waits for its first head: the header deadline runs already.
        Watch {
            deadline: AtomicU64::new(deadline),
            busy: AtomicU32::new(0),
            idle: AtomicBool::new(false),
            stalled: AtomicU64::new(0),
        }
    }

    /// A byte arrived: if the connection was idle, a head has started.
    fn on_read(&self, clock: &Clock) {
        if self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::Relaxed) {
            self.deadline.store(clock.after(clock.header), Ordering::Relaxed);
        }
    }

    /// A head arrived whole: a request is in flight.
    fn on_request(&self) {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.idle.store(false, Ordering::Relaxed);
        self.deadline.store(u64::MAX, Ordering::Relaxed);
    }

    /// An answer is done (sent, or given up).
    fn on_answered(&self, clock: &Clock) {
        if self.busy.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.deadline.store(clock.after(clock.idle), Ordering::Relaxed);
            self.idle.store(true, Ordering::Relaxed);
        }
    }

    /// A write went through (`pending` false) or found the client's window full.
    fn on_write(&self, pending: bool, clock: &Clock) {
        let stalled = self.stalled.load(Ordering::Relaxed);
        if pending && stalled == 0 {
            self.stalled.store(clock.now().max(1), Ordering::Relaxed);
        } else if !pending && stalled != 0 {
            self.stalled.store(0, Ordering::Relaxed);
        }
    }

    /// Completes when the deadline has passed with no request in flight, or when a write
    /// has waited for the client longer than the send timeout.
    async fn expired(&self, clock: &Clock) {
        // While a request is in flight, look again now and then: a cheap timer per connection.
        let recheck = clock.header.min(clock.idle).min(clock.send).max(Duration::from_millis(10));
        let send = u64::try_from(clock.send.as_millis()).unwrap_or(u64::MAX);
        loop {
            let deadline = self.deadline.load(Ordering::Relaxed);
            let now = clock.now();
            if deadline != u64::MAX && now >= deadline {
                return;
            }
            let stalled = self.stalled.load(Ordering::Relaxed);
            if stalled != 0 && now.saturating_sub(stalled) >= send {
                return;
            }
            // A write may start waiting at any time: look again at least every `recheck`.
            let wait = if deadline == u64::MAX { recheck } else { Duration::from_millis(deadline - now).min(recheck) };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The connection's socket, telling its [`Watch`] when bytes arrive.
struct Watched {
    inner: tokio::net::TcpStream,
    watch: Arc<Watch>,
    clock: Clock,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.on_read(&self.clock);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch.on_write(polled.is_pending(), &self.clock);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch.on_write(polled.is_pending(), &self.clock);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router as one connection's hyper service.
struct Service {
    app: TowerToHyperService<Router>,
    peer: SocketAddr,
    admission: Admission,
    watch: Arc<Watch>,
    clock: Clock,
}

/// Whether a path is served from the reserve: health and administration.
fn reserved_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz") || path.starts_with("/v1/admin/")
}

/// `503` for a request over the cap, closing the connection (a slot frees when it closes).
fn over_capacity() -> Response<Body> {
    let mut response = Problem::new(
        ProblemKind::TooManyConnections,
        "the server holds as many connections as it serves; this one serves only health and administration",
    )
    .retry_after(Duration::from_secs(1))
    .into_response();
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, mut request: Request<Incoming>) -> Answer {
        self.watch.on_request();
        let done = Done { watch: self.watch.clone(), clock: self.clock };
        if self.admission == Admission::Reserve && !reserved_path(request.uri().path()) {
            return Answer::Ready { response: Some(over_capacity()), done: Some(done) };
        }
        request.extensions_mut().insert(ConnectInfo(self.peer));
        Answer::Routed { future: hyper::service::Service::call(&self.app, request), done: Some(done) }
    }
}

/// Tells the [`Watch`] that an answer is done, when dropped.
struct Done {
    watch: Arc<Watch>,
    clock: Clock,
}

impl Drop for Done {
    fn drop(&mut self) {
        self.watch.on_answered(&self.clock);
    }
}

pin_project_lite::pin_project! {
    /// The answer to one request: the router's, or the reserve's refusal.
    #[project = AnswerProj]
    pub(crate) enum Answer {
        /// The router answers.
        Routed {
            #[pin]
            future: TowerToHyperServiceFuture<Router, Request<Incoming>>,
            done: Option<Done>,
        },
        /// Answered already.
        Ready { response: Option<Response<Body>>, done: Option<Done> },
    }
}

impl Future for Answer {
    type Output = Result<Response<Tracked>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (response, done) = match self.project() {
            AnswerProj::Routed { future, done } => match future.poll(cx) {
                Poll::Ready(Ok(response)) => (response, done.take()),
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => return Poll::Pending,
            },
            AnswerProj::Ready { response, done } => (response.take().unwrap_or_else(over_capacity), done.take()),
        };
        Poll::Ready(Ok(response.map(|body| Tracked { body, _done: done })))
    }
}

/// A response body that marks its answer done when it is dropped (sent or abandoned):
/// a streamed answer keeps its connection busy until its end.
pub(crate) struct Tracked {
    body: Body,
    _done: Option<Done>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn accepted_connections_get_tcp_nodelay() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        assert!(!stream.nodelay().unwrap(), "off as accepted");
        tune(&stream);
        assert!(stream.nodelay().unwrap());
        drop(client);
    }

    /// A client that asks for an endless answer and takes none of it is closed once the
    /// server's writes have waited past the send timeout: the server drops the answer (an
    /// event the test waits for), and reading then ends, where it would otherwise go on for
    /// ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_takes_no_bytes_is_closed_after_the_send_timeout() {
        /// Tells when the answer's body is dropped: the connection that carried it is gone.
        struct Dropped(Option<tokio::sync::oneshot::Sender<()>>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                if let Some(tx) = self.0.take() {
                    let _ = tx.send(());
                }
            }
        }
        let (tx, dropped) = tokio::sync::oneshot::channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        let endless = move || {
            let guard = Dropped(tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
            async move {
                let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
                let stream = futures_util::stream::repeat_with(move || {
                    let _ = &guard;
                    Ok::<_, std::io::Error>(chunk.clone())
                });
                axum::body::Body::from_stream(stream)
            }
        };
        let app = Router::new().route("/endless", axum::routing::get(endless));
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ConnLimits { send_timeout: Duration::from_millis(200), ..ConnLimits::default() };
        tokio::spawn(async move { serve_router(listener, app, &limits, std::future::pending()).await });

        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(format!("GET /endless HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
        // Take nothing: the server's socket buffers fill, its writes wait, and it gives up.
        // (A generous deadline for the event, not a speed: it comes after 200 ms of waiting.)
        tokio::time::timeout(Duration::from_secs(120), dropped)
            .await
            .expect("the server dropped the answer of a client that took none of it")
            .unwrap();
        let mut taken = 0usize;
        let mut buf = vec![0u8; 256 * 1024];
        let cap = 256 * 1024 * 1024;
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => taken += n,
            }
            assert!(taken < cap, "the connection was never closed: {taken} bytes and counting");
        }
    }
}
