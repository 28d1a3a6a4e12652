//! The sidecar's engine observer: decision counts per route and per reason, the latest
//! decisions and mode transitions (for `/v1/routes` and the dashboard) and, when asked,
//! Atrion's metrics (`atrion::metrics::MetricsObserver`).

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex};

use atrion::metrics::MetricsObserver;
use atrion::{Decision, Event, Mode, PhysicsObserver, Reason, Timestamp, Verdict};
use serde::Serialize;

/// How many of a route's latest decisions are kept.
pub const RECENT_DECISIONS: usize = 16;

/// How many of a route's latest mode transitions are kept.
pub const RECENT_TRANSITIONS: usize = 32;

/// Decisions on one route since the sidecar started (or since the route was last evicted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DecisionCounts {
    /// Requests admitted.
    pub admitted: u64,
    /// Requests shed.
    pub shed: u64,
}

/// One of a route's latest decisions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecentDecision {
    /// When (the engine's clock).
    pub at: Timestamp,
    /// Admit or shed.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// The route's mode then.
    pub mode: Mode,
    /// The resistance it was made against (ohms, as `f32`).
    pub resistance: f32,
}

/// One of a route's mode transitions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    /// When (the engine's clock).
    pub at: Timestamp,
    /// The mode before.
    pub from: Mode,
    /// The mode after.
    pub to: Mode,
    /// The resistance that caused it (ohms).
    pub resistance: f64,
}

#[derive(Default)]
struct Counts {
    admitted: AtomicU64,
    shed: AtomicU64,
    /// Sheds by reason.
    shed_by: [AtomicU64; Reason::ALL.len()],
    /// The latest decisions, each packed in one word (`pack`), with its resistance beside
    /// it: written without a lock on the decision path (a reader may see a decision with
    /// its neighbour's resistance while both are written; it is a display).
    recent: [AtomicU64; RECENT_DECISIONS],
    recent_resistance: [AtomicU32; RECENT_DECISIONS],
    next: AtomicU32,
    /// Transitions are rare (a few per minute at most): a lock is fine there.
    transitions: Mutex<VecDeque<Transition>>,
}

/// A decision in one word: milliseconds of the engine's clock in the high 48 bits, then
/// the reason, the mode and the verdict; 0 is an empty slot (at is at least 1).
fn pack(at: Timestamp, d: &Decision) -> u64 {
    let ms = (at.as_nanos() / 1_000_000).clamp(1, (1 << 48) - 1);
    (ms << 16) | ((d.reason.index() as u64) << 8) | (u64::from(d.mode as u8) << 1) | u64::from(d.is_admitted())
}

