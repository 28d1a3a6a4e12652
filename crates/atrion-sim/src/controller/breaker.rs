//! The count-window circuit breaker, as resilience4j and Polly build it.

use super::*;

impl Checked for BreakerSettings {
    fn problem(&self) -> Option<String> {
        count("window", self.window, 1)
            .or_else(|| outside("failure_threshold", self.failure_threshold, 0.0..=1.0, "a rate in [0, 1]"))
            .or_else(|| count("min_calls", self.min_calls, 0))
            .or_else(|| duration_ms("open_ms", self.open_ms))
            .or_else(|| count("half_open_calls", self.half_open_calls, 0))
            .or_else(|| self.slow_call_ms.and_then(|v| duration_ms("slow_call_ms", v)))
    }
}

/// Settings of the count-window breaker.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Calls in the sliding window.
    pub window: u32,
    /// Failure rate at which the breaker opens, in [0, 1].
    pub failure_threshold: f64,
    /// Calls needed in the window before the rate is judged.
    pub min_calls: u32,
    /// How long it stays open, milliseconds.
    pub open_ms: f64,
    /// Probes let through while half-open; 0 closes straight after the open wait.
    pub half_open_calls: u32,
    /// A call slower than this counts as a failure (off when absent), milliseconds.
    pub slow_call_ms: Option<f64>,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            window: 100,
            failure_threshold: 0.5,
            min_calls: 100,
            open_ms: 5_000.0,
            half_open_calls: 10,
            slow_call_ms: None,
        }
    }
}

#[derive(Debug, Clone)]
enum BreakerState {
    Closed,
    Open { until: u64 },
    HalfOpen { issued: u32, done: u32, failed: u32 },
}

#[derive(Debug, Clone)]
struct BreakerRoute {
    state: BreakerState,
    window: VecDeque<bool>,
    failures: u32,
}

/// A count-window circuit breaker: opens when the failure rate of the last `window` calls
/// reaches the threshold, stays open for a fixed wait, then lets `half_open_calls` probes
/// through and closes if their failure rate is under the threshold.
#[derive(Debug)]
pub struct Breaker {
    s: BreakerSettings,
    routes: Vec<BreakerRoute>,
    transitions: u64,
}

impl Breaker {
    /// A breaker for `n` routes.
    pub fn new(s: BreakerSettings, n: usize) -> Self {
        let route = BreakerRoute { state: BreakerState::Closed, window: VecDeque::new(), failures: 0 };
        Breaker { s, routes: vec![route; n], transitions: 0 }
    }

    fn set(&mut self, route: usize, state: BreakerState) {
        let r = &mut self.routes[route];
        if std::mem::discriminant(&r.state) != std::mem::discriminant(&state) {
            self.transitions += 1;
        }
        if matches!(state, BreakerState::Closed) {
            r.window.clear();
            r.failures = 0;
        }
        r.state = state;
    }

    fn open(&mut self, route: usize, now: u64) {
        let until = now + (self.s.open_ms * MS) as u64;
        self.set(route, BreakerState::Open { until });
    }

    /// The state after the open wait has run out: half-open, or closed without probes.
    fn after_wait(&mut self, route: usize) {
        let next = if self.s.half_open_calls == 0 {
            BreakerState::Closed
        } else {
            BreakerState::HalfOpen { issued: 0, done: 0, failed: 0 }
        };
        self.set(route, next);
    }
}

impl Controller for Breaker {
    fn kind(&self) -> ControllerKind {
        ControllerKind::Breaker
    }

    fn admit(&mut self, route: usize, now: u64, _: u32) -> bool {
        if let BreakerState::Open { until } = self.routes[route].state {
            if now < until {
                return false;
            }
            self.after_wait(route);
        }
        match &mut self.routes[route].state {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { issued, .. } => {
                let go = *issued < self.s.half_open_calls;
                *issued += u32::from(go);
                go
            }
        }
    }

