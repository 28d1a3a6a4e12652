//! Every built-in scenario's pass criteria, run on its shortened form; the reference
//! figures; determinism; and rate invariance.

use atrion_sim::{BUILTIN, ControllerKind, Metric, RunOptions, ScenarioReport, builtin, run_scenario};

fn quick(name: &str) -> ScenarioReport {
    let scenario = builtin(name).expect("built in").expect("valid");
    run_scenario(&scenario, &RunOptions { quick: true, ..RunOptions::default() }).expect("runs")
}

fn assert_passes(name: &str) {
    let report = quick(name);
    let failed: Vec<&str> = report.checks.iter().filter(|c| !c.passed).map(|c| c.detail.as_str()).collect();
    assert!(failed.is_empty(), "{name}: {failed:#?}\n{}", atrion_sim::text_table(&report));
    assert!(!report.checks.is_empty(), "{name} states no criteria");
}

macro_rules! scenario_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                assert_passes($name);
            }
        )*

        #[test]
        fn every_builtin_scenario_has_a_test() {
            let tested = [$($name),*];
            for (name, _) in BUILTIN {
                assert!(tested.contains(name), "no test runs `{name}`");
            }
        }
    };
}

scenario_tests! {
    chaos => "chaos",
    fintech_isolation => "fintech-isolation",
    flash_crowd => "flash-crowd",
    slow_attacker => "slow-attacker",
    llm_router => "llm-router",
    game_lod => "game-lod",
    game_lod_v2 => "game-lod-v2",
    cb_recovery => "cb-recovery",
    predictive_lod => "predictive-lod",
    ecommerce => "ecommerce",
    iot_tiers => "iot-tiers",
    microservice_chain => "microservice-chain",
    autotuner_learning => "autotuner-learning",
    flapping => "flapping",
    flapping_unsaturated => "flapping-unsaturated",
    threshold_flapping => "threshold-flapping",
    latency_step => "latency-step",
    slow_degradation => "slow-degradation",
    rate_10 => "rate-10",
    rate_100 => "rate-100",
    rate_10000 => "rate-10000",
    no_traffic_recovery => "no-traffic-recovery",
    gradient2_drift => "gradient2-drift",
    replica_remodeling => "replica-remodeling",
    slow_routes => "slow-routes",
    bimodal => "bimodal",
    cheap_errors => "cheap-errors",
    slow_errors => "slow-errors",
    retry_storm => "retry-storm",
    low_traffic_outage => "low-traffic-outage",
    retry_storm_slow => "retry-storm-slow",
    flash_crowd_deep_queue => "flash-crowd-deep-queue",
    noisy_neighbour => "noisy-neighbour",
}

#[test]
fn the_reference_flapping_figures_are_reproduced_exactly() {
    let r = quick("flapping");
    let t = |c| r.result(c).unwrap().summary.transitions;
    assert_eq!((t(ControllerKind::Breaker), t(ControllerKind::AtrionReference)), (49, 1));
}

#[test]
fn the_same_seed_gives_identical_reports_and_another_seed_does_not() {
    let scenario = builtin("microservice-chain").unwrap().unwrap();
    let run = |seed| {
        let options = RunOptions { seed: Some(seed), quick: true, ..RunOptions::default() };
        serde_json::to_string(&run_scenario(&scenario, &options).unwrap()).unwrap()
    };
    let (a, b, c) = (run(7), run(7), run(8));
    assert_eq!(a, b, "same seed, same bytes");
    assert_ne!(a, c, "the seed matters");
}

#[test]
fn controllers_see_identical_offered_traffic() {
    let r = quick("chaos");
    let offered: Vec<u64> = r.results.iter().map(|x| x.summary.offered).collect();
    assert!(offered.windows(2).all(|w| w[0] == w[1]), "{offered:?}");
    assert!(offered[0] > 10_000);
}

