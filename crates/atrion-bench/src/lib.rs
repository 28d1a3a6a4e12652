//! # atrion-bench
//!
//! Unpublished: Atrion measured beside its peers and its floor. The crate holds three kinds
//! of measurement, kept out of the published crates so that their heavy comparison
//! dependencies (criterion, governor, failsafe, an HTTP client) never reach a user:
//!
//! - criterion benches (`benches/`): the engine beside governor and failsafe, the state
//!   layer, the cluster's merge, policies, the wind tunnel's speed, the sidecar's and the
//!   dashboard's server-side costs;
//! - load generators (`src/bin/`): `load` (the sidecar over loopback beside a constant-JSON
//!   floor, and proxy mode beside a plain proxy), `calls` (requests through the router in one
//!   thread, for an instruction count under callgrind) and `fleet` (the cluster sync as N
//!   nodes over one store);
//! - this library: the workload the sidecar's measurements share ([`workload`]), so that
//!   `load`, `calls` and the `sidecar` bench send the same bodies and compare with the same
//!   floor, and a figure of one can be set beside a figure of another.
//!
//! The fleet harnesses share [`counting`] (what each node asks of its store) and [`plot`]
//! (their charts); [`vfleet`] is the fleet in virtual time (the `vfleet` binary).
//!
//! This crate has no cargo features.

pub mod counting;
pub mod plot;
pub mod vfleet;

pub mod workload {
    //! The sidecar's workload: the request bodies, the sidecar under test and its floor.

    use std::net::SocketAddr;
    use std::sync::Arc;

    use atrion::Atrion;
    use atrion_server::{SidecarAtrion, SidecarObserver};
    use axum::Router;
    use axum::routing::post;
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    /// Distinct routes the workload cycles through.
    pub const ROUTES: u64 = 16;

    /// Decisions in one `/v1/batch` request.
    pub const BATCH: u64 = 100;

    /// The body of the `i`-th `/v1/decide`: route `GET /r{i mod ROUTES}`.
    pub fn decide_body(i: u64) -> String {
        format!(r#"{{"route":"GET /r{}"}}"#, i % ROUTES)
    }

    /// The body of the `i`-th `/v1/report` (ticket-less, healthy, 5 ms): route
    /// `GET /r{i mod ROUTES}`, the route of [`decide_body`]`(i)`.
    pub fn report_body(i: u64) -> String {
        format!(r#"{{"route":"GET /r{}","latency_ms":5,"ok":true}}"#, i % ROUTES)
    }

    /// A `/v1/batch` body of [`BATCH`] decisions on routes `GET /b{(offset + k) mod ROUTES}`.
    pub fn batch_body(offset: u64) -> String {
        let items: Vec<String> =
            (0..BATCH).map(|k| format!(r#"{{"route":"GET /b{}"}}"#, (offset + k) % ROUTES)).collect();
        format!(r#"{{"decide":[{}]}}"#, items.join(","))
    }

    /// The engine the sidecar runs in these measurements: the defaults, with the sidecar's
    /// observer (as `atrion serve` builds it).
    pub fn sidecar_atrion() -> Arc<SidecarAtrion> {
        Arc::new(Atrion::builder().observer(SidecarObserver::new()).build().expect("the default engine builds"))
    }

    /// The floor: axum on the same stack answering `/v1/decide` and `/v1/report` with a
    /// constant JSON body, what any sidecar costs before it decides anything.
    pub fn floor_router() -> Router {
        let constant = || async { ([("content-type", "application/json")], r#"{"verdict":"admit"}"#) };
        Router::new().route("/v1/decide", post(constant)).route("/v1/report", post(constant))
    }

    /// The load generators' HTTP client: keep-alive, `TCP_NODELAY`, up to 1,024 idle
    /// connections per host.
    pub type Http = Client<HttpConnector, Full<Bytes>>;

    /// A new [`Http`] client.
    pub fn http_client() -> Http {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build(connector)
    }

    /// A `POST` (else a `GET`) of a JSON `body` to `path` on `base`.
    pub fn json_request(post: bool, base: SocketAddr, path: &str, body: Bytes) -> hyper::Request<Full<Bytes>> {
        hyper::Request::builder()
            .method(if post { "POST" } else { "GET" })
            .uri(format!("http://{base}{path}"))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("a valid request")
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn bodies_are_the_documented_json() {
            assert_eq!(decide_body(17), r#"{"route":"GET /r1"}"#);
            assert_eq!(report_body(17), r#"{"route":"GET /r1","latency_ms":5,"ok":true}"#);
            let batch: serde_json::Value = serde_json::from_str(&batch_body(3)).unwrap();
            let items = batch["decide"].as_array().unwrap();
            assert_eq!(items.len(), BATCH as usize);
            assert_eq!(items[0]["route"], "GET /b3");
            assert_eq!(items[13]["route"], "GET /b0");
        }
    }
}