fn unpack(word: u64, resistance: f32) -> Option<RecentDecision> {
    let ms = word >> 16;
    let reason = *Reason::ALL.get(((word >> 8) & 0xff) as usize)?;
    (ms > 0).then(|| RecentDecision {
        at: Timestamp::from_nanos(ms * 1_000_000),
        verdict: if word & 1 == 1 { Verdict::Admit } else { Verdict::Shed },
        reason,
        mode: Mode::from_u8(((word >> 1) & 0x7f) as u8),
        resistance,
    })
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

    /// As [`SidecarObserver::with_metrics`], with a metrics observer of the caller's making
    /// (e.g. told the exporter's idle timeout).
    pub fn with_metrics_observer(mut self, metrics: MetricsObserver) -> Self {
        self.metrics = Some(metrics);
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

    /// The requests shed on `route` so far by reason, indexed as [`Reason::ALL`].
    pub fn shed_by_reason(&self, route: &str) -> [u64; Reason::ALL.len()] {
        self.counts.pin().get(route).map_or([0; Reason::ALL.len()], |c| c.shed_by.each_ref().map(|r| r.load(Relaxed)))
    }

    /// The latest decisions on `route`, newest first.
    pub fn recent(&self, route: &str) -> Vec<RecentDecision> {
        let map = self.counts.pin();
        let Some(c) = map.get(route) else { return Vec::new() };
        let next = c.next.load(Relaxed) as usize;
        let mut out: Vec<RecentDecision> = (1..=RECENT_DECISIONS)
            .filter_map(|back| {
                let i = (next + RECENT_DECISIONS - back) % RECENT_DECISIONS;
                unpack(c.recent[i].load(Relaxed), f32::from_bits(c.recent_resistance[i].load(Relaxed)))
            })
            .collect();
        out.sort_by_key(|d| std::cmp::Reverse(d.at));
        out
    }

    /// The latest mode transitions of `route`, oldest first.
    pub fn transitions(&self, route: &str) -> Vec<Transition> {
        self.counts.pin().get(route).map_or_else(Vec::new, |c| c.log().iter().copied().collect())
    }

    /// The latest mode transition of `route`, if one was seen.
    pub fn last_transition(&self, route: &str) -> Option<Transition> {
        let map = self.counts.pin();
        let c = map.get(route)?;
        c.log().back().copied()
    }

    fn with_counts(&self, route: &str, f: impl FnOnce(&Counts)) {
        let map = self.counts.pin();
        match map.get(route) {
            Some(c) => f(c),
            None => f(map.get_or_insert_with(route.into(), Arc::default)),
        }
    }

    /// Counts a decision made outside the engine (a ban, which sheds before the physics
    /// is asked), on a route the engine tracks.
    pub fn count_outside(&self, route: &str, at: Timestamp, decision: &Decision) {
        if let Some(c) = self.counts.pin().get(route) {
            c.record(at, decision);
        }
    }
}

impl Counts {
    fn record(&self, at: Timestamp, d: &Decision) {
        match d.verdict {
            Verdict::Admit => self.admitted.fetch_add(1, Relaxed),
            Verdict::Shed => {
                self.shed_by[d.reason.index()].fetch_add(1, Relaxed);
                self.shed.fetch_add(1, Relaxed)
            }
        };
        let slot = self.next.fetch_add(1, Relaxed) as usize % RECENT_DECISIONS;
        self.recent_resistance[slot].store((d.resistance as f32).to_bits(), Relaxed);
        self.recent[slot].store(pack(at, d), Relaxed);
    }

    /// The transitions (a panic while holding them leaves them whole: plain pushes and pops).
    fn log(&self) -> std::sync::MutexGuard<'_, VecDeque<Transition>> {
        self.transitions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn transition(&self, t: Transition) {
        let mut log = self.log();
        if log.len() == RECENT_TRANSITIONS {
            log.pop_front();
        }
        log.push_back(t);
    }
}

impl PhysicsObserver for SidecarObserver {
    fn on_event(&self, event: &Event<'_>) {
        match *event {
            Event::Decided { route, at, decision, .. } => {
                self.with_counts(route, |c| c.record(at, &decision));
            }
            Event::Evicted { route, .. } => {
                self.counts.pin().remove(route);
            }
            // In the span of the request that caused it, when there is one.
            Event::Transition { route, at, from, to, resistance } => {
                self.with_counts(route, |c| c.transition(Transition { at, from, to, resistance }));
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

#[cfg(test)]
mod tests {
    use super::*;
    use atrion::Priority;

    fn decided(o: &SidecarObserver, route: &str, ms: u64, admit: bool) {
        let decision = Decision {
            verdict: if admit { Verdict::Admit } else { Verdict::Shed },
            reason: if admit { Reason::Healthy } else { Reason::Open },
            mode: if admit { Mode::Operational } else { Mode::Open },
            resistance: ms as f64,
            retry_after: None,
        };
        let at = Timestamp::from_nanos(ms * 1_000_000);
        o.on_event(&Event::Decided { route, at, priority: Priority::Normal, decision });
    }

    #[test]
    fn the_ring_keeps_the_latest_decisions_newest_first_and_counts_sheds_by_reason() {
        let o = SidecarObserver::new();
        for ms in 1..=40 {
            decided(&o, "r", ms, ms % 4 != 0);
        }
        let recent = o.recent("r");
        assert_eq!(recent.len(), RECENT_DECISIONS);
        let times: Vec<u64> = recent.iter().map(|d| d.at.as_nanos() / 1_000_000).collect();
        assert_eq!(times, (25..=40).rev().collect::<Vec<_>>(), "the last 16, newest first");
        for d in &recent {
            let ms = d.at.as_nanos() / 1_000_000;
            let shed = ms % 4 == 0;
            assert_eq!(d.verdict, if shed { Verdict::Shed } else { Verdict::Admit }, "{d:?}");
            assert_eq!(
                (d.reason, d.mode),
                if shed { (Reason::Open, Mode::Open) } else { (Reason::Healthy, Mode::Operational) }
            );
            assert_eq!(d.resistance, ms as f32, "each decision with its own resistance");
        }
        assert_eq!(o.counts("r"), DecisionCounts { admitted: 30, shed: 10 });
        let by = o.shed_by_reason("r");
        assert_eq!(by[Reason::Open.index()], 10);
        assert_eq!(by.iter().sum::<u64>(), 10, "admits are not counted by reason");
        assert!(o.recent("other").is_empty());
    }

    #[test]
    fn transitions_are_kept_oldest_first_up_to_their_bound() {
        let o = SidecarObserver::new();
        for i in 0..(RECENT_TRANSITIONS as u64 + 5) {
            let (from, to) = if i % 2 == 0 { (Mode::Operational, Mode::Open) } else { (Mode::Open, Mode::Operational) };
            let at = Timestamp::from_nanos((i + 1) * 1_000_000);
            o.on_event(&Event::Transition { route: "r", at, from, to, resistance: 1.0 });
        }
        let t = o.transitions("r");
        assert_eq!(t.len(), RECENT_TRANSITIONS);
        assert_eq!(t[0].at, Timestamp::from_nanos(6 * 1_000_000), "the oldest kept");
        assert!(t.windows(2).all(|w| w[0].at < w[1].at));
        assert_eq!(o.last_transition("r"), t.last().copied(), "the newest");
        assert_eq!(o.last_transition("other"), None);
    }
}
