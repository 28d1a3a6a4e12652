//! The rules of a [`PhysicsConfig`]: every consumer calls [`PhysicsConfig::validate`], and
//! a broken rule is a [`ConfigError`] naming its field.

use std::time::Duration;

use super::PhysicsConfig;

impl PhysicsConfig {
    /// This config, if it keeps every rule: `PhysicsConfig::default().with_profile(p).validated()?`.
    pub fn validated(self) -> Result<Self, ConfigError> {
        self.validate()?;
        Ok(self)
    }

    /// Checks every rule; the first broken one is returned, naming its field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use ConfigError as E;
        let positive = |field: &'static str, v: f64| -> Result<(), ConfigError> {
            finite(field, v)?;
            if v > 0.0 { Ok(()) } else { Err(E::OutOfRange { field, value: v, expected: "> 0" }) }
        };
        let non_negative = |field: &'static str, v: f64| -> Result<(), ConfigError> {
            finite(field, v)?;
            if v >= 0.0 { Ok(()) } else { Err(E::OutOfRange { field, value: v, expected: ">= 0" }) }
        };
        let fraction = |field: &'static str, v: f64| -> Result<(), ConfigError> {
            finite(field, v)?;
            if v > 0.0 && v <= 1.0 { Ok(()) } else { Err(E::OutOfRange { field, value: v, expected: "in (0, 1]" }) }
        };
        let duration = |field: &'static str, d: Duration| -> Result<(), ConfigError> {
            if d.is_zero() {
                Err(E::OutOfRange { field, value: 0.0, expected: "> 0 s" })
            } else if d > Self::MAX_DURATION {
                Err(E::OutOfRange { field, value: d.as_secs_f64(), expected: "at most one year (31536000 s)" })
            } else {
                Ok(())
            }
        };

        positive("r_base", self.r_base)?;
        positive("r_max", self.r_max)?;
        positive("baseline.latency", self.baseline.latency)?;
        fraction("baseline.error", self.baseline.error)?;
        fraction("baseline.saturation", self.baseline.saturation)?;
        positive("gain.latency", self.gain.latency)?;
        positive("gain.error", self.gain.error)?;
        positive("gain.saturation", self.gain.saturation)?;
        non_negative("criticality.latency", self.criticality.latency)?;
        non_negative("criticality.error", self.criticality.error)?;
        non_negative("criticality.saturation", self.criticality.saturation)?;
        non_negative("momentum_weight", self.momentum_weight)?;
        positive("momentum_max", self.momentum_max)?;
        non_negative("momentum_scar", self.momentum_scar)?;
        positive("scar_decay", self.scar_decay)?;
        let half_life = std::f64::consts::LN_2 / self.scar_decay;
        if !(Self::MIN_SCAR_HALF_LIFE.as_secs_f64()..=Self::MAX_DURATION.as_secs_f64()).contains(&half_life) {
            return Err(E::OutOfRange {
                field: "scar_decay",
                value: self.scar_decay,
                expected: "a half-life (ln 2 / scar_decay) between 1 ms and one year",
            });
        }
        non_negative("scar_rate", self.scar_rate)?;
        positive("scar_max", self.scar_max)?;
        positive("critical_pressure", self.critical_pressure)?;
        if self.critical_pressure >= 3f64.sqrt() {
            return Err(E::OutOfRange {
                field: "critical_pressure",
                value: self.critical_pressure,
                expected: "< sqrt(3), the largest possible pressure norm",
            });
        }
        finite("gamma", self.gamma)?;
        if !(0.0..=1.0).contains(&self.gamma) {
            return Err(E::OutOfRange { field: "gamma", value: self.gamma, expected: "in [0, 1]" });
        }
        positive("static_break", self.static_break)?;
        positive("static_recovery", self.static_recovery)?;
        fraction("soft_limit", self.soft_limit)?;
        order("r_base", self.r_base, "static_break", self.static_break)?;
        order("static_recovery", self.static_recovery, "static_break", self.static_break)?;
        order("static_break", self.static_break, "r_max", self.r_max)?;
        duration("smoothing", self.smoothing)?;
        duration("keepalive", self.keepalive)?;
        if self.smoothing_slow <= self.smoothing {
            return Err(E::Order {
                field: "smoothing",
                value: self.smoothing.as_secs_f64(),
                other: "smoothing_slow",
                other_value: self.smoothing_slow.as_secs_f64(),
            });
        }
        duration("smoothing_slow", self.smoothing_slow)?;

        let t = &self.tuner;
        if t.window == 0 {
            return Err(E::OutOfRange { field: "tuner.window", value: 0.0, expected: ">= 1" });
        }
        duration("tuner.horizon", t.horizon)?;
        positive("tuner.k", t.k)?;
        positive("tuner.floor", t.floor)?;
        positive("tuner.ceiling", t.ceiling)?;
        order("r_base", self.r_base, "tuner.floor", t.floor)?;
        order("tuner.floor", t.floor, "tuner.ceiling", t.ceiling)?;
        order("tuner.ceiling", t.ceiling, "r_max", self.r_max)?;
        fraction("tuner.recovery_ratio", t.recovery_ratio)?;
        under_one("tuner.recovery_ratio", t.recovery_ratio, "< 1")?;
        positive("tuner.recovery_floor", t.recovery_floor)?;
        order("tuner.recovery_floor", t.recovery_floor, "tuner.floor", t.floor)?;
        positive("tuner.winsor", t.winsor)?;
        positive("tuner.min_sd", t.min_sd)?;

        let h = &self.half_open;
        duration("half_open.open_base", h.open_base)?;
        duration("half_open.probe_window", h.probe_window)?;
        duration("half_open.backoff_half_life", h.backoff_half_life)?;
        duration("half_open.open_max", h.open_max)?;
        if h.open_max < h.open_base {
            return Err(E::Order {
                field: "half_open.open_base",
                value: h.open_base.as_secs_f64(),
                other: "half_open.open_max",
                other_value: h.open_max.as_secs_f64(),
            });
        }
        finite("half_open.backoff_factor", h.backoff_factor)?;
        if h.backoff_factor < 1.0 {
            return Err(E::OutOfRange { field: "half_open.backoff_factor", value: h.backoff_factor, expected: ">= 1" });
        }
        if h.probe_min == 0 {
            return Err(E::OutOfRange { field: "half_open.probe_min", value: 0.0, expected: ">= 1" });
        }
        order("half_open.probe_min", f64::from(h.probe_min), "half_open.probe_max", f64::from(h.probe_max))?;
        fraction("half_open.max_probe_failure", h.max_probe_failure)?;
        under_one("half_open.max_probe_failure", h.max_probe_failure, "< 1")?;
        duration("half_open.scout_interval", h.scout_interval)?;
        non_negative("half_open.probe_heal", h.probe_heal)?;
        under_one("half_open.probe_heal", h.probe_heal, "in [0, 1)")?;
        if h.close_after == 0 {
            return Err(E::OutOfRange { field: "half_open.close_after", value: 0.0, expected: ">= 1" });
        }

        let n = &self.normal;
        duration("normal.horizon", n.horizon)?;
        positive("normal.headroom", n.headroom)?;
        if n.headroom < 1.0 {
            return Err(E::OutOfRange { field: "normal.headroom", value: n.headroom, expected: ">= 1" });
        }
        non_negative("normal.k", n.k)?;
        positive("normal.floor_ms", n.floor_ms)?;
        positive("normal.ceiling_ms", n.ceiling_ms)?;
        order("normal.floor_ms", n.floor_ms, "normal.ceiling_ms", n.ceiling_ms)?;
        if let Some(slo) = n.slo_ms {
            positive("normal.slo_ms", slo)?;
        }
        non_negative("error_tolerance", self.error_tolerance)?;
        under_one("error_tolerance", self.error_tolerance, "in [0, 1)")?;
        let th = &self.throttle;
        positive("throttle.gain", th.gain)?;
        non_negative("throttle.proportional", th.proportional)?;
        fraction("throttle.max", th.max)?;
        duration("throttle.smoothing", th.smoothing)?;
        duration("throttle.patience", th.patience)?;
        if self.step > th.smoothing {
            return Err(E::Order {
                field: "step",
                value: self.step.as_secs_f64(),
                other: "throttle.smoothing",
                other_value: th.smoothing.as_secs_f64(),
            });
        }
        under_one("throttle.max", th.max, "< 1: some traffic must go through")?;

        let p = &self.priority;
        fraction("priority.high", p.high)?;
        fraction("priority.normal", p.normal)?;
        fraction("priority.low", p.low)?;
        fraction("priority.bulk", p.bulk)?;
        order("priority.bulk", p.bulk, "priority.low", p.low)?;
        order("priority.low", p.low, "priority.normal", p.normal)?;
        order("priority.normal", p.normal, "priority.high", p.high)?;
        Ok(())
    }
}