    fn complete(&mut self, route: usize, now: u64, sample: &Sample) {
        let failed = !sample.ok || self.s.slow_call_ms.is_some_and(|slow| sample.latency_ms > slow);
        let s = &self.s;
        let r = &mut self.routes[route];
        match &mut r.state {
            BreakerState::Closed => {
                r.window.push_back(failed);
                r.failures += u32::from(failed);
                if r.window.len() > s.window as usize {
                    r.failures -= u32::from(r.window.pop_front().unwrap_or(false));
                }
                let calls = r.window.len() as u32;
                if calls >= s.min_calls.max(1) && f64::from(r.failures) / f64::from(calls) >= s.failure_threshold {
                    self.open(route, now);
                }
            }
            BreakerState::HalfOpen { done, failed: f, .. } => {
                *done += 1;
                *f += u32::from(failed);
                if *done >= s.half_open_calls {
                    let rate = f64::from(*f) / f64::from(*done);
                    if rate >= s.failure_threshold {
                        self.open(route, now);
                    } else {
                        self.set(route, BreakerState::Closed);
                    }
                }
            }
            // Calls admitted before the breaker opened finish while it is open.
            BreakerState::Open { .. } => {}
        }
    }

    fn gauge(&self, route: usize) -> Gauge {
        let r = &self.routes[route];
        let rate = if r.window.is_empty() { 0.0 } else { 100.0 * f64::from(r.failures) / r.window.len() as f64 };
        let state = match r.state {
            BreakerState::Closed => State::Closed,
            BreakerState::Open { .. } => State::Open,
            BreakerState::HalfOpen { .. } => State::HalfOpen,
        };
        Gauge { level: rate, state }
    }

    fn transitions(&self) -> u64 {
        self.transitions
    }

    /// The tick form of the reference's flapping test: closed, it opens when the tick's
    /// error rate is above the threshold; open, it waits `open_ms`, then closes (or goes
    /// half-open) on the first tick after the wait, without judging that tick.
    fn tick(&mut self, route: usize, now: u64, _: f64, error: f64, _: f64) -> bool {
        match self.routes[route].state {
            BreakerState::Open { until } => {
                if now >= until {
                    self.after_wait(route);
                }
            }
            BreakerState::HalfOpen { .. } => {
                if error > self.s.failure_threshold {
                    self.open(route, now);
                } else {
                    self.set(route, BreakerState::Closed);
                }
            }
            BreakerState::Closed => {
                if error > self.s.failure_threshold {
                    self.open(route, now);
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::tests::sample;

    #[test]
    fn breaker_opens_at_the_failure_rate_then_probes_then_closes() {
        let s =
            BreakerSettings { window: 10, min_calls: 10, open_ms: 1_000.0, half_open_calls: 2, ..Default::default() };
        let mut b = Breaker::new(s, 1);
        for i in 0..10 {
            assert!(b.admit(0, i, 0));
            b.complete(0, i, &sample(5.0, i % 2 == 0 && i < 9, 1)); // 5 failures in 10
        }
        assert_eq!(b.gauge(0).state, State::Open, "50% >= threshold");
        assert!(!b.admit(0, 500_000_000, 0), "open for open_ms");
        let after = 1_000_000_010;
        assert!(b.admit(0, after, 0) && b.admit(0, after, 0));
        assert_eq!(b.gauge(0).state, State::HalfOpen);
        assert!(!b.admit(0, after, 0), "only half_open_calls probes");
        b.complete(0, after + 1, &sample(5.0, true, 1));
        b.complete(0, after + 2, &sample(5.0, true, 1));
        assert_eq!(b.gauge(0).state, State::Closed);
        assert_eq!(b.transitions(), 3);
    }

    #[test]
    fn breaker_tick_form_is_the_reference_test() {
        let s = BreakerSettings { failure_threshold: 0.5, open_ms: 300.0, half_open_calls: 0, ..Default::default() };
        let mut b = Breaker::new(s, 1);
        let states: Vec<State> = (0..8u64)
            .map(|i| {
                b.tick(0, (i + 1) * 100_000_000, 0.0, if i % 2 == 0 { 0.4 } else { 0.6 }, 0.0);
                b.gauge(0).state
            })
            .collect();
        use State::*;
        assert_eq!(states, vec![Closed, Open, Open, Open, Closed, Open, Open, Open]);
    }
}
