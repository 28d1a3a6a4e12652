//! The decision: admit or shed, with a reason and a retry-after hint; request priority;
//! softmax selection among alternative routes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mode::Mode;

/// Request priority, the reference's "voltage" tiers. Under load, bulk traffic is shed
/// first and critical traffic last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Voltage 100. Shed only while the route is open.
    Critical,
    /// Voltage 50.
    High,
    /// Voltage 20.
    #[default]
    Normal,
    /// Voltage 5.
    Low,
    /// Voltage 1. The first to be shed.
    Bulk,
}

impl Priority {
    /// All tiers, from critical to bulk.
    pub const ALL: [Priority; 5] =
        [Priority::Critical, Priority::High, Priority::Normal, Priority::Low, Priority::Bulk];

    /// The reference's voltage of this tier.
    pub fn voltage(self) -> f64 {
        match self {
            Priority::Critical => 100.0,
            Priority::High => 50.0,
            Priority::Normal => 20.0,
            Priority::Low => 5.0,
            Priority::Bulk => 1.0,
        }
    }

    /// The priority of a client's retry: one tier lower per retry (`attempt` 0 is the first
    /// try, 1 the first retry), down to bulk; critical stays critical. Under a retry surge
    /// the excess is mostly retries, which have already cost the route once and whose
    /// callers are the likeliest to give up: shedding them first keeps first tries going
    /// through (docs/DESIGN.md §7.2, "Retries").
    pub fn for_attempt(self, attempt: u32) -> Priority {
        if self == Priority::Critical || attempt == 0 {
            return self;
        }
        let tier = Priority::ALL.iter().position(|p| *p == self).unwrap_or(2);
        let lower = tier.saturating_add(attempt.min(4) as usize).min(Priority::ALL.len() - 1);
        Priority::ALL[lower]
    }

    /// The name used in traces and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
            Priority::Bulk => "bulk",
        }
    }
}

/// A priority name that is not one of the five tiers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority `{0}`, expected critical, high, normal, low or bulk")]
pub struct UnknownPriority(pub String);

impl std::str::FromStr for Priority {
    type Err = UnknownPriority;
    fn from_str(s: &str) -> Result<Self, UnknownPriority> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownPriority(s.to_owned()))
    }
}

/// Admit or shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Let the request through.
    Admit,
    /// Refuse it now; try again after the hint.
    Shed,
}

impl Verdict {
    /// The name used in output (`admit`, `shed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Admit => "admit",
            Verdict::Shed => "shed",
        }
    }
}

/// Why a decision went the way it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// Resistance is under this priority's threshold.
    Healthy,
    /// The route is new and still learning.
    Bootstrap,
    /// Half-open: admitted as one of this window's probes.
    Probe,
    /// Over threshold, but admitted to keep telemetry flowing (one per keep-alive interval).
    Keepalive,
    /// The route is open (tripped).
    Open,
    /// Half-open, and this window's probe quota is used up.
    ProbeQuota,
    /// Resistance is above this priority's threshold (the reference: voltage not above R).
    Overloaded,
    /// The reference's v1 guard: `R > soft_limit * break`.
    SoftLimit,
    /// Shed by the proportional answer to overload: the route's latency is above its
    /// baseline, and this share of its traffic is being turned away (default model).
    Throttled,
    /// An operator holds the route open (every request shed) or closed (every request
    /// admitted), whatever its physics says ([`crate::Engine::hold`]).
    Held,
    /// A ban on the route or on the caller's client key is in force until its deadline
    /// (a cluster-wide policy).
    Banned,
    /// Admitted although the physics would shed: the route runs in shadow mode.
    Shadow,
    /// Admitted on no state: the route table was full and nothing could be evicted, so the
    /// route is not tracked (its reports are dropped; see [`crate::Engine::decide`]).
    Untracked,
}

impl Reason {
    /// Every reason, in the order of [`Reason::index`].
    pub const ALL: [Reason; 13] = [
        Reason::Healthy,
        Reason::Bootstrap,
        Reason::Probe,
        Reason::Keepalive,
        Reason::Open,
        Reason::ProbeQuota,
        Reason::Overloaded,
        Reason::SoftLimit,
        Reason::Throttled,
        Reason::Held,
        Reason::Banned,
        Reason::Shadow,
        Reason::Untracked,
    ];

    /// Its position in [`Reason::ALL`]: a dense index for per-reason counters.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Healthy => "healthy",
            Reason::Bootstrap => "bootstrap",
            Reason::Probe => "probe",
            Reason::Keepalive => "keepalive",
            Reason::Open => "open",
            Reason::ProbeQuota => "probe_quota",
            Reason::Overloaded => "overloaded",
            Reason::SoftLimit => "soft_limit",
            Reason::Throttled => "throttled",
            Reason::Held => "held",
            Reason::Banned => "banned",
            Reason::Shadow => "shadow",
            Reason::Untracked => "untracked",
        }
    }
}

