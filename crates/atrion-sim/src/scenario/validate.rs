//! The rules a scenario must keep before it runs: sizes, rates and times in range, known
//! routes and controllers, faults inside the run, and resource bounds that refuse a run
//! whose memory or time would be absurd, with its estimate.

use super::*;

/// Resource bounds of a scenario: what a run may ask for before it is refused with its
/// estimate (memory or time that would be absurd).
const MAX_BINS: f64 = 2_000_000.0;
const MAX_TICKS: u32 = 10_000_000;
const MAX_WORKERS: u32 = 100_000;
const MAX_QUEUE: u32 = 10_000_000;
/// The longest time in milliseconds a scenario value may hold: one day.
const MAX_MS: f64 = 86_400_000.0;
const MAX_SIGMA: f64 = 5.0;
const MAX_MULTIPLIER: f64 = 10_000.0;
const MAX_REQUESTS: f64 = 2e9;

impl Signal {
    /// What makes the signal unusable as input on channel `max` (a latency in ms up to
    /// [`atrion_core::Telemetry::MAX_LATENCY_MS`], a score up to
    /// [`atrion_core::Telemetry::MAX_SCORE`]): a value that is not finite, is negative, or
    /// is over `max` (the engine would refuse it, and the run would measure nothing).
    pub fn problem(&self, max: f64) -> Option<String> {
        let ok = |v: f64| v.is_finite() && (0.0..=max).contains(&v);
        match self {
            Signal::Constant(v) if !ok(*v) => Some(format!("{v} is not in [0, {max}]")),
            Signal::Alternate(vs) if vs.is_empty() => Some("no values".into()),
            Signal::Alternate(vs) => vs.iter().find(|v| !ok(**v)).map(|v| format!("{v} is not in [0, {max}]")),
            Signal::Sine { offset, amplitude, period } => {
                if !(ok(*offset) && amplitude.is_finite() && ok(offset + amplitude.abs())) {
                    Some(format!("offset and offset + |amplitude| must be in [0, {max}]"))
                } else if !(period.is_finite() && *period > 0.0) {
                    Some(format!("period must be positive, got {period}"))
                } else {
                    None
                }
            }
            Signal::Constant(_) => None,
        }
    }
}

impl Scenario {
    fn invalid(&self, field: impl Into<String>, reason: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid { scenario: self.name.clone(), field: field.into(), reason: reason.into() }
    }

