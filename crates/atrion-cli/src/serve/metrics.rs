//! The sidecar's Prometheus recorders: route-labelled series in a recorder of their own
//! that drops a series after it stays still (the series of an evicted route go), the rest
//! in another; one render of both for `GET /metrics`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

/// How long a route-labelled series may stay still before the exporter drops it: the series
/// of a route that lost its label (evicted, or outranked) go after this.
pub const ROUTE_SERIES_IDLE: Duration = Duration::from_secs(60);

/// The Prometheus recorders: route-labelled series in one that drops them after `idle`
/// still, the rest in another; one render of both.
fn metrics_recorder(
    idle: Duration,
) -> Result<(impl metrics::Recorder + Sync + 'static, [metrics_exporter_prometheus::PrometheusHandle; 2])> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use metrics_util::MetricKindMask;
    let buckets = [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0, 10.0];
    let rest = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(atrion_server::HTTP_DURATION.to_owned()), &buckets)?
        .build_recorder();
    let routes = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::COUNTER | MetricKindMask::GAUGE, Some(idle))
        .build_recorder();
    let handles = [routes.handle(), rest.handle()];
    Ok((atrion::metrics::RouteSplit::new(routes, rest), handles))
}

/// Installs the Prometheus recorders (before the engine's observer registers its handles)
/// and keeps their histograms drained.
pub(super) fn install_metrics() -> Result<atrion_server::MetricsRender> {
    let (recorder, handles) = metrics_recorder(ROUTE_SERIES_IDLE)?;
    metrics::set_global_recorder(recorder).map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    let upkeep = handles.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            for h in &upkeep {
                h.run_upkeep();
            }
        }
    });
    Ok(atrion_server::MetricsRender(Arc::new(move || render(&handles))))
}

/// Both recorders' text, route series first.
fn render(handles: &[metrics_exporter_prometheus::PrometheusHandle; 2]) -> String {
    let [routes, rest] = handles;
    let mut text = routes.render();
    text.push_str(&rest.render());
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::time::Instant;

    use atrion::metrics::MetricsObserver;
    use atrion::{Engine, EngineLimits, PhysicsConfig, Priority, Timestamp};

    /// The route labels the exporter shows.
    fn labels(handles: &[metrics_exporter_prometheus::PrometheusHandle; 2]) -> BTreeSet<String> {
        render(handles)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split("route=\"").nth(1)?.split('"').next().map(str::to_owned))
            .collect()
    }

    fn names(prefix: &str, n: usize) -> BTreeSet<String> {
        (0..n).map(|i| format!("{prefix}-{i}")).collect()
    }

    #[test]
    fn the_series_of_evicted_routes_go_and_the_route_labels_stay_at_their_bound() {
        let idle = Duration::from_millis(200);
        let (recorder, handles) = metrics_recorder(idle).unwrap();
        metrics::with_local_recorder(&recorder, || {
            let mut limits = EngineLimits::with_max_routes(4);
            limits.idle_timeout = Duration::from_secs(1);
            let observer = MetricsObserver::new(4).with_idle_timeout(idle);
            let engine = Engine::with_observer(PhysicsConfig::default(), limits, observer).unwrap();
            // Engine time runs with the exporter's: from 0, then from 10 s on.
            let start = Instant::now();
            let now = |offset: u64| Timestamp::from_nanos(offset + start.elapsed().as_nanos() as u64);
            for r in names("old", 4) {
                engine.decide(&r, now(0), Priority::Normal);
            }
            assert_eq!(labels(&handles), names("old", 4));
            // Idle past the engine's timeout: a new generation evicts the old one.
            let later = 10_000_000_000;
            for r in names("new", 4) {
                engine.decide(&r, now(later), Priority::Normal);
            }
            assert_eq!(engine.stats().evicted, 4);
            let mut shown = BTreeSet::new();
            for _ in 0..600 {
                // new-0 falls still; the others go on.
                for r in names("new", 4).iter().skip(1) {
                    engine.decide(r, now(later), Priority::Normal);
                }
                shown = labels(&handles);
                if !shown.iter().any(|l| l.starts_with("old")) && !shown.contains("new-0") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let expected: BTreeSet<String> = names("new", 4).into_iter().skip(1).collect();
            assert_eq!(shown, expected, "the evicted routes' series, and a still one, are gone");
            // The still route's next decision registers its series again: nothing is lost.
            engine.decide("new-0", now(later), Priority::Normal);
            let text = render(&handles);
            assert!(text.lines().any(|l| l.contains("route=\"new-0\"") && l.ends_with(" 1")), "{text}");
            assert!(labels(&handles).len() <= 4);
        });
    }
}
