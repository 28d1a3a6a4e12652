//! # atrion-sim
//!
//! The Atrion wind tunnel: a deterministic discrete-event simulator that puts a service of
//! finite capacity behind an admission controller, drives it with scripted traffic and
//! faults, and measures what the controller made of it. Atrion (both models) runs beside a
//! classic circuit breaker, Netflix's AIMD and Gradient2 limits and Envoy's gradient
//! controller, all fed identical requests, so that claims about the physics are numbers
//! anyone can reproduce.
//!
//! - [`Scenario`]: a TOML file (`scenarios/*.toml`, or [`builtin`]) with routes, traffic,
//!   faults, controller settings and pass criteria ([`Expect`]).
//! - [`run_scenario`]: every controller over one scenario → a [`ScenarioReport`] with a
//!   [`Summary`] per controller, the series behind the charts, and the verdict of each
//!   criterion. The same seed gives the same report, byte for byte.
//! - [`stability`]: the reference's stability-map grid experiment (docs/DESIGN.md §7.3).
//! - [`chart`]: SVG charts of a report and of a stability map.
//! - Trace-driven arrivals (`Traffic::Replay`) read traces with `atrion-trace`,
//!   the reader `atrion replay` uses.
//!
//! ```
//! use atrion_sim::{ControllerKind, RunOptions, builtin, run_scenario};
//!
//! let scenario = builtin("flapping").unwrap()?;
//! let report = run_scenario(&scenario, &RunOptions::default())?;
//! let transitions = |kind| report.result(kind).unwrap().summary.transitions;
//! assert_eq!(transitions(ControllerKind::Breaker), 49);
//! assert_eq!(transitions(ControllerKind::AtrionReference), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! This crate has no cargo features.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod chart;
pub mod controller;
mod metrics;
mod report;
mod scenario;
mod sim;
pub mod stability;

pub use controller::{Controller, ControllerKind, Gauge, RouteInfo, Sample, SettingsError, State};
pub use metrics::{Bin, Summary, summarize};
pub use report::{
    Check, ControllerResult, ScenarioReport, markdown_route_times, markdown_routes, markdown_table, text_table,
};
pub use scenario::{
    BalancerSpec, Expect, FaultKind, FaultSpec, Metric, OutageMode, RetrySpec, RouteSpec, Scenario, ScenarioError,
    ServiceTime, Signal, TelemetrySpec, Traffic,
};
pub use sim::{RouteCount, Trace};

use atrion_core::Priority;

/// An error of a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The scenario is unusable.
    #[error(transparent)]
    Scenario(Box<ScenarioError>),
    /// A controller's settings are unusable.
    #[error("scenario `{scenario}`: {source}")]
    Settings {
        /// The scenario.
        scenario: String,
        /// Why.
        #[source]
        source: Box<SettingsError>,
    },
}

impl From<ScenarioError> for SimError {
    fn from(e: ScenarioError) -> Self {
        SimError::Scenario(Box::new(e))
    }
}

/// How to run a scenario.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Overrides the scenario's seed.
    pub seed: Option<u64>,
    /// Runs only these controllers (and those the criteria compare with); all when empty.
    pub controllers: Vec<ControllerKind>,
    /// Runs the shortened form of the scenario (`quick_duration_s`).
    pub quick: bool,
}

/// The scenarios that ship with Atrion, by name, in the order of the results page.
pub const BUILTIN: &[(&str, &str)] = &[
    ("chaos", include_str!("../../../scenarios/chaos.toml")),
    ("fintech-isolation", include_str!("../../../scenarios/fintech-isolation.toml")),
    ("flash-crowd", include_str!("../../../scenarios/flash-crowd.toml")),
    ("slow-attacker", include_str!("../../../scenarios/slow-attacker.toml")),
    ("llm-router", include_str!("../../../scenarios/llm-router.toml")),
    ("game-lod", include_str!("../../../scenarios/game-lod.toml")),
    ("game-lod-v2", include_str!("../../../scenarios/game-lod-v2.toml")),
    ("cb-recovery", include_str!("../../../scenarios/cb-recovery.toml")),
    ("predictive-lod", include_str!("../../../scenarios/predictive-lod.toml")),
    ("ecommerce", include_str!("../../../scenarios/ecommerce.toml")),
    ("iot-tiers", include_str!("../../../scenarios/iot-tiers.toml")),
    ("microservice-chain", include_str!("../../../scenarios/microservice-chain.toml")),
    ("autotuner-learning", include_str!("../../../scenarios/autotuner-learning.toml")),
    ("flapping", include_str!("../../../scenarios/flapping.toml")),
    ("flapping-unsaturated", include_str!("../../../scenarios/flapping-unsaturated.toml")),
    ("threshold-flapping", include_str!("../../../scenarios/threshold-flapping.toml")),
    ("latency-step", include_str!("../../../scenarios/latency-step.toml")),
    ("slow-degradation", include_str!("../../../scenarios/slow-degradation.toml")),
    ("rate-10", include_str!("../../../scenarios/rate-10.toml")),
    ("rate-100", include_str!("../../../scenarios/rate-100.toml")),
    ("rate-10000", include_str!("../../../scenarios/rate-10000.toml")),
    ("no-traffic-recovery", include_str!("../../../scenarios/no-traffic-recovery.toml")),
    ("gradient2-drift", include_str!("../../../scenarios/gradient2-drift.toml")),
    ("replica-remodeling", include_str!("../../../scenarios/replica-remodeling.toml")),
    ("slow-routes", include_str!("../../../scenarios/slow-routes.toml")),
    ("bimodal", include_str!("../../../scenarios/bimodal.toml")),
    ("cheap-errors", include_str!("../../../scenarios/cheap-errors.toml")),
    ("slow-errors", include_str!("../../../scenarios/slow-errors.toml")),
    ("retry-storm", include_str!("../../../scenarios/retry-storm.toml")),
    ("low-traffic-outage", include_str!("../../../scenarios/low-traffic-outage.toml")),
    ("retry-storm-slow", include_str!("../../../scenarios/retry-storm-slow.toml")),
    ("flash-crowd-deep-queue", include_str!("../../../scenarios/flash-crowd-deep-queue.toml")),
    ("noisy-neighbour", include_str!("../../../scenarios/noisy-neighbour.toml")),
];

