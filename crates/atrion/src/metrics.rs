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
//! | `atrion_leases_active` | gauge: live task leases, every route | |
//! | `atrion_route_leases_active` | gauge: the route's live task leases | `route` |
//! | `atrion_leases_ended_total` | counter | `route`, `outcome` (`completed`, `failed`, `cancelled`, `max_duration`, `missed_heartbeat`, `shutdown`) |
//! | `atrion_lease_expirations_total` | counter: leases that overran or missed their heartbeats (reported as failures) | `route`, `reason` (`max_duration`, `missed_heartbeat`) |
//! | `atrion_lease_aborts_total` | counter: abort signals fired (expirations and shutdown) | `route`, `reason` |
//! | `atrion_sync_*_total`, `atrion_sync_buffered`, `atrion_sync_degraded` | counters, gauges | |
//!
//! **Route labels are bounded: the busiest `max_routes` routes have their own.** Every route's
//! decisions are counted; while fewer than `max_routes` routes hold a label, a route gets one
//! at its first decision. Once they are all taken, a route without a label that has made a
//! quarter more decisions than the least busy labelled route takes that one's place: it is
//! *promoted* into its own series (which counts from then on) and the other is *demoted*
//! (its series stops growing, its gauges become NaN). Everything a route decides without a
//! label is counted under `route="other"` (counters only: a gauge of many routes would mean
//! nothing). So each series only grows, and the series of all labels and `other` add up to
//! every decision. A route the engine evicts (idle) gives its label back. The engine's route
//! bound keeps this observer's memory bounded too.
//!
//! **Series of routes that lost their label go.** The `metrics` facade cannot remove a
//! series, but an exporter can drop the ones that stopped changing (the Prometheus
//! exporter's `idle_timeout`). [`RouteSplit`] sends the route-labelled metrics to a recorder
//! of their own, so that only they get such a timeout, and
//! [`MetricsObserver::with_idle_timeout`] tells the observer that timeout: a route whose
//! labelled series have not moved for half of it registers them again on its next event (a
//! series dropped meanwhile comes back from zero, as a counter reset). So the route labels an
//! exporter shows are the labelled routes, plus those that lost their label within the last
//! timeout. Untracked decisions ([`Reason::Untracked`]) count under the route
//! [`UNTRACKED_ROUTE`](atrion_core::UNTRACKED_ROUTE).
//!
//! [`AtrionBuilder::observer`]: crate::AtrionBuilder::observer

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use atrion_core::{Event, LeaseOutcome, Mode, PhysicsObserver, Reason, Timestamp, Verdict};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

use crate::state::SyncStats;

/// The label of the routes past the bound.
pub const OTHER_ROUTE: &str = "other";

/// The modes, in the order of [`RouteMetrics::modes`].
const MODES: [Mode; 4] = [Mode::Bootstrap, Mode::Operational, Mode::HalfOpen, Mode::Open];

/// Slots for decision counters: one per reason the engine gives, one spare for a reason
/// added later.
const REASON_SLOTS: usize = 14;

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
        Reason::Banned => 10,
        Reason::Shadow => 11,
        Reason::Untracked => 12,
        _ => 13,
    }
}

/// One label's handles, registered once and then only incremented or set.
struct RouteMetrics {
    label: SharedString,
    /// The route's decisions, labelled or not (what "busiest" is judged by).
    seen: AtomicU64,
    /// Whether the route holds a label now: its decisions go to its own series.
    labelled: AtomicBool,
    decisions: [OnceLock<Counter>; REASON_SLOTS],
    gauges: OnceLock<RouteGauges>,
    /// When its labelled series last moved (engine nanoseconds, written at most once a
    /// second): past half the exporter's idle timeout they are registered again.
    used: AtomicU64,
    /// Its live task leases: started minus ended as this observer heard them. Signed: a
    /// lease a sweep on another thread ends right after its insertion may be heard ended
    /// before started; the gauge shows the count from zero up.
    leases: AtomicI64,
}

struct RouteGauges {
    resistance: Gauge,
    scar: Gauge,
    leases: Gauge,
    modes: [Gauge; 4],
    last_mode: std::sync::atomic::AtomicU8,
}

impl RouteMetrics {
    fn new(label: SharedString) -> Self {
        RouteMetrics {
            label,
            seen: AtomicU64::new(0),
            labelled: AtomicBool::new(false),
            decisions: Default::default(),
            gauges: OnceLock::new(),
            used: AtomicU64::new(0),
            leases: AtomicI64::new(0),
        }
    }

