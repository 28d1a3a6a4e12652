//! `atrion node`: one node of a cluster, for demonstrations and cross-process tests.
//!
//! It sends `--rate` requests per second on `--route`, failing while inside `--fail`, shares
//! state through the store at `--store`, and prints its view every `--every` as JSON lines:
//! `{"t": seconds, "wall_ms", "node": id, "mode", "resistance" (null while open), "local_scar",
//! "cluster_scar" (null when no other node reports on the route), "decide_us_max" (the
//! slowest decision so far, wall-clock microseconds), "sync": {"degraded",
//! "store_errors", "decode_errors", "rejected", "kept_local", "republished", "repairs" (Redis: damaged
//! values its writes replaced)}}`. Warnings (an unreachable store, values that do not
//! decode, repairs) go to stderr; `RUST_LOG` says more.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use atrion::state::{StateStore, SyncConfig};
use atrion::{Atrion, EngineClock, Priority};

/// Arguments of `atrion node`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The shared store: `redis://...`, `rediss://...`, `postgres://...`.
    #[arg(long)]
    pub store: String,
    /// This node's id.
    #[arg(long)]
    pub node_id: String,
    /// The cluster's namespace.
    #[arg(long, default_value = atrion::state::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// The route to send traffic on.
    #[arg(long, default_value = "checkout")]
    pub route: String,
    /// Requests per second.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds (from start) during which requests fail, as `FROM..UNTIL`.
    #[arg(long)]
    pub fail: Option<String>,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Pulse interval in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub pulse_ms: u64,
    /// Print interval in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub every_ms: u64,
}

/// The fewest and most requests per second a node sends, and the longest run.
const MIN_RATE: f64 = 1e-3;
const MAX_RATE: f64 = 1e6;
const MAX_DURATION_S: f64 = 365.0 * 24.0 * 3600.0;

fn window(spec: &str) -> Result<(f64, f64)> {
    let (a, b) = spec.split_once("..").with_context(|| format!("--fail {spec:?}: expected FROM..UNTIL, in seconds"))?;
    let number = |what: &str, x: &str| -> Result<f64> {
        x.trim().parse::<f64>().with_context(|| format!("--fail {spec:?}: {what} {x:?} is not a number of seconds"))
    };
    let (a, b) = (number("FROM", a)?, number("UNTIL", b)?);
    if !(a.is_finite() && b.is_finite() && 0.0 <= a && a <= b) {
        bail!("--fail {spec:?}: expected 0 <= FROM <= UNTIL");
    }
    Ok((a, b))
}

/// Every flag, checked before anything starts.
fn check(args: &NodeArgs, sync: &SyncConfig) -> Result<()> {
    if !(args.rate.is_finite() && (MIN_RATE..=MAX_RATE).contains(&args.rate)) {
        bail!("--rate {}: expected requests per second in [{MIN_RATE}, {MAX_RATE}]", args.rate);
    }
    if !(args.duration.is_finite() && args.duration > 0.0 && args.duration <= MAX_DURATION_S) {
        bail!("--duration {}: expected seconds in (0, {MAX_DURATION_S}]", args.duration);
    }
    let max = sync.keys().max_route_len();
    if args.route.is_empty() || args.route.len() > max {
        bail!(
            "--route is {} bytes: a route shared through the cluster is 1 to {max} bytes (with this namespace and node id)",
            args.route.len()
        );
    }
    for (flag, ms) in [("--pulse-ms", args.pulse_ms), ("--every-ms", args.every_ms)] {
        if ms == 0 || ms > 3_600_000 {
            bail!("{flag} {ms}: expected 1 to 3600000 milliseconds");
        }
    }
    Ok(())
}

pub fn run(args: &NodeArgs) -> Result<ExitCode> {
    let fail = args.fail.as_deref().map(window).transpose()?;
    let mut sync = SyncConfig::for_node(&args.node_id);
    sync.namespace = args.namespace.clone();
    sync.pulse = Duration::from_millis(args.pulse_ms.max(1));
    sync.node_ttl = sync.node_ttl.max(4 * sync.pulse);
    sync.full_sync = sync.full_sync.max(sync.pulse);
    sync.validate().map_err(|e| anyhow::anyhow!("--node-id / --namespace: {e}"))?;
    check(args, &sync)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let mut config: atrion::StoreConfig = args.store.parse()?;
        if matches!(config, atrion::StoreConfig::Memory | atrion::StoreConfig::File(_)) {
            bail!("--store must be a store the cluster shares: a redis://, rediss:// or postgres:// URL");
        }
        config.set_namespace(&args.namespace);
        // The Redis store is kept typed as well, for its repair counter.
        let mut redis = None;
        let store: Arc<dyn StateStore> = match &config {
            atrion::StoreConfig::Redis(c) => {
                let s = atrion::redis::RedisStore::connect(c).await?;
                redis = Some(s.clone());
                Arc::new(s)
            }
            other => other.build().await?,
        };
        let atrion = Atrion::builder().store_arc(store).sync(sync).build()?;
        atrion.connect().await.context("joining the cluster")?;
        let clock = atrion.clock().clone();
        let start = clock.now();
        let gap = Duration::from_secs_f64(1.0 / args.rate);
        let every = Duration::from_millis(args.every_ms.max(1));
        let mut next_print = Duration::ZERO;
        let mut decide_max = Duration::ZERO;
        let mut out = std::io::stdout().lock();
        loop {
            let now = clock.now();
            let t = now.saturating_since(start);
            if t.as_secs_f64() >= args.duration {
                break;
            }
            let failing = fail.is_some_and(|(a, b)| (a..b).contains(&t.as_secs_f64()));
            let started = std::time::Instant::now();
            let admitted = atrion.decide(&args.route, Priority::Critical).is_admitted();
            decide_max = decide_max.max(started.elapsed());
            if admitted {
                let latency = Duration::from_millis(if failing { 900 } else { 20 });
                atrion.report(&args.route, latency, !failing, Some(if failing { 0.9 } else { 0.3 }))?;
            }
            if t >= next_print {
                next_print = t + every;
                let engine = atrion.engine();
                let status = engine.status(&args.route).ok();
                let sync = atrion.sync_stats().await.unwrap_or_default();
                let line = serde_json::json!({
                    "t": t.as_secs_f64(),
                    "wall_ms": clock.wall_ms(),
                    "node": args.node_id,
                    "mode": status.map(|s| s.mode),
                    "resistance": engine.resistance(&args.route, now),
                    "local_scar": engine.snapshot(&args.route).map(|v| v.scar).unwrap_or(0.0),
                    "cluster_scar": engine.cluster_scar(&args.route, now),
                    "decide_us_max": decide_max.as_micros() as u64,
                    "sync": {
                        "degraded": sync.degraded,
                        "store_errors": sync.store_errors,
                        "decode_errors": sync.decode_errors,
                        "rejected": sync.rejected,
                        "kept_local": sync.kept_local,
                        "republished": sync.republished,
                        "repairs": redis.as_ref().map_or(0, atrion::redis::RedisStore::repairs),
                    },
                });
                writeln!(out, "{line}")?;
                out.flush()?;
            }
            tokio::time::sleep(gap).await;
        }
        atrion.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
