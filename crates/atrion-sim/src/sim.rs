//! The discrete-event simulator: a virtual clock in nanoseconds, seeded random streams, a
//! service with finite capacity per route (workers, a bounded FIFO queue, a service-time
//! distribution), scripted faults, and one controller in front of every route.
//!
//! Determinism: every random draw comes from a ChaCha8 stream seeded from the scenario's
//! seed and the route. A route's own traffic draws its service time and error from the
//! route's request stream for every *offered* request, admitted or not, so that all
//! controllers face exactly the same arrivals, service times and error draws. Requests
//! that reach a route because of a controller's choice (downstream calls, fallbacks,
//! balancer picks) draw from the route's separate call stream. Events at the same instant
//! run in the order they were scheduled; the same seed gives the same run, bit for bit.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp1, StandardNormal};

use crate::controller::{Controller, Gauge, Sample};
use crate::metrics::{Bin, Recorder};
use crate::scenario::{FaultKind, OutageMode, RetrySpec, Scenario, ServiceTime, Traffic};

const NONE: u32 = u32::MAX;
/// Retry tokens a route's clients may save (the retry budget's burst).
const RETRY_TOKENS_MAX: f64 = 10.0;
const SEC: f64 = 1e9;
const MS: f64 = 1e6;

/// How the scenario's faults look at one instant on one route.
#[derive(Debug, Clone, Copy)]
struct Conditions {
    error_rate: f64,
    /// How long a failing request takes, when errors are slow (ms).
    error_latency: Option<f64>,
    latency: f64,
    capacity: f64,
    outage: Option<OutageMode>,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    start: u64,
    end: u64,
    kind: FaultKind,
    /// Repeating faults: (period, time on per period).
    cycle: Option<(u64, u64)>,
}

/// Arrival times of one route's offered traffic.
#[derive(Debug)]
enum Arrivals {
    None,
    Rate { traffic: Traffic, poisson: bool },
    Trace { times: Vec<u64>, span: u64, next: usize, lap: u64 },
}

/// Workers and a queue, owned by one route and possibly shared by others.
#[derive(Debug)]
struct Pool {
    /// The route whose capacity faults apply.
    owner: usize,
    workers: u32,
    queue_cap: usize,
    busy: u32,
    queue: VecDeque<u32>,
}

impl Pool {
    fn capacity(&self, c: &Conditions) -> u32 {
        ((f64::from(self.workers) * c.capacity).round() as u32).max(1)
    }
}

/// A load balancer: its own arrivals, spread over member routes by the controller.
#[derive(Debug)]
struct Balancer {
    members: Vec<usize>,
    arrivals: Arrivals,
    rng_arrival: ChaCha8Rng,
    rng_select: ChaCha8Rng,
}

#[derive(Debug)]
struct Route {
    pool: usize,
    timeout: u64,
    service: ServiceTime,
    /// `ln` of the log-normal's scale, so that its mean is `mean_ms`.
    mu: f64,
    calls: Option<usize>,
    fallback: Option<usize>,
    weight: f64,
    /// The route's latency objective, ms.
    slo_ms: f64,
    retry: Option<RetrySpec>,
    /// Retry tokens saved (the retry budget).
    tokens: f64,
    faults: Vec<Fault>,
    arrivals: Arrivals,
    rng_arrival: ChaCha8Rng,
    rng_request: ChaCha8Rng,
    rng_call: ChaCha8Rng,
    inflight: u32,
}