/// A built-in scenario by name, parsed; `None` when no built-in has that name.
pub fn builtin(name: &str) -> Option<Result<Scenario, ScenarioError>> {
    let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name)?;
    Some(Scenario::from_toml(text, std::path::Path::new("scenarios")))
}

/// A scenario by built-in name, or else by file path.
pub fn load(name_or_path: &str) -> Result<Scenario, ScenarioError> {
    if let Some(s) = builtin(name_or_path) {
        return s;
    }
    let path = std::path::Path::new(name_or_path);
    if path.exists() {
        return Scenario::from_file(path);
    }
    Err(ScenarioError::Unknown(name_or_path.to_owned()))
}

/// The controllers that run `scenario` under `options`, in table order.
pub fn controllers_for(scenario: &Scenario, options: &RunOptions) -> Vec<ControllerKind> {
    let wanted = |k: ControllerKind| {
        let listed = |list: &[ControllerKind]| list.is_empty() || list.contains(&k);
        let compared =
            scenario.expects.iter().any(|e| e.at_most == Some(k) || e.at_least == Some(k) || e.controller == k);
        listed(&scenario.controllers) && (listed(&options.controllers) || compared)
    };
    ControllerKind::ALL.into_iter().filter(|&k| wanted(k)).collect()
}

/// Runs every controller that applies over `scenario` and judges its criteria.
pub fn run_scenario(scenario: &Scenario, options: &RunOptions) -> Result<ScenarioReport, SimError> {
    run_scenario_with(scenario, options, |_| {})
}

/// [`run_scenario`], calling `progress` with each controller once it has run.
pub fn run_scenario_with(
    scenario: &Scenario,
    options: &RunOptions,
    mut progress: impl FnMut(ControllerKind),
) -> Result<ScenarioReport, SimError> {
    let scenario = if options.quick { scenario.quick() } else { scenario.clone() };
    let seed = options.seed.unwrap_or(scenario.seed);
    let routes: Vec<RouteInfo> = if scenario.telemetry.is_some() {
        vec![RouteInfo { name: "route".into(), priority: Some(Priority::Critical), atrion: None }]
    } else {
        scenario
            .routes
            .iter()
            .map(|r| RouteInfo {
                name: r.name.clone(),
                priority: r.priority.as_deref().and_then(|p| p.parse().ok()),
                atrion: r.atrion.clone(),
            })
            .collect()
    };
    let mut results = Vec::new();
    for kind in controllers_for(&scenario, options) {
        // `atrion-aimd` runs the default model: it takes `atrion-default`'s settings (a
        // route's SLO, say) unless the scenario gives it its own.
        let settings = match kind {
            ControllerKind::AtrionAimd => {
                scenario.settings.get(&kind).or_else(|| scenario.settings.get(&ControllerKind::AtrionDefault))
            }
            _ => scenario.settings.get(&kind),
        };
        let mut c = controller::build(kind, &routes, settings)
            .map_err(|source| SimError::Settings { scenario: scenario.name.clone(), source: Box::new(source) })?;
        let trace = if scenario.telemetry.is_some() {
            match sim::run_ticks(&scenario, c.as_mut()) {
                Some(t) => t,
                None => continue,
            }
        } else {
            sim::run(&scenario, c.as_mut(), seed)?
        };
        let summary = summarize(&scenario, &trace);
        results.push(ControllerResult { controller: kind, summary, bins: trace.bins });
        progress(kind);
    }
    let checks = report::judge(&scenario, &results);
    Ok(ScenarioReport { scenario, seed, results, checks })
}
