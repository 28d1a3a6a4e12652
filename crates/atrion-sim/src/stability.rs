//! The stability map (docs/DESIGN.md §7.3): a grid of scar decay `lambda` x trauma `sigma`; each cell
//! runs one route through a fixed input for a number of ticks and scores the variance of
//! its resistance, `clamp(1 - Var(R) / max_variance, 0, 1)`. The grid, the input, the
//! score and the physics are all configurable; [`StabilityConfig::reference`] is the
//! reference's published experiment and [`StabilityConfig::unsaturated`] the same grid
//! with an input whose pressure does not saturate.

use atrion_core::{Engine, Model, Telemetry, Timestamp};
use serde::{Deserialize, Serialize};

use crate::controller::{SettingsError, physics_config};
use crate::scenario::Signal;

/// One axis of the grid: `steps` values evenly from `min` to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axis {
    /// First value.
    pub min: f64,
    /// Last value.
    pub max: f64,
    /// Number of values (at least 1).
    pub steps: u32,
}

impl Axis {
    /// The values.
    pub fn values(&self) -> Vec<f64> {
        if self.steps <= 1 {
            return vec![self.min];
        }
        let step = (self.max - self.min) / f64::from(self.steps - 1);
        (0..self.steps).map(|i| self.min + f64::from(i) * step).collect()
    }
}

/// The experiment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StabilityConfig {
    /// The model whose physics runs.
    pub model: Model,
    /// Scar decay `lambda` (per second): the x axis.
    pub lambda: Axis,
    /// Trauma `sigma`: the y axis.
    pub sigma: Axis,
    /// Ticks per cell.
    pub ticks: u32,
    /// Time between ticks, milliseconds.
    pub tick_ms: f64,
    /// Latency input (ms), evaluated at ticks 1, 2, ...
    pub latency: Signal,
    /// Error input.
    pub error: Signal,
    /// Saturation input.
    pub saturation: Signal,
    /// The variance that scores 0.
    pub max_variance: f64,
    /// Physics overrides on top of the model's defaults (the keys of `atrion config`).
    #[serde(default)]
    pub physics: toml::Table,
}

