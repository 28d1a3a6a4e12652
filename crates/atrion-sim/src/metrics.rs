//! What a run is measured by: per-bin counts while it runs, and the summary of docs/DESIGN.md §7.3
//! afterwards (goodput, p50/p99 latency of admitted requests, false shedding while healthy,
//! time to detect, time to recover, transitions).

use serde::Serialize;

use crate::controller::Gauge;
use crate::scenario::{Metric, Scenario};
use crate::sim::Trace;

/// Counts of one time bin, and the controller's gauge at its end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Bin {
    /// External requests offered.
    pub offered: u32,
    /// Admitted by the controller.
    pub admitted: u32,
    /// Shed by the controller of the route they were offered to (a fallback may still
    /// have taken them).
    pub shed: u32,
    /// Completed successfully (any latency).
    pub ok: u32,
    /// Completed with an error or a timeout.
    pub failed: u32,
    /// Weighted successes within the SLO.
    pub good: f64,
    /// Sum of completed latencies, ms.
    pub latency_sum: f64,
    /// Resistance, limit or failure rate of the route the charts follow ([`Scenario::chart_route`]).
    pub level: f64,
    /// 0 closed, 1 half-open, 2 open.
    pub state: u8,
}

/// A latency histogram in microseconds, from 1 µs to one hour, 3 significant digits.
pub fn histogram() -> hdrhistogram::Histogram<u32> {
    // The bounds are constants that hdrhistogram accepts.
    #[allow(clippy::unwrap_used)]
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap()
}

pub(crate) struct Recorder {
    bins: Vec<Bin>,
    width: u64,
    current: usize,
    /// Latencies of what completes: the service's recorder keeps them, per-route ones do not.
    latency: Option<hdrhistogram::Histogram<u32>>,
}

impl Recorder {
    /// A recorder of bins and of a latency histogram.
    pub fn new(bins: usize, width: u64) -> Self {
        Recorder { latency: Some(histogram()), ..Recorder::bins_only(bins, width) }
    }

    /// A recorder of bins only (a route's, beside the service's).
    pub fn bins_only(bins: usize, width: u64) -> Self {
        Recorder { bins: vec![Bin::default(); bins.max(1)], width: width.max(1), current: 0, latency: None }
    }

    fn index(&self, t: u64) -> usize {
        ((t / self.width) as usize).min(self.bins.len() - 1)
    }

    /// Moves the clock to `t`: every bin that ends at or before `t` gets the gauge.
    pub fn advance(&mut self, t: u64, mut gauge: impl FnMut() -> Gauge) {
        let to = if t >= self.width * self.bins.len() as u64 { self.bins.len() } else { self.index(t) };
        if to > self.current {
            let g = gauge();
            for b in &mut self.bins[self.current..to] {
                b.level = g.level;
                b.state = g.state as u8;
            }
            self.current = to;
        }
    }

    pub fn offered(&mut self, t: u64) {
        let i = self.index(t);
        self.bins[i].offered += 1;
    }
    pub fn admitted(&mut self, t: u64) {
        let i = self.index(t);
        self.bins[i].admitted += 1;
    }
    pub fn shed(&mut self, t: u64) {
        let i = self.index(t);
        self.bins[i].shed += 1;
    }

    /// A completion at `t`: a success within `slo_ms` counts `weight` of goodput.
    pub fn completed(&mut self, t: u64, ok: bool, latency_ms: f64, weight: f64, slo_ms: f64) {
        let i = self.index(t);
        let b = &mut self.bins[i];
        if ok {
            b.ok += 1;
            if latency_ms <= slo_ms {
                b.good += weight;
            }
        } else {
            b.failed += 1;
        }
        b.latency_sum += latency_ms;
        if let Some(h) = &mut self.latency {
            h.saturating_record((latency_ms * 1e3).round().clamp(1.0, 3.6e9) as u64);
        }
    }

    /// The bins and the latency histogram (empty for a bins-only recorder).
    pub fn finish(self) -> (Vec<Bin>, hdrhistogram::Histogram<u32>) {
        (self.bins, self.latency.unwrap_or_else(histogram))
    }
}

/// The summary of one controller's run of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Weighted successes within the SLO per second.
    pub goodput: f64,
    /// Median latency of admitted requests, ms.
    pub p50_ms: f64,
    /// 99th percentile latency of admitted requests, ms.
    pub p99_ms: f64,
    /// Fraction of offered requests shed while the service was healthy.
    pub healthy_shed: f64,
    /// Fraction of all offered requests shed.
    pub shed: f64,
    /// Fraction of completed admitted requests that failed.
    pub error_rate: f64,
    /// Seconds from the incident's start to the first bin shedding 10% or more.
    pub detect_s: Option<f64>,
    /// Seconds from the incident's end until goodput holds 90% of its level before it.
    pub recover_s: Option<f64>,
    /// State transitions.
    pub transitions: u64,
    /// External requests offered.
    pub offered: u64,
    /// Requests offered to the controller, downstream calls included, shed or not.
    pub requests: u64,
    /// What reached each route (its own traffic, calls, fallbacks and balancer picks).
    pub routes: Vec<crate::sim::RouteCount>,
}

