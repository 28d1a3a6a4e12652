//! The floors that `scripts/proxy-compare.sh` measures Atrion against, each served until the
//! process is killed, on loopback:
//!
//! ```text
//! floors forward LISTEN UPSTREAM       # atrion_server::forwarding_router behind the front door
//! floors forward-bare LISTEN UPSTREAM  # the same router on plain axum::serve (no limits)
//! floors decide LISTEN                 # a trivial axum handler: POST /v1/decide, same JSON shape
//! ```
//!
//! `forward` is proxy mode less Atrion (no path normalization, no decision, no report) but
//! with the connection limits and timeouts of `atrion_server::serve_router`; `forward-bare`
//! drops those too. The rows between them and `atrion serve --upstream` are the cost of each
//! protection. `decide` parses the request as `/v1/decide` does and answers a constant of
//! the same fields and about the same length, on `axum::serve`: the sidecar's axum floor.
//! The runtime is the one `atrion serve` builds (tokio's multi-threaded default).

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use axum::Json;
use axum::Router;
use axum::routing::post;
use serde::{Deserialize, Serialize};

/// The body of `POST /v1/decide`, as the sidecar reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read to be parsed, as the sidecar does
struct DecideRequest {
    route: String,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    client: Option<String>,
}

/// The sidecar's answer's fields, constant.
#[derive(Serialize)]
struct DecideResponse {
    verdict: &'static str,
    reason: &'static str,
    mode: &'static str,
    resistance: f64,
    retry_after_ms: Option<u64>,
    ticket: Option<&'static str>,
}

/// About the length of a real ticket for a short route.
const TICKET: &str = "v3.R0VUIC91c2Vycy97aWR9.AAAAAAAAAAEAAAAAAAAAKgAAAZTr8Qe3mE8N0c6yXk2lqQ1vHb7fXw";

async fn decide(Json(_): Json<DecideRequest>) -> Json<DecideResponse> {
    Json(DecideResponse {
        verdict: "admit",
        reason: "healthy",
        mode: "operational",
        resistance: 10.0,
        retry_after_ms: None,
        ticket: Some(TICKET),
    })
}

fn addr(arg: Option<&String>) -> Result<SocketAddr> {
    let text = arg.context("a listen address (127.0.0.1:PORT)")?;
    let at: SocketAddr = text.parse().with_context(|| format!("`{text}` is not an address"))?;
    if !at.ip().is_loopback() {
        bail!("{at}: only loopback is served");
    }
    Ok(at)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("");
    let listen = addr(args.get(1))?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let upstream = || -> Result<atrion_server::ProxyConfig> {
            let url = args.get(2).context("an upstream (http://127.0.0.1:PORT)")?;
            Ok(atrion_server::ProxyConfig::new(url, &[])?)
        };
        match mode {
            "forward" => {
                let app = atrion_server::forwarding_router(&upstream()?);
                let limits = atrion_server::ConnLimits::default();
                atrion_server::serve_router(listener, app, &limits, std::future::pending()).await?;
            }
            "forward-bare" => {
                let app = atrion_server::forwarding_router(&upstream()?);
                axum::serve(atrion_server::nodelay(listener), app).await?;
            }
            "decide" => {
                let app = Router::new().route("/v1/decide", post(decide));
                axum::serve(atrion_server::nodelay(listener), app).await?;
            }
            other => bail!("unknown mode `{other}`: forward, forward-bare or decide"),
        }
        Ok(())
    })
}