#[test]
fn the_default_model_trips_in_the_same_wall_time_at_10_100_and_10000_rps() {
    let detect = |name: &str| {
        let r = quick(name);
        r.result(ControllerKind::AtrionDefault).unwrap().summary.get(Metric::DetectS).expect("detects")
    };
    let times = [detect("rate-10"), detect("rate-100"), detect("rate-10000")];
    let (lo, hi) = times.iter().fold((f64::MAX, 0.0f64), |(l, h), &t| (l.min(t), h.max(t)));
    assert!(hi <= 1.25 * lo, "detect times {times:?} differ by more than 25%");
    // The reference's per-update scar is what docs/DESIGN.md §7.2 calls rate dependence: it trips far
    // sooner at 10,000 requests/s than at 10.
    let reference = |name: &str| quick(name).result(ControllerKind::AtrionReference).unwrap().summary.detect_s.unwrap();
    assert!(reference("rate-10000") < 0.5 * reference("rate-10"));
}

#[test]
fn a_scenario_file_with_errors_is_refused_naming_the_field() {
    let bad = r#"
name = "x"
description = "y"
[[route]]
name = "a"
service = { dist = "exponential", mean_ms = -1 }
"#;
    let e = atrion_sim::Scenario::from_toml(bad, std::path::Path::new(".")).unwrap_err();
    assert!(e.to_string().contains("route[0].service"), "{e}");
    let unknown = "name = \"x\"\ndescription = \"y\"\nroutes = 3\n";
    assert!(atrion_sim::Scenario::from_toml(unknown, std::path::Path::new(".")).is_err());
    let fault = r#"
name = "x"
description = "y"
[[route]]
name = "a"
service = { dist = "constant", mean_ms = 5 }
[[fault]]
start_s = 1
end_s = 2
kind = "errors"
"#;
    let e = atrion_sim::Scenario::from_toml(fault, std::path::Path::new(".")).unwrap_err();
    assert!(e.to_string().contains("needs `rate`"), "{e}");
    assert!(matches!(atrion_sim::load("no-such-scenario"), Err(atrion_sim::ScenarioError::Unknown(_))));
    let lonely = r#"
name = "x"
description = "y"
[[route]]
name = "a"
service = { dist = "constant", mean_ms = 5 }
[[balancer]]
name = "lb"
members = ["a"]
traffic = { pattern = "poisson", rps = 10 }
"#;
    let e = atrion_sim::Scenario::from_toml(lonely, std::path::Path::new(".")).unwrap_err();
    assert!(e.to_string().contains("balancer[0].members"), "{e}");
}

#[test]
fn a_replayed_trace_drives_the_arrivals() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    let rows: String = (0..100)
        .map(|i| format!("{{\"timestamp_ms\": {}, \"route\": \"x\", \"latency_ms\": 5, \"error\": false, \"saturation\": 0.1}}\n", i * 10))
        .collect();
    std::fs::write(&trace, rows).unwrap();
    let text = r#"
name = "replay"
description = "a trace, looped"
duration_s = 5
[[route]]
name = "a"
service = { dist = "constant", mean_ms = 1 }
traffic = { pattern = "replay", file = "t.jsonl" }
"#;
    std::fs::write(dir.path().join("s.toml"), text).unwrap();
    let s = atrion_sim::Scenario::from_file(&dir.path().join("s.toml")).unwrap();
    let r = run_scenario(&s, &RunOptions { controllers: vec![ControllerKind::None], ..RunOptions::default() }).unwrap();
    // 100 requests per second for 5 seconds.
    let offered = r.result(ControllerKind::None).unwrap().summary.offered;
    assert_eq!(offered, 500);
}

#[test]
fn charts_are_svg_documents_with_a_line_per_controller() {
    let r = quick("cb-recovery");
    let svg = atrion_sim::chart::scenario_svg(&r).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for c in &r.results {
        assert!(svg.contains(c.controller.name()), "legend names {}", c.controller);
    }
}