impl Summary {
    /// The value of `metric`; `None` where it has none (never detected, never recovered).
    pub fn get(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Goodput => Some(self.goodput),
            Metric::P50Ms => Some(self.p50_ms),
            Metric::P99Ms => Some(self.p99_ms),
            Metric::HealthyShed => Some(self.healthy_shed),
            Metric::Shed => Some(self.shed),
            Metric::ErrorRate => Some(self.error_rate),
            Metric::DetectS => self.detect_s,
            Metric::RecoverS => self.recover_s,
            Metric::Transitions => Some(self.transitions as f64),
        }
    }

    /// The value of `metric` for one route (`None` where it has none, or the route or the
    /// metric is not measured per route).
    pub fn route_get(&self, route: &str, metric: Metric) -> Option<f64> {
        let r = self.routes.iter().find(|r| r.route == route)?;
        let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
        match metric {
            Metric::Goodput => Some(r.goodput),
            Metric::HealthyShed => Some(r.healthy_shed),
            Metric::Shed => Some(ratio(r.offered - r.admitted, r.offered)),
            Metric::ErrorRate => Some(ratio(r.failed, r.ok + r.failed)),
            Metric::DetectS => r.detect_s,
            Metric::RecoverS => r.recover_s,
            _ => None,
        }
    }
}

/// Recovery holds when goodput stays at this fraction of its level before the incident...
const RECOVERED: f64 = 0.9;
/// ...for this long.
const HOLD_S: f64 = 2.0;
/// A bin "detects" when the controller sheds at least this fraction of what is offered.
const DETECTED: f64 = 0.1;

/// Healthy shed, detect and recover of one series of bins (the whole service, or one route).
struct Windows {
    healthy_shed: f64,
    detect_s: Option<f64>,
    recover_s: Option<f64>,
}

fn windows(scenario: &Scenario, bins: &[Bin]) -> Windows {
    let width = scenario.bin_ms / 1e3;
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let bin_of = |t: f64| ((t / width).floor().max(0.0) as usize).min(bins.len());

    let mut healthy_offered = 0.0;
    let mut healthy_shed = 0.0;
    for [a, b] in scenario.healthy_windows() {
        for bin in &bins[bin_of(a)..bin_of(b)] {
            healthy_offered += f64::from(bin.offered);
            healthy_shed += f64::from(bin.shed);
        }
    }

    let (mut detect_s, mut recover_s) = (None, None);
    if let Some([start, end]) = scenario.incident_window() {
        let (s, e) = (bin_of(start), bin_of(end));
        detect_s = bins[s..]
            .iter()
            .position(|b| b.offered > 0 && f64::from(b.shed) >= DETECTED * f64::from(b.offered))
            .map(|i| i as f64 * width);
        // Goodput as a share of offered load, before the incident (its last 10 s at most).
        let share = |b: &[Bin]| {
            ratio(b.iter().map(|x| x.good).sum::<f64>(), b.iter().map(|x| f64::from(x.offered)).sum::<f64>())
        };
        let before = share(&bins[s.saturating_sub((10.0 / width) as usize)..s]);
        let hold = ((HOLD_S / width).round() as usize).max(1);
        if before > 0.0 && e + hold <= bins.len() {
            recover_s = (e..=bins.len() - hold)
                .find(|&i| share(&bins[i..i + hold]) >= RECOVERED * before)
                .map(|i| (i - e) as f64 * width);
        }
    }
    Windows { healthy_shed: ratio(healthy_shed, healthy_offered), detect_s, recover_s }
}

/// Summarises a trace of `scenario` (with `duration_s` as run).
pub fn summarize(scenario: &Scenario, trace: &Trace) -> Summary {
    let bins = &trace.bins;
    let sum = |f: &dyn Fn(&Bin) -> f64| bins.iter().map(f).sum::<f64>();
    let offered = sum(&|b| f64::from(b.offered));
    let shed = sum(&|b| f64::from(b.shed));
    let ok = sum(&|b| f64::from(b.ok));
    let failed = sum(&|b| f64::from(b.failed));
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let w = windows(scenario, bins);
    let mut routes = trace.routes.clone();
    for (count, rb) in routes.iter_mut().zip(&trace.route_bins) {
        let rw = windows(scenario, rb);
        count.goodput = rb.iter().map(|b| b.good).sum::<f64>() / scenario.duration_s;
        count.healthy_shed = rw.healthy_shed;
        count.detect_s = rw.detect_s;
        count.recover_s = rw.recover_s;
    }

    let h = &trace.latency;
    let q = |p: f64| if h.is_empty() { 0.0 } else { h.value_at_quantile(p) as f64 / 1e3 };
    Summary {
        goodput: sum(&|b| b.good) / scenario.duration_s,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        healthy_shed: w.healthy_shed,
        shed: ratio(shed, offered),
        error_rate: ratio(failed, ok + failed),
        detect_s: w.detect_s,
        recover_s: w.recover_s,
        transitions: trace.transitions,
        offered: offered as u64,
        requests: trace.requests,
        routes,
    }
}
