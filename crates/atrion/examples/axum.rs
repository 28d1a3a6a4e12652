//! An axum server guarded by Atrion.
//!
//! ```text
//! cargo run -p atrion --example axum --features axum
//! curl -i localhost:3000/users/7      # 200
//! curl -i localhost:3000/flaky        # 500 most of the time, then 503 + Retry-After
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use atrion::{Atrion, AtrionLayer, ConsoleObserver};
use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;

static CALLS: AtomicU64 = AtomicU64::new(0);

async fn user(Path(id): Path<u64>) -> String {
    format!("user {id}\n")
}

/// Fails nine calls in ten.
async fn flaky() -> StatusCode {
    if CALLS.fetch_add(1, Ordering::Relaxed) % 10 == 0 { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Transitions are printed to stderr; routes are `GET /users/{id}` and `GET /flaky`.
    let atrion = Arc::new(Atrion::builder().observer(ConsoleObserver::new()).build()?);
    atrion.connect().await?;
    let app = Router::new()
        .route("/users/{id}", get(user))
        .route("/flaky", get(flaky))
        .layer(AtrionLayer::new(atrion.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?;
    atrion.shutdown().await;
    Ok(())
}