/// The engine's answer for one request. A shed is a value, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Decision {
    /// Admit or shed.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// The route's mode when deciding.
    pub mode: Mode,
    /// The resistance the decision was made against (ohms).
    pub resistance: f64,
    /// When shed: how long to wait before trying again.
    pub retry_after: Option<Duration>,
}

impl Decision {
    /// True when the request may go ahead.
    pub fn is_admitted(&self) -> bool {
        self.verdict == Verdict::Admit
    }

    pub(crate) fn admit(reason: Reason, mode: Mode, resistance: f64) -> Self {
        Decision { verdict: Verdict::Admit, reason, mode, resistance, retry_after: None }
    }

    pub(crate) fn shed(reason: Reason, mode: Mode, resistance: f64, retry_after: Duration) -> Self {
        Decision { verdict: Verdict::Shed, reason, mode, resistance, retry_after: Some(retry_after) }
    }
}

/// Softmax selection: picks index `i` with probability `exp(-beta R_i) / sum_k exp(-beta R_k)`
/// among candidates that are `Some(R)` (a `None` is excluded, as an open route is).
///
/// `u` is a uniform random number in `[0, 1)` supplied by the caller, so that selection is
/// deterministic under test. Returns `None` when no candidate is eligible. Does not allocate:
/// the iterator is walked twice.
pub fn softmax_select<I>(candidates: I, beta: f64, u: f64) -> Option<usize>
where
    I: IntoIterator<Item = Option<f64>>,
    I::IntoIter: Clone,
{
    let iter = candidates.into_iter();
    // Streaming log-sum-exp: weights are taken relative to the smallest R seen so far.
    let mut min = f64::INFINITY;
    let mut total = 0.0;
    for r in iter.clone().flatten().filter(|r| r.is_finite()) {
        if r < min {
            total *= (-beta * (min - r)).exp();
            min = r;
        }
        total += (-beta * (r - min)).exp();
    }
    if total <= 0.0 || !total.is_finite() {
        return None;
    }
    let target = u.clamp(0.0, 1.0) * total;
    let mut acc = 0.0;
    let mut last = None;
    for (i, r) in iter.enumerate() {
        let Some(r) = r.filter(|r| r.is_finite()) else { continue };
        acc += (-beta * (r - min)).exp();
        last = Some(i);
        if target < acc {
            return Some(i);
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed_once_at_its_index() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let names: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
    }

    #[test]
    fn a_retry_is_one_tier_lower_per_attempt_and_critical_stays() {
        assert_eq!(Priority::Normal.for_attempt(0), Priority::Normal);
        assert_eq!(Priority::Normal.for_attempt(1), Priority::Low);
        assert_eq!(Priority::Normal.for_attempt(2), Priority::Bulk);
        assert_eq!(Priority::High.for_attempt(1), Priority::Normal);
        assert_eq!(Priority::Bulk.for_attempt(3), Priority::Bulk);
        assert_eq!(Priority::Low.for_attempt(u32::MAX), Priority::Bulk);
        assert_eq!(Priority::Critical.for_attempt(5), Priority::Critical);
    }

    #[test]
    fn priority_parses() {
        assert_eq!("BULK".parse::<Priority>().unwrap(), Priority::Bulk);
        assert_eq!(" high".parse::<Priority>().unwrap(), Priority::High);
        assert!("urgent".parse::<Priority>().is_err());
    }

    #[test]
    fn softmax_follows_weights() {
        // R = 10 and R = 10 + ln 3 with beta 1: weights 3:1, so u < 0.75 picks the first.
        let rs = [Some(10.0), Some(10.0 + 3f64.ln())];
        assert_eq!(softmax_select(rs, 1.0, 0.74), Some(0));
        assert_eq!(softmax_select(rs, 1.0, 0.76), Some(1));
        assert_eq!(softmax_select(rs, 1.0, 0.999_999), Some(1));
    }

    #[test]
    fn softmax_skips_excluded_and_handles_none() {
        assert_eq!(softmax_select([None, Some(50.0), None], 1.0, 0.0), Some(1));
        assert_eq!(softmax_select([None, None], 1.0, 0.5), None);
        assert_eq!(softmax_select(std::iter::empty::<Option<f64>>(), 1.0, 0.5), None);
        // Large resistances do not underflow to "no candidate".
        assert_eq!(softmax_select([Some(5_000.0), Some(6_000.0)], 1.0, 0.5), Some(0));
    }

    #[test]
    fn softmax_frequencies_match_probabilities() {
        let rs = [Some(10.0), Some(11.0), Some(12.0)];
        let mut counts = [0u32; 3];
        let n = 10_000;
        for k in 0..n {
            let u = (f64::from(k) + 0.5) / f64::from(n);
            counts[softmax_select(rs, 1.0, u).unwrap()] += 1;
        }
        let z: f64 = [0.0f64, -1.0, -2.0].iter().map(|x| x.exp()).sum();
        for (i, c) in counts.iter().enumerate() {
            let expected = (-(i as f64)).exp() / z;
            assert!((f64::from(*c) / f64::from(n) - expected).abs() < 0.001);
        }
    }
}
