//! `atrion`: the command-line face of Atrion.
//!
//! - `atrion replay TRACE`: feed a recorded telemetry trace through the engine and report,
//!   per route, the decisions, the mode transitions and the peak resistance.
//! - `atrion config [--model M]`: print a model's complete physics config as TOML.
//! - `atrion node --store URL --node-id ID`: one node of a cluster, printing its view.
//! - `atrion simulate`: the wind tunnel; scenarios against Atrion and its peers, tables,
//!   JSON or a Markdown page, and SVG charts.
//! - `atrion stability-map`: the reference's stability grid, and the same without
//!   saturated inputs, as tables and heat maps.
//!
//! - `atrion serve`: the sidecar, an HTTP decision service (`atrion-server`), with the
//!   cluster's policies (`--policy-file`, watched); `--demo` drives it with the pretend
//!   service of `atrion demo-traffic`, in the same process.
//! - `atrion policy check|apply|get|delete|ban|unban`, `atrion state dump|diff|history`,
//!   `atrion audit`: steer a running cluster, through a sidecar (`--server`) or its store
//!   (`--store`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

mod demo;
mod node;
#[cfg(feature = "otlp")]
mod otlp;
mod policy;
mod replay;
mod serve;
mod simulate;

/// Physics-based admission control: replay traces, run the wind tunnel, run cluster nodes.
#[derive(Debug, Parser)]
#[command(name = "atrion", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size of `serve`'s many settings costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Replay a telemetry trace (JSON lines or CSV) through the engine.
    ///
    /// Columns: timestamp_ms, route, latency_ms, error (true/false or a rate in [0, 1]),
    /// saturation (in [0, 1]) and, optionally, priority (critical, high, normal, low, bulk).
    Replay(ReplayArgs),
    /// Run one node of a cluster: traffic on a route (failing in a time window, if asked),
    /// state shared through Redis or PostgreSQL, and the node's view printed as JSON lines.
    Node(node::NodeArgs),
    /// Run wind-tunnel scenarios: Atrion beside a circuit breaker and adaptive limiters on
    /// identical simulated traffic and faults. Exits 1 when a scenario's criteria fail.
    Simulate(simulate::SimulateArgs),
    /// The stability map: resistance variance over a grid of scar decay and trauma.
    StabilityMap(simulate::StabilityArgs),
    /// Run the sidecar: an HTTP decision service on loopback (port 7878), its state in a
    /// store (an embedded file in ./atrion-data by default), with its dashboard. `--demo`
    /// also drives it with a pretend service, to watch a route trip and recover.
    Serve(Box<serve::ServeArgs>),
    /// Policies across the cluster: check a file offline, apply, get, delete, ban, unban.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// The cluster's policy state: dump (desired, applicable, current per node), diff,
    /// history.
    #[command(subcommand)]
    State(policy::StateCmd),
    /// The audit trail: every admin action and refused attempt, newest first.
    Audit(policy::AuditArgs),
    /// Drive a running sidecar with the traffic of a pretend service whose one route fails
    /// now and then: watch it trip and recover on the dashboard (`atrion serve`, then open
    /// the printed URL). `atrion serve --demo` does both in one process.
    DemoTraffic(demo::DemoArgs),
    /// Print a model's complete physics config as TOML, a starting point for `--config`.
    Config {
        /// The model whose constants to print.
        #[arg(long, value_enum, default_value_t = ModelArg::Default)]
        model: ModelArg,
    },
}

/// Arguments of `atrion replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The trace file, or `-` for standard input.
    pub trace: PathBuf,
    /// The physics model.
    #[arg(long, value_enum, default_value_t = ModelArg::Default, conflicts_with = "config")]
    pub model: ModelArg,
    /// A physics config (TOML); fields it omits keep the default model's values, so start
    /// from `atrion config --model M`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Trace format; by default taken from the file extension, else from the content.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    pub format: FormatArg,
    /// Which rows' telemetry the engine learns from: only the requests it admitted (what it
    /// would have seen in production), or every row.
    #[arg(long, value_enum, default_value_t = FeedArg::Admitted)]
    pub feed: FeedArg,
    /// The unit of the `timestamp_ms` column; a value that is not plausible in it (past the
    /// year 2286) is a malformed row.
    #[arg(long, value_enum, default_value_t = TimeUnitArg::Ms)]
    pub time_unit: TimeUnitArg,
    /// Routes tracked (and reported) one by one; rows of further routes are decided on no
    /// state (`untracked`) and reported together.
    #[arg(long, default_value_t = 65_536)]
    pub max_routes: usize,
    /// Print one JSON document instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// `--model`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelArg {
    /// The reference model, with its quirks.
    Reference,
    /// Atrion's default model.
    Default,
}

