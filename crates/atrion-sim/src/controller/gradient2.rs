//! Netflix's `Gradient2Limit`.

use super::*;

/// Settings of Netflix's Gradient2 limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gradient2Settings {
    /// Starting limit.
    pub initial_limit: u32,
    /// Lowest limit.
    pub min_limit: u32,
    /// Highest limit (`maxConcurrency`).
    pub max_limit: u32,
    /// How much of the new estimate is taken per sample.
    pub smoothing: f64,
    /// Growth allowed per sample while latency is low.
    pub queue_size: f64,
    /// Samples in the long RTT average.
    pub long_window: u32,
    /// Tolerated ratio of short to long RTT before the limit shrinks.
    pub rtt_tolerance: f64,
}

impl Default for Gradient2Settings {
    fn default() -> Self {
        Gradient2Settings {
            initial_limit: 20,
            min_limit: 20,
            max_limit: 200,
            smoothing: 0.2,
            queue_size: 4.0,
            long_window: 600,
            rtt_tolerance: 1.5,
        }
    }
}

impl Checked for Gradient2Settings {
    fn problem(&self) -> Option<String> {
        limits_problem(self.initial_limit, self.min_limit, self.max_limit)
            .or_else(|| outside("smoothing", self.smoothing, f64::MIN_POSITIVE..=1.0, "in (0, 1]"))
            .or_else(|| outside("queue_size", self.queue_size, 0.0..=f64::from(MAX_COUNT), "finite and >= 0"))
            .or_else(|| count("long_window", self.long_window, 1))
            .or_else(|| outside("rtt_tolerance", self.rtt_tolerance, 1.0..=1e6, ">= 1"))
    }
}

/// Netflix's exponential average with a warm-up: the plain mean of the first 10 samples,
/// then `v = v (1 - f) + x f` with `f = 2 / (window + 1)`.
#[derive(Debug, Clone, Copy, Default)]
struct ExpAvg {
    count: u32,
    sum: f64,
    value: f64,
}

impl ExpAvg {
    fn add(&mut self, x: f64, window: u32) -> f64 {
        if self.count < 10 {
            self.count += 1;
            self.sum += x;
            self.value = self.sum / f64::from(self.count);
        } else {
            let f = 2.0 / (f64::from(window) + 1.0);
            self.value = self.value * (1.0 - f) + x * f;
        }
        self.value
    }
}

#[derive(Debug, Clone, Copy)]
struct Gradient2Route {
    limit: f64,
    long: ExpAvg,
}

/// Netflix `Gradient2Limit`: `gradient = clamp(tolerance * longRtt / shortRtt, 0.5, 1)`,
/// `new = limit * gradient + queue`, `limit = limit (1 - smoothing) + new * smoothing`, not
/// updated while fewer than half the limit are in flight; the long RTT is cut by 10%
/// whenever it is more than twice the short one.
#[derive(Debug)]
pub struct Gradient2 {
    s: Gradient2Settings,
    routes: Vec<Gradient2Route>,
}

impl Gradient2 {
    /// A Gradient2 limit per route.
    pub fn new(s: Gradient2Settings, n: usize) -> Self {
        let route = Gradient2Route { limit: f64::from(s.initial_limit), long: ExpAvg::default() };
        Gradient2 { routes: vec![route; n], s }
    }

    /// The formula: one sample's update of a route's (limit, long RTT average).
    fn update(&self, r: &mut Gradient2Route, rtt: f64, inflight: u32) {
        let s = &self.s;
        let short = rtt.max(1e-6);
        let long = r.long.add(short, s.long_window);
        if long / short > 2.0 {
            r.long.value *= 0.9;
        }
        if f64::from(inflight) < r.limit / 2.0 {
            return;
        }
        let gradient = (s.rtt_tolerance * long / short).clamp(0.5, 1.0);
        let new = r.limit * gradient + s.queue_size;
        let new = r.limit * (1.0 - s.smoothing) + new * s.smoothing;
        r.limit = new.clamp(f64::from(s.min_limit), f64::from(s.max_limit));
    }
}

impl Controller for Gradient2 {
    fn kind(&self) -> ControllerKind {
        ControllerKind::Gradient2
    }
    fn admit(&mut self, route: usize, _: u64, inflight: u32) -> bool {
        f64::from(inflight) < self.routes[route].limit.floor()
    }
    fn complete(&mut self, route: usize, _: u64, sample: &Sample) {
        let mut r = self.routes[route];
        self.update(&mut r, sample.latency_ms, sample.inflight);
        self.routes[route] = r;
    }
    fn gauge(&self, route: usize) -> Gauge {
        Gauge { level: self.routes[route].limit.floor(), state: State::Closed }
    }
    fn transitions(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_avg_is_a_plain_mean_for_ten_samples_then_exponential() {
        let mut m = ExpAvg::default();
        for x in 1..=10 {
            m.add(f64::from(x), 600);
        }
        assert_eq!(m.value, 5.5);
        let f = 2.0 / 601.0;
        assert!((m.add(100.0, 600) - (5.5 * (1.0 - f) + 100.0 * f)).abs() < 1e-12);
    }

    #[test]
    fn gradient2_follows_its_formula() {
        let g = Gradient2::new(Gradient2Settings::default(), 1);
        let mut r = Gradient2Route { limit: 100.0, long: ExpAvg { count: 10, sum: 0.0, value: 10.0 } };
        // Short RTT 30 ms against a long 10 ms: gradient clamps at 0.5; new = 100 * 0.5 + 4 =
        // 54; smoothed: 100 * 0.8 + 54 * 0.2 = 90.8.
        g.update(&mut r, 30.0, 80);
        let long = 10.0 * (1.0 - 2.0 / 601.0) + 30.0 * 2.0 / 601.0;
        let gradient = (1.5 * long / 30.0_f64).clamp(0.5, 1.0);
        let expected = 100.0 * 0.8 + (100.0 * gradient + 4.0) * 0.2;
        assert!((r.limit - expected).abs() < 1e-9, "{} vs {expected}", r.limit);
        // App-limited (inflight under half the limit): unchanged.
        let before = r.limit;
        g.update(&mut r, 30.0, 10);
        assert_eq!(r.limit, before);
        // Low RTT: gradient 1, the limit grows by smoothing * queue_size.
        let mut r = Gradient2Route { limit: 50.0, long: ExpAvg { count: 10, sum: 0.0, value: 10.0 } };
        g.update(&mut r, 10.0, 50);
        assert!((r.limit - 50.8).abs() < 1e-9, "{}", r.limit);
    }

    #[test]
    fn gradient2_cuts_a_long_rtt_twice_the_short_one() {
        let g = Gradient2::new(Gradient2Settings::default(), 1);
        let mut r = Gradient2Route { limit: 20.0, long: ExpAvg { count: 10, sum: 0.0, value: 100.0 } };
        g.update(&mut r, 10.0, 0);
        let long = 100.0 * (1.0 - 2.0 / 601.0) + 10.0 * 2.0 / 601.0;
        assert!((r.long.value - long * 0.9).abs() < 1e-9);
    }
}
