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
        let atrion = Arc::new(atrion::Atrion::builder().store_arc(built).sync(sync).build()?);
        atrion.connect().await.context("loading what the store knows")?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        println!("atrion serve: listening on http://{addr} (node {}, store {})", args.node_id, args.store);
        atrion_server::serve(
            listener,
            atrion,
            &atrion_server::ServerConfig::default(),
            atrion_server::shutdown_signal(),
        )
        .await?;
        println!("atrion serve: stopped");
        Ok(ExitCode::SUCCESS)
    })
}
