//! The wind tunnel's speed: simulated requests per second of wall time, per controller, on
//! the same scenario in one run (the peers' controllers are the simulator's own models of
//! them, so this measures the simulator plus each controller's per-request cost).
//!
//! - `chaos`: 400 requests/s for 150 simulated seconds (60,000 requests) through each
//!   controller: the classic request-level path (arrivals, a bounded queue, timeouts).
//! - `chain`: the three-hop microservice chain (each request makes two downstream calls).
//! - `hour`: one simulated hour of 1,000 requests/s through Atrion's default model, the
//!   "hour-long scenario in seconds" claim.
//!
//! Run: `cargo bench -p atrion-bench --bench sim`

use std::hint::black_box;

use atrion_sim::{ControllerKind, RunOptions, Scenario, builtin, run_scenario};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn scenario(name: &str) -> Scenario {
    builtin(name).expect("built in").expect("valid")
}

/// Requests one run simulates with `controller`, counted once before measuring.
fn requests(s: &Scenario, controller: ControllerKind) -> u64 {
    let options = RunOptions { controllers: vec![controller], ..RunOptions::default() };
    run_scenario(s, &options).unwrap().result(controller).unwrap().summary.requests
}

fn bench_scenario(c: &mut Criterion, group: &str, s: &Scenario, controllers: &[ControllerKind]) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    for &controller in controllers {
        g.throughput(Throughput::Elements(requests(s, controller)));
        let options = RunOptions { controllers: vec![controller], ..RunOptions::default() };
        g.bench_function(controller.name(), |b| b.iter(|| black_box(run_scenario(s, &options).unwrap())));
    }
    g.finish();
}

fn sim(c: &mut Criterion) {
    bench_scenario(c, "sim/chaos", &scenario("chaos"), &ControllerKind::ALL);
    bench_scenario(
        c,
        "sim/chain",
        &scenario("microservice-chain"),
        &[ControllerKind::None, ControllerKind::AtrionDefault],
    );
    let mut hour = scenario("rate-10000");
    hour.duration_s = 3_600.0;
    hour.expects.clear();
    hour.faults.iter_mut().for_each(|f| {
        f.start_s = 1_800.0;
        f.end_s = 1_820.0;
    });
    if let Some(atrion_sim::Traffic::Constant { rps }) = &mut hour.routes[0].traffic {
        *rps = 1_000.0;
    }
    bench_scenario(c, "sim/hour", &hour, &[ControllerKind::AtrionDefault]);
}

criterion_group!(benches, sim);
criterion_main!(benches);