/// `--format`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// From the extension (.csv, .jsonl, .ndjson, .json) or the first character.
    Auto,
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
}

/// `--time-unit`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TimeUnitArg {
    /// Seconds.
    S,
    /// Milliseconds.
    Ms,
    /// Microseconds.
    Us,
    /// Nanoseconds.
    Ns,
}

impl TimeUnitArg {
    /// The trace reader's unit.
    pub fn unit(self) -> atrion_trace::TimeUnit {
        use atrion_trace::TimeUnit;
        match self {
            TimeUnitArg::S => TimeUnit::S,
            TimeUnitArg::Ms => TimeUnit::Ms,
            TimeUnitArg::Us => TimeUnit::Us,
            TimeUnitArg::Ns => TimeUnit::Ns,
        }
    }
}

/// `--feed`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FeedArg {
    /// Only admitted requests report telemetry.
    Admitted,
    /// Every row reports telemetry.
    All,
}

impl ModelArg {
    /// The engine's model.
    pub fn model(self) -> atrion::Model {
        match self {
            ModelArg::Reference => atrion::Model::Reference,
            ModelArg::Default => atrion::Model::Default,
        }
    }
}

fn print_config(model: ModelArg) -> Result<ExitCode> {
    let config = atrion::PhysicsConfig::for_model(model.model());
    print!("{}", toml::to_string_pretty(&config)?);
    Ok(ExitCode::SUCCESS)
}

/// Warnings and errors of the libraries go to stderr, as text or JSON lines; `RUST_LOG`
/// (e.g. `atrion_state=debug`) says more. With an OTLP endpoint (feature `otlp`), spans are
/// also exported; the returned provider flushes them when shut down.
fn install_logging(format: serve::LogFormat, level: &str, otlp: Option<&str>) -> Result<Option<Tracing>> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        serve::LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        serve::LogFormat::Text => fmt.boxed(),
    };
    let (provider, exported) = match otlp {
        #[cfg(feature = "otlp")]
        Some(endpoint) => {
            let (provider, layer) = otlp::tracing_layer(endpoint)?;
            (Some(provider), Some(layer.boxed()))
        }
        #[cfg(not(feature = "otlp"))]
        Some(_) => anyhow::bail!("setting `otlp-endpoint`: this atrion was built without the `otlp` feature"),
        None => (None, None),
    };
    let layers: Vec<Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>> =
        std::iter::once(fmt).chain(exported).collect();
    let _ = tracing_subscriber::registry().with(layers).with(filter).try_init();
    Ok(provider)
}

/// What flushes exported spans at exit.
#[cfg(feature = "otlp")]
type Tracing = opentelemetry_sdk::trace::SdkTracerProvider;
/// (No span export without the `otlp` feature.)
#[cfg(not(feature = "otlp"))]
type Tracing = std::convert::Infallible;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The sidecar installs its own logging, as its settings say (JSON off a terminal).
    if !matches!(cli.command, Command::Serve(_)) {
        let _ = install_logging(serve::LogFormat::Text, "warn", None);
    }
    finish(run(cli.command))
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Replay(args) => replay::run(&args),
        Command::Config { model } => print_config(model),
        Command::Node(args) => node::run(&args),
        Command::DemoTraffic(args) => demo::run(&args),
        Command::Policy(cmd) => policy::policy(cmd),
        Command::State(cmd) => policy::state(cmd),
        Command::Audit(args) => policy::audit(args),
        Command::Serve(args) => serve::Settings::resolve(&args).and_then(|settings| {
            let tracing = install_logging(settings.log_format, "info", settings.otlp_endpoint.as_deref())?;
            let result = serve::run(&settings);
            #[cfg(feature = "otlp")]
            if let Some(provider) = tracing {
                let _ = provider.shutdown();
            }
            #[cfg(not(feature = "otlp"))]
            let _: Option<Tracing> = tracing;
            result
        }),
        Command::Simulate(args) => simulate::run(&args),
        Command::StabilityMap(args) => simulate::stability_map(&args),
    }
}

fn finish(result: Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