impl Route {
    fn conditions(&self, t: u64) -> Conditions {
        let mut c = Conditions { error_rate: 0.0, error_latency: None, latency: 1.0, capacity: 1.0, outage: None };
        for f in &self.faults {
            if t < f.start || t >= f.end {
                continue;
            }
            if let Some((period, on)) = f.cycle
                && (t - f.start) % period >= on
            {
                continue;
            }
            match f.kind {
                FaultKind::Errors { rate, latency_ms } => {
                    c.error_rate = c.error_rate.max(rate);
                    c.error_latency = latency_ms.or(c.error_latency);
                }
                FaultKind::Latency { multiplier } => c.latency *= multiplier,
                FaultKind::Capacity { factor } => c.capacity = c.capacity.min(factor),
                FaultKind::Outage { mode } => c.outage = Some(mode),
                FaultKind::Degrade { to_multiplier } => {
                    let x = (t - f.start) as f64 / (f.end - f.start) as f64;
                    c.latency *= 1.0 + (to_multiplier - 1.0) * x;
                }
            }
        }
        c
    }

    /// One service time draw in milliseconds, before faults.
    #[cfg(test)]
    fn draw_service(&self, rng: &mut ChaCha8Rng) -> f64 {
        draw_service(self.service, self.mu, rng)
    }

    /// The next arrival after `now`, if any before `end`.
    fn next_arrival(&mut self, now: u64, end: u64) -> Option<u64> {
        self.arrivals.next(&mut self.rng_arrival, now, end)
    }
}

impl Arrivals {
    /// The next arrival after `now`, if any before `end`; `rng` draws Poisson gaps.
    fn next(&mut self, rng: &mut ChaCha8Rng, now: u64, end: u64) -> Option<u64> {
        match self {
            Arrivals::None => None,
            Arrivals::Trace { times, span, next, lap } => {
                if times.is_empty() {
                    return None;
                }
                if *next == times.len() {
                    *next = 0;
                    *lap += *span;
                }
                let t = times[*next] + *lap;
                *next += 1;
                (t < end).then_some(t.max(now))
            }
            Arrivals::Rate { traffic, poisson } => {
                let mut t = now;
                // A zero rate is stepped over in 10 ms steps until traffic resumes.
                loop {
                    if t >= end {
                        return None;
                    }
                    let rate = traffic.rate(t as f64 / SEC);
                    if rate > 0.0 {
                        let gap = if *poisson {
                            let e: f64 = Exp1.sample(rng);
                            e / rate
                        } else {
                            1.0 / rate
                        };
                        let next = t + (gap * SEC).max(1.0) as u64;
                        return (next < end).then_some(next);
                    }
                    t += 10 * MS as u64;
                }
            }
        }
    }
}

/// The location of a log-normal of shape `sigma` whose mean is `mean_ms`.
fn lognormal_mu(mean_ms: f64, sigma: f64) -> f64 {
    mean_ms.ln() - sigma * sigma / 2.0
}

