//! What the API's tests share: a sidecar on loopback over tokio's clock, and a raw POST.

#![allow(dead_code)] // each test crate uses a part

use std::sync::Arc;
use std::time::Duration;

use atrion::state::TokioClock;
use atrion::{Atrion, PhysicsConfig};
use atrion_server::{ServerConfig, SidecarAtrion, SidecarObserver, router};
use serde_json::Value;

/// An `Atrion` for the sidecar on tokio's clock, with a fast-healing scar.
pub fn sidecar() -> Arc<SidecarAtrion> {
    let mut c = PhysicsConfig::default().with_scar_half_life(Duration::from_millis(400));
    c.scar_rate = 60.0;
    Arc::new(Atrion::builder().observer(SidecarObserver::new()).config(c).clock(TokioClock::new()).build().unwrap())
}

/// The API with `config` on a loopback port: the engine and `http://host:port`.
pub async fn start_with(config: ServerConfig) -> (Arc<SidecarAtrion>, String) {
    let atrion = sidecar();
    let app = router(atrion.clone(), &config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (atrion, format!("http://{addr}"))
}

/// `POST path` with a raw JSON body: (status, content type, body as JSON or text).
pub async fn post(base: &str, path: &str, body: &str) -> (u16, String, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let kind = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let text = r.text().await.unwrap();
    (status, kind, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}