#[test]
fn requests_expiring_in_one_queue_never_disturb_another_route() {
    // Route `a` is overloaded: its queue fills and requests time out while waiting (and are
    // still served later, wasted work). Route `b` is healthy on its own workers. With `a`
    // weighted 0, goodput counts `b` alone: every `b` request must succeed.
    let text = r#"
name = "isolation"
description = "one overloaded route beside a healthy one"
duration_s = 20
slo_ms = 1000
[[route]]
name = "a"
workers = 2
queue = 200
timeout_ms = 300
weight = 0.0
service = { dist = "exponential", mean_ms = 50 }
traffic = { pattern = "poisson", rps = 200 }
[[route]]
name = "b"
workers = 8
queue = 16
timeout_ms = 1000
service = { dist = "constant", mean_ms = 5 }
traffic = { pattern = "constant", rps = 100 }
"#;
    let s = atrion_sim::Scenario::from_toml(text, std::path::Path::new(".")).unwrap();
    let r = run_scenario(&s, &RunOptions { controllers: vec![ControllerKind::None], ..RunOptions::default() }).unwrap();
    let summary = &r.result(ControllerKind::None).unwrap().summary;
    // 100 requests/s for 20 s, less the first gap; `a` fails most of its requests.
    assert!((summary.goodput * 20.0 - 1_999.0).abs() < 1.0, "b's goodput {}", summary.goodput);
    assert!(summary.error_rate > 0.3, "a times out in its queue: {}", summary.error_rate);
}

#[test]
fn softmax_balancing_moves_traffic_off_a_flaky_replica() {
    let r = quick("replica-remodeling");
    let share = |controller: ControllerKind| {
        let routes = &r.result(controller).unwrap().summary.routes;
        let total: u64 = routes.iter().map(|x| x.admitted).sum();
        let b = routes.iter().find(|x| x.route == "replica-b").unwrap();
        (b.admitted as f64 / total as f64, b.failed)
    };
    let (random, random_failed) = share(ControllerKind::None);
    let (atrion, atrion_failed) = share(ControllerKind::AtrionDefault);
    assert!((random - 1.0 / 3.0).abs() < 0.02, "random balancing: {random}");
    // Flaky for 45 of the 75 s: a third of the traffic for the other 30 s is 13%.
    assert!(atrion < 0.2, "Atrion's share for the flaky replica: {atrion}");
    assert!(atrion_failed * 20 < random_failed, "failures {atrion_failed} vs {random_failed}");
}

#[test]
fn per_route_counts_show_isolation() {
    let r = quick("fintech-isolation");
    let table = atrion_sim::markdown_routes(&r).expect("two routes");
    assert!(table.contains("| payments | fraud-check |"), "{table}");
    // Atrion never sheds payments while fraud-check hangs.
    let routes = &r.result(ControllerKind::AtrionDefault).unwrap().summary.routes;
    assert_eq!(routes[0].route, "payments");
    assert_eq!(routes[0].offered, routes[0].admitted);
    assert_eq!(routes[0].failed, 0);
    assert!(atrion_sim::markdown_routes(&quick("chaos")).is_none());
}

fn run_text(text: &str, controllers: &[ControllerKind]) -> ScenarioReport {
    let s = atrion_sim::Scenario::from_toml(text, std::path::Path::new(".")).expect("valid");
    let options = RunOptions { controllers: controllers.to_vec(), ..RunOptions::default() };
    run_scenario(&s, &options).expect("runs")
}

#[test]
fn retries_follow_their_policy_and_budget() {
    // Every request fails; clients retry up to 3 times. Without a budget limit each first
    // attempt brings 3 retries; with a budget of 0.5 retries add at most half the load.
    let scenario = |budget: f64| {
        format!(
            "name = \"r\"\ndescription = \"d\"\nduration_s = 20\nseed = 3\n\
             [[route]]\nname = \"a\"\nservice = {{ dist = \"constant\", mean_ms = 5 }}\n\
             traffic = {{ pattern = \"constant\", rps = 100 }}\n\
             retry = {{ attempts = 3, backoff_ms = 10, budget = {budget} }}\n\
             [[fault]]\nstart_s = 0\nend_s = 20\nkind = \"errors\"\nrate = 1.0\n"
        )
    };
    let offered = |budget: f64| {
        run_text(&scenario(budget), &[ControllerKind::None]).result(ControllerKind::None).unwrap().summary.offered
            as f64
    };
    let (free, budgeted) = (offered(10.0), offered(0.5));
    assert!(free > 3.8 * 2_000.0, "first attempts and three retries each: {free}");
    assert!(budgeted < 1.55 * 2_000.0 && budgeted > 1.4 * 2_000.0, "the budget caps retries at half: {budgeted}");
}

