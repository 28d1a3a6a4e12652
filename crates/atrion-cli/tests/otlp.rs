//! `atrion serve --otlp-endpoint` exports its spans and metrics over OTLP/HTTP to a receiver
//! started by the test, which decodes them with the OTLP protocol's own types: a span per
//! API request carries the route, verdict and reason; the decisions are a metric by route.
#![cfg(feature = "otlp")]

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use common::{Serve, eventually, free_port};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::json;

/// Attributes as (key, value as text).
type Attrs = Vec<(String, String)>;

#[derive(Default)]
struct Received {
    spans: Vec<(String, Attrs)>,
    metrics: Vec<(String, Attrs, u64)>,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kv: &[KeyValue]) -> Attrs {
    kv.iter().map(|a| (a.key.clone(), text(&a.value))).collect()
}

/// An OTLP/HTTP receiver (protobuf) on a free loopback port.
async fn receiver() -> (String, Arc<Mutex<Received>>) {
    use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
    let got = Arc::new(Mutex::new(Received::default()));
    let (t, m) = (got.clone(), got.clone());
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| async move {
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
                let mut got = t.lock().unwrap();
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        got.spans.extend(ss.spans.into_iter().map(|s| (s.name, attrs(&s.attributes))));
                    }
                }
                ""
            }),
        )
        .route(
            "/v1/metrics",
            axum::routing::post(move |body: Bytes| async move {
                let req = ExportMetricsServiceRequest::decode(body).expect("an OTLP metrics export");
                let mut got = m.lock().unwrap();
                for rm in req.resource_metrics {
                    for sm in rm.scope_metrics {
                        for metric in sm.metrics {
                            if let Some(metric::Data::Sum(sum)) = metric.data {
                                for p in sum.data_points {
                                    let v = match p.value {
                                        Some(number_data_point::Value::AsInt(i)) => i as u64,
                                        Some(number_data_point::Value::AsDouble(d)) => d as u64,
                                        None => 0,
                                    };
                                    got.metrics.push((metric.name.clone(), attrs(&p.attributes), v));
                                }
                            }
                        }
                    }
                }
                ""
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_an_otlp_receiver() {
    let (collector, got) = receiver().await;
    let listen = format!("127.0.0.1:{}", free_port());
    let s = Serve::start(&["--store", "memory", "--listen", &listen, "--otlp-endpoint", &collector], &[]);
    for _ in 0..3 {
        s.post("/v1/decide", json!({"route": "GET /otlp"})).await;
    }
    s.post("/v1/report", json!({"route": "GET /otlp", "latency_ms": 5, "ok": true})).await;
    // Stopping flushes both exporters.
    s.stop();
    let spans = eventually("the spans arrive", || async {
        let got = got.lock().unwrap();
        let decides: Vec<_> = got
            .spans
            .iter()
            .filter(|(name, a)| name == "atrion.request" && a.contains(&("http.route".into(), "/v1/decide".into())))
            .cloned()
            .collect();
        (decides.len() == 3).then_some(decides)
    })
    .await;
    for (_, a) in &spans {
        for kv in [("atrion.route", "GET /otlp"), ("atrion.verdict", "admit"), ("atrion.reason", "bootstrap")] {
            assert!(a.contains(&(kv.0.to_owned(), kv.1.to_owned())), "{kv:?} in {a:?}");
        }
        assert!(a.contains(&("http.response.status_code".into(), "200".into())), "{a:?}");
    }
    let admitted = eventually("the decisions metric arrives", || async {
        let got = got.lock().unwrap();
        got.metrics
            .iter()
            .find(|(name, a, _)| {
                name == "atrion.decisions"
                    && a.contains(&("route".into(), "GET /otlp".into()))
                    && a.contains(&("verdict".into(), "admit".into()))
            })
            .map(|m| m.2)
    })
    .await;
    assert_eq!(admitted, 3);
    let full_syncs = eventually("the sync counters arrive", || async {
        let got = got.lock().unwrap();
        got.metrics
            .iter()
            .find(|(name, a, _)| name == "atrion.sync" && a.contains(&("kind".into(), "full_syncs".into())))
            .map(|m| m.2)
    })
    .await;
    assert!(full_syncs >= 1, "the warm start is a full sync");
}
