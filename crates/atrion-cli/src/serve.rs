//! `atrion serve`: the sidecar. The HTTP API of `atrion-server` over an `Atrion` whose state
//! lives in a store (by default an embedded, crash-safe file in `./atrion-data`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use atrion::state::SyncConfig;

/// The port `atrion serve` listens on by default, on loopback.
pub const DEFAULT_PORT: u16 = 7878;

/// Arguments of `atrion serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Where to listen. Loopback by default; another address needs
    /// `--i-know-this-exposes-the-api` until admin tokens exist.
    #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))]
    pub listen: SocketAddr,
    /// The store: `memory`, `file:PATH`, `redis://…`, `rediss://…`, `postgres://…`.
    #[arg(long, default_value = "file:./atrion-data/state.redb")]
    pub store: String,
    /// This node's id in the cluster (1 to 64 of `[A-Za-z0-9._-]`).
    #[arg(long, default_value = "node-1")]
    pub node_id: String,
    /// The cluster's namespace.
    #[arg(long, default_value = "atrion")]
    pub namespace: String,
    /// Listen on a non-loopback address although the API has no authentication yet.
    #[arg(long)]
    pub i_know_this_exposes_the_api: bool,
    /// Routes that get their own `route` label in `/metrics`; the rest are `other`.
    #[arg(long, default_value_t = 100)]
    pub metrics_routes: usize,
}

/// Installs the Prometheus recorder (before the engine's observer registers its handles)
/// and keeps its histograms drained.
fn install_metrics() -> Result<atrion_server::MetricsRender> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let buckets = [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0, 10.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(atrion_server::HTTP_DURATION.to_owned()), &buckets)?
        .install_recorder()
        .context("installing the metrics recorder")?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(atrion_server::MetricsRender(Arc::new(move || handle.render())))
}

pub fn run(args: &ServeArgs) -> Result<ExitCode> {
    if !args.listen.ip().is_loopback() && !args.i_know_this_exposes_the_api {
        bail!(
            "--listen {}: not a loopback address, and the API has no authentication yet; \
             pass --i-know-this-exposes-the-api to listen there anyway",
            args.listen
        );
    }
    let mut store: atrion::StoreConfig = args.store.parse().with_context(|| format!("--store {}", args.store))?;
    store.set_namespace(&args.namespace);
    let mut sync = SyncConfig::for_node(&args.node_id);
    sync.namespace = args.namespace.clone();
    sync.validate().map_err(|e| anyhow::anyhow!("--node-id / --namespace: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let built = store.build().await.with_context(|| format!("opening the store {}", args.store))?;
        let metrics = install_metrics()?;
        let observer = atrion_server::SidecarObserver::new().with_metrics(args.metrics_routes);
        let atrion = Arc::new(atrion::Atrion::builder().observer(observer).store_arc(built).sync(sync).build()?);
        atrion.connect().await.context("loading what the store knows")?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        println!("atrion serve: listening on http://{addr} (node {}, store {})", args.node_id, args.store);
        let mut config = atrion_server::ServerConfig::default();
        config.metrics = Some(metrics);
        atrion_server::serve(listener, atrion, &config, atrion_server::shutdown_signal()).await?;
        println!("atrion serve: stopped");
        Ok(ExitCode::SUCCESS)
    })
}
