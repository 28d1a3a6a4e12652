//! The live feed's wire side: server-sent events as ready-made frames shared by every open
//! page, the cap on open pages, and the rule for a page that falls behind.
//!
//! A frame is serialized once into [`Bytes`]; each page gets a clone of that handle (a
//! reference count), so a thousand pages cost one serialization and one copy in memory.
//! A page more than [`BEHIND`] updates behind is dropped rather than buffered: what the
//! server holds for a slow page is bounded by the shared frames, whatever the page does.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::problem::{Problem, ProblemKind};

/// How many updates a page may fall behind before it is dropped (it reconnects, and starts
/// again from a full update). The updates kept for it are the ones every page shares.
pub(super) const BEHIND: usize = 8;

/// A comment sent when nothing else was, so that proxies and browsers keep the feed open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a page refused for want of room is asked to wait.
const BUSY_RETRY_S: u64 = 5;

/// The reconnection delay a browser's `EventSource` uses (ms), sent first.
const RETRY: &[u8] = b"retry: 1000\n\n";

/// `value` as one `update` event, ready to write: `event: update\ndata: {json}\n\n`.
/// Compact JSON has no raw newline (strings escape theirs), so it is a single `data` line.
pub(super) fn frame(value: &impl Serialize) -> Bytes {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(b"event: update\ndata: ");
    if serde_json::to_writer(&mut out, value).is_err() {
        out.truncate(b"event: update\ndata: ".len());
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// One place among the open feeds, given back when the feed ends.
pub(super) struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A place, unless `max` feeds are open.
    pub(super) fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Slot(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `503` with `Retry-After`: every place among the feeds is taken.
pub(super) fn busy(max: usize) -> Response {
    Problem::new(ProblemKind::DashboardBusy, format!("this server serves at most {max} feeds at once; try again later"))
        .retry_after(Duration::from_secs(BUSY_RETRY_S))
        .into_response()
}

/// What a feed holds while open.
struct Open {
    ticks: broadcast::Receiver<Bytes>,
    closed: watch::Receiver<bool>,
    _slot: Slot,
}

/// The feed's response: the retry delay, `first` (the full update), then each update as it
/// comes, until the dashboard closes or the page falls behind.
pub(super) fn response(
    closed: watch::Receiver<bool>,
    ticks: broadcast::Receiver<Bytes>,
    first: Bytes,
    slot: Slot,
) -> Response {
    let open = Open { ticks, closed, _slot: slot };
    let head = futures_util::stream::iter([Bytes::from_static(RETRY), first]);
    let rest = futures_util::stream::unfold(open, |mut open| async move {
        if *open.closed.borrow() {
            return None;
        }
        let next = tokio::select! {
            r = open.ticks.recv() => match r {
                Ok(frame) => frame,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(behind = n, "a dashboard feed fell behind: dropped");
                    return None;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            () = super::closing(&mut open.closed) => return None,
            () = tokio::time::sleep(KEEP_ALIVE) => Bytes::from_static(b":\n\n"),
        };
        Some((next, open))
    });
    let body = Body::from_stream(head.chain(rest).map(Ok::<_, Infallible>));
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_one_event_of_one_data_line() {
        let f = frame(&serde_json::json!({"route": "a\nb", "n": 1}));
        let text = std::str::from_utf8(&f).unwrap();
        assert!(text.starts_with("event: update\ndata: {") && text.ends_with("}\n\n"), "{text}");
        assert_eq!(text.matches('\n').count(), 3, "{text}");
    }

    #[test]
    fn slots_stop_at_the_cap_and_come_back_when_dropped() {
        let open = Arc::new(AtomicUsize::new(0));
        let a = Slot::take(&open, 2).unwrap();
        let _b = Slot::take(&open, 2).unwrap();
        assert!(Slot::take(&open, 2).is_none());
        drop(a);
        assert!(Slot::take(&open, 2).is_some());
    }

    /// The feed's body as frames, until it ends or has nothing ready.
    async fn frames(body: &mut Body) -> (Vec<Bytes>, bool) {
        use http_body_util::BodyExt;
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_millis(10), body.frame()).await {
                Ok(Some(f)) => out.push(f.unwrap().into_data().unwrap()),
                Ok(None) => return (out, true),
                Err(_) => return (out, false),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_feed_that_falls_behind_ends_after_what_it_was_sent_and_gives_its_place_back() {
        let (tx, rx) = broadcast::channel(BEHIND);
        let (_close, closed) = watch::channel(false);
        let open = Arc::new(AtomicUsize::new(0));
        let slot = Slot::take(&open, 1).unwrap();
        let mut body = response(closed, rx, Bytes::from_static(b"full"), slot).into_body();
        let (got, ended) = frames(&mut body).await;
        assert_eq!(got, [Bytes::from_static(RETRY), Bytes::from_static(b"full")]);
        assert!(!ended);
        tx.send(Bytes::from_static(b"one")).unwrap();
        assert_eq!(frames(&mut body).await, (vec![Bytes::from_static(b"one")], false), "a page that keeps up");
        // It stops reading while more updates come than are kept for it.
        for _ in 0..=BEHIND {
            tx.send(Bytes::from_static(b"later")).unwrap();
        }
        assert_eq!(frames(&mut body).await, (vec![], true), "dropped, not sent a backlog");
        drop(body);
        assert_eq!(open.load(Ordering::Acquire), 0, "its place is free again");
    }
}