    /// The same route with its handles not registered yet.
    fn renewed(&self, at: u64) -> Self {
        let fresh = RouteMetrics::new(self.label.clone());
        fresh.seen.store(self.seen.load(Relaxed), Relaxed);
        fresh.labelled.store(self.labelled.load(Acquire), Release);
        fresh.used.store(at, Relaxed);
        fresh.leases.store(self.leases.load(Relaxed), Relaxed);
        fresh
    }

    /// Whether its labelled series have been still for longer than `stale` nanoseconds at
    /// `at`; else notes the use.
    fn stale(&self, at: u64, stale: u64) -> bool {
        let used = self.used.load(Relaxed);
        let since = at.saturating_sub(used);
        if since > 1_000_000_000.min(stale) {
            self.used.store(at, Relaxed);
        }
        since > stale
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
        // (`other` is never labelled: it has no gauges.)
        if !self.labelled.load(Acquire) {
            return None;
        }
        Some(
            self.gauges.get_or_init(|| RouteGauges {
                resistance: metrics::gauge!("atrion_route_resistance_ohms", "route" => self.label.clone()),
                scar: metrics::gauge!("atrion_route_scar_ohms", "route" => self.label.clone()),
                leases: metrics::gauge!("atrion_route_leases_active", "route" => self.label.clone()),
                modes: MODES
                    .map(|m| metrics::gauge!("atrion_route_mode", "route" => self.label.clone(), "mode" => m.as_str())),
                last_mode: std::sync::atomic::AtomicU8::new(u8::MAX),
            }),
        )
    }
}

impl RouteGauges {
    /// A demoted or evicted route's gauges: no value.
    fn clear(&self) {
        self.resistance.set(f64::NAN);
        self.scar.set(f64::NAN);
        self.leases.set(f64::NAN);
        for g in &self.modes {
            g.set(f64::NAN);
        }
        self.last_mode.store(u8::MAX, Release);
    }

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
    routes: papaya::HashMap<Box<str>, Arc<RouteMetrics>>,
    /// The routes holding a label (at most `max_routes`); changed under this lock only.
    labelled: Mutex<Vec<Arc<RouteMetrics>>>,
    /// Whether every label is taken.
    full: AtomicBool,
    /// The least `seen` among the labelled routes when they fill every label: a route
    /// without a label checks it without taking the lock.
    floor: AtomicU64,
    other: Arc<RouteMetrics>,
    evictions: Counter,
    leases: Gauge,
    /// Half the exporter's idle timeout for route series, in nanoseconds: series still for
    /// longer are registered again. `u64::MAX`: never.
    stale: u64,
}

