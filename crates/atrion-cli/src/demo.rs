//! The pretend service: a few routes, one of which fails now and then, driving a sidecar so
//! that the dashboard has something to show: the failing route trips open, probes in
//! half-open, and closes again when it heals. `atrion demo-traffic` drives a running sidecar
//! with it; `atrion serve --demo` drives its own API with it, in the same process ([`drive`]).
//!
//! Each tick it asks `/v1/batch` for the decisions of this tick's requests, "calls" the
//! admitted ones (no real call: the latency and the outcome are made up, from the phase of
//! the failing route) and reports them in a second batch. It goes through the HTTP API as any
//! client does, so that what an operator does on the dashboard (a hold, a ban, shadow mode)
//! acts on it as it would on a real service.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Arguments of `atrion demo-traffic`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// The sidecar to drive.
    #[arg(long, default_value = "http://127.0.0.1:7878")]
    pub server: String,
    /// Requests per second, over all routes.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// The routes of the pretend service, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "GET /users,GET /users/{id},POST /orders,GET /search,GET /inventory,POST /login"
    )]
    pub routes: Vec<String>,
    /// The route that fails now and then (added to the routes if it is not one of them).
    #[arg(long, default_value = "GET /search")]
    pub failing: String,
    /// Seconds the failing route is healthy between failures.
    #[arg(long, default_value_t = 30.0)]
    pub healthy_secs: f64,
    /// Seconds each failure lasts (calls take 0.7 to 1.1 s, and nine in ten fail).
    #[arg(long, default_value_t = 20.0)]
    pub failing_secs: f64,
    /// Stop after this many seconds [default: run until interrupted].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Print the failing route's mode every this many seconds (0: quiet).
    #[arg(long, default_value_t = 2.0)]
    pub print_every: f64,
}

impl DemoArgs {
    /// The arguments `atrion demo-traffic` runs with when given none.
    pub fn defaults() -> Result<DemoArgs> {
        use clap::{Args as _, FromArgMatches as _};
        let cmd = DemoArgs::augment_args(clap::Command::new("demo-traffic"));
        Ok(DemoArgs::from_arg_matches(&cmd.try_get_matches_from(["demo-traffic"])?)?)
    }
}

const TICK: Duration = Duration::from_millis(100);

/// Checks the arguments: a positive rate, positive phases, routes that are not empty.
pub fn check(args: &DemoArgs) -> Result<()> {
    if !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= 100_000.0) {
        bail!("--rate {}: expected more than 0 and at most 100000 requests per second", args.rate);
    }
    for (flag, v) in [("--healthy-secs", args.healthy_secs), ("--failing-secs", args.failing_secs)] {
        if !(v.is_finite() && v > 0.0) {
            bail!("{flag} {v}: expected a positive number of seconds");
        }
    }
    if args.duration.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
        bail!("--duration: expected a positive number of seconds");
    }
    if let Some(e) = args.routes.iter().find_map(|r| atrion::limits::check_route_id(r).err()) {
        bail!("--routes: {e}");
    }
    Ok(())
}

/// A call's made-up outcome: (latency in ms, ok, saturation).
fn outcome(failing: bool, n: u64) -> (f64, bool, f64) {
    // A wobble instead of randomness: the same run each time.
    let wobble = ((n as f64) * 0.618).fract();
    if failing { (700.0 + 400.0 * wobble, n % 10 == 0, 0.9) } else { (20.0 + 20.0 * wobble, true, 0.3) }
}

/// `atrion demo-traffic`: drives the sidecar at `--server` until `--duration` ends, or until
/// interrupted.
pub fn run(args: &DemoArgs) -> Result<ExitCode> {
    check(args)?;
    let base = args.server.trim_end_matches('/').to_owned();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let http = client()?;
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("no sidecar answers at {base} (start one with `atrion serve`)"))?;
        drive(args, &base, &http, "atrion demo-traffic").await;
        Ok(ExitCode::SUCCESS)
    })
}

/// The HTTP client the pretend service calls the sidecar with.
pub fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?)
}

