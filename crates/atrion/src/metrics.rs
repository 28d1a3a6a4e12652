//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`).
//!
//! [`MetricsObserver`] is an engine observer: give it to [`AtrionBuilder::observer`] and
//! every decision, transition and update becomes a metric; [`record_sync`] turns the cluster
//! sync's counters into metrics. The application installs the exporter (Prometheus,
//! OpenTelemetry, ...) **before** building the observer: handles are bound to the recorder
//! installed when they are registered.
//!
//! ```
//! use atrion::Atrion;
//! use atrion::metrics::MetricsObserver;
//!
//! // (install a recorder here, e.g. metrics-exporter-prometheus)
//! let atrion = Atrion::builder().observer(MetricsObserver::new(100)).build()?;
//! # Ok::<(), atrion::AtrionError>(())
//! ```
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `atrion_decisions_total` | counter | `route`, `verdict` (`admit`, `shed`), `reason` |
//! | `atrion_transitions_total` | counter | `route`, `from`, `to` |
//! | `atrion_evictions_total` | counter | |
//! | `atrion_route_resistance_ohms` | gauge | `route` |
//! | `atrion_route_scar_ohms` | gauge | `route` |
//! | `atrion_route_mode` | gauge, 1 for the route's mode and 0 for the others | `route`, `mode` |
//! | `atrion_sync_*_total`, `atrion_sync_buffered`, `atrion_sync_degraded` | counters, gauges | |
//!
//! **Route labels are bounded.** A route gets its own `route` label when it is first seen
//! while fewer than `max_routes` routes hold one; every other route is counted under
//! `route="other"` (counters only: a gauge of many routes would mean nothing). A route the
//! engine evicts (idle) gives its label back, so the labelled routes are the live ones that
//! came first. The engine's route bound keeps this observer's memory bounded too.
//!
//! [`AtrionBuilder::observer`]: crate::AtrionBuilder::observer

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::{Arc, OnceLock};

use atrion_core::{Event, Mode, PhysicsObserver, Reason, Verdict};
use metrics::{Counter, Gauge, SharedString, Unit};

use crate::state::SyncStats;

/// The label of the routes past the bound.
pub const OTHER_ROUTE: &str = "other";

/// The modes, in the order of [`RouteMetrics::modes`].
const MODES: [Mode; 4] = [Mode::Bootstrap, Mode::Operational, Mode::HalfOpen, Mode::Open];

/// Slots for decision counters: one per reason the engine gives, one spare for a reason
/// added later.
const REASON_SLOTS: usize = 11;

fn reason_slot(reason: Reason) -> usize {
    match reason {
        Reason::Healthy => 0,
        Reason::Bootstrap => 1,
        Reason::Probe => 2,
        Reason::Keepalive => 3,
        Reason::Open => 4,
        Reason::ProbeQuota => 5,
        Reason::Overloaded => 6,
        Reason::SoftLimit => 7,
        Reason::Throttled => 8,
        Reason::Held => 9,
        _ => 10,
    }
}

/// One label's handles, registered once and then only incremented or set.
struct RouteMetrics {
    label: SharedString,
    /// Whether this is a route's own label (it has gauges) or [`OTHER_ROUTE`].
    own: bool,
    decisions: [OnceLock<Counter>; REASON_SLOTS],
    gauges: OnceLock<RouteGauges>,
}

struct RouteGauges {
    resistance: Gauge,
    scar: Gauge,
    modes: [Gauge; 4],
    last_mode: std::sync::atomic::AtomicU8,
}

impl RouteMetrics {
    fn new(label: SharedString, own: bool) -> Self {
        RouteMetrics { label, own, decisions: Default::default(), gauges: OnceLock::new() }
    }

    fn decided(&self, verdict: Verdict, reason: Reason) {
        let counter = self.decisions[reason_slot(reason)].get_or_init(|| {
            metrics::counter!(
                "atrion_decisions_total",
                "route" => self.label.clone(),
                "verdict" => verdict.as_str(),
                "reason" => reason.as_str(),
            )
        });
        counter.increment(1);
    }

    fn gauges(&self) -> Option<&RouteGauges> {
        if !self.own {
            return None;
        }
        Some(
            self.gauges.get_or_init(|| RouteGauges {
                resistance: metrics::gauge!("atrion_route_resistance_ohms", "route" => self.label.clone()),
                scar: metrics::gauge!("atrion_route_scar_ohms", "route" => self.label.clone()),
                modes: MODES
                    .map(|m| metrics::gauge!("atrion_route_mode", "route" => self.label.clone(), "mode" => m.as_str())),
                last_mode: std::sync::atomic::AtomicU8::new(u8::MAX),
            }),
        )
    }
}

