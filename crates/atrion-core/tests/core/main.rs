//! Integration tests of atrion-core: one binary, one module per subject.

mod default_model;
mod engine;
mod hostile;
mod last_route;
mod leases;
mod persist;
mod properties;
mod reference;

use atrion_core::{Engine, Mode, Model, PhysicsConfig, Telemetry, Timestamp};

/// Healthy telemetry of a typical route: 20 ms, success, 30% saturation.
pub fn healthy() -> Telemetry {
    Telemetry::new(20.0, 0.0, 0.3).unwrap()
}

/// A full outage: 1 s latency, every request failing, 90% saturation.
pub fn outage() -> Telemetry {
    Telemetry::new(1_000.0, 1.0, 0.9).unwrap()
}

/// An engine of `model` with its default constants.
pub fn engine(model: Model) -> Engine {
    Engine::new(PhysicsConfig::for_model(model)).unwrap()
}

/// Milliseconds since the epoch.
pub fn ms(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// Feeds `f(t)` at `rate` samples per second from `from` to `to` seconds, reporting every
/// sample; returns the first time (s) the route is open, if it opens.
pub fn drive(engine: &Engine, route: &str, rate: f64, from: f64, to: f64, f: impl Fn(f64) -> Telemetry) -> Option<f64> {
    let step = 1.0 / rate;
    let n = ((to - from) * rate).round() as u64;
    let mut opened = None;
    for i in 0..n {
        let t = from + i as f64 * step;
        let status = engine.report(route, f(t), Timestamp::from_nanos((t * 1e9).round() as u64));
        if opened.is_none() && status.mode == Mode::Open {
            opened = Some(t);
        }
    }
    opened
}