impl StabilityConfig {
    /// The reference's experiment: 10 x 10 over lambda in [0.1, 5] and sigma in [1, 20], 500
    /// ticks of 100 ms with latency 0, saturation 0 and an error "rate" of
    /// `50 + 0.05 sin(2 pi t / 0.3)`, base 10, mu 10, P_crit 0.5, break at 100 x base, and
    /// the reference mapper's SLO (latency baseline 50 ms, criticality 5/10/5) and bootstrap
    /// (its `bootstrapTicks = 5`: the 5th tick ends bootstrap and runs the physics).
    pub fn reference() -> Self {
        let mut physics = toml::Table::new();
        let table = |pairs: &[(&str, toml::Value)]| {
            toml::Value::Table(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
        };
        physics.insert("r_base".into(), 10.0.into());
        physics.insert("momentum_weight".into(), 10.0.into());
        physics.insert("critical_pressure".into(), 0.5.into());
        physics.insert("static_break".into(), 1000.0.into());
        physics.insert("static_recovery".into(), 500.0.into());
        physics.insert("bootstrap_updates".into(), 5.into());
        physics.insert(
            "baseline".into(),
            table(&[("latency", 50.0.into()), ("error", 0.01.into()), ("saturation", 0.5.into())]),
        );
        physics.insert(
            "criticality".into(),
            table(&[("latency", 5.0.into()), ("error", 10.0.into()), ("saturation", 5.0.into())]),
        );
        physics.insert("tuner".into(), table(&[("enabled", false.into())]));
        StabilityConfig {
            model: Model::Reference,
            lambda: Axis { min: 0.1, max: 5.0, steps: 10 },
            sigma: Axis { min: 1.0, max: 20.0, steps: 10 },
            ticks: 500,
            tick_ms: 100.0,
            latency: Signal::Constant(0.0),
            error: Signal::Sine { offset: 50.0, amplitude: 0.05, period: 0.3 },
            saturation: Signal::Constant(0.0),
            max_variance: 10_000.0,
            physics,
        }
    }

    /// The same grid and physics with an input that does not saturate: an error rate
    /// swinging between 0.5% and 2.5% against the 1% target, so that pressure moves through
    /// `P_crit` instead of sitting at 1.
    pub fn unsaturated() -> Self {
        StabilityConfig { error: Signal::Sine { offset: 0.015, amplitude: 0.01, period: 0.3 }, ..Self::reference() }
    }

    /// The same experiment for `model` (the overrides stay; the default model's own
    /// constants fill the rest).
    pub fn for_model(self, model: Model) -> Self {
        StabilityConfig { model, ..self }
    }
}

/// The scored grid.
#[derive(Debug, Clone, Serialize)]
pub struct StabilityMap {
    /// The experiment.
    pub config: StabilityConfig,
    /// The lambda values (x).
    pub lambdas: Vec<f64>,
    /// The sigma values (y).
    pub sigmas: Vec<f64>,
    /// `scores[i][j]` for `lambdas[i]`, `sigmas[j]`.
    pub scores: Vec<Vec<f64>>,
    /// Mean score over the grid.
    pub mean: f64,
    /// Cells scoring at least 0.8.
    pub stable: usize,
    /// Cells scoring under 0.3.
    pub chaotic: usize,
}

/// The resistance series of one cell.
pub fn cell_series(config: &StabilityConfig, lambda: f64, sigma: f64) -> Result<Vec<f64>, SettingsError> {
    let mut physics = config.physics.clone();
    physics.insert("scar_decay".into(), lambda.into());
    physics.insert("scar_rate".into(), sigma.into());
    let cfg = physics_config("stability-map", config.model, Some(&physics))?;
    let engine =
        Engine::new(cfg).map_err(|source| SettingsError::Physics { controller: "stability-map".into(), source })?;
    let mut series = Vec::with_capacity(config.ticks as usize);
    for t in 1..=config.ticks {
        let now = Timestamp::from_nanos((f64::from(t) * config.tick_ms * 1e6) as u64);
        let input = Telemetry::unbounded(config.latency.at(t), config.error.at(t), config.saturation.at(t));
        let status = match input {
            Ok(tel) => engine.report("cell", tel, now),
            Err(_) => continue,
        };
        series.push(status.resistance);
    }
    Ok(series)
}

/// Population variance.
pub fn variance(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n
}

/// Runs the grid, calling `progress` after each cell.
pub fn run(config: &StabilityConfig, mut progress: impl FnMut()) -> Result<StabilityMap, SettingsError> {
    let invalid = |reason: &str| SettingsError::Invalid { controller: "stability-map".into(), reason: reason.into() };
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if config.ticks == 0 || !positive(config.tick_ms) || !positive(config.max_variance) {
        return Err(invalid("ticks, tick_ms and max_variance must be positive"));
    }
    if config.lambda.steps == 0 || config.sigma.steps == 0 {
        return Err(invalid("each axis needs at least one step"));
    }
    let work = u64::from(config.lambda.steps) * u64::from(config.sigma.steps) * u64::from(config.ticks);
    if config.lambda.steps > 1_000 || config.sigma.steps > 1_000 || work > 100_000_000 {
        return Err(SettingsError::Invalid {
            controller: "stability-map".into(),
            reason: format!(
                "{} x {} cells of {} ticks are {work:.3e} updates; at most 1,000 steps per axis and 1e8 updates",
                config.lambda.steps, config.sigma.steps, config.ticks
            ),
        });
    }
    for (axis, a) in [("lambda", &config.lambda), ("sigma", &config.sigma)] {
        if !(a.min.is_finite() && a.max.is_finite() && a.min >= 0.0 && a.min <= a.max) {
            return Err(SettingsError::Invalid {
                controller: "stability-map".into(),
                reason: format!("axis `{axis}`: need 0 <= min <= max, got {} ..= {}", a.min, a.max),
            });
        }
    }
    for (name, sig, max) in [
        ("latency", &config.latency, atrion_core::Telemetry::MAX_LATENCY_MS),
        ("error", &config.error, atrion_core::Telemetry::MAX_SCORE),
        ("saturation", &config.saturation, atrion_core::Telemetry::MAX_SCORE),
    ] {
        if let Some(why) = sig.problem(max) {
            return Err(SettingsError::Invalid {
                controller: "stability-map".into(),
                reason: format!("`{name}`: {why}"),
            });
        }
    }
    let lambdas = config.lambda.values();
    let sigmas = config.sigma.values();
    let mut scores = Vec::with_capacity(lambdas.len());
    for &l in &lambdas {
        let mut row = Vec::with_capacity(sigmas.len());
        for &s in &sigmas {
            let v = variance(&cell_series(config, l, s)?);
            row.push((1.0 - v / config.max_variance).clamp(0.0, 1.0));
            progress();
        }
        scores.push(row);
    }
    let all: Vec<f64> = scores.iter().flatten().copied().collect();
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    Ok(StabilityMap {
        config: config.clone(),
        stable: all.iter().filter(|&&s| s >= 0.8).count(),
        chaotic: all.iter().filter(|&&s| s < 0.3).count(),
        lambdas,
        sigmas,
        scores,
        mean,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_map_reproduces_the_published_mean() {
        let map = run(&StabilityConfig::reference(), || {}).unwrap();
        assert_eq!(format!("{:.1}", map.mean * 100.0), "90.2");
    }

    #[test]
    fn variance_of_a_constant_is_zero() {
        assert_eq!(variance(&[3.0; 10]), 0.0);
        assert!((variance(&[1.0, 3.0]) - 1.0).abs() < 1e-12);
    }
}
