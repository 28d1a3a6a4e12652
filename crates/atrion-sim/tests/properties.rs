//! Properties of the simulator over random scenarios: it never panics, its books balance,
//! and the same seed gives the same result.

use atrion_sim::{
    FaultKind, FaultSpec, RetrySpec, RouteSpec, RunOptions, Scenario, ServiceTime, Traffic, run_scenario,
};
use proptest::prelude::*;

fn service() -> impl Strategy<Value = ServiceTime> {
    prop_oneof![
        (1.0..100.0f64).prop_map(|mean_ms| ServiceTime::Constant { mean_ms }),
        (1.0..100.0f64).prop_map(|mean_ms| ServiceTime::Exponential { mean_ms }),
        (1.0..100.0f64, 0.0..1.5f64).prop_map(|(mean_ms, sigma)| ServiceTime::Lognormal { mean_ms, sigma }),
        (1.0..50.0f64, 50.0..500.0f64, 0.0..=1.0f64, 0.0..1.0f64).prop_map(|(mean_ms, slow_ms, slow_share, sigma)| {
            ServiceTime::Bimodal { mean_ms, slow_ms, slow_share, sigma }
        }),
    ]
}

fn fault(routes: usize) -> impl Strategy<Value = FaultSpec> {
    let kind = prop_oneof![
        (0.0..=1.0f64, proptest::option::of(0.0..2_000.0f64))
            .prop_map(|(rate, latency_ms)| FaultKind::Errors { rate, latency_ms }),
        (0.0..20.0f64).prop_map(|multiplier| FaultKind::Latency { multiplier }),
        (0.05..=1.0f64).prop_map(|factor| FaultKind::Capacity { factor }),
        any::<bool>().prop_map(|hang| FaultKind::Outage {
            mode: if hang { atrion_sim::OutageMode::Hang } else { atrion_sim::OutageMode::Refuse }
        }),
        (1.0..20.0f64).prop_map(|to_multiplier| FaultKind::Degrade { to_multiplier }),
    ];
    (0..routes, 0.0..4.0f64, 0.1..4.0f64, kind, proptest::option::of(0.2..2.0f64)).prop_map(
        |(r, start_s, len, kind, period_s)| FaultSpec {
            route: Some(format!("r{r}")),
            start_s,
            end_s: start_s + len,
            kind,
            period_s,
            duty: 0.5,
        },
    )
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (1usize..=3).prop_flat_map(|n| {
        let routes = proptest::collection::vec(
            (
                1u32..16,
                0u32..32,
                10.0..500.0f64,
                service(),
                1.0..2_000.0f64,
                any::<bool>(),
                proptest::option::of(1.0..1_000.0f64),
                proptest::option::of((1u32..4, 1.0..200.0f64, 0.0..2.0f64)),
            ),
            n,
        );
        (routes, proptest::collection::vec(fault(n), 0..4), any::<u64>()).prop_map(move |(specs, faults, seed)| {
            let routes = specs
                .into_iter()
                .enumerate()
                .map(|(i, (workers, queue, timeout_ms, service, rps, chain, slo_ms, retry))| RouteSpec {
                    name: format!("r{i}"),
                    workers,
                    queue,
                    timeout_ms,
                    service,
                    traffic: Some(Traffic::Poisson { rps }),
                    calls: (chain && i + 1 < n).then(|| format!("r{}", i + 1)),
                    shares: None,
                    fallback: None,
                    priority: None,
                    weight: 1.0,
                    slo_ms,
                    retry: retry.map(|(attempts, backoff_ms, budget)| RetrySpec {
                        attempts,
                        backoff_ms,
                        multiplier: 2.0,
                        budget,
                    }),
                    atrion: None,
                })
                .collect();
            let text = format!("name = \"random\"\ndescription = \"random\"\nduration_s = 5\nseed = {seed}\n");
            let mut s: Scenario = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
            s.routes = routes;
            s.faults = faults;
            s
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn books_balance_and_runs_repeat(s in scenario()) {
        prop_assume!(s.validate().is_ok());
        let report = run_scenario(&s, &RunOptions::default()).unwrap();
        let again = run_scenario(&s, &RunOptions::default()).unwrap();
        for (r, r2) in report.results.iter().zip(&again.results) {
            prop_assert_eq!(&r.summary, &r2.summary, "{} is not deterministic", r.controller);
            let offered: u64 = r.bins.iter().map(|b| u64::from(b.offered)).sum();
            let admitted: u64 = r.bins.iter().map(|b| u64::from(b.admitted)).sum();
            let shed: u64 = r.bins.iter().map(|b| u64::from(b.shed)).sum();
            let done: u64 = r.bins.iter().map(|b| u64::from(b.ok + b.failed)).sum();
            prop_assert_eq!(offered, admitted + shed, "{}", r.controller);
            prop_assert!(done <= admitted, "{}: {} completed of {} admitted", r.controller, done, admitted);
            prop_assert!(r.summary.goodput.is_finite() && r.summary.goodput >= 0.0);
            prop_assert!((0.0..=1.0).contains(&r.summary.error_rate));
        }
    }
}
