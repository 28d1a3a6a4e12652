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
//!
//! The parts: the event loop (`Sim`, here: offers, dispatch, deadlines, calls, fallbacks,
//! retries, the recorders), the service it runs (`service`: routes, faults, pools,
//! balancers, service-time draws, random streams), arrivals (`arrivals`: rates and replayed
//! traces) and telemetry experiments (`ticks`, [`run_ticks`]).

mod arrivals;
mod service;
mod ticks;

pub use ticks::run_ticks;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use rand::Rng;

use arrivals::{Arrivals, trace_arrivals};
use service::{Balancer, Conditions, Fault, Pool, Route, draw_service, lognormal_mu, stream};

use crate::controller::{Controller, Sample};
use crate::metrics::{Bin, Recorder};
use crate::scenario::{OutageMode, Scenario, ServiceTime, Traffic};

const NONE: u32 = u32::MAX;
/// Retry tokens a route's clients may save (the retry budget's burst).
const RETRY_TOKENS_MAX: f64 = 10.0;
const SEC: f64 = 1e9;
const MS: f64 = 1e6;

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
        if !controller.admit_attempt(route, now, r.inflight, attempt) {
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
