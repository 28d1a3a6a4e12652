//! Workload profiles: what a route's work is expected to cost, from a health check to a task
//! that runs for an hour (docs/DESIGN.md §2, task leases).
//!
//! A profile is a prior, not a rule. It sets a route's physics for work of its length
//! ([`crate::PhysicsConfig::with_workload`]: the latency baseline, the scar multiplier, the
//! learned normal's ceiling), seeds the learned normal of a route that has learned nothing
//! yet, and gives a task lease its defaults (longest duration, heartbeat interval, whether
//! an abort handle is required). Once a route has learned its own normal, the normal
//! judges latency, not the profile.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::telemetry::Telemetry;

/// The named workload profiles (the reference's `LIGHT`, `STANDARD`, `HEAVY`, `EXTREME`);
/// a custom one is a [`ProfileConfig`] built by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Fast in-memory work: baseline 10 ms, scar x2; leases of at most 1 s.
    Light,
    /// Ordinary API calls: baseline 100 ms, scar x1; leases of at most 30 s.
    Standard,
    /// Heavy jobs: baseline 5 s, scar x0.5; leases of at most 5 min, a heartbeat every 5 s,
    /// an abort handle required.
    Heavy,
    /// Batch or model training: baseline 60 s, scar x0.2; leases of at most 1 h, a heartbeat
    /// every 10 s, an abort handle required.
    Extreme,
}

impl Profile {
    /// Every named profile, lightest first.
    pub const ALL: [Profile; 4] = [Profile::Light, Profile::Standard, Profile::Heavy, Profile::Extreme];

    /// (latency baseline in ms, scar multiplier)
    pub(super) fn constants(self) -> (f64, f64) {
        match self {
            Profile::Light => (10.0, 2.0),
            Profile::Standard => (100.0, 1.0),
            Profile::Heavy => (5_000.0, 0.5),
            Profile::Extreme => (60_000.0, 0.2),
        }
    }

    /// The profile's name as configs and the API write it (`light`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Profile::Light => "light",
            Profile::Standard => "standard",
            Profile::Heavy => "heavy",
            Profile::Extreme => "extreme",
        }
    }

    /// Everything the profile sets.
    pub fn config(self) -> ProfileConfig {
        let (baseline_latency_ms, scar_multiplier) = self.constants();
        let (max_duration, heartbeat, requires_abort) = match self {
            Profile::Light => (Duration::from_secs(1), None, false),
            Profile::Standard => (Duration::from_secs(30), None, false),
            Profile::Heavy => (Duration::from_secs(300), Some(Duration::from_secs(5)), true),
            Profile::Extreme => (Duration::from_secs(3_600), Some(Duration::from_secs(10)), true),
        };
        ProfileConfig {
            baseline_latency_ms,
            scar_multiplier,
            max_duration,
            heartbeat,
            requires_abort,
            capacity: None,
            profile: Some(self),
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = ConfigError;

    /// A profile by name, in any case (`heavy`, `HEAVY`).
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or(ConfigError::UnknownName { field: "profile", expected: "`light`, `standard`, `heavy` or `extreme`" })
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a workload profile sets: a named one's ([`Profile::config`]) or a custom one (start
/// from a named one, [`ProfileConfig::custom`], and change fields).
///
/// ```
/// use std::time::Duration;
/// use atrion_core::Profile;
///
/// // Video transcoding: 30 s is normal, 10 min the most, a heartbeat every 15 s.
/// let mut transcode = Profile::Heavy.config().custom();
/// transcode.baseline_latency_ms = 30_000.0;
/// transcode.max_duration = Duration::from_secs(600);
/// transcode.heartbeat = Some(Duration::from_secs(15));
/// transcode.validate()?;
/// # Ok::<(), atrion_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProfileConfig {
    /// The latency expected of the route's work (ms): the fixed baseline of a route that
    /// does not learn, and the seed of the learned normal of one that does.
    pub baseline_latency_ms: f64,
    /// Multiplies the rate at which trauma becomes scar (lower: more tolerant).
    pub scar_multiplier: f64,
    /// A lease's longest life: one still running after it is aborted and reported as a
    /// failure. At most one day (the longest latency telemetry carries).
    pub max_duration: Duration,
    /// How often a lease's holder promises a heartbeat; a lease that misses
    /// [`ProfileConfig::MISSED_HEARTBEATS`] in a row is aborted. `None`: no heartbeat needed.
    pub heartbeat: Option<Duration>,
    /// Whether a lease must be started with an abort handle (something that can stop the
    /// work when the lease is aborted): heavy and extreme work must be stoppable.
    pub requires_abort: bool,
    /// How many tasks the route runs at once at full load, when the caller knows it: a
    /// lease's report then carries the saturation `active / capacity` (capped at 1). `None`:
    /// the neutral saturation (the model's baseline, which adds no pressure).
    pub capacity: Option<u32>,
    /// The named profile this came from; `None` for a custom one.
    pub profile: Option<Profile>,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        Profile::Standard.config()
    }
}

