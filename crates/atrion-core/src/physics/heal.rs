//! The healing law of scar tissue (docs/DESIGN.md §2), the one place it is written: `S e^(-λ t)`. Its
//! forms: [`heal`] (a scar after an age), [`heal_rank`] (the order of healed scars, for
//! stores), [`heal_factor`] and its decision-path series [`heal_factor_fast`], [`heal_step`]
//! (one update's step of the default model) and [`decayed_resistance`] (resistance once
//! its scar has healed for a while).

use super::{Physics, decay};
use crate::config::Model;

/// The healing law of scar tissue (docs/DESIGN.md §2), the one place it is written: `S e^(-λ t)`, with
/// `λ` a route's `scar_decay` (per second) and `t` the age in seconds. Local scar, the
/// cluster's contributions (merged by [`crate::Engine::merge_cluster`]), a warm start and a
/// shed request's retry hint all heal by it.
#[inline]
pub fn heal(scar: f64, lambda: f64, age_s: f64) -> f64 {
    scar * heal_factor(lambda * age_s)
}

/// The order of healed scars, whatever the time they are compared at: for scars `a` and `b`
/// measured at times `t_a` and `t_b` (seconds on one clock), `heal(a, λ, t - t_a) >
/// heal(b, λ, t - t_b)` at every `t` exactly when `heal_rank(a, λ, t_a) > heal_rank(b, λ,
/// t_b)`. It is `ln S + λ t`, so a store can keep the largest healed scar of many nodes
/// without knowing the law; no scar ranks `-inf`.
#[inline]
pub fn heal_rank(scar: f64, lambda: f64, at_s: f64) -> f64 {
    if scar > 0.0 { scar.ln() + lambda * at_s } else { f64::NEG_INFINITY }
}

/// `e^(-x)`, `x = λ t`: the share of scar left.
#[inline]
pub(crate) fn heal_factor(x: f64) -> f64 {
    (-x).exp()
}

/// [`heal_factor`] on the decision path: a short series where `x` is small (merged cluster
/// values are refreshed every pulse, so `x` is tiny there), the exact function beyond. The
/// series' error is below `x^4 / 24`, under 5e-7 for `x < 0.06`.
#[inline]
pub(crate) fn heal_factor_fast(x: f64) -> f64 {
    if x < 0.06 { 1.0 - x * (1.0 - x * (0.5 - x / 6.0)) } else { heal_factor(x) }
}

/// The share of scar left after one update's step of `dt_s` seconds: `e^(-λ dt)`, computed
/// as [`decay`] with time constant `1 / λ` (the default model's scar update; a step of no
/// time is exactly 1).
#[inline]
pub(crate) fn heal_step(lambda: f64, dt_s: f64) -> f64 {
    decay(dt_s, 1.0 / lambda)
}

/// `R - S (1 - e^(-λ age))`: what resistance would be after `age` seconds of healing.
#[inline]
pub(crate) fn decayed_resistance(phys: &Physics, resistance: f64, scar: f64, age_s: f64) -> f64 {
    if scar <= 0.0 || age_s <= 0.0 || phys.cfg.model == Model::Reference {
        return resistance;
    }
    (resistance - scar * (1.0 - heal_factor(phys.cfg.scar_decay * age_s))).max(phys.cfg.r_base)
}
