//! `atrion simulate` and `atrion stability-map`: the wind tunnel on the command line.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use atrion_sim::stability::{self, StabilityConfig, StabilityMap};
use atrion_sim::{ControllerKind, Metric, RunOptions, Scenario, ScenarioReport, chart};
use indicatif::{ProgressBar, ProgressStyle};

use crate::ModelArg;

/// Arguments of `atrion simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// A built-in scenario name or a scenario file (repeatable).
    #[arg(long = "scenario", value_name = "NAME|FILE")]
    pub scenarios: Vec<String>,
    /// Every built-in scenario.
    #[arg(long)]
    pub all: bool,
    /// List the built-in scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Only these controllers (comma-separated; those a criterion compares with still run).
    #[arg(long, value_delimiter = ',')]
    pub controllers: Vec<ControllerKind>,
    /// Override each scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run the shortened form of each scenario (what the test suite runs).
    #[arg(long)]
    pub quick: bool,
    /// Override a controller setting for every scenario, `CONTROLLER.KEY=VALUE` with a TOML
    /// value, e.g. `atrion-default.half_open.backoff_factor=1.5` (repeatable).
    #[arg(long = "set", value_name = "CONTROLLER.KEY=VALUE")]
    pub sets: Vec<String>,
    /// Print one JSON document instead of tables.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print a Markdown results page (what docs/RESULTS.md is made from).
    #[arg(long)]
    pub markdown: bool,
    /// Folder the SVG charts are written to.
    #[arg(long, default_value = "target/atrion-sim")]
    pub out: PathBuf,
    /// How the Markdown page links to the charts (default: the --out folder).
    #[arg(long)]
    pub link_base: Option<String>,
    /// Do not write charts.
    #[arg(long)]
    pub no_charts: bool,
    /// Also write each scenario's series (one bin per `bin_ms`, per controller) as
    /// `NAME.series.json` beside the charts, for plotting elsewhere.
    #[arg(long)]
    pub series: bool,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Arguments of `atrion stability-map`.