impl RouteGauges {
    fn mode(&self, mode: Mode) {
        let i = MODES.iter().position(|m| *m == mode).unwrap_or(0);
        let before = self.last_mode.swap(i as u8, AcqRel);
        if usize::from(before) != i {
            for (j, g) in self.modes.iter().enumerate() {
                g.set(if j == i { 1.0 } else { 0.0 });
            }
        }
    }
}

/// An engine observer that emits Atrion's metrics through the `metrics` facade, with at most
/// `max_routes` route labels (see the [module](self) docs).
pub struct MetricsObserver {
    max_routes: usize,
    labelled: AtomicUsize,
    routes: papaya::HashMap<Box<str>, Arc<RouteMetrics>>,
    other: Arc<RouteMetrics>,
    evictions: Counter,
}

impl std::fmt::Debug for MetricsObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsObserver")
            .field("max_routes", &self.max_routes)
            .field("labelled", &self.labelled.load(Relaxed))
            .finish()
    }
}

impl MetricsObserver {
    /// An observer giving at most `max_routes` routes their own label. Describes the metrics
    /// to the installed recorder.
    pub fn new(max_routes: usize) -> Self {
        describe();
        MetricsObserver {
            max_routes,
            labelled: AtomicUsize::new(0),
            routes: papaya::HashMap::new(),
            other: Arc::new(RouteMetrics::new(SharedString::const_str(OTHER_ROUTE), false)),
            evictions: metrics::counter!("atrion_evictions_total"),
        }
    }

    /// Routes holding their own label now.
    pub fn labelled_routes(&self) -> usize {
        self.labelled.load(Relaxed)
    }

    fn route(&self, route: &str) -> Arc<RouteMetrics> {
        let map = self.routes.pin();
        if let Some(m) = map.get(route) {
            return m.clone();
        }
        let claimed = self.labelled.fetch_update(AcqRel, Acquire, |n| (n < self.max_routes).then_some(n + 1)).is_ok();
        let metrics = if claimed {
            Arc::new(RouteMetrics::new(SharedString::from(Arc::<str>::from(route)), true))
        } else {
            self.other.clone()
        };
        let kept = map.get_or_insert(route.into(), metrics.clone()).clone();
        if claimed && !Arc::ptr_eq(&kept, &metrics) {
            // Another thread labelled it first: give the claim back.
            self.labelled.fetch_sub(1, AcqRel);
        }
        kept
    }
}

impl PhysicsObserver for MetricsObserver {
    fn on_event(&self, event: &Event<'_>) {
        match *event {
            Event::Decided { route, decision, .. } => self.route(route).decided(decision.verdict, decision.reason),
            Event::Update { route, mode, resistance, scar, .. } => {
                if let Some(g) = self.route(route).gauges() {
                    g.resistance.set(resistance);
                    g.scar.set(scar);
                    g.mode(mode);
                }
            }
            Event::Transition { route, from, to, .. } => {
                let m = self.route(route);
                metrics::counter!(
                    "atrion_transitions_total",
                    "route" => m.label.clone(),
                    "from" => from.as_str(),
                    "to" => to.as_str(),
                )
                .increment(1);
                if let Some(g) = m.gauges() {
                    g.mode(to);
                }
            }
            Event::Evicted { route, .. } => {
                self.evictions.increment(1);
                if let Some(m) = self.routes.pin().remove(route)
                    && m.own
                {
                    self.labelled.fetch_sub(1, AcqRel);
                }
            }
            _ => {}
        }
    }
}