    /// Checks every rule: positive sizes and rates, faults inside the run, known routes.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(self.invalid("name", "must be non-empty ASCII letters, digits, `-` or `_`"));
        }
        if !pos(self.duration_s) || self.duration_s > 86_400.0 {
            return Err(self.invalid("duration_s", "must be in (0, 86400]"));
        }
        if let Some(q) = self.quick_duration_s
            && (!pos(q) || q > self.duration_s)
        {
            return Err(self.invalid("quick_duration_s", "must be in (0, duration_s]"));
        }
        if !pos(self.bin_ms) || self.bin_ms > self.duration_s * 1e3 {
            return Err(self.invalid("bin_ms", "must be positive and at most the duration"));
        }
        let bins = self.duration_s * 1e3 / self.bin_ms;
        if bins > MAX_BINS {
            // Each bin is kept per route and per controller, twice (goodput and shedding).
            let bytes =
                bins * (self.routes.len() + 1) as f64 * crate::controller::ControllerKind::ALL.len() as f64 * 64.0;
            return Err(self.invalid(
                "bin_ms",
                format!(
                    "{} ms bins over {} s are {bins:.3e} bins (about {:.1} GB); at most {MAX_BINS:.0}",
                    self.bin_ms,
                    self.duration_s,
                    bytes / 1e9
                ),
            ));
        }
        if !pos(self.slo_ms) {
            return Err(self.invalid("slo_ms", "must be positive"));
        }
        if let Some(t) = &self.telemetry {
            if !pos(t.tick_ms) || t.tick_ms > MAX_MS || t.ticks == 0 || t.ticks > MAX_TICKS {
                return Err(self
                    .invalid("telemetry", format!("tick_ms must be in (0, {MAX_MS}] and ticks in [1, {MAX_TICKS}]")));
            }
            for (name, sig, max) in [
                ("latency", &t.latency, atrion_core::Telemetry::MAX_LATENCY_MS),
                ("error", &t.error, atrion_core::Telemetry::MAX_SCORE),
                ("saturation", &t.saturation, atrion_core::Telemetry::MAX_SCORE),
            ] {
                if let Some(why) = sig.problem(max) {
                    return Err(self.invalid(format!("telemetry.{name}"), why));
                }
            }
        } else if self.routes.is_empty() {
            return Err(self.invalid("route", "a scenario needs at least one route (or a [telemetry] section)"));
        }
        let names: Vec<&str> = self.routes.iter().map(|r| r.name.as_str()).collect();
        for (i, r) in self.routes.iter().enumerate() {
            let f = |k: &str| format!("route[{i}].{k}");
            if r.name.is_empty() || names[..i].contains(&r.name.as_str()) {
                return Err(self.invalid(f("name"), "must be non-empty and unique"));
            }
            if r.workers == 0 || r.workers > MAX_WORKERS {
                return Err(self.invalid(f("workers"), format!("must be in [1, {MAX_WORKERS}]")));
            }
            if r.queue > MAX_QUEUE {
                return Err(self.invalid(f("queue"), format!("must be at most {MAX_QUEUE}")));
            }
            if !pos(r.timeout_ms) || r.timeout_ms > MAX_MS {
                return Err(self.invalid(f("timeout_ms"), format!("must be in (0, {MAX_MS}] (one day)")));
            }
            if !(r.weight.is_finite() && r.weight >= 0.0) {
                return Err(self.invalid(f("weight"), "must be finite and >= 0"));
            }
            let ms = |v: f64| pos(v) && v <= MAX_MS;
            let sigma_ok = |v: f64| (0.0..=MAX_SIGMA).contains(&v);
            let svc_ok = match r.service {
                ServiceTime::Constant { mean_ms } | ServiceTime::Exponential { mean_ms } => ms(mean_ms),
                ServiceTime::Lognormal { mean_ms, sigma } => ms(mean_ms) && sigma_ok(sigma),
                ServiceTime::Bimodal { mean_ms, slow_ms, slow_share, sigma } => {
                    ms(mean_ms) && ms(slow_ms) && (0.0..=1.0).contains(&slow_share) && sigma_ok(sigma)
                }
            };
            if !svc_ok {
                return Err(self.invalid(
                    f("service"),
                    format!("means in (0, {MAX_MS}] ms, sigma in [0, {MAX_SIGMA}], slow_share in [0, 1]"),
                ));
            }
            if r.slo_ms.is_some_and(|v| !pos(v)) {
                return Err(self.invalid(f("slo_ms"), "must be positive"));
            }
            if let Some(rt) = &r.retry {
                if rt.attempts == 0 || rt.attempts > 10 {
                    return Err(self.invalid(f("retry.attempts"), "must be in [1, 10]"));
                }
                if !(ms(rt.backoff_ms) && (1.0..=100.0).contains(&rt.multiplier)) {
                    return Err(self.invalid(
                        f("retry.backoff_ms"),
                        format!("backoff_ms in (0, {MAX_MS}], multiplier in [1, 100]"),
                    ));
                }
                if !(0.0..=1e6).contains(&rt.budget) {
                    return Err(self.invalid(f("retry.budget"), "must be in [0, 1e6]"));
                }
            }
            if let Some(p) = &r.priority {
                p.parse::<atrion_core::Priority>().map_err(|e| self.invalid(f("priority"), e.to_string()))?;
            }
            if let Some(c) = &r.calls
                && (!names.contains(&c.as_str()) || c == &r.name)
            {
                return Err(self.invalid(f("calls"), format!("`{c}` is not another route of the scenario")));
            }
            if let Some(fb) = &r.fallback
                && (!names.contains(&fb.as_str()) || fb == &r.name)
            {
                return Err(self.invalid(f("fallback"), format!("`{fb}` is not another route of the scenario")));
            }
            if let Some(o) = &r.shares {
                let owner = self.routes.iter().find(|x| &x.name == o);
                if owner.is_none_or(|x| x.shares.is_some() || x.name == r.name) {
                    return Err(self.invalid(f("shares"), format!("`{o}` is not another route owning its workers")));
                }
            }
            match &r.traffic {
                Some(Traffic::Replay { speed, .. }) if !pos(*speed) => {
                    return Err(self.invalid(f("traffic.speed"), "must be positive"));
                }
                Some(Traffic::Replay { .. }) | None => {}
                Some(t) => {
                    let rates_ok = match *t {
                        Traffic::Spike { start_s, end_s, .. } | Traffic::Ramp { start_s, end_s, .. } => {
                            start_s.is_finite() && end_s.is_finite() && start_s >= 0.0 && start_s < end_s
                        }
                        Traffic::Sine { period_s, amplitude, .. } => pos(period_s) && amplitude.is_finite(),
                        _ => true,
                    };
                    let peak = t.peak();
                    if !(rates_ok && peak.is_finite() && (0.0..=10_000_000.0).contains(&peak)) {
                        return Err(self.invalid(f("traffic"), "rates must be in [0, 1e7] and windows ordered"));
                    }
                }
            }
        }
        // A chain must not loop.
        for r in &self.routes {
            let mut hops = 0;
            let mut at = r;
            while let Some(next) = &at.calls {
                hops += 1;
                at = self.routes.iter().find(|x| &x.name == next).unwrap_or(at);
                if hops > self.routes.len() {
                    return Err(self.invalid("route.calls", format!("`{}` calls itself through a loop", r.name)));
                }
            }
        }
        for (i, b) in self.balancers.iter().enumerate() {
            let f = |k: &str| format!("balancer[{i}].{k}");
            if b.members.len() < 2 {
                return Err(self.invalid(f("members"), "needs at least two routes"));
            }
            for (k, m) in b.members.iter().enumerate() {
                if !names.contains(&m.as_str()) || b.members[..k].contains(m) {
                    return Err(
                        self.invalid(f("members"), format!("`{m}` is not a route of the scenario, or is listed twice"))
                    );
                }
            }
            if matches!(b.traffic, Traffic::Replay { .. }) || !(b.traffic.peak().is_finite() && b.traffic.peak() <= 1e7)
            {
                return Err(self.invalid(f("traffic"), "a balancer takes a rate pattern (not replay) up to 1e7 rps"));
            }
        }
        for (i, fault) in self.faults.iter().enumerate() {
            let f = |k: &str| format!("fault[{i}].{k}");
            if !(fault.start_s.is_finite()
                && fault.end_s.is_finite()
                && 0.0 <= fault.start_s
                && fault.start_s < fault.end_s)
            {
                return Err(self.invalid(f("start_s"), "need 0 <= start_s < end_s"));
            }
            if fault.period_s.is_some_and(|p| !(0.001..=86_400.0).contains(&p))
                || !(fault.duty > 0.0 && fault.duty <= 1.0)
            {
                return Err(self.invalid(f("period_s"), "period_s must be in [0.001, 86400] and duty in (0, 1]"));
            }
            if let Some(route) = &fault.route
                && !names.contains(&route.as_str())
            {
                return Err(self.invalid(f("route"), format!("unknown route `{route}`")));
            }
            let ok = match fault.kind {
                FaultKind::Errors { rate, latency_ms } => {
                    (0.0..=1.0).contains(&rate) && latency_ms.is_none_or(|l| (0.0..=MAX_MS).contains(&l))
                }
                FaultKind::Latency { multiplier } => (0.0..=MAX_MULTIPLIER).contains(&multiplier),
                FaultKind::Capacity { factor } => factor > 0.0 && factor <= 1.0,
                FaultKind::Outage { .. } => true,
                FaultKind::Degrade { to_multiplier } => (1.0..=MAX_MULTIPLIER).contains(&to_multiplier),
            };
            if !ok {
                return Err(self.invalid(
                    f("kind"),
                    format!(
                        "rate in [0, 1], latency_ms in [0, {MAX_MS}], multiplier in [0, {MAX_MULTIPLIER}], \
                         factor in (0, 1], to_multiplier in [1, {MAX_MULTIPLIER}]"
                    ),
                ));
            }
        }
        // The work: every offered request is an event; refuse a run that would take hours.
        let offered: f64 = self.routes.iter().filter_map(|r| r.traffic.as_ref()).map(Traffic::peak).sum::<f64>()
            + self.balancers.iter().map(|b| b.traffic.peak()).sum::<f64>();
        let requests = offered * self.duration_s;
        if requests > MAX_REQUESTS {
            return Err(self.invalid(
                "traffic",
                format!(
                    "up to {requests:.3e} requests per controller (about {:.0} s at 2 M/s each); at most {MAX_REQUESTS:.0e}",
                    requests / 2e6
                ),
            ));
        }
        for (i, e) in self.expects.iter().enumerate() {
            let f = |k: &str| format!("expect[{i}].{k}");
            if let Some(route) = &e.route {
                if !names.contains(&route.as_str()) {
                    return Err(self.invalid(f("route"), format!("unknown route `{route}`")));
                }
                if !e.metric.per_route() {
                    return Err(self.invalid(
                        f("route"),
                        format!("`{}` is not measured per route (goodput, healthy_shed, shed, error_rate, detect_s, recover_s are)", e.metric.as_str()),
                    ));
                }
            }
            if e.min.is_none() && e.max.is_none() && e.equals.is_none() && e.at_most.is_none() && e.at_least.is_none() {
                return Err(self.invalid(f("metric"), "needs min, max, equals, at_most or at_least"));
            }
        }
        Ok(())
    }
}