#[derive(Debug, clap::Args)]
pub struct StabilityArgs {
    /// The physics model.
    #[arg(long, value_enum, default_value_t = ModelArg::Reference)]
    pub model: ModelArg,
    /// The experiment as TOML (grid, ticks, input signals, score, physics overrides); by
    /// default the reference's published experiment.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Also run the same grid with an input that does not saturate (ignored with --config).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub unsaturated: bool,
    /// Print one JSON document instead of the maps.
    #[arg(long)]
    pub json: bool,
    /// Folder the heat-map SVGs are written to.
    #[arg(long, default_value = "target/atrion-sim")]
    pub out: PathBuf,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

fn bar(len: u64, what: &str, hidden: bool) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!("{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} {{msg}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// `--set CONTROLLER.KEY=VALUE` into the scenario's settings (dotted keys nest).
fn apply_set(scenario: &mut Scenario, set: &str) -> Result<()> {
    let (path, value) = set.split_once('=').with_context(|| format!("--set `{set}`: expected CONTROLLER.KEY=VALUE"))?;
    let (controller, key) =
        path.split_once('.').with_context(|| format!("--set `{set}`: expected CONTROLLER.KEY=VALUE"))?;
    let controller: ControllerKind = controller.parse().with_context(|| format!("--set `{set}`"))?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let mut table = scenario.settings.entry(controller).or_default();
    let keys: Vec<&str> = key.split('.').collect();
    for k in &keys[..keys.len() - 1] {
        let entry = table.entry((*k).to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().with_context(|| format!("--set `{set}`: `{k}` is not a table"))?;
    }
    table.insert(keys[keys.len() - 1].to_owned(), value);
    Ok(())
}

/// The scenarios named on the command line.
fn scenarios(args: &SimulateArgs) -> Result<Vec<Scenario>> {
    let mut list = Vec::new();
    if args.all {
        for (name, _) in atrion_sim::BUILTIN {
            list.push(atrion_sim::load(name)?);
        }
    }
    for s in &args.scenarios {
        list.push(atrion_sim::load(s).with_context(|| format!("scenario `{s}`"))?);
    }
    if list.is_empty() {
        bail!("name a scenario with --scenario NAME|FILE, or run them all with --all (--list shows them)");
    }
    for s in &mut list {
        for set in &args.sets {
            apply_set(s, set)?;
        }
    }
    Ok(list)
}

/// `atrion simulate`
pub fn run(args: &SimulateArgs) -> Result<ExitCode> {
    if args.list {
        for (name, _) in atrion_sim::BUILTIN {
            let s = atrion_sim::load(name)?;
            println!("{name:<22} {}", s.description);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let list = scenarios(args)?;
    let options = RunOptions { seed: args.seed, controllers: args.controllers.clone(), quick: args.quick };
    let progress = bar(list.len() as u64, "simulating", args.no_progress || args.json);
    let mut reports = Vec::new();
    for s in &list {
        progress.set_message(s.name.clone());
        let report = atrion_sim::run_scenario_with(s, &options, |c| progress.set_message(format!("{} {c}", s.name)))?;
        progress.inc(1);
        reports.push(report);
    }
    progress.finish_and_clear();

    if args.series || !args.no_charts {
        std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    }
    if args.series {
        for r in &reports {
            let path = args.out.join(format!("{}.series.json", r.scenario.name));
            let doc = serde_json::json!({
                "scenario": r.scenario.name,
                "bin_ms": r.scenario.telemetry.as_ref().map_or(r.scenario.bin_ms, |t| t.tick_ms),
                "controllers": r.results.iter().map(|c| serde_json::json!({ "controller": c.controller, "bins": c.bins })).collect::<Vec<_>>(),
            });
            write_file(&path, &serde_json::to_string(&doc)?)?;
        }
    }
    if !args.no_charts {
        for r in &reports {
            write_file(&args.out.join(format!("{}.svg", r.scenario.name)), &chart::scenario_svg(r)?)?;
        }
    }

    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else if args.markdown {
        let base = args.link_base.clone().unwrap_or_else(|| args.out.display().to_string());
        print!("{}", markdown_page(&reports, &base, args));
        if args.all {
            print!("{}", stability_section(args, &base)?);
        }
    } else {
        for r in &reports {
            println!("{} — {}  (seed {})", r.scenario.name, r.scenario.description, r.seed);
            println!("{}", atrion_sim::text_table(r));
        }
        if !args.no_charts {
            println!("charts: {}", args.out.display());
        }
    }
    let failed: Vec<&str> = reports.iter().filter(|r| !r.passed()).map(|r| r.scenario.name.as_str()).collect();
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        if !args.json && !args.markdown {
            eprintln!("criteria failed in: {}", failed.join(", "));
        }
        Ok(ExitCode::from(1))
    }
}

/// Whether `a` beats `b` by a margin worth reporting: 5% of goodput or p99 (and at least
/// 5 ms), a second of recovery, half a point of false shedding, two transitions. Lower is
/// better for all but goodput.
fn better(metric: Metric, a: f64, b: f64) -> bool {
    match metric {
        Metric::Goodput => a > b * 1.05,
        Metric::P99Ms | Metric::P50Ms => a < b * 0.95 && b - a >= 5.0,
        Metric::RecoverS | Metric::DetectS => a < b - 1.0,
        Metric::HealthyShed | Metric::Shed | Metric::ErrorRate => a < b - 0.005,
        Metric::Transitions => a < b * 0.95 && b - a >= 2.0,
    }
}

/// Where `atrion-default` is beaten by a peer by more than 5%.
fn losses(r: &ScenarioReport) -> Vec<String> {
    let Some(ours) = r.result(ControllerKind::AtrionDefault) else { return Vec::new() };
    let metrics: &[Metric] = if r.is_telemetry() {
        &[Metric::Transitions]
    } else {
        &[Metric::Goodput, Metric::P99Ms, Metric::HealthyShed, Metric::RecoverS, Metric::Transitions]
    };
    let mut out = Vec::new();
    for &m in metrics {
        let mine = ours.summary.get(m).unwrap_or(f64::INFINITY);
        let winners: Vec<String> = r
            .results
            .iter()
            .filter(|p| !p.controller.is_atrion())
            .filter(|p| !(m == Metric::Transitions && p.controller != ControllerKind::Breaker))
            .filter_map(|p| {
                let theirs = p.summary.get(m).unwrap_or(f64::INFINITY);
                (theirs.is_finite() && better(m, theirs, mine)).then(|| format!("{} ({})", p.controller, short(theirs)))
            })
            .collect();
        if !winners.is_empty() {
            out.push(format!("{} {} vs {}", m.as_str(), short(mine), winners.join(", ")));
        }
    }
    out
}

fn short(x: f64) -> String {
    if !x.is_finite() {
        "never".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

fn markdown_page(reports: &[ScenarioReport], base: &str, args: &SimulateArgs) -> String {
    let mut cmd = String::from("atrion simulate");
    if args.all {
        cmd.push_str(" --all");
    }
    for s in &args.scenarios {
        cmd.push_str(&format!(" --scenario {s}"));
    }
    if args.quick {
        cmd.push_str(" --quick");
    }
    for s in &args.sets {
        cmd.push_str(&format!(" --set {s}"));
    }
    let mut out = String::new();
    out.push_str("# Wind-tunnel results\n\n");
    out.push_str(&format!(
        "Generated by `{cmd} --markdown --out {} --link-base {base}`; do not edit by hand. \
         Every scenario is a file in `scenarios/`; every number below is reproduced, byte for byte, \
         by the same command with the same seed. Metrics: goodput is successes within the scenario's \
         SLO per second (weighted where routes have weights); p50/p99 are latencies of admitted requests \
         (a refused request counts 0 ms, a timed-out one its timeout); healthy shed is the share of \
         requests shed while the service was healthy; detect is the time from the incident's start to \
         the first 100 ms bin shedding 10% or more; recover is the time from the incident's end until \
         goodput holds 90% of its pre-incident share for 2 s; transitions count closed/open/half-open \
         changes (limiters have none). Controllers: `none`; `breaker` (count window of 100 calls, 50% \
         failures, 5 s open, 10 half-open probes); Netflix's `aimd` and `gradient2` and Envoy's gradient \
         controller (`envoy`), with their published defaults; Atrion's `atrion-reference` and \
         `atrion-default` models; and `atrion-aimd`, the default model behind an AIMD limit (a request goes \
         through only when both admit), the pairing the notes recommend for overload. The last column of the \
         summary compares `atrion-default` alone with the peers.\n\n",
        args.out.display()
    ));
    out.push_str("## Summary\n\n| scenario | criteria | atrion-default is beaten on |\n|---|---|---|\n");
    for r in reports {
        let passed = r.checks.iter().filter(|c| c.passed).count();
        let l = losses(r);
        out.push_str(&format!(
            "| [{}](#{}) | {}/{} | {} |\n",
            r.scenario.name,
            r.scenario.name,
            passed,
            r.checks.len(),
            if l.is_empty() { "—".to_owned() } else { l.join("; ") }
        ));
    }
    for r in reports {
        out.push_str(&format!("\n## {}\n\n{}", r.scenario.name, r.scenario.description));
        if !r.scenario.origin.is_empty() {
            out.push_str(&format!(" *({})*", r.scenario.origin));
        }
        out.push_str(&format!(". Seed {}.\n\n", r.seed));
        out.push_str(&atrion_sim::markdown_table(r));
        if let Some(routes) = atrion_sim::markdown_routes(r) {
            out.push_str(&format!(
                "\nPer route, requests offered to the route's controller / succeeded / failed (calls, fallbacks and \
                 balancer picks included):\n\n{routes}"
            ));
        }
        if let Some(times) = atrion_sim::markdown_route_times(r) {
            out.push_str(&format!(
                "\nPer route, healthy shed / detect s / recover s, measured on what was offered to the route's \
                 controller:\n\n{times}"
            ));
        }
        let l = losses(r);
        if !l.is_empty() {
            out.push_str(&format!("\nWhere `atrion-default` is beaten: {}.\n", l.join("; ")));
        }
        if !r.scenario.notes.is_empty() {
            out.push_str(&format!("\n{}\n", r.scenario.notes.trim()));
        }
        if !args.no_charts {
            out.push_str(&format!("\n![{}]({base}/{}.svg)\n", r.scenario.name, r.scenario.name));
        }
    }
    out
}

/// The stability maps of both models, saturated and not, for the results page (heat maps
/// written beside the charts).
fn stability_section(args: &SimulateArgs, base: &str) -> Result<String> {
    let mut out = String::from(
        "\n## Stability map\n\ndocs/DESIGN.md §7.3's grid (`atrion stability-map`): scar decay lambda in [0.1, 5] x trauma \
         sigma in [1, 20], 500 ticks of 100 ms each, score `clamp(1 - Var(R) / 10000, 0, 1)`. \"saturated\" \
         is the reference's input (an error \"rate\" of 50 against a 1% target: pressure pinned at 1); \
         \"unsaturated\" swings the error rate between 0.5% and 2.5%.\n\n\
         | model | input | mean score | stable (>= 80%) | chaotic (< 30%) | heat map |\n|---|---|---:|---:|---:|---|\n",
    );
    for model in [atrion::Model::Reference, atrion::Model::Default] {
        for (input, config) in
            [("saturated", StabilityConfig::reference()), ("unsaturated", StabilityConfig::unsaturated())]
        {
            let map = stability::run(&config.for_model(model), || {})?;
            let link = if args.no_charts {
                "—".to_owned()
            } else {
                let name = write_heat_map(&args.out, input, &map)?;
                format!("[{}]({base}/{name})", name.trim_end_matches(".svg"))
            };
            let cells = map.lambdas.len() * map.sigmas.len();
            out.push_str(&format!(
                "| {model:?} | {input} | {:.1}% | {}/{cells} | {}/{cells} | {link} |\n",
                map.mean * 100.0,
                map.stable,
                map.chaotic
            ));
        }
    }
    out.push_str(
        "\nThe reference's published 90.2% is reproduced. With the reference's input every tick scars, so the score \
         measures how high scar climbs towards its equilibrium `sigma / (1 - e^(-lambda dt))`: small lambda and \
         large sigma put R in the thousands. The default model accrues scar per second and clamps it (100 ohms), \
         so its variance stays small over the whole grid.\n",
    );
    Ok(out)
}

/// Writes `text` to `path`, naming the file in the error.
fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a map's heat map into `out` as `stability-MODEL-INPUT.svg` (the model the map
/// ran, whatever the command line said); returns the file name.
fn write_heat_map(out: &Path, input: &str, map: &StabilityMap) -> Result<String> {
    let name = format!("stability-{}-{input}.svg", format!("{:?}", map.config.model).to_lowercase());
    write_file(&out.join(&name), &chart::stability_svg(map)?)?;
    Ok(name)
}

/// `atrion stability-map`
pub fn stability_map(args: &StabilityArgs) -> Result<ExitCode> {
    let mut configs: Vec<(&str, StabilityConfig)> = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            vec![("custom", toml::from_str(&text).with_context(|| format!("malformed {}", path.display()))?)]
        }
        None => {
            let model = args.model.model();
            let mut v = vec![("saturated", StabilityConfig::reference().for_model(model))];
            if args.unsaturated {
                v.push(("unsaturated", StabilityConfig::unsaturated().for_model(model)));
            }
            v
        }
    };
    let cells: u64 = configs.iter().map(|(_, c)| u64::from(c.lambda.steps) * u64::from(c.sigma.steps)).sum();
    let progress = bar(cells, "mapping", args.no_progress || args.json);
    let mut maps = Vec::new();
    for (name, config) in configs.drain(..) {
        let map = stability::run(&config, || progress.inc(1))?;
        maps.push((name, map));
    }
    progress.finish_and_clear();
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut written = Vec::new();
    for (input, map) in &maps {
        written.push(args.out.join(write_heat_map(&args.out, input, map)?));
    }
    if args.json {
        let doc: Vec<_> = maps.iter().map(|(n, m)| serde_json::json!({ "input": n, "map": m })).collect();
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for ((name, map), path) in maps.iter().zip(&written) {
            print_map(name, map, path);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_map(name: &str, map: &StabilityMap, path: &Path) {
    println!(
        "stability map, {:?} model, {name} input ({}x{} cells)",
        map.config.model,
        map.lambdas.len(),
        map.sigmas.len()
    );
    println!("  sigma \\ lambda {}", map.lambdas.iter().map(|l| format!("{l:>5.2}")).collect::<Vec<_>>().join(" "));
    for (j, s) in map.sigmas.iter().enumerate().rev() {
        let row: Vec<String> = map.scores.iter().map(|col| format!("{:>5.0}", col[j] * 100.0)).collect();
        println!("  {s:>14.1} {}", row.join(" "));
    }
    println!(
        "  mean score {:.1}%   stable (>= 80%) {}/{}   chaotic (< 30%) {}/{}",
        map.mean * 100.0,
        map.stable,
        map.lambdas.len() * map.sigmas.len(),
        map.chaotic,
        map.lambdas.len() * map.sigmas.len()
    );
    println!("  heat map: {}\n", path.display());
}