/// Records the cluster sync's counters (from [`Atrion::sync_stats`](crate::Atrion::sync_stats))
/// as `atrion_sync_*` metrics; call it before each scrape or on a timer.
pub fn record_sync(stats: &SyncStats) {
    let counters: [(&'static str, u64); 12] = [
        ("atrion_sync_pulses_total", stats.pulses),
        ("atrion_sync_pushed_total", stats.pushed),
        ("atrion_sync_pulled_total", stats.pulled),
        ("atrion_sync_merges_total", stats.merges),
        ("atrion_sync_full_syncs_total", stats.full_syncs),
        ("atrion_sync_resyncs_total", stats.resyncs),
        ("atrion_sync_store_errors_total", stats.store_errors),
        ("atrion_sync_decode_errors_total", stats.decode_errors),
        ("atrion_sync_kept_local_total", stats.kept_local),
        ("atrion_sync_rejected_total", stats.rejected),
        ("atrion_sync_republished_total", stats.republished),
        ("atrion_sync_buffered", stats.buffered),
    ];
    for (name, value) in counters {
        if name.ends_with("_total") {
            metrics::counter!(name).absolute(value);
        } else {
            metrics::gauge!(name).set(value as f64);
        }
    }
    metrics::gauge!("atrion_sync_degraded").set(f64::from(u8::from(stats.degraded)));
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!("atrion_decisions_total", Unit::Count, "Decisions, by route, verdict and reason.");
    describe_counter!("atrion_transitions_total", Unit::Count, "Mode transitions, by route.");
    describe_counter!("atrion_evictions_total", Unit::Count, "Idle routes dropped to keep the route table bounded.");
    describe_gauge!("atrion_route_resistance_ohms", "A route's resistance after its last report.");
    describe_gauge!("atrion_route_scar_ohms", "A route's scar tissue after its last report.");
    describe_gauge!("atrion_route_mode", "1 for the route's mode, 0 for the others.");
    describe_counter!("atrion_sync_pulses_total", Unit::Count, "Cluster sync pulses run.");
    describe_counter!("atrion_sync_pushed_total", Unit::Count, "Route contributions pushed to the store.");
    describe_counter!("atrion_sync_pulled_total", Unit::Count, "Remote changes applied from the change feed.");
    describe_counter!("atrion_sync_merges_total", Unit::Count, "Cluster aggregates handed to the engine.");
    describe_counter!("atrion_sync_full_syncs_total", Unit::Count, "Full syncs run.");
    describe_counter!(
        "atrion_sync_resyncs_total",
        Unit::Count,
        "Full syncs forced by lost events or a returning store."
    );
    describe_counter!("atrion_sync_store_errors_total", Unit::Count, "Store operations that failed.");
    describe_counter!("atrion_sync_decode_errors_total", Unit::Count, "Values under our keys that did not decode.");
    describe_counter!("atrion_sync_kept_local_total", Unit::Count, "Contributions kept local (route id too long).");
    describe_counter!("atrion_sync_rejected_total", Unit::Count, "Contributions the store refused.");
    describe_counter!(
        "atrion_sync_republished_total",
        Unit::Count,
        "Contributions pushed again after a store lost them."
    );
    describe_gauge!("atrion_sync_buffered", "Contributions waiting to be pushed.");
    describe_gauge!("atrion_sync_degraded", "1 while the store is away and decisions use local state only.");
}

#[cfg(test)]
mod tests {
    use super::*;
    use atrion_core::{Engine, EngineLimits, PhysicsConfig, Priority, Telemetry, Timestamp};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    /// A metric as the test reads it: name, labels, value.
    type Row = (String, Vec<(String, String)>, DebugValue);

    fn counter_value(snapshot: &[Row], name: &str, route: &str) -> u64 {
        snapshot
            .iter()
            .filter(|(n, labels, _)| n == name && labels.iter().any(|(k, v)| k == "route" && v == route))
            .map(|(_, _, v)| match v {
                DebugValue::Counter(c) => *c,
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn decisions_are_counted_with_bounded_route_labels() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let engine =
                Engine::with_observer(PhysicsConfig::default(), EngineLimits::default(), MetricsObserver::new(2))
                    .unwrap();
            let now = Timestamp::from_millis(1);
            for route in ["a", "b", "c", "d"] {
                for _ in 0..3 {
                    engine.decide(route, now, Priority::Normal);
                }
                engine.report(route, Telemetry::outcome(10.0, true, 0.1).unwrap(), now);
            }
            assert_eq!(engine.observer().labelled_routes(), 2);
        });
        let snapshot: Vec<Row> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(k, _, _, v)| {
                let key = k.key();
                let labels = key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
                (key.name().to_owned(), labels, v)
            })
            .collect();
        assert_eq!(counter_value(&snapshot, "atrion_decisions_total", "a"), 3);
        assert_eq!(counter_value(&snapshot, "atrion_decisions_total", "b"), 3);
        assert_eq!(counter_value(&snapshot, "atrion_decisions_total", "c"), 0);
        assert_eq!(counter_value(&snapshot, "atrion_decisions_total", OTHER_ROUTE), 6);
        let gauges_of = |route: &str| {
            snapshot
                .iter()
                .filter(|(n, labels, _)| n == "atrion_route_resistance_ohms" && labels.iter().any(|(_, v)| v == route))
                .count()
        };
        assert_eq!((gauges_of("a"), gauges_of(OTHER_ROUTE)), (1, 0));
    }
}
