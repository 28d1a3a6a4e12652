//! Telemetry experiments (`[telemetry]`, the reference's tick experiments): no service, one
//! observation per tick fed to the controller.

use super::{MS, Trace};
use crate::controller::{Controller, Gauge};
use crate::metrics::Bin;
use crate::scenario::Scenario;

/// Runs a telemetry-driven scenario: one observation per tick per controller. Returns
/// `None` when the controller does not apply to telemetry experiments.
pub fn run_ticks(scenario: &Scenario, controller: &mut dyn Controller) -> Option<Trace> {
    let spec = scenario.telemetry.as_ref()?;
    let tick = (spec.tick_ms * MS) as u64;
    let mut bins = Vec::with_capacity(spec.ticks as usize);
    for i in 0..spec.ticks {
        let now = tick * u64::from(i + 1);
        let (l, e, s) = (spec.latency.at(i), spec.error.at(i), spec.saturation.at(i));
        if !controller.tick(0, now, l, e, s) {
            return None;
        }
        let Gauge { level, state } = controller.gauge(0);
        bins.push(Bin { level, state: state as u8, ..Bin::default() });
    }
    let latency = crate::metrics::histogram();
    Some(Trace {
        bins,
        latency,
        transitions: controller.transitions(),
        requests: u64::from(spec.ticks),
        routes: Vec::new(),
        route_bins: Vec::new(),
    })
}