/// Drives the sidecar at `base` (`http://host:port`) with the pretend service of `args`
/// (checked by [`check`]) until `args.duration` ends, or for ever. A sidecar that does not
/// answer is waited for, not given up on. Its lines start with `label`.
pub async fn drive(args: &DemoArgs, base: &str, http: &reqwest::Client, label: &str) {
    let mut routes = args.routes.clone();
    if !routes.contains(&args.failing) {
        routes.push(args.failing.clone());
    }
    println!(
        "{label}: {} requests/s on {} routes at {base}; {} fails for {} s every {} s",
        args.rate,
        routes.len(),
        args.failing,
        args.failing_secs,
        args.healthy_secs + args.failing_secs
    );
    let start = Instant::now();
    let per_tick = args.rate * TICK.as_secs_f64();
    let mut owed = 0.0;
    let mut sent: u64 = 0;
    let mut next_print = 0.0;
    let mut away = false;
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cycle = args.healthy_secs + args.failing_secs;
    loop {
        interval.tick().await;
        let t = start.elapsed().as_secs_f64();
        if args.duration.is_some_and(|d| t >= d) {
            break;
        }
        let failing = t % cycle >= args.healthy_secs;
        owed += per_tick;
        let n = owed.floor() as u64;
        owed -= n as f64;
        let batch: Vec<&String> = (0..n).map(|i| &routes[((sent + i) % routes.len() as u64) as usize]).collect();
        sent += n;
        if !batch.is_empty() {
            let round =
                exchange(http, base, &batch, |route, i| outcome(failing && route == args.failing, sent + i as u64));
            // A sidecar that restarts is waited for, not given up on.
            match (round.await, away) {
                (Ok(()), true) => {
                    away = false;
                    println!("{label}: the sidecar answers again");
                }
                (Err(e), false) => {
                    away = true;
                    println!("{label}: {e:#}; retrying every second");
                }
                (Err(_), true) => tokio::time::sleep(Duration::from_secs(1)).await,
                (Ok(()), false) => {}
            }
        }
        if args.print_every > 0.0 && t >= next_print && !away {
            next_print = t + args.print_every;
            print_modes(http, base, t, failing, &args.failing).await;
        }
    }
}

/// One tick's requests: their decisions in one batch, the admitted ones' reports in a
/// second.
async fn exchange(
    http: &reqwest::Client,
    base: &str,
    batch: &[&String],
    outcome: impl Fn(&str, usize) -> (f64, bool, f64),
) -> Result<()> {
    let decide: Vec<Value> = batch.iter().map(|r| json!({ "route": r })).collect();
    let answer = post(http, base, &json!({ "decide": decide })).await?;
    let mut reports = Vec::new();
    for (i, (route, d)) in batch.iter().zip(answer["decide"].as_array().into_iter().flatten()).enumerate() {
        if d["verdict"] == "admit" {
            let (latency_ms, ok, saturation) = outcome(route, i);
            reports.push(json!({ "route": route, "latency_ms": latency_ms, "ok": ok, "saturation": saturation }));
        }
    }
    if !reports.is_empty() {
        post(http, base, &json!({ "report": reports })).await?;
    }
    Ok(())
}

async fn post(http: &reqwest::Client, base: &str, body: &Value) -> Result<Value> {
    let res = http.post(format!("{base}/v1/batch")).json(body).send().await.context("sending a batch")?;
    let status = res.status();
    let answer: Value = res.json().await.context("reading the batch's answer")?;
    if !status.is_success() {
        bail!("the sidecar refused a batch: {status} {answer}");
    }
    Ok(answer)
}

async fn print_modes(http: &reqwest::Client, base: &str, t: f64, failing: bool, route: &str) {
    let Ok(res) = http.get(format!("{base}/v1/routes/{}", crate::policy::urlencode(route))).send().await else {
        return;
    };
    let Ok(v) = res.json::<Value>().await else { return };
    println!(
        "{t:6.1} s  {route}: {} (resistance {:.1}, break point {:.1}, scar {:.1}); the service is {}",
        v["mode"].as_str().unwrap_or("?"),
        v["resistance"].as_f64().unwrap_or(0.0),
        v["break_point"].as_f64().unwrap_or(0.0),
        v["scar"].as_f64().unwrap_or(0.0),
        if failing { "failing" } else { "healthy" },
    );
}