#[test]
fn slow_errors_hold_their_workers() {
    // 4 workers, 50% errors that take 400 ms: the errors alone need 100 rps x 0.5 x 0.4 s =
    // 20 workers, so the queue overflows and requests are refused; fast errors would not.
    let scenario = |latency: &str| {
        format!(
            "name = \"s\"\ndescription = \"d\"\nduration_s = 10\nseed = 3\n\
             [[route]]\nname = \"a\"\nworkers = 4\nqueue = 8\ntimeout_ms = 5000\n\
             service = {{ dist = \"constant\", mean_ms = 5 }}\ntraffic = {{ pattern = \"constant\", rps = 100 }}\n\
             [[fault]]\nstart_s = 0\nend_s = 10\nkind = \"errors\"\nrate = 0.5\n{latency}"
        )
    };
    let error_rate = |latency: &str| {
        run_text(&scenario(latency), &[ControllerKind::None]).result(ControllerKind::None).unwrap().summary.error_rate
    };
    let (fast, slow) = (error_rate(""), error_rate("latency_ms = 400\n"));
    assert!((fast - 0.5).abs() < 0.05, "{fast}");
    assert!(slow > 0.8, "refusals on top of the errors: {slow}");
}

#[test]
fn per_route_criteria_and_atrion_tables_apply_to_their_route() {
    // Two routes at 600 ms; the second has an SLO of 200 ms in its own [route.atrion] table,
    // so only it is shed, and a per-route criterion sees that.
    let text = "name = \"p\"\ndescription = \"d\"\nduration_s = 60\nseed = 3\nslo_ms = 5000\n\
        [[route]]\nname = \"free\"\nworkers = 256\nservice = { dist = \"constant\", mean_ms = 600 }\n\
        traffic = { pattern = \"poisson\", rps = 50 }\n\
        [[route]]\nname = \"strict\"\nworkers = 256\nservice = { dist = \"constant\", mean_ms = 600 }\n\
        traffic = { pattern = \"poisson\", rps = 50 }\natrion = { normal = { slo_ms = 200.0 } }\n\
        [[expect]]\ncontroller = \"atrion-default\"\nmetric = \"shed\"\nroute = \"free\"\nmax = 0.0\n\
        [[expect]]\ncontroller = \"atrion-default\"\nmetric = \"shed\"\nroute = \"strict\"\nmin = 0.05\n";
    let report = run_text(text, &[ControllerKind::AtrionDefault]);
    assert!(report.passed(), "{:#?}", report.checks);
    let bad = text.replace("route = \"free\"", "route = \"nope\"");
    assert!(atrion_sim::Scenario::from_toml(&bad, std::path::Path::new(".")).is_err(), "an unknown route is refused");
}

#[test]
fn bimodal_service_times_have_the_mixture_mean() {
    let text = "name = \"b\"\ndescription = \"d\"\nduration_s = 60\nseed = 3\nslo_ms = 100000\n\
        [[route]]\nname = \"a\"\nworkers = 4096\nqueue = 0\ntimeout_ms = 60000\n\
        service = { dist = \"bimodal\", mean_ms = 20, slow_ms = 1000, slow_share = 0.1, sigma = 0.3 }\n\
        traffic = { pattern = \"poisson\", rps = 500 }\n";
    let s = atrion_sim::Scenario::from_toml(text, std::path::Path::new(".")).unwrap();
    assert!((s.routes[0].service.mean_ms() - 118.0).abs() < 1e-9);
    let r = run_text(text, &[ControllerKind::None]);
    let bins = &r.result(ControllerKind::None).unwrap().bins;
    let (sum, n) = bins.iter().fold((0.0, 0u64), |(s, n), b| (s + b.latency_sum, n + u64::from(b.ok + b.failed)));
    let mean = sum / n as f64;
    assert!((mean - 118.0).abs() < 8.0, "{mean}");
    let p50 = r.result(ControllerKind::None).unwrap().summary.p50_ms;
    assert!(p50 < 30.0, "the median is in the fast mode: {p50}");
}

