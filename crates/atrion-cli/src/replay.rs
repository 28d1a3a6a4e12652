//! `atrion replay`: a trace through the engine, summarised per route.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, IsTerminal};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use atrion::{
    CollectorObserver, Engine, EngineLimits, Event, FilteredObserver, Mode, Model, OwnedEvent, PhysicsConfig, Priority,
    Timestamp,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::{FeedArg, FormatArg, ReplayArgs};
use atrion_trace::{Format, Row, RowError, TraceReader};

/// The most routes `--max-routes` may ask for.
const MAX_ROUTES: usize = 10_000_000;

/// Route names of the overflow kept as examples.
const OVERFLOW_EXAMPLES: usize = 5;

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

/// Rows whose route the engine did not track: an id that is not valid (empty, over 1,024
/// bytes), or a route past `--max-routes`. Each decided on no state (admitted as
/// `untracked`, its telemetry dropped), and reported here instead of under their own names.
#[derive(Debug, Default, Serialize)]
struct OverflowReport {
    rows: u64,
    admitted: u64,
    shed: u64,
    /// A few of the names, cut to 80 bytes.
    examples: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    trace: String,
    model: Model,
    rows: u64,
    malformed: u64,
    max_routes: usize,
    routes: Vec<RouteReport>,
    overflow: Option<OverflowReport>,
    errors: Vec<RowError>,
}

type Collector = FilteredObserver<CollectorObserver, fn(&Event<'_>) -> bool>;

fn transitions_only(e: &Event<'_>) -> bool {
    matches!(e, Event::Transition { .. })
}

pub fn run(args: &ReplayArgs) -> Result<ExitCode> {
    if args.max_routes == 0 || args.max_routes > MAX_ROUTES {
        bail!("--max-routes {}: expected 1 to {MAX_ROUTES}", args.max_routes);
    }
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
    let mut limits = EngineLimits::default();
    limits.max_routes = args.max_routes;
    let engine = Engine::with_observer(config, limits, observer)?;

    let (input, size) = open(&args.trace)?;
    let progress = progress_bar(size, args.no_progress || args.json);
    let reader = BufReader::new(progress.wrap_read(input));
    let name = if args.trace == Path::new("-") { "stdin".to_owned() } else { args.trace.display().to_string() };
    let mut trace = TraceReader::new(reader, format(&args.trace, args.format), args.time_unit.unit())
        .with_context(|| format!("{name} is not a trace"))?;
    let mut replay = Replay {
        engine: &engine,
        routes: BTreeMap::new(),
        overflow: OverflowReport::default(),
        max_routes: args.max_routes,
        default_priority,
        feed: args.feed,
    };
    let mut errors = Vec::new();
    let (mut rows, mut malformed) = (0u64, 0u64);
    for row in trace.by_ref() {
        match row {
            Ok(row) => {
                rows += 1;
                replay.row(row);
            }
            Err(e) => {
                malformed += 1;
                if errors.len() < ERRORS_SHOWN {
                    errors.push(e);
                }
            }
        }
    }
    progress.finish_and_clear();
    trace.finish().with_context(|| format!("reading {name} stopped after {rows} row(s)"))?;
    if rows == 0 && malformed == 0 {
        bail!("{name} has no rows");
    }

    let Replay { mut routes, overflow, .. } = replay;
    for event in engine.observer().inner().drain() {
        if let OwnedEvent::Transition { route, at, from, to, resistance } = event {
            if let Some(r) = routes.get_mut(&route) {
                r.transitions.push(TransitionReport { at_ms: millis(at), from, to, resistance });
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
        trace: name,
        model,
        rows,
        malformed,
        max_routes: args.max_routes,
        routes: routes.into_values().collect(),
        overflow: (overflow.rows > 0).then_some(overflow),
        errors,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if let Some(o) = &report.overflow {
        eprintln!(
            "warning: {} row(s) went to the shared overflow route (route ids that are empty or over 1,024 bytes, \
             or past --max-routes {}): decided together, reported as one",
            o.rows, report.max_routes
        );
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

/// The input and its size (0 when unknown): a file, or standard input for `-`.
fn open(path: &Path) -> Result<(Box<dyn std::io::Read>, u64)> {
    if path == Path::new("-") {
        return Ok((Box::new(std::io::stdin().lock()), 0));
    }
    let meta = std::fs::metadata(path).with_context(|| format!("opening {}", path.display()))?;
    if meta.is_dir() {
        bail!("{} is a directory, not a trace", path.display());
    }
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok((Box::new(file), if meta.is_file() { meta.len() } else { 0 }))
}

/// Milliseconds of a timestamp, exact for whole milliseconds at any epoch (an `f64` of the
/// nanoseconds would not be past 2^53 ns).
fn millis(t: Timestamp) -> f64 {
    let ns = t.as_nanos();
    (ns / 1_000_000) as f64 + (ns % 1_000_000) as f64 / 1e6
}

struct Replay<'e> {
    engine: &'e Engine<Collector>,
    routes: BTreeMap<String, RouteReport>,
    overflow: OverflowReport,
    max_routes: usize,
    default_priority: Priority,
    feed: FeedArg,
}

impl Replay<'_> {
    fn row(&mut self, row: Row) {
        let engine = self.engine;
        let decision = engine.decide(&row.route, row.at, row.priority.unwrap_or(self.default_priority));
        let feed = decision.is_admitted() || self.feed == FeedArg::All;
        if !self.routes.contains_key(&row.route) {
            // A route the engine did not take in was decided on no state.
            if self.routes.len() >= self.max_routes || engine.status(&row.route).is_err() {
                let o = &mut self.overflow;
                o.rows += 1;
                if decision.is_admitted() {
                    o.admitted += 1;
                } else {
                    o.shed += 1;
                }
                if o.examples.len() < OVERFLOW_EXAMPLES {
                    let cut = (0..=80.min(row.route.len())).rev().find(|&i| row.route.is_char_boundary(i)).unwrap_or(0);
                    o.examples.push(row.route[..cut].to_owned());
                }
                if feed {
                    // By its own name: the engine drops it, as it did not track the route.
                    engine.report(&row.route, row.telemetry, row.at);
                }
                return;
            }
            self.routes.insert(row.route.clone(), RouteReport { route: row.route.clone(), ..RouteReport::default() });
        }
        let Some(report) = self.routes.get_mut(&row.route) else { return };
        *report.by_reason.entry(decision.reason.as_str()).or_default() += 1;
        if decision.is_admitted() {
            report.admitted += 1;
        } else {
            report.shed += 1;
        }
        if feed {
            let status = engine.report(&row.route, row.telemetry, row.at);
            if status.resistance > report.peak_resistance {
                report.peak_resistance = status.resistance;
                report.peak_at_ms = millis(row.at);
            }
        }
    }
}

/// The format `--format` gives, or the extension's; `None`: detected from the content.
fn format(path: &Path, format: FormatArg) -> Option<Format> {
    match format {
        FormatArg::Csv => Some(Format::Csv),
        FormatArg::Jsonl => Some(Format::Jsonl),
        FormatArg::Auto => match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => Some(Format::Csv),
            Some("jsonl" | "ndjson" | "json") => Some(Format::Jsonl),
            _ => None,
        },
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
    if let Some(o) = &r.overflow {
        println!();
        println!(
            "untracked (decided on no state; ids that are empty or over 1,024 bytes, or past --max-routes {})",
            r.max_routes
        );
        println!("  decisions    {} admitted, {} shed of {} rows", o.admitted, o.shed, o.rows);
        println!("  e.g.         {}", o.examples.join(" | "));
    }
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