impl std::fmt::Debug for MetricsObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsObserver")
            .field("max_routes", &self.max_routes)
            .field("labelled", &self.labelled_routes())
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
            labelled: Mutex::new(Vec::new()),
            full: AtomicBool::new(max_routes == 0),
            floor: AtomicU64::new(0),
            routes: papaya::HashMap::new(),
            other: Arc::new(RouteMetrics::new(SharedString::const_str(OTHER_ROUTE))),
            evictions: metrics::counter!("atrion_evictions_total"),
            leases: metrics::gauge!("atrion_leases_active"),
            stale: u64::MAX,
        }
    }

    /// The exporter drops route-labelled series that have not changed for `idle` (see the
    /// [module](self) docs): a route whose series have been still for half of it registers
    /// them again, so that its next counts are not lost.
    pub fn with_idle_timeout(mut self, idle: std::time::Duration) -> Self {
        self.stale = u64::try_from(idle.as_nanos() / 2).unwrap_or(u64::MAX);
        self
    }

    /// Routes holding their own label now.
    pub fn labelled_routes(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<RouteMetrics>>> {
        self.labelled.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn route(&self, route: &str, at: Timestamp) -> Arc<RouteMetrics> {
        let map = self.routes.pin();
        if let Some(m) = map.get(route) {
            if self.stale != u64::MAX && m.labelled.load(Acquire) && m.stale(at.as_nanos(), self.stale) {
                return self.renew(route, m, at.as_nanos());
            }
            return m.clone();
        }
        let fresh = Arc::new(RouteMetrics::new(SharedString::from(Arc::<str>::from(route))));
        fresh.used.store(at.as_nanos(), Relaxed);
        map.get_or_insert(route.into(), fresh).clone()
    }

    /// Replaces a route's handles by new ones (its series may have been dropped by the
    /// exporter), keeping its label and counts.
    #[cold]
    fn renew(&self, route: &str, old: &Arc<RouteMetrics>, at: u64) -> Arc<RouteMetrics> {
        let mut labelled = self.lock();
        let map = self.routes.pin();
        match map.get(route) {
            Some(now) if Arc::ptr_eq(now, old) => {}
            // Renewed or evicted meanwhile.
            Some(now) => return now.clone(),
            None => return old.clone(),
        }
        let fresh = Arc::new(old.renewed(at));
        map.insert(route.into(), fresh.clone());
        if let Some(slot) = labelled.iter_mut().find(|r| Arc::ptr_eq(r, old)) {
            *slot = fresh.clone();
        }
        fresh
    }

    /// Counts a decision of `m` and gives it a label if there is a free one, or if it has
    /// become busier than the least busy labelled route (by a quarter, so that two routes of
    /// equal traffic do not take turns).
    fn decided(&self, m: &Arc<RouteMetrics>, verdict: Verdict, reason: Reason) {
        let seen = m.seen.fetch_add(1, Relaxed) + 1;
        if !m.labelled.load(Acquire)
            && (!self.full.load(Relaxed) || seen > self.floor.load(Relaxed).saturating_mul(5) / 4)
        {
            self.promote(m);
        }
        if m.labelled.load(Acquire) { m.decided(verdict, reason) } else { self.other.decided(verdict, reason) }
    }

    #[cold]
    fn promote(&self, m: &Arc<RouteMetrics>) {
        let mut labelled = self.lock();
        if m.labelled.load(Acquire) {
            return;
        }
        if labelled.len() >= self.max_routes {
            let Some((i, least)) = labelled.iter().enumerate().min_by_key(|(_, r)| r.seen.load(Relaxed)) else {
                return; // no labels at all (max_routes = 0)
            };
            let least_seen = least.seen.load(Relaxed);
            if m.seen.load(Relaxed) <= least_seen.saturating_mul(5) / 4 {
                // Not busier after all: the floor was stale; refresh it.
                self.floor.store(least_seen, Relaxed);
                return;
            }
            let demoted = labelled.swap_remove(i);
            demoted.labelled.store(false, Release);
            if let Some(g) = demoted.gauges.get() {
                g.clear();
            }
        }
        m.labelled.store(true, Release);
        labelled.push(m.clone());
        self.full.store(labelled.len() >= self.max_routes, Relaxed);
        self.floor.store(labelled.iter().map(|r| r.seen.load(Relaxed)).min().unwrap_or(0), Relaxed);
    }

    /// A lease ended: the gauges follow, and its outcome is counted under the route's label
    /// (or `other`).
    fn lease_ended(&self, route: &str, at: Timestamp, outcome: LeaseOutcome) {
        self.leases.decrement(1.0);
        let m = self.route(route, at);
        let n = m.leases.fetch_sub(1, Relaxed) - 1;
        if let Some(g) = m.gauges() {
            g.leases.set(n.max(0) as f64);
        }
        let label = if m.labelled.load(Acquire) { m.label.clone() } else { self.other.label.clone() };
        metrics::counter!("atrion_leases_ended_total", "route" => label.clone(), "outcome" => outcome.name())
            .increment(1);
        if let LeaseOutcome::Aborted(reason) = outcome {
            metrics::counter!("atrion_lease_aborts_total", "route" => label.clone(), "reason" => reason.name())
                .increment(1);
            if reason.is_expiry() {
                metrics::counter!("atrion_lease_expirations_total", "route" => label, "reason" => reason.name())
                    .increment(1);
            }
        }
    }

    fn evicted(&self, route: &str) {
        let Some(m) = self.routes.pin().remove(route).cloned() else { return };
        let mut labelled = self.lock();
        if let Some(i) = labelled.iter().position(|r| Arc::ptr_eq(r, &m)) {
            labelled.swap_remove(i);
            m.labelled.store(false, Release);
            if let Some(g) = m.gauges.get() {
                g.clear();
            }
            self.full.store(false, Relaxed);
        }
    }
}

impl PhysicsObserver for MetricsObserver {
    fn on_event(&self, event: &Event<'_>) {
        match *event {
            Event::Decided { route, decision, at, .. } => {
                self.decided(&self.route(route, at), decision.verdict, decision.reason);
            }
            Event::Update { route, mode, resistance, scar, at, .. } => {
                let m = self.route(route, at);
                if !m.labelled.load(Acquire) && !self.full.load(Relaxed) {
                    // A free label: a route that is only reported on gets its gauges too.
                    self.promote(&m);
                }
                if let Some(g) = m.gauges() {
                    g.resistance.set(resistance);
                    g.scar.set(scar);
                    g.mode(mode);
                }
            }
            Event::Transition { route, from, to, at, .. } => {
                let m = self.route(route, at);
                let label = if m.labelled.load(Acquire) { m.label.clone() } else { self.other.label.clone() };
                metrics::counter!(
                    "atrion_transitions_total",
                    "route" => label,
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
                self.evicted(route);
            }
            Event::LeaseStarted { route, at } => {
                self.leases.increment(1.0);
                let m = self.route(route, at);
                let n = m.leases.fetch_add(1, Relaxed) + 1;
                if let Some(g) = m.gauges() {
                    g.leases.set(n.max(0) as f64);
                }
            }
            Event::LeaseEnded { route, at, outcome, .. } => self.lease_ended(route, at, outcome),
            _ => {}
        }
    }
}

/// A recorder that sends metrics with a `route` label to `routes` and the others to `rest`
/// (descriptions to both): so that an exporter's idle timeout can apply to the
/// route-labelled series alone (see the [module](self) docs).
#[derive(Debug)]
pub struct RouteSplit<R, O> {
    routes: R,
    rest: O,
}

impl<R: Recorder, O: Recorder> RouteSplit<R, O> {
    /// Route-labelled metrics to `routes`, the rest to `rest`.
    pub fn new(routes: R, rest: O) -> Self {
        RouteSplit { routes, rest }
    }

    fn pick(&self, key: &Key) -> &dyn Recorder {
        if key.labels().any(|l| l.key() == "route") { &self.routes } else { &self.rest }
    }
}

impl<R: Recorder, O: Recorder> Recorder for RouteSplit<R, O> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.routes.describe_counter(key.clone(), unit, description.clone());
        self.rest.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.routes.describe_gauge(key.clone(), unit, description.clone());
        self.rest.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.routes.describe_histogram(key.clone(), unit, description.clone());
        self.rest.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.pick(key).register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.pick(key).register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.pick(key).register_histogram(key, metadata)
    }
}

