//! Validated telemetry: the only way measurements enter the physics.

use std::time::Duration;

use serde::Serialize;

/// A telemetry value that was rejected, naming the field and the rule it broke.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The value is NaN or infinite.
    #[error("telemetry `{field}` is not a finite number ({value})")]
    NotFinite {
        /// The field that was rejected.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// The value lies outside the range the field allows.
    #[error("telemetry `{field}` = {value} is outside [{min}, {max}]")]
    OutOfRange {
        /// The field that was rejected.
        field: &'static str,
        /// The value given.
        value: f64,
        /// The smallest value allowed.
        min: f64,
        /// The largest value allowed.
        max: f64,
    },
}

/// One observation of a route: how long a request took, whether it failed, and how
/// saturated the route's resources are.
///
/// Built only through constructors that validate every field, so a `Telemetry` in hand is
/// always usable by the physics:
/// - `latency_ms`: finite, in `[0, MAX_LATENCY_MS]` (one day: a longer "latency" is a
///   unit mistake or garbage, and would swamp the route's smoothing for hours).
/// - `error`: finite and in `[0, 1]` — an error *rate* over a window, or a single outcome
///   (`0` success, `1` failure) through [`Telemetry::outcome`].
/// - `saturation`: finite and in `[0, 1]` (0 idle, 1 full).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Telemetry {
    latency_ms: f64,
    error: f64,
    saturation: f64,
}

impl Telemetry {
    /// The largest latency accepted, in milliseconds: one day.
    pub const MAX_LATENCY_MS: f64 = 86_400_000.0;

    /// The largest error or saturation *score* [`Telemetry::unbounded`] accepts.
    pub const MAX_SCORE: f64 = 1e6;

    /// Telemetry with an error rate over some window.
    pub fn new(latency_ms: f64, error_rate: f64, saturation: f64) -> Result<Self, TelemetryError> {
        Ok(Telemetry {
            latency_ms: check(latency_ms, "latency_ms", 0.0, Self::MAX_LATENCY_MS)?,
            error: check(error_rate, "error_rate", 0.0, 1.0)?,
            saturation: check(saturation, "saturation", 0.0, 1.0)?,
        })
    }

    /// Telemetry whose score channels may exceed 1 (up to [`Telemetry::MAX_SCORE`]): an error or
    /// saturation *score* beyond 1. This exists to reproduce the reference's experiments
    /// (docs/DESIGN.md §7.3's stability map feeds an error "rate" of 50); services report through
    /// [`Telemetry::new`] or [`Telemetry::outcome`].
    pub fn unbounded(latency_ms: f64, error: f64, saturation: f64) -> Result<Self, TelemetryError> {
        Ok(Telemetry {
            latency_ms: check(latency_ms, "latency_ms", 0.0, Self::MAX_LATENCY_MS)?,
            error: check(error, "error_rate", 0.0, Self::MAX_SCORE)?,
            saturation: check(saturation, "saturation", 0.0, Self::MAX_SCORE)?,
        })
    }

    /// Telemetry of a single request: its latency, whether it succeeded, and saturation.
    pub fn outcome(latency_ms: f64, ok: bool, saturation: f64) -> Result<Self, TelemetryError> {
        Telemetry::new(latency_ms, if ok { 0.0 } else { 1.0 }, saturation)
    }

    /// Telemetry of a single request measured as a [`Duration`]. A measured duration is
    /// always valid: one longer than [`Telemetry::MAX_LATENCY_MS`] counts as that much.
    pub fn from_duration(latency: Duration, ok: bool, saturation: f64) -> Result<Self, TelemetryError> {
        Telemetry::outcome((latency.as_secs_f64() * 1e3).min(Self::MAX_LATENCY_MS), ok, saturation)
    }

    /// Latency in milliseconds.
    pub fn latency_ms(&self) -> f64 {
        self.latency_ms
    }

    /// Error rate (or outcome: 0 success, 1 failure).
    pub fn error(&self) -> f64 {
        self.error
    }

    /// Saturation in `[0, 1]`.
    pub fn saturation(&self) -> f64 {
        self.saturation
    }

    /// The raw channel values in the order latency, error, saturation.
    pub(crate) fn channels(&self) -> [f64; 3] {
        [self.latency_ms, self.error, self.saturation]
    }
}

fn check(value: f64, field: &'static str, min: f64, max: f64) -> Result<f64, TelemetryError> {
    if !value.is_finite() {
        return Err(TelemetryError::NotFinite { field, value });
    }
    if value < min || value > max {
        return Err(TelemetryError::OutOfRange { field, value, min, max });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_values_naming_the_field() {
        let e = Telemetry::new(f64::NAN, 0.0, 0.0).unwrap_err();
        assert!(matches!(e, TelemetryError::NotFinite { field: "latency_ms", .. }));
        let e = Telemetry::new(-1.0, 0.0, 0.0).unwrap_err();
        assert!(matches!(e, TelemetryError::OutOfRange { field: "latency_ms", .. }));
        let e = Telemetry::new(1.0, 1.5, 0.0).unwrap_err();
        assert!(matches!(e, TelemetryError::OutOfRange { field: "error_rate", .. }));
        let e = Telemetry::new(1.0, 0.0, f64::INFINITY).unwrap_err();
        assert!(matches!(e, TelemetryError::NotFinite { field: "saturation", .. }));
        let e = Telemetry::new(1.0, 0.0, -0.01).unwrap_err();
        assert_eq!(e.to_string(), "telemetry `saturation` = -0.01 is outside [0, 1]");
    }

    #[test]
    fn unbounded_accepts_scores_but_not_nan_or_negatives() {
        assert_eq!(Telemetry::unbounded(0.0, 50.0, 2.0).unwrap().error(), 50.0);
        assert!(Telemetry::unbounded(0.0, f64::NAN, 0.0).is_err());
        assert!(Telemetry::unbounded(-1.0, 0.0, 0.0).is_err());
    }

    #[test]
    fn outcome_maps_to_zero_or_one() {
        assert_eq!(Telemetry::outcome(5.0, false, 0.2).unwrap().error(), 1.0);
        assert_eq!(Telemetry::from_duration(Duration::from_millis(7), true, 0.0).unwrap().latency_ms(), 7.0);
        let long = Telemetry::from_duration(Duration::MAX, false, 0.0).unwrap();
        assert_eq!(long.latency_ms(), Telemetry::MAX_LATENCY_MS);
    }
}