#[test]
fn the_new_keys_refuse_impossible_values_naming_the_field() {
    let base = "name = \"v\"\ndescription = \"d\"\n[[route]]\nname = \"a\"\nservice = { dist = \"constant\", mean_ms = 5 }\n\
                traffic = { pattern = \"poisson\", rps = 10 }\n";
    let refused = |extra: &str, field: &str| {
        let text = format!("{base}{extra}");
        let e = atrion_sim::Scenario::from_toml(&text, std::path::Path::new(".")).unwrap_err().to_string();
        assert!(e.contains(field), "`{extra}` -> {e}");
    };
    refused("retry = { attempts = 0 }\n", "route[0].retry.attempts");
    refused("retry = { attempts = 2, backoff_ms = -1 }\n", "route[0].retry.backoff_ms");
    refused("retry = { attempts = 2, budget = -0.5 }\n", "route[0].retry.budget");
    refused("slo_ms = 0\n", "route[0].slo_ms");
    refused("[[fault]]\nstart_s = 0\nend_s = 1\nkind = \"errors\"\nrate = 0.5\nlatency_ms = -3\n", "fault[0].kind");
    refused("[[expect]]\ncontroller = \"none\"\nmetric = \"p99_ms\"\nroute = \"a\"\nmax = 1\n", "expect[0].route");
    let bimodal = base.replace(
        "{ dist = \"constant\", mean_ms = 5 }",
        "{ dist = \"bimodal\", mean_ms = 5, slow_ms = 50, slow_share = 1.5, sigma = 0.3 }",
    );
    let e = atrion_sim::Scenario::from_toml(&bimodal, std::path::Path::new(".")).unwrap_err().to_string();
    assert!(e.contains("route[0].service") && e.contains("slow_share"), "{e}");
}

/// What a scenario, a telemetry experiment or the stability map cannot run is refused by
/// validation, with the bound or the estimate, never a panic or an aborted allocation.
#[test]
fn what_cannot_run_is_refused_with_its_estimate() {
    let route = |extra: &str| {
        format!(
            "name = \"x\"\ndescription = \"y\"\n{extra}\n[[route]]\nname = \"a\"\nservice = {{ dist = \"constant\", mean_ms = 5 }}\ntraffic = {{ pattern = \"poisson\", rps = 100 }}\n"
        )
    };
    let fault = |kind: &str| format!("{}[[fault]]\nstart_s = 1\nend_s = 2\n{kind}\n", route(""));
    for (text, says) in [
        (fault("kind = \"errors\"\nrate = 0.5\nperiod_s = 1e-10"), "fault[0].period_s"),
        (route("bin_ms = 1e-6"), "bins (about"),
        (fault("kind = \"latency\"\nmultiplier = 1e300"), "fault[0].kind"),
        (route("").replace("mean_ms = 5 }", "mean_ms = 5 }\nworkers = 4294967295"), "route[0].workers"),
        (route("").replace("mean_ms = 5 }", "mean_ms = 5 }\ntimeout_ms = 1e20"), "route[0].timeout_ms"),
        (route("").replace("rps = 100", "rps = 10000000").replace("\"y\"", "\"y\"\nduration_s = 86400"), "requests per controller"),
        (
            "name = \"t\"\ndescription = \"y\"\n[telemetry]\ntick_ms = 100\nticks = 4294967295\nlatency = { constant = 1 }\nerror = { constant = 0 }\nsaturation = { constant = 0 }\n".to_owned(),
            "ticks in [1, 10000000]",
        ),
        (
            "name = \"t\"\ndescription = \"y\"\n[telemetry]\ntick_ms = 100\nticks = 10\nlatency = { constant = -5 }\nerror = { constant = 0 }\nsaturation = { constant = 0 }\n".to_owned(),
            "telemetry.latency",
        ),
    ] {
        let e = atrion_sim::Scenario::from_toml(&text, std::path::Path::new(".")).unwrap_err();
        assert!(e.to_string().contains(says), "{says}: {e}\n{text}");
    }

    use atrion_sim::stability::{self, StabilityConfig};
    let mut c = StabilityConfig::reference();
    c.lambda.steps = u32::MAX;
    let e = stability::run(&c, || {}).unwrap_err();
    assert!(e.to_string().contains("updates"), "{e}");
    for bad in [atrion_sim::Signal::Constant(-1.0), atrion_sim::Signal::Constant(f64::NAN)] {
        let mut c = StabilityConfig::reference();
        c.error = bad;
        let e = stability::run(&c, || {}).unwrap_err();
        assert!(e.to_string().contains("`error`"), "{e}");
    }
}
