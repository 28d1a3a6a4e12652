//! Netflix's `AIMDLimit`.

use super::*;

/// Settings of Netflix's AIMD limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AimdSettings {
    /// Starting limit.
    pub initial_limit: u32,
    /// Lowest limit.
    pub min_limit: u32,
    /// Highest limit.
    pub max_limit: u32,
    /// Factor applied on a drop.
    pub backoff_ratio: f64,
    /// A call slower than this counts as a drop, milliseconds.
    pub timeout_ms: f64,
}

impl Default for AimdSettings {
    fn default() -> Self {
        AimdSettings { initial_limit: 20, min_limit: 20, max_limit: 200, backoff_ratio: 0.9, timeout_ms: 5_000.0 }
    }
}

impl Checked for AimdSettings {
    fn problem(&self) -> Option<String> {
        limits_problem(self.initial_limit, self.min_limit, self.max_limit)
            .or_else(|| {
                let b = self.backoff_ratio;
                (!(b.is_finite() && b > 0.0 && b < 1.0)).then(|| format!("`backoff_ratio` must be in (0, 1), got {b}"))
            })
            .or_else(|| duration_ms("timeout_ms", self.timeout_ms))
    }
}

/// Netflix `AIMDLimit`: on a drop (error or timeout) `limit = floor(limit * backoff)`; else,
/// when at least half the limit is in use, `limit + 1`; clamped to `[min, max]`. A request
/// is admitted while in-flight requests are under the limit.
#[derive(Debug)]
pub struct Aimd {
    s: AimdSettings,
    limits: Vec<u32>,
}

impl Aimd {
    /// An AIMD limit per route.
    pub fn new(s: AimdSettings, n: usize) -> Self {
        Aimd { limits: vec![s.initial_limit; n], s }
    }

    /// The formula: the limit after one sample.
    pub fn next_limit(&self, limit: u32, sample: &Sample) -> u32 {
        let next = if !sample.ok || sample.latency_ms > self.s.timeout_ms {
            (f64::from(limit) * self.s.backoff_ratio) as u32
        } else if sample.inflight * 2 >= limit {
            limit + 1
        } else {
            limit
        };
        next.clamp(self.s.min_limit, self.s.max_limit)
    }
}

impl Controller for Aimd {
    fn kind(&self) -> ControllerKind {
        ControllerKind::Aimd
    }
    fn admit(&mut self, route: usize, _: u64, inflight: u32) -> bool {
        inflight < self.limits[route]
    }
    fn complete(&mut self, route: usize, _: u64, sample: &Sample) {
        self.limits[route] = self.next_limit(self.limits[route], sample);
    }
    fn gauge(&self, route: usize) -> Gauge {
        Gauge { level: f64::from(self.limits[route]), state: State::Closed }
    }
    fn transitions(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::tests::sample;

    #[test]
    fn aimd_adds_one_when_busy_and_multiplies_on_a_drop() {
        let a = Aimd::new(AimdSettings::default(), 1);
        assert_eq!(a.next_limit(40, &sample(10.0, true, 20)), 41, "inflight * 2 >= limit: +1");
        assert_eq!(a.next_limit(40, &sample(10.0, true, 19)), 40, "app-limited: unchanged");
        assert_eq!(a.next_limit(40, &sample(10.0, false, 30)), 36, "drop: floor(40 * 0.9)");
        assert_eq!(a.next_limit(40, &sample(6_000.0, true, 30)), 36, "slower than the timeout is a drop");
        assert_eq!(a.next_limit(21, &sample(10.0, false, 30)), 20, "clamped to min");
        assert_eq!(a.next_limit(200, &sample(10.0, true, 200)), 200, "clamped to max");
    }

    #[test]
    fn aimd_admits_under_the_limit() {
        let mut a = Aimd::new(AimdSettings::default(), 1);
        assert!(a.admit(0, 0, 19));
        assert!(!a.admit(0, 0, 20));
    }
}