/// One service time draw in milliseconds, before faults. `mu` is the log-normal's location.
fn draw_service(service: ServiceTime, mu: f64, rng: &mut ChaCha8Rng) -> f64 {
    match service {
        ServiceTime::Constant { mean_ms } => mean_ms,
        ServiceTime::Exponential { mean_ms } => {
            let e: f64 = Exp1.sample(rng);
            e * mean_ms
        }
        ServiceTime::Lognormal { sigma, .. } => {
            let z: f64 = StandardNormal.sample(rng);
            (mu + sigma * z).exp()
        }
        ServiceTime::Bimodal { mean_ms, slow_ms, slow_share, sigma } => {
            // Two draws for every request, whichever mode it falls in.
            let u: f64 = rng.random();
            let z: f64 = StandardNormal.sample(rng);
            let m = if u < slow_share { slow_ms } else { mean_ms };
            (lognormal_mu(m, sigma) + sigma * z).exp()
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Request {
    route: u32,
    parent: u32,
    external: bool,
    failed: bool,
    started: bool,
    served: bool,
    reported: bool,
    deadline_pending: bool,
    /// Waiting in its pool's queue (the queue still refers to it, even after its deadline).
    queued: bool,
    freed: bool,
    arrival: u64,
    service_ms: f64,
    err_draw: f64,
    inflight: u32,
    /// 0 for a first attempt, then the retry's number.
    attempt: u8,
}

/// Where an offered request comes from.
#[derive(Debug, Clone, Copy)]
struct Offer {
    /// The request whose worker waits for this one (a downstream call), or `NONE`.
    parent: u32,
    /// From outside: counted in the service's bins.
    external: bool,
    /// Draws from the route's call stream (its arrival depends on the controller).
    call_stream: bool,
    /// 0 for a first attempt, then the retry's number.
    attempt: u8,
}

impl Offer {
    fn external(call_stream: bool, attempt: u8) -> Self {
        Offer { parent: NONE, external: true, call_stream, attempt }
    }

    fn call(parent: u32) -> Self {
        Offer { parent, external: false, call_stream: true, attempt: 0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Arrival,
    Served,
    Deadline,
    Pump,
    /// A client retry: the id indexes `Sim::retries`.
    Retry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    at: u64,
    seq: u64,
    kind: Kind,
    id: u32,
}

/// What the simulator counted for one controller over one scenario.
#[derive(Debug)]
pub struct Trace {
    /// Per-bin counts and gauges of the whole service.
    pub bins: Vec<Bin>,
    /// Latencies of admitted external requests.
    pub latency: hdrhistogram::Histogram<u32>,
    /// State transitions the controller made.
    pub transitions: u64,
    /// Requests offered to the controller (external and downstream calls, shed or not).
    pub requests: u64,
    /// Counts per route, in the scenario's order (empty for telemetry runs).
    pub routes: Vec<RouteCount>,
    /// Per-route bins: what was offered to each route's controller (calls included), in
    /// the scenario's order (empty for telemetry runs).
    pub route_bins: Vec<Vec<Bin>>,
}

/// What reached one route: every request offered to its controller (its own traffic,
/// downstream calls, fallbacks and balancer picks), and how they ended.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RouteCount {
    /// The route.
    pub route: String,
    /// Offered to the route's controller.
    pub offered: u64,
    /// Admitted by it.
    pub admitted: u64,
    /// Completed successfully.
    pub ok: u64,
    /// Completed with an error or a timeout.
    pub failed: u64,
    /// Successes within the route's SLO per second (unweighted).
    pub goodput: f64,
    /// Fraction of what was offered to the route shed while the service was healthy.
    pub healthy_shed: f64,
    /// Seconds from the incident's start to the route's first bin shedding 10% or more.
    pub detect_s: Option<f64>,
    /// Seconds from the incident's end until the route's goodput holds 90% of its level
    /// before it (`None`: never, or the route had none before).
    pub recover_s: Option<f64>,
}

/// Runs `scenario` (request-level) against `controller` with `seed`.
pub fn run(scenario: &Scenario, controller: &mut dyn Controller, seed: u64) -> Result<Trace, crate::ScenarioError> {
    Sim::new(scenario, seed)?.run(controller)
}

struct Sim {
    chart_route: usize,
    counts: Vec<RouteCount>,
    routes: Vec<Route>,
    balancers: Vec<Balancer>,
    pools: Vec<Pool>,
    reqs: Vec<Request>,
    free: Vec<u32>,
    heap: BinaryHeap<Reverse<Event>>,
    seq: u64,
    end: u64,
    rec: Recorder,
    /// One recorder per route: what was offered to its controller and how it ended.
    route_rec: Vec<Recorder>,
    /// Pending client retries: (route, attempt).
    retries: Vec<(u32, u8)>,
    requests: u64,
}

fn stream(seed: u64, route: usize, which: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((route as u64) * 4 + which);
    rng
}

impl Sim {
    fn new(scenario: &Scenario, seed: u64) -> Result<Self, crate::ScenarioError> {
        let end = (scenario.duration_s * SEC) as u64;
        let index = |name: &str| scenario.routes.iter().position(|r| r.name == name);
        let mut routes = Vec::with_capacity(scenario.routes.len());
        let mut pools = Vec::new();
        for (i, spec) in scenario.routes.iter().enumerate() {
            let pool = match spec.shares.as_deref().and_then(index) {
                Some(owner) => owner,
                None => i,
            };
            pools.push(Pool {
                owner: i,
                workers: spec.workers,
                queue_cap: spec.queue as usize,
                busy: 0,
                queue: VecDeque::new(),
            });
            let arrivals = match &spec.traffic {
                None => Arrivals::None,
                Some(Traffic::Replay { file, speed }) => trace_arrivals(scenario, file, *speed)?,
                Some(t) => Arrivals::Rate { traffic: t.clone(), poisson: !matches!(t, Traffic::Constant { .. }) },
            };
            let faults = scenario
                .faults
                .iter()
                .filter(|f| f.route.as_deref().is_none_or(|r| r == spec.name))
                .map(|f| Fault {
                    start: (f.start_s * SEC) as u64,
                    end: (f.end_s * SEC) as u64,
                    kind: f.kind,
                    cycle: f.period_s.map(|p| ((p * SEC) as u64, (p * f.duty * SEC) as u64)),
                })
                .collect();
            let mu = match spec.service {
                ServiceTime::Lognormal { mean_ms, sigma } => lognormal_mu(mean_ms, sigma),
                _ => 0.0,
            };
            routes.push(Route {
                pool,
                timeout: (spec.timeout_ms * MS) as u64,
                service: spec.service,
                mu,
                calls: spec.calls.as_deref().and_then(index),
                fallback: spec.fallback.as_deref().and_then(index),
                weight: spec.weight,
                slo_ms: spec.slo_ms.unwrap_or(scenario.slo_ms),
                retry: spec.retry.clone(),
                tokens: 0.0,
                faults,
                arrivals,
                rng_arrival: stream(seed, i, 0),
                rng_request: stream(seed, i, 1),
                rng_call: stream(seed, i, 2),
                inflight: 0,
            });
        }
        let n = routes.len();
        let balancers = scenario
            .balancers
            .iter()
            .enumerate()
            .map(|(b, spec)| Balancer {
                members: spec.members.iter().filter_map(|m| index(m)).collect(),
                arrivals: Arrivals::Rate {
                    traffic: spec.traffic.clone(),
                    poisson: !matches!(spec.traffic, Traffic::Constant { .. }),
                },
                rng_arrival: stream(seed, n + b, 0),
                rng_select: stream(seed, n + b, 3),
            })
            .collect();
        let bins = (end as f64 / (scenario.bin_ms * MS)).ceil() as usize;
        Ok(Sim {
            chart_route: scenario.chart_route(),
            counts: scenario
                .routes
                .iter()
                .map(|r| RouteCount { route: r.name.clone(), ..RouteCount::default() })
                .collect(),
            routes,
            balancers,
            pools,
            reqs: Vec::new(),
            free: Vec::new(),
            heap: BinaryHeap::new(),
            seq: 0,
            end,
            rec: Recorder::new(bins, (scenario.bin_ms * MS) as u64),
            route_rec: (0..scenario.routes.len())
                .map(|_| Recorder::bins_only(bins, (scenario.bin_ms * MS) as u64))
                .collect(),
            retries: Vec::new(),
            requests: 0,
        })
    }

    fn push(&mut self, at: u64, kind: Kind, id: u32) {
        self.seq += 1;
        self.heap.push(Reverse(Event { at, seq: self.seq, kind, id }));
    }

    fn alloc(&mut self, r: Request) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.reqs[i as usize] = r;
                i
            }
            None => {
                self.reqs.push(r);
                (self.reqs.len() - 1) as u32
            }
        }
    }

    fn release_if_done(&mut self, id: u32) {
        let r = &mut self.reqs[id as usize];
        if !r.freed && r.reported && (r.served || !r.started) && !r.queued && !r.deadline_pending {
            r.freed = true;
            self.free.push(id);
        }
    }

    fn run(mut self, controller: &mut dyn Controller) -> Result<Trace, crate::ScenarioError> {
        for i in 0..self.routes.len() {
            if let Some(t) = self.routes[i].next_arrival(0, self.end) {
                self.push(t, Kind::Arrival, i as u32);
            }
            let ends: Vec<u64> = self.routes[i].faults.iter().flat_map(|f| [f.start, f.end]).collect();
            for t in ends {
                self.push(t, Kind::Pump, i as u32);
            }
        }
        let n = self.routes.len();
        for b in 0..self.balancers.len() {
            let bal = &mut self.balancers[b];
            if let Some(t) = bal.arrivals.next(&mut bal.rng_arrival, 0, self.end) {
                self.push(t, Kind::Arrival, (n + b) as u32);
            }
        }
        let chart_route = self.chart_route;
        while let Some(Reverse(ev)) = self.heap.pop() {
            if ev.at >= self.end {
                break;
            }
            self.rec.advance(ev.at, || controller.gauge(chart_route));
            for (i, r) in self.route_rec.iter_mut().enumerate() {
                r.advance(ev.at, || controller.gauge(i));
            }
            match ev.kind {
                Kind::Arrival if (ev.id as usize) < n => self.arrival(controller, ev.id as usize, ev.at),
                Kind::Arrival => self.balanced(controller, ev.id as usize - n, ev.at),
                Kind::Served => self.served(controller, ev.id, ev.at),
                Kind::Deadline => {
                    let r = &mut self.reqs[ev.id as usize];
                    r.deadline_pending = false;
                    if !r.reported {
                        let latency = self.routes[r.route as usize].timeout as f64 / MS;
                        self.report(controller, ev.id, ev.at, false, latency);
                    }
                    self.release_if_done(ev.id);
                }
                Kind::Pump => {
                    let pool = self.routes[ev.id as usize].pool;
                    self.pump(pool, ev.at);
                }
                Kind::Retry => {
                    let (route, attempt) = self.retries[ev.id as usize];
                    self.attempt(controller, route as usize, ev.at, attempt);
                }
            }
        }
        self.rec.advance(self.end, || controller.gauge(chart_route));
        let route_bins = self
            .route_rec
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                r.advance(self.end, || controller.gauge(i));
                r.finish().0
            })
            .collect();
        let (bins, latency) = self.rec.finish();
        Ok(Trace {
            bins,
            latency,
            transitions: controller.transitions(),
            requests: self.requests,
            routes: self.counts,
            route_bins,
        })
    }

    fn arrival(&mut self, controller: &mut dyn Controller, route: usize, now: u64) {
        if let Some(t) = self.routes[route].next_arrival(now, self.end) {
            self.push(t, Kind::Arrival, route as u32);
        }
        let r = &mut self.routes[route];
        if let Some(retry) = &r.retry {
            r.tokens = (r.tokens + retry.budget).min(RETRY_TOKENS_MAX);
        }
        self.attempt(controller, route, now, 0);
    }

    /// One attempt of a request of `route`'s own traffic: the first, or a client retry.
    fn attempt(&mut self, controller: &mut dyn Controller, route: usize, now: u64, attempt: u8) {
        self.rec.offered(now);
        // Retries depend on the controller: they draw from the call stream.
        let mut id = self.offer(controller, route, now, Offer::external(attempt > 0, attempt));
        if id == NONE {
            // Shed by the route's controller, even when a fallback then takes it.
            self.rec.shed(now);
        }
        if id == NONE
            && let Some(fallback) = self.routes[route].fallback
        {
            // A router's fallback: what the primary's controller sheds is offered to the
            // fallback route's controller (draws from the fallback's call stream, so that its
            // own traffic sees the same draws under every controller).
            id = self.offer(controller, fallback, now, Offer::external(true, attempt));
        }
        if id != NONE {
            self.rec.admitted(now);
        } else {
            self.retry(route, now, attempt);
        }
    }

    /// Schedules a client retry of `route`'s request after attempt `attempt` failed, if its
    /// retry policy and budget allow.
    fn retry(&mut self, route: usize, now: u64, attempt: u8) {
        let r = &mut self.routes[route];
        let Some(spec) = &r.retry else { return };
        if u32::from(attempt) >= spec.attempts || r.tokens < 1.0 {
            return;
        }
        r.tokens -= 1.0;
        let backoff = spec.backoff_ms * spec.multiplier.powi(i32::from(attempt));
        let u: f64 = r.rng_call.random();
        let at = now + (backoff * (0.5 + 0.5 * u) * MS) as u64;
        if at < self.end {
            self.retries.push((route as u32, attempt + 1));
            self.push(at, Kind::Retry, (self.retries.len() - 1) as u32);
        }
    }

    /// An arrival at balancer `b`: the controller picks a member, whose controller then
    /// decides (draws from the member's call stream: which member is picked depends on the
    /// controller).
    fn balanced(&mut self, controller: &mut dyn Controller, b: usize, now: u64) {
        let end = self.end;
        let bal = &mut self.balancers[b];
        if let Some(t) = bal.arrivals.next(&mut bal.rng_arrival, now, end) {
            self.push(t, Kind::Arrival, (self.routes.len() + b) as u32);
        }
        let bal = &mut self.balancers[b];
        let u: f64 = bal.rng_select.random();
        let route = controller.select(&bal.members, now, u);
        self.rec.offered(now);
        if self.offer(controller, route, now, Offer::external(true, 0)) == NONE {
            self.rec.shed(now);
        } else {
            self.rec.admitted(now);
        }
    }

    /// A request offered to `route`'s controller; returns its id, or `NONE` when shed.
    fn offer(&mut self, controller: &mut dyn Controller, route: usize, now: u64, how: Offer) -> u32 {
        let Offer { parent, external, call_stream, attempt } = how;
        self.requests += 1;
        self.counts[route].offered += 1;
        self.route_rec[route].offered(now);
        let r = &mut self.routes[route];
        // Draws for every offered request, admitted or not, so that all controllers see
        // the same service times and error draws.
        let rng = if call_stream { &mut r.rng_call } else { &mut r.rng_request };
        let service_ms = draw_service(r.service, r.mu, rng);
        let err_draw: f64 = rng.random();
        let inflight = r.inflight + 1;
        if !controller.admit(route, now, r.inflight) {
            self.route_rec[route].shed(now);
            return NONE;
        }
        self.route_rec[route].admitted(now);
        r.inflight = inflight;
        self.counts[route].admitted += 1;
        let id = self.alloc(Request {
            route: route as u32,
            parent,
            external,
            failed: false,
            started: false,
            served: false,
            reported: false,
            deadline_pending: false,
            queued: false,
            freed: false,
            arrival: now,
            service_ms,
            err_draw,
            inflight,
            attempt,
        });
        self.dispatch(controller, id, now);
        id
    }

    fn dispatch(&mut self, controller: &mut dyn Controller, id: u32, now: u64) {
        let route = self.reqs[id as usize].route as usize;
        let r = &self.routes[route];
        let c = r.conditions(now);
        if c.outage == Some(OutageMode::Refuse) {
            self.report(controller, id, now, false, 0.0);
            return;
        }
        let pool = &mut self.pools[r.pool];
        let cap = if pool.owner == route {
            pool.capacity(&c)
        } else {
            pool.capacity(&self.routes[pool.owner].conditions(now))
        };
        if pool.busy < cap {
            self.start(id, now, &c);
        } else if pool.queue.len() < pool.queue_cap {
            pool.queue.push_back(id);
            self.reqs[id as usize].queued = true;
            self.schedule_deadline(id);
        } else {
            // The queue is full: refused at once.
            self.report(controller, id, now, false, 0.0);
        }
    }

    fn schedule_deadline(&mut self, id: u32) {
        let r = &mut self.reqs[id as usize];
        if !r.deadline_pending {
            r.deadline_pending = true;
            let at = r.arrival + self.routes[r.route as usize].timeout;
            self.push(at, Kind::Deadline, id);
        }
    }

    /// Starts a request on a free worker; `c` are its route's conditions at `now`.
    fn start(&mut self, id: u32, now: u64, c: &Conditions) {
        let route = self.reqs[id as usize].route as usize;
        let r = &self.routes[route];
        self.pools[r.pool].busy += 1;
        self.reqs[id as usize].queued = false;
        let req = &mut self.reqs[id as usize];
        req.started = true;
        let (ms, failed) = match c.outage {
            Some(_) => (r.timeout as f64 / MS, true),
            None if req.err_draw < c.error_rate => (c.error_latency.unwrap_or(req.service_ms * c.latency), true),
            None => (req.service_ms * c.latency, false),
        };
        req.failed = failed;
        let done = now + (ms * MS) as u64;
        let needs_deadline = done > req.arrival + r.timeout || r.calls.is_some();
        self.push(done, Kind::Served, id);
        if needs_deadline {
            self.schedule_deadline(id);
        }
    }

    /// Starts queued requests of a pool while it has free workers.
    fn pump(&mut self, pool: usize, now: u64) {
        let cap = self.pools[pool].capacity(&self.routes[self.pools[pool].owner].conditions(now));
        while self.pools[pool].busy < cap {
            let Some(id) = self.pools[pool].queue.pop_front() else { break };
            // Requests of the routes sharing a pool have each their own faults.
            let c = self.routes[self.reqs[id as usize].route as usize].conditions(now);
            self.start(id, now, &c);
        }
    }

    fn served(&mut self, controller: &mut dyn Controller, id: u32, now: u64) {
        let req = self.reqs[id as usize];
        let route = req.route as usize;
        if let Some(down) = self.routes[route].calls
            && !req.failed
            && !req.reported
        {
            // The worker waits for the downstream answer: the call is a new request offered
            // to the downstream route's controller.
            if self.offer(controller, down, now, Offer::call(id)) == NONE {
                self.finish_worker(id, now);
                self.report(controller, id, now, false, (now - req.arrival) as f64 / MS);
            }
            return;
        }
        self.finish_worker(id, now);
        if !req.reported {
            self.report(controller, id, now, !req.failed, (now - req.arrival) as f64 / MS);
        }
        self.release_if_done(id);
    }

    fn finish_worker(&mut self, id: u32, now: u64) {
        let req = &mut self.reqs[id as usize];
        if req.served {
            return;
        }
        req.served = true;
        let pool = self.routes[req.route as usize].pool;
        self.pools[pool].busy -= 1;
        self.pump(pool, now);
    }

    fn report(&mut self, controller: &mut dyn Controller, id: u32, now: u64, ok: bool, latency_ms: f64) {
        let req = self.reqs[id as usize];
        if req.reported {
            return;
        }
        self.reqs[id as usize].reported = true;
        let route = req.route as usize;
        let r = &mut self.routes[route];
        r.inflight -= 1;
        let weight = r.weight;
        let p = &self.pools[r.pool];
        let saturation =
            ((p.busy as usize + p.queue.len()) as f64 / (p.workers as usize + p.queue_cap) as f64).clamp(0.0, 1.0);
        controller.complete(route, now, &Sample { latency_ms, ok, saturation, inflight: req.inflight });
        let count = &mut self.counts[route];
        if ok {
            count.ok += 1;
        } else {
            count.failed += 1;
        }
        let slo = r.slo_ms;
        self.route_rec[route].completed(now, ok, latency_ms, 1.0, slo);
        if req.external {
            self.rec.completed(now, ok, latency_ms, weight, slo);
            if !ok && req.parent == NONE {
                self.retry(route, now, req.attempt);
            }
        }
        if req.parent != NONE {
            // The caller's worker is released when the answer (or the timeout) comes.
            let p = self.reqs[req.parent as usize];
            if !p.reported {
                self.finish_worker(req.parent, now);
                self.report(controller, req.parent, now, ok, (now - p.arrival) as f64 / MS);
            }
            self.release_if_done(req.parent);
        }
        self.release_if_done(id);
    }
}

