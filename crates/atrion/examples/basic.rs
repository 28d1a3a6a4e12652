//! A service loop guarded by Atrion: a downstream that fails for two seconds, and the
//! engine shedding it then letting it back in.
//!
//! ```text
//! cargo run -p atrion --example basic
//! ```

use std::time::Duration;

use atrion::{
    ConsoleObserver, Engine, EngineClock, EngineLimits, PhysicsConfig, Priority, Reason, SystemClock, Telemetry,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Transitions are printed to stderr as they happen.
    let engine = Engine::with_observer(PhysicsConfig::default(), EngineLimits::default(), ConsoleObserver::new())?;
    let clock = SystemClock::new();
    let (mut admitted, mut shed) = (0u32, 0u32);
    for i in 0..6_000u32 {
        let now = clock.now();
        let decision = engine.decide("inventory", now, Priority::Normal);
        if decision.is_admitted() {
            admitted += 1;
            // The downstream: healthy, except between 1.5 s and 3.5 s.
            let secs = now.as_millis_f64() / 1e3;
            let down = (1.5..3.5).contains(&secs);
            let latency = if down { 800.0 } else { 15.0 };
            engine.report("inventory", Telemetry::outcome(latency, !down, 0.3)?, clock.now());
        } else {
            shed += 1;
            if decision.reason == Reason::Open && i % 500 == 0 {
                println!("shed: open, retry after {:?}", decision.retry_after);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("admitted {admitted}, shed {shed}; final {:?}", engine.status("inventory")?);
    Ok(())
}
