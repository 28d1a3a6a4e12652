//! The sidecar's engine observer: decision counts per route (for `/v1/routes`) and, when
//! asked, Atrion's metrics (`atrion::metrics::MetricsObserver`).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use atrion::metrics::MetricsObserver;
use atrion::{Event, PhysicsObserver, Verdict};
use serde::Serialize;

/// Decisions on one route since the sidecar started (or since the route was last evicted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DecisionCounts {
    /// Requests admitted.
    pub admitted: u64,
    /// Requests shed.
    pub shed: u64,
}

#[derive(Default)]
struct Counts {
    admitted: AtomicU64,
    shed: AtomicU64,
}

/// The observer the sidecar's [`Atrion`](atrion::Atrion) runs: build it with
/// [`SidecarObserver::new`] and give it to `Atrion::builder().observer(..)`.
///
/// Its memory is bounded by the engine's route bound: an evicted route's counts go with it.
#[derive(Default)]
pub struct SidecarObserver {
    counts: papaya::HashMap<Box<str>, Arc<Counts>>,
    metrics: Option<MetricsObserver>,
    inner: Option<Box<dyn PhysicsObserver>>,
}

impl std::fmt::Debug for SidecarObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarObserver").field("routes", &self.counts.len()).field("metrics", &self.metrics).finish()
    }
}

impl SidecarObserver {
    /// Counts decisions; emits no metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also emits Atrion's metrics through the `metrics` facade, with at most
    /// `max_route_labels` route labels (install the recorder first).
    pub fn with_metrics(mut self, max_route_labels: usize) -> Self {
        self.metrics = Some(MetricsObserver::new(max_route_labels));
        self
    }

    /// Also forwards every event to `inner` (a Rust service's own observer).
    pub fn with_inner(mut self, inner: impl PhysicsObserver + 'static) -> Self {
        self.inner = Some(Box::new(inner));
        self
    }

    /// The decisions on `route` so far.
    pub fn counts(&self, route: &str) -> DecisionCounts {
        self.counts.pin().get(route).map_or_else(DecisionCounts::default, |c| DecisionCounts {
            admitted: c.admitted.load(Relaxed),
            shed: c.shed.load(Relaxed),
        })
    }
}

impl PhysicsObserver for SidecarObserver {
    fn on_event(&self, event: &Event<'_>) {
        match *event {
            Event::Decided { route, decision, .. } => {
                let map = self.counts.pin();
                let counts = match map.get(route) {
                    Some(c) => c,
                    None => map.get_or_insert_with(route.into(), Arc::default),
                };
                match decision.verdict {
                    Verdict::Admit => counts.admitted.fetch_add(1, Relaxed),
                    Verdict::Shed => counts.shed.fetch_add(1, Relaxed),
                };
            }
            Event::Evicted { route, .. } => {
                self.counts.pin().remove(route);
            }
            // In the span of the request that caused it, when there is one.
            Event::Transition { route, from, to, resistance, .. } => {
                tracing::info!(
                    target: "atrion::transition",
                    route,
                    from = from.as_str(),
                    to = to.as_str(),
                    resistance,
                    "mode transition"
                );
            }
            _ => {}
        }
        if let Some(m) = &self.metrics {
            m.on_event(event);
        }
        if let Some(inner) = &self.inner {
            inner.on_event(event);
        }
    }
}