/// Records the cluster sync's counters (from [`Atrion::sync_stats`](crate::Atrion::sync_stats))
/// as `atrion_sync_*` metrics; call it before each scrape or on a timer.
pub fn record_sync(stats: &SyncStats) {
    for (kind, value) in stats.counters() {
        metrics::counter!(format!("atrion_sync_{kind}_total")).absolute(value);
    }
    metrics::gauge!("atrion_sync_buffered").set(stats.buffered as f64);
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
    describe_gauge!("atrion_leases_active", "Live task leases, every route.");
    describe_gauge!("atrion_route_leases_active", "A route's live task leases.");
    describe_counter!("atrion_leases_ended_total", Unit::Count, "Task leases ended, by route and outcome.");
    describe_counter!(
        "atrion_lease_expirations_total",
        Unit::Count,
        "Task leases that overran or missed their heartbeats, by route and reason."
    );
    describe_counter!("atrion_lease_aborts_total", Unit::Count, "Task lease aborts fired, by route and reason.");
    describe_counter!("atrion_sync_pulses_total", Unit::Count, "Cluster sync pulses run.");
    describe_counter!("atrion_sync_pushed_total", Unit::Count, "Route contributions pushed to the store.");
    describe_counter!(
        "atrion_sync_records_total",
        Unit::Count,
        "This node's route records (operator holds, open intervals) written or removed for its restart."
    );
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

    /// Every metric the recorder holds: name, labels, value.
    fn rows(snapshotter: &metrics_util::debugging::Snapshotter) -> Vec<Row> {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(k, _, _, v)| {
                let key = k.key();
                let labels = key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
                (key.name().to_owned(), labels, v)
            })
            .collect()
    }

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
        let snapshot = rows(&snapshotter);
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

    #[test]
    fn leases_are_counted_active_expired_and_aborted_per_route() {
        use atrion_core::{LeaseOptions, LeaseStart};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let engine =
                Engine::with_observer(PhysicsConfig::default(), EngineLimits::default(), MetricsObserver::new(8))
                    .unwrap();
            let at = Timestamp::from_millis;
            let start = |d: u64| match engine
                .start_lease("jobs", at(0), LeaseOptions::new().max_duration(std::time::Duration::from_millis(d)))
                .unwrap()
            {
                LeaseStart::Granted(g) => g.id,
                LeaseStart::Shed(d) => panic!("{d:?}"),
            };
            let (short, long, _live) = (start(100), start(10_000), start(20_000));
            engine.complete_lease(long, true, at(50)).unwrap();
            assert_eq!(engine.sweep_leases(at(200)), 1);
            let _ = short;
        });
        let snapshot = rows(&snapshotter);
        assert_eq!(counter_value(&snapshot, "atrion_lease_expirations_total", "jobs"), 1);
        assert_eq!(counter_value(&snapshot, "atrion_lease_aborts_total", "jobs"), 1);
        assert_eq!(counter_value(&snapshot, "atrion_leases_ended_total", "jobs"), 2);
        let gauge = |name: &str| {
            snapshot.iter().find(|(n, _, _)| n == name).map(|(_, _, v)| match v {
                DebugValue::Gauge(g) => g.into_inner(),
                _ => f64::NAN,
            })
        };
        assert_eq!(gauge("atrion_route_leases_active"), Some(1.0));
        assert_eq!(gauge("atrion_leases_active"), Some(1.0));
    }

    #[test]
    fn a_lease_ended_before_its_start_was_told_leaves_the_route_gauge_at_zero() {
        use atrion_core::{LeaseOptions, LeaseOutcome, LeaseStart};
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let engine =
                Engine::with_observer(PhysicsConfig::default(), EngineLimits::default(), MetricsObserver::new(8))
                    .unwrap();
            let at = Timestamp::from_millis;
            let LeaseStart::Granted(g) = engine.start_lease("jobs", at(0), LeaseOptions::new()).unwrap() else {
                panic!("shed")
            };
            engine.complete_lease(g.id, true, at(10)).unwrap();
            // Another lease: a sweep on another thread ends it (and tells) between its insertion
            // and the starting thread's event, so the observer hears the end first.
            let obs = engine.observer();
            let ended = LeaseOutcome::Aborted(atrion_core::AbortReason::MaxDuration);
            obs.on_event(&Event::LeaseEnded {
                route: "jobs",
                at: at(20),
                outcome: ended,
                duration: std::time::Duration::ZERO,
            });
            obs.on_event(&Event::LeaseStarted { route: "jobs", at: at(20) });
        });
        let gauges: Vec<f64> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(k, _, _, _)| k.key().name() == "atrion_route_leases_active")
            .map(|(_, _, _, v)| match v {
                DebugValue::Gauge(g) => g.into_inner(),
                _ => f64::NAN,
            })
            .collect();
        assert_eq!(gauges, [0.0], "no lease is live on the route");
    }

    #[test]
    fn a_route_that_becomes_the_busiest_takes_a_label_and_every_series_only_grows() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        // A snapshot gives each counter's increase since the last one: add them up.
        let seen = std::cell::RefCell::new(std::collections::HashMap::<String, u64>::new());
        let read = || {
            for (k, _, _, v) in snapshotter.snapshot().into_vec() {
                let key = k.key();
                if key.name() != "atrion_decisions_total" {
                    continue;
                }
                let route = key.labels().find(|l| l.key() == "route").map(|l| l.value().to_owned()).unwrap_or_default();
                if let DebugValue::Counter(n) = v {
                    *seen.borrow_mut().entry(route).or_default() += n;
                }
            }
            seen.borrow().clone()
        };
        let total = |s: &std::collections::HashMap<String, u64>, route: &str| s.get(route).copied().unwrap_or(0);
        metrics::with_local_recorder(&recorder, || {
            let engine =
                Engine::with_observer(PhysicsConfig::default(), EngineLimits::default(), MetricsObserver::new(2))
                    .unwrap();
            let now = Timestamp::from_millis(1);
            let decide = |route: &str, n: usize| {
                for _ in 0..n {
                    engine.decide(route, now, Priority::Normal);
                }
            };
            decide("a", 3);
            decide("b", 5);
            decide("c", 3); // as busy as a: not enough to take its label
            let s = read();
            assert_eq!((total(&s, "a"), total(&s, "b"), total(&s, "c"), total(&s, OTHER_ROUTE)), (3, 5, 0, 3));
            decide("c", 7); // now 10: busier than a (3) by far
            let s = read();
            assert_eq!(total(&s, "a"), 3, "a demoted: its series stops, it does not go back");
            assert_eq!(total(&s, "c"), 7 - 1 + 1, "c's series counts from its promotion (its 4th decision)");
            assert_eq!(total(&s, OTHER_ROUTE), 3, "what c decided before stays in `other`");
            decide("a", 2);
            let s = read();
            assert_eq!((total(&s, "a"), total(&s, OTHER_ROUTE)), (3, 5), "a now counts under `other`");
            let sum: u64 = ["a", "b", "c", OTHER_ROUTE].iter().map(|r| total(&s, r)).sum();
            assert_eq!(sum, 3 + 5 + 10 + 2, "the series add up to every decision");
            assert_eq!(engine.observer().labelled_routes(), 2);
        });
    }
}