fn finite(field: &'static str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() { Ok(()) } else { Err(ConfigError::NotFinite { field, value: v }) }
}

/// `v < 1`, or an out-of-range error saying `expected`.
fn under_one(field: &'static str, v: f64, expected: &'static str) -> Result<(), ConfigError> {
    if v < 1.0 { Ok(()) } else { Err(ConfigError::OutOfRange { field, value: v, expected }) }
}

fn order(field: &'static str, value: f64, other: &'static str, other_value: f64) -> Result<(), ConfigError> {
    if value <= other_value { Ok(()) } else { Err(ConfigError::Order { field, value, other, other_value }) }
}

/// A configuration that breaks a rule, naming the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The value is NaN or infinite.
    #[error("invalid physics config: `{field}` is not finite ({value})")]
    NotFinite {
        /// The field.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// The value is outside its range.
    #[error("invalid physics config: `{field}` = {value}, expected {expected}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value given.
        value: f64,
        /// The rule, in words.
        expected: &'static str,
    },
    /// Two values are in the wrong order (a floor above a ceiling, say).
    #[error("invalid physics config: `{field}` ({value}) must not exceed `{other}` ({other_value})")]
    Order {
        /// The field that must be the smaller.
        field: &'static str,
        /// Its value.
        value: f64,
        /// The field that must be the larger.
        other: &'static str,
        /// Its value.
        other_value: f64,
    },
    /// A name that is not one of the known ones.
    #[error("invalid physics config: unknown `{field}`, expected {expected}")]
    UnknownName {
        /// The field.
        field: &'static str,
        /// The names accepted.
        expected: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field() {
        let c = PhysicsConfig { r_base: f64::NAN, ..PhysicsConfig::default() };
        assert!(matches!(c.validate(), Err(ConfigError::NotFinite { field: "r_base", .. })));

        let mut c = PhysicsConfig::default();
        c.baseline.latency = 0.0;
        assert!(matches!(c.validate(), Err(ConfigError::OutOfRange { field: "baseline.latency", .. })));

        let mut c = PhysicsConfig::default();
        c.baseline.latency = -5.0;
        assert!(matches!(c.validate(), Err(ConfigError::OutOfRange { field: "baseline.latency", .. })));

        let mut c = PhysicsConfig::default();
        c.tuner.floor = 300.0;
        let e = c.validate().unwrap_err();
        assert_eq!(
            e,
            ConfigError::Order { field: "tuner.floor", value: 300.0, other: "tuner.ceiling", other_value: 200.0 }
        );
        assert!(e.to_string().contains("`tuner.floor` (300) must not exceed `tuner.ceiling` (200)"));

        let mut c = PhysicsConfig::default();
        c.half_open.open_max = Duration::from_millis(1);
        assert!(matches!(c.validate(), Err(ConfigError::Order { field: "half_open.open_base", .. })));

        let c = PhysicsConfig { error_tolerance: 1.0, ..PhysicsConfig::default() };
        assert!(matches!(c.validate(), Err(ConfigError::OutOfRange { field: "error_tolerance", .. })));

        let mut c = PhysicsConfig::default();
        c.throttle.max = 1.0;
        assert!(matches!(c.validate(), Err(ConfigError::OutOfRange { field: "throttle.max", .. })));

        let mut c = PhysicsConfig::default();
        c.normal.slo_ms = Some(-3.0);
        assert!(matches!(c.validate(), Err(ConfigError::OutOfRange { field: "normal.slo_ms", .. })));

        let mut c = PhysicsConfig::default();
        c.priority.bulk = 0.95;
        assert!(matches!(c.validate(), Err(ConfigError::Order { field: "priority.bulk", .. })));
    }
}
