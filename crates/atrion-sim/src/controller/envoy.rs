//! Envoy's adaptive-concurrency gradient controller.

use super::*;

impl Checked for EnvoySettings {
    fn problem(&self) -> Option<String> {
        duration_ms("interval_ms", self.interval_ms)
            .or_else(|| {
                let p = self.percentile;
                (!(p.is_finite() && p > 0.0 && p < 1.0)).then(|| format!("`percentile` must be in (0, 1), got {p}"))
            })
            .or_else(|| count("min_concurrency", self.min_concurrency, 1))
            .or_else(|| {
                count("max_limit", self.max_limit, self.min_concurrency.max(1))
                    .map(|m| format!("{m} (and >= min_concurrency)"))
            })
            .or_else(|| {
                outside(
                    "min_rtt_interval_s",
                    self.min_rtt_interval_s,
                    f64::MIN_POSITIVE..=86_400.0,
                    "positive seconds up to one day",
                )
            })
            .or_else(|| count("min_rtt_requests", self.min_rtt_requests, 1))
            .or_else(|| outside("buffer", self.buffer, 0.0..=100.0, "a fraction in [0, 100]"))
    }
}

/// Settings of Envoy's adaptive-concurrency gradient controller.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnvoySettings {
    /// How often the limit is recomputed, milliseconds.
    pub interval_ms: f64,
    /// The latency percentile summarising a window, in (0, 1).
    pub percentile: f64,
    /// Highest limit.
    pub max_limit: u32,
    /// How often the minimum RTT is measured again, seconds.
    pub min_rtt_interval_s: f64,
    /// Requests sampled for the minimum RTT.
    pub min_rtt_requests: u32,
    /// Concurrency while the minimum RTT is measured.
    pub min_concurrency: u32,
    /// Headroom over the minimum RTT, as a fraction of it.
    pub buffer: f64,
}

impl Default for EnvoySettings {
    fn default() -> Self {
        EnvoySettings {
            interval_ms: 100.0,
            percentile: 0.5,
            max_limit: 1_000,
            min_rtt_interval_s: 60.0,
            min_rtt_requests: 50,
            min_concurrency: 3,
            buffer: 0.25,
        }
    }
}

#[derive(Debug, Clone)]
struct EnvoyRoute {
    limit: f64,
    /// Measuring the minimum RTT (concurrency pinned to `min_concurrency`).
    measuring: bool,
    min_rtt: f64,
    next_min_rtt: u64,
    window_end: u64,
    samples: Vec<f64>,
}

/// `gradient = clamp(minRTT (1 + buffer) / sampleRTT, 0.5, 2)`, `new = gradient * limit`,
/// then `new + sqrt(new)`, clamped to `[1, max_limit]`.
fn envoy_limit(s: &EnvoySettings, limit: f64, min_rtt: f64, sample_rtt: f64) -> f64 {
    let gradient = (min_rtt * (1.0 + s.buffer) / sample_rtt.max(1e-9)).clamp(0.5, 2.0);
    let new = gradient * limit;
    (new + new.sqrt()).clamp(1.0, f64::from(s.max_limit))
}

/// Envoy's gradient controller: every interval, `gradient = clamp((minRTT (1 + buffer)) /
/// sampleRTT, 0.5, 2)` with `sampleRTT` the window's percentile, and `limit = gradient *
/// limit + sqrt(gradient * limit)`; the minimum RTT is re-measured periodically with the
/// concurrency pinned low.
#[derive(Debug)]
pub struct Envoy {
    s: EnvoySettings,
    routes: Vec<EnvoyRoute>,
}

impl Envoy {
    /// An Envoy controller per route.
    pub fn new(s: EnvoySettings, n: usize) -> Self {
        let route = EnvoyRoute {
            limit: f64::from(s.min_concurrency),
            measuring: true,
            min_rtt: 0.0,
            next_min_rtt: 0,
            window_end: 0,
            samples: Vec::new(),
        };
        Envoy { routes: vec![route; n], s }
    }

    /// The formula: the next limit from the current one, the minimum RTT and a window's RTT.
    pub fn next_limit(&self, limit: f64, min_rtt: f64, sample_rtt: f64) -> f64 {
        envoy_limit(&self.s, limit, min_rtt, sample_rtt)
    }

    fn percentile(samples: &mut [f64], q: f64) -> f64 {
        samples.sort_by(f64::total_cmp);
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i.min(samples.len() - 1)]
    }
}

impl Controller for Envoy {
    fn kind(&self) -> ControllerKind {
        ControllerKind::Envoy
    }
    fn admit(&mut self, route: usize, now: u64, inflight: u32) -> bool {
        let r = &mut self.routes[route];
        if !r.measuring && now >= r.next_min_rtt {
            r.measuring = true;
            r.samples.clear();
        }
        let limit = if r.measuring { f64::from(self.s.min_concurrency) } else { r.limit };
        f64::from(inflight) < limit.floor()
    }
    fn complete(&mut self, route: usize, now: u64, sample: &Sample) {
        let s = &self.s;
        let r = &mut self.routes[route];
        r.samples.push(sample.latency_ms);
        if r.measuring {
            if r.samples.len() < s.min_rtt_requests as usize {
                return;
            }
            r.min_rtt = Self::percentile(&mut r.samples, s.percentile);
            r.measuring = false;
            r.next_min_rtt = now + (s.min_rtt_interval_s * 1e9) as u64;
        } else if now >= r.window_end {
            let sample_rtt = Self::percentile(&mut r.samples, s.percentile);
            r.limit = envoy_limit(s, r.limit, r.min_rtt, sample_rtt);
        } else {
            return;
        }
        r.window_end = now + (s.interval_ms * MS) as u64;
        r.samples.clear();
    }
    fn gauge(&self, route: usize) -> Gauge {
        let r = &self.routes[route];
        let level = if r.measuring { f64::from(self.s.min_concurrency) } else { r.limit.floor() };
        Gauge { level, state: State::Closed }
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
    fn envoy_gradient_and_headroom() {
        let e = Envoy::new(EnvoySettings::default(), 1);
        // minRTT 10, buffer 25%: sample 12.5 gives gradient 1 and adds sqrt(limit).
        assert!((e.next_limit(100.0, 10.0, 12.5) - 110.0).abs() < 1e-9);
        // A sample of 100 clamps the gradient at 0.5: 50 + sqrt(50).
        assert!((e.next_limit(100.0, 10.0, 100.0) - (50.0 + 50f64.sqrt())).abs() < 1e-9);
        // A fast sample clamps at 2: 200 + sqrt(200).
        assert!((e.next_limit(100.0, 10.0, 1.0) - (200.0 + 200f64.sqrt())).abs() < 1e-9);
    }

    #[test]
    fn envoy_measures_min_rtt_at_min_concurrency_first() {
        let mut e = Envoy::new(EnvoySettings::default(), 1);
        assert!(e.admit(0, 0, 2) && !e.admit(0, 0, 3), "pinned at min_concurrency while measuring");
        for i in 0..50 {
            e.complete(0, i, &sample(10.0 + f64::from(i as u32 % 3), true, 1));
        }
        assert_eq!(e.routes[0].min_rtt, 11.0, "the p50 of the samples");
        assert!(!e.routes[0].measuring);
    }
}