fn trace_arrivals(scenario: &Scenario, file: &std::path::Path, speed: f64) -> Result<Arrivals, crate::ScenarioError> {
    let fail =
        |reason: String| crate::ScenarioError::Trace { scenario: scenario.name.clone(), path: file.to_owned(), reason };
    let f = std::fs::File::open(file).map_err(|e| fail(e.to_string()))?;
    let reader = std::io::BufReader::new(f);
    let csv = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let format = csv.then_some(atrion_trace::Format::Csv);
    let mut rows =
        atrion_trace::TraceReader::new(reader, format, atrion_trace::TimeUnit::Ms).map_err(|e| fail(e.to_string()))?;
    let mut times = Vec::new();
    for row in rows.by_ref() {
        let r = row.map_err(|e| fail(format!("line {}: {}", e.line, e.reason)))?;
        times.push((r.at.as_nanos() as f64 / speed) as u64);
    }
    rows.finish().map_err(|e| fail(e.to_string()))?;
    times.sort_unstable();
    let first = times.first().copied().unwrap_or(0);
    for t in &mut times {
        *t -= first;
    }
    // A lap lasts the trace's span plus one mean gap, so that looping keeps the rate.
    let last = times.last().copied().unwrap_or(0);
    let gap = if times.len() > 1 { last / (times.len() as u64 - 1) } else { 0 };
    let span = (last + gap).max(1_000_000);
    Ok(Arrivals::Trace { times, span, next: 0, lap: 0 })
}