impl From<Profile> for ProfileConfig {
    fn from(p: Profile) -> Self {
        p.config()
    }
}

impl ProfileConfig {
    /// Heartbeat intervals a lease may miss in a row before it is aborted: its heartbeat
    /// deadline is the last heartbeat (or its start) plus this many intervals (the
    /// reference's grace).
    pub const MISSED_HEARTBEATS: u32 = 3;

    /// The same values, marked custom (its name is no longer a named profile's).
    pub fn custom(mut self) -> Self {
        self.profile = None;
        self
    }

    /// The profile's name: a named profile's, or `custom`.
    pub fn name(&self) -> &'static str {
        self.profile.map_or("custom", Profile::name)
    }

    /// The longest a lease may go without a heartbeat: `MISSED_HEARTBEATS` intervals.
    pub fn heartbeat_timeout(&self) -> Option<Duration> {
        self.heartbeat.map(|h| h.saturating_mul(Self::MISSED_HEARTBEATS))
    }

    /// Checks every field; the error names the first that breaks a rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let max_ms = Telemetry::MAX_LATENCY_MS;
        let b = self.baseline_latency_ms;
        if !(b.is_finite() && b > 0.0 && b <= max_ms) {
            return Err(ConfigError::OutOfRange {
                field: "profile.baseline_latency_ms",
                value: b,
                expected: "in (0, 86400000] ms",
            });
        }
        let m = self.scar_multiplier;
        if !(m.is_finite() && m > 0.0 && m <= 100.0) {
            return Err(ConfigError::OutOfRange {
                field: "profile.scar_multiplier",
                value: m,
                expected: "in (0, 100]",
            });
        }
        let d = self.max_duration;
        if d.is_zero() || d.as_secs_f64() * 1e3 > max_ms {
            return Err(ConfigError::OutOfRange {
                field: "profile.max_duration",
                value: d.as_secs_f64(),
                expected: "in (0, 86400] s",
            });
        }
        if let Some(h) = self.heartbeat
            && (h.is_zero() || h > d)
        {
            return Err(ConfigError::OutOfRange {
                field: "profile.heartbeat",
                value: h.as_secs_f64(),
                expected: "> 0 s and at most max_duration",
            });
        }
        if self.capacity == Some(0) {
            return Err(ConfigError::OutOfRange { field: "profile.capacity", value: 0.0, expected: ">= 1" });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_profiles_are_valid_and_parse() {
        for p in Profile::ALL {
            p.config().validate().unwrap();
            assert_eq!(p.name().parse::<Profile>().unwrap(), p);
            assert_eq!(p.name().to_uppercase().parse::<Profile>().unwrap(), p);
            assert_eq!(p.config().requires_abort, matches!(p, Profile::Heavy | Profile::Extreme));
        }
        assert!("custom".parse::<Profile>().is_err());
        assert_eq!(Profile::Heavy.config().custom().name(), "custom");
    }

    #[test]
    fn invalid_profiles_name_the_field() {
        let bad = ProfileConfig {
            heartbeat: Some(Duration::from_secs(60)),
            max_duration: Duration::from_secs(1),
            ..ProfileConfig::default()
        };
        assert!(matches!(bad.validate(), Err(ConfigError::OutOfRange { field: "profile.heartbeat", .. })));
        let long = ProfileConfig { max_duration: Duration::from_secs(86_401), ..ProfileConfig::default() };
        assert!(matches!(long.validate(), Err(ConfigError::OutOfRange { field: "profile.max_duration", .. })));
        let zero = ProfileConfig { capacity: Some(0), ..ProfileConfig::default() };
        assert!(matches!(zero.validate(), Err(ConfigError::OutOfRange { field: "profile.capacity", .. })));
    }

    #[test]
    fn a_workload_raises_the_ceiling_to_its_longest_task() {
        let c = crate::PhysicsConfig::default().with_workload(&Profile::Extreme.config());
        assert_eq!(c.normal.ceiling_ms, 3_600_000.0);
        assert_eq!(c.baseline.latency, 60_000.0);
        c.validate().unwrap();
        let light = crate::PhysicsConfig::default().with_workload(&Profile::Light.config());
        assert_eq!(light.normal.ceiling_ms, crate::PhysicsConfig::default().normal.ceiling_ms);
    }
}
