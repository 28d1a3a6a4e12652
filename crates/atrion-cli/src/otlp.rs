//! OpenTelemetry over OTLP/HTTP (feature `otlp`, on by default): `atrion serve
//! --otlp-endpoint http://collector:4318` exports
//!
//! - traces: a span per API request (`atrion.request`: method, path template, status, and a
//!   decision's route, verdict and reason), with mode transitions as events in the span of
//!   the request that caused them;
//! - metrics, read from the engine at each export (every 10 s, and at shutdown):
//!   `atrion.decisions` (by route and verdict), `atrion.route.resistance`, `atrion.sync` (the
//!   sync's counters, by kind) and `atrion.sync.degraded`, with at most
//!   `--metrics-routes` route labels: the busiest routes at each export (the rest as `other`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;

fn resource() -> Resource {
    Resource::builder_empty().with_service_name("atrion").build()
}

fn endpoint(base: &str, signal: &str) -> String {
    format!("{}/v1/{signal}", base.trim_end_matches('/'))
}

/// The tracer provider exporting to `base` (`http://host:4318`), and the `tracing` layer
/// that feeds it.
pub fn tracing_layer<S>(base: &str) -> Result<(SdkTracerProvider, impl tracing_subscriber::Layer<S>)>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint(base, "traces"))
        .build()
        .context("setting `otlp-endpoint`: the span exporter")?;
    let provider = SdkTracerProvider::builder().with_resource(resource()).with_batch_exporter(exporter).build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("atrion"));
    Ok((provider, layer))
}

/// Exports the engine's decisions and resistances to `base` until shut down.
pub fn meter(base: &str, atrion: Arc<atrion_server::SidecarAtrion>, max_routes: usize) -> Result<SdkMeterProvider> {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_endpoint(endpoint(base, "metrics"))
        .build()
        .context("setting `otlp-endpoint`: the metric exporter")?;
    let reader = PeriodicReader::builder(exporter).with_interval(Duration::from_secs(10)).build();
    let provider = SdkMeterProvider::builder().with_resource(resource()).with_reader(reader).build();
    let meter = provider.meter("atrion");
    // The busiest routes by decisions have their own label; the rest are `other`.
    let labelled = move |atrion: &atrion_server::SidecarAtrion| {
        let mut ids = atrion.engine().route_ids();
        let busy = |r: &str| {
            let c = atrion.engine().observer().counts(r);
            c.admitted + c.shed
        };
        ids.sort_by_cached_key(|r| (std::cmp::Reverse(busy(r)), r.clone()));
        let rest = ids.split_off(ids.len().min(max_routes));
        (ids, rest)
    };
    let a = atrion.clone();
    let _decisions = meter
        .u64_observable_counter("atrion.decisions")
        .with_description("Decisions, by route and verdict.")
        .with_callback(move |observer| {
            let (ids, rest) = labelled(&a);
            let counts = |route: &str| a.engine().observer().counts(route);
            for route in &ids {
                let c = counts(route);
                for (verdict, n) in [("admit", c.admitted), ("shed", c.shed)] {
                    observer.observe(n, &[KeyValue::new("route", route.clone()), KeyValue::new("verdict", verdict)]);
                }
            }
            if !rest.is_empty() {
                let (admitted, shed) =
                    rest.iter().map(|r| counts(r)).fold((0, 0), |(a, s), c| (a + c.admitted, s + c.shed));
                for (verdict, n) in [("admit", admitted), ("shed", shed)] {
                    observer.observe(n, &[KeyValue::new("route", "other"), KeyValue::new("verdict", verdict)]);
                }
            }
        })
        .build();
    let a = atrion.clone();
    let _sync = meter
        .u64_observable_counter("atrion.sync")
        .with_description("The cluster sync's counters, by kind (pushed, pulled, merges, resyncs, store_errors, ...).")
        .with_callback(move |observer| {
            let Some(st) = a.try_sync_stats() else { return };
            for (kind, n) in st.counters() {
                observer.observe(n, &[KeyValue::new("kind", kind)]);
            }
        })
        .build();
    let a = atrion.clone();
    let _degraded = meter
        .u64_observable_gauge("atrion.sync.degraded")
        .with_description("1 while the store is away and decisions use local state only.")
        .with_callback(move |observer| {
            if let Some(st) = a.try_sync_stats() {
                observer.observe(u64::from(st.degraded), &[]);
            }
        })
        .build();
    let a = atrion;
    let _resistance = meter
        .f64_observable_gauge("atrion.route.resistance")
        .with_description("A route's resistance (ohms).")
        .with_unit("ohm")
        .with_callback(move |observer| {
            let now = a.now();
            for route in labelled(&a).0 {
                if let Some(r) = a.engine().resistance(&route, now) {
                    observer.observe(r, &[KeyValue::new("route", route)]);
                }
            }
        })
        .build();
    Ok(provider)
}