/// Runs a telemetry-driven scenario: one observation per tick per controller. Returns
/// `None` when the controller does not apply to telemetry experiments.
pub fn run_ticks(scenario: &Scenario, controller: &mut dyn Controller) -> Option<Trace> {
    let spec = scenario.telemetry.as_ref()?;
    let tick = (spec.tick_ms * MS) as u64;
    let mut bins = Vec::with_capacity(spec.ticks as usize);
    for i in 0..spec.ticks {
        let now = tick * u64::from(i + 1);
        let (l, e, s) = (spec.latency.at(i), spec.error.at(i), spec.saturation.at(i));
        if !controller.tick(0, now, l, e, s) {
            return None;
        }
        let Gauge { level, state } = controller.gauge(0);
        bins.push(Bin { level, state: state as u8, ..Bin::default() });
    }
    let latency = crate::metrics::histogram();
    Some(Trace {
        bins,
        latency,
        transitions: controller.transitions(),
        requests: u64::from(spec.ticks),
        routes: Vec::new(),
        route_bins: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lognormal_mean_matches() {
        let r = Route {
            pool: 0,
            fallback: None,
            timeout: 0,
            service: ServiceTime::Lognormal { mean_ms: 20.0, sigma: 0.8 },
            mu: 20f64.ln() - 0.32,
            calls: None,
            weight: 1.0,
            slo_ms: 100.0,
            retry: None,
            tokens: 0.0,
            faults: vec![],
            arrivals: Arrivals::None,
            rng_arrival: stream(1, 0, 0),
            rng_request: stream(1, 0, 1),
            rng_call: stream(1, 0, 2),
            inflight: 0,
        };
        let mut rng = stream(7, 0, 1);
        let n = 200_000;
        let mean = (0..n).map(|_| r.draw_service(&mut rng)).sum::<f64>() / f64::from(n);
        assert!((mean - 20.0).abs() < 0.3, "{mean}");
    }
}
