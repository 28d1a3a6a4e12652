//! `atrion replay`: a trace through the engine, summarised per route.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, IsTerminal, Read};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use atrion::{
    CollectorObserver, Engine, EngineLimits, Event, FilteredObserver, Mode, Model, OwnedEvent, PhysicsConfig, Priority,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::{FeedArg, FormatArg, ReplayArgs};
use atrion_sim::trace::{self, Row, RowError};

/// Rows with errors printed before the rest are only counted.
const ERRORS_SHOWN: usize = 20;

#[derive(Debug, Default, Serialize)]
struct RouteReport {
    route: String,
    admitted: u64,
    shed: u64,
    by_reason: BTreeMap<&'static str, u64>,
    peak_resistance: f64,
    peak_at_ms: f64,
    final_mode: Option<Mode>,
    final_resistance: f64,
    transitions: Vec<TransitionReport>,
}

#[derive(Debug, Serialize)]
struct TransitionReport {
    at_ms: f64,
    from: Mode,
    to: Mode,
    resistance: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    trace: String,
    model: Model,
    rows: u64,
    malformed: u64,
    routes: Vec<RouteReport>,
    errors: Vec<RowError>,
}

type Collector = FilteredObserver<CollectorObserver, fn(&Event<'_>) -> bool>;

fn transitions_only(e: &Event<'_>) -> bool {
    matches!(e, Event::Transition { .. })
}

pub fn run(args: &ReplayArgs) -> Result<ExitCode> {
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<PhysicsConfig>(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => PhysicsConfig::for_model(args.model.model()),
    };
    let model = config.model;
    // The reference's default voltage is 100 (critical); ours is normal.
    let default_priority = if model == Model::Reference { Priority::Critical } else { Priority::Normal };
    let observer: Collector = FilteredObserver::new(CollectorObserver::new(), transitions_only);
    let engine = Engine::with_observer(config, EngineLimits::default(), observer).context("invalid physics config")?;

    let file = File::open(&args.trace).with_context(|| format!("opening {}", args.trace.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let progress = progress_bar(size, args.no_progress || args.json);
    let reader = BufReader::new(progress.wrap_read(file));
    let mut routes: BTreeMap<String, RouteReport> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut malformed = 0u64;
    let mut rows = 0u64;
    let mut on_row = |row: Result<Row, RowError>| match row {
        Ok(row) => {
            rows += 1;
            replay_row(&engine, &mut routes, row, default_priority, args.feed);
        }
        Err(e) => {
            malformed += 1;
            if errors.len() < ERRORS_SHOWN {
                errors.push(e);
            }
        }
    };
    match format(&args.trace, args.format)? {
        FormatArg::Csv => match trace::csv(reader) {
            Ok(iter) => iter.for_each(&mut on_row),
            Err(e) => on_row(Err(e)),
        },
        _ => trace::jsonl(reader).for_each(&mut on_row),
    }
    progress.finish_and_clear();

    for event in engine.observer().inner().drain() {
        if let OwnedEvent::Transition { route, at, from, to, resistance } = event {
            if let Some(r) = routes.get_mut(&route) {
                r.transitions.push(TransitionReport { at_ms: at.as_millis_f64(), from, to, resistance });
            }
        }
    }
    for r in routes.values_mut() {
        if let Ok(s) = engine.status(&r.route) {
            r.final_mode = Some(s.mode);
            r.final_resistance = s.resistance;
        }
    }
    let report = Report {
        trace: args.trace.display().to_string(),
        model,
        rows,
        malformed,
        routes: routes.into_values().collect(),
        errors,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if malformed > 0 {
        for e in &report.errors {
            eprintln!("error: {}: line {}: {}", report.trace, e.line, e.reason);
        }
        if malformed > report.errors.len() as u64 {
            eprintln!("error: ... and {} more malformed rows", malformed - report.errors.len() as u64);
        }
        eprintln!("error: {malformed} malformed row(s) skipped");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn replay_row(
    engine: &Engine<Collector>,
    routes: &mut BTreeMap<String, RouteReport>,
    row: Row,
    default_priority: Priority,
    feed: FeedArg,
) {
    let decision = engine.decide(&row.route, row.at, row.priority.unwrap_or(default_priority));
    let report = match routes.get_mut(&row.route) {
        Some(r) => r,
        None => routes
            .entry(row.route.clone())
            .or_insert_with(|| RouteReport { route: row.route.clone(), ..RouteReport::default() }),
    };
    *report.by_reason.entry(decision.reason.as_str()).or_default() += 1;
    if decision.is_admitted() {
        report.admitted += 1;
    } else {
        report.shed += 1;
    }
    if decision.is_admitted() || feed == FeedArg::All {
        let status = engine.report(&row.route, row.telemetry, row.at);
        if status.resistance > report.peak_resistance {
            report.peak_resistance = status.resistance;
            report.peak_at_ms = row.at.as_millis_f64();
        }
    }
}

fn format(path: &Path, format: FormatArg) -> Result<FormatArg> {
    if format != FormatArg::Auto {
        return Ok(format);
    }
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("csv") => return Ok(FormatArg::Csv),
        Some("jsonl" | "ndjson" | "json") => return Ok(FormatArg::Jsonl),
        _ => {}
    }
    let mut head = [0u8; 256];
    let n = File::open(path)?.read(&mut head)?;
    match head[..n].iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(FormatArg::Jsonl),
        Some(_) => Ok(FormatArg::Csv),
        None => bail!("{} is empty", path.display()),
    }
}

fn progress_bar(size: u64, hidden: bool) -> ProgressBar {
    // Small traces finish before a bar would be readable.
    if hidden || size < 4 << 20 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template("{spinner} replaying [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn print_report(r: &Report) {
    println!(
        "atrion replay {} — model {}, {} rows, {} route(s)",
        r.trace,
        if r.model == Model::Reference { "reference" } else { "default" },
        r.rows,
        r.routes.len()
    );
    for route in &r.routes {
        println!();
        println!("route {}", route.route);
        let reasons: Vec<String> = route.by_reason.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("  decisions    {} admitted, {} shed  ({})", route.admitted, route.shed, reasons.join(", "));
        println!("  peak R       {:.1} at {}", route.peak_resistance, seconds(route.peak_at_ms));
        if let Some(mode) = route.final_mode {
            println!("  final        {mode}, R {:.1}", route.final_resistance);
        }
        if route.transitions.is_empty() {
            println!("  transitions  none");
        } else {
            println!("  transitions");
            for t in &route.transitions {
                println!("    {:>10}  {} -> {}  (R {:.1})", seconds(t.at_ms), t.from, t.to, t.resistance);
            }
        }
    }
}

fn seconds(ms: f64) -> String {
    format!("{:.3} s", ms / 1e3)
}
