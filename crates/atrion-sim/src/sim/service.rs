//! The simulated service: routes with their faults and service-time distributions, pools of
//! workers with bounded FIFO queues (owned by one route, possibly shared), load balancers,
//! and the seeded random streams every draw comes from.

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp1, StandardNormal};

use super::arrivals::Arrivals;
use crate::scenario::{FaultKind, OutageMode, RetrySpec, ServiceTime};

/// How the scenario's faults look at one instant on one route.
#[derive(Debug, Clone, Copy)]
pub(super) struct Conditions {
    pub(super) error_rate: f64,
    /// How long a failing request takes, when errors are slow (ms).
    pub(super) error_latency: Option<f64>,
    pub(super) latency: f64,
    pub(super) capacity: f64,
    pub(super) outage: Option<OutageMode>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Fault {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) kind: FaultKind,
    /// Repeating faults: (period, time on per period).
    pub(super) cycle: Option<(u64, u64)>,
}

/// Workers and a queue, owned by one route and possibly shared by others.
#[derive(Debug)]
pub(super) struct Pool {
    /// The route whose capacity faults apply.
    pub(super) owner: usize,
    pub(super) workers: u32,
    pub(super) queue_cap: usize,
    pub(super) busy: u32,
    pub(super) queue: VecDeque<u32>,
}

impl Pool {
    pub(super) fn capacity(&self, c: &Conditions) -> u32 {
        ((f64::from(self.workers) * c.capacity).round() as u32).max(1)
    }
}

/// A load balancer: its own arrivals, spread over member routes by the controller.
#[derive(Debug)]
pub(super) struct Balancer {
    pub(super) members: Vec<usize>,
    pub(super) arrivals: Arrivals,
    pub(super) rng_arrival: ChaCha8Rng,
    pub(super) rng_select: ChaCha8Rng,
}

#[derive(Debug)]
pub(super) struct Route {
    pub(super) pool: usize,
    pub(super) timeout: u64,
    pub(super) service: ServiceTime,
    /// `ln` of the log-normal's scale, so that its mean is `mean_ms`.
    pub(super) mu: f64,
    pub(super) calls: Option<usize>,
    pub(super) fallback: Option<usize>,
    pub(super) weight: f64,
    /// The route's latency objective, ms.
    pub(super) slo_ms: f64,
    pub(super) retry: Option<RetrySpec>,
    /// Retry tokens saved (the retry budget).
    pub(super) tokens: f64,
    pub(super) faults: Vec<Fault>,
    pub(super) arrivals: Arrivals,
    pub(super) rng_arrival: ChaCha8Rng,
    pub(super) rng_request: ChaCha8Rng,
    pub(super) rng_call: ChaCha8Rng,
    pub(super) inflight: u32,
}

impl Route {
    pub(super) fn conditions(&self, t: u64) -> Conditions {
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
    pub(super) fn draw_service(&self, rng: &mut ChaCha8Rng) -> f64 {
        draw_service(self.service, self.mu, rng)
    }

    /// The next arrival after `now`, if any before `end`.
    pub(super) fn next_arrival(&mut self, now: u64, end: u64) -> Option<u64> {
        self.arrivals.next(&mut self.rng_arrival, now, end)
    }
}

/// The location of a log-normal of shape `sigma` whose mean is `mean_ms`.
pub(super) fn lognormal_mu(mean_ms: f64, sigma: f64) -> f64 {
    mean_ms.ln() - sigma * sigma / 2.0
}

/// One service time draw in milliseconds, before faults. `mu` is the log-normal's location.
pub(super) fn draw_service(service: ServiceTime, mu: f64, rng: &mut ChaCha8Rng) -> f64 {
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

/// The ChaCha8 stream `which` of `route` (0 arrivals, 1 requests, 2 calls, 3 a balancer's
/// choices), seeded from the scenario's seed.
pub(super) fn stream(seed: u64, route: usize, which: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((route as u64) * 4 + which);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn lognormal_mean_matches() {
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
