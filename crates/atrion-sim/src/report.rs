//! The outcome of a scenario: a summary per controller, the criteria judged, and tables.

use serde::Serialize;

use crate::controller::ControllerKind;
use crate::metrics::{Bin, Summary};
use crate::scenario::{Expect, Metric, Scenario};

/// One controller's run.
#[derive(Debug, Clone, Serialize)]
pub struct ControllerResult {
    /// The controller.
    pub controller: ControllerKind,
    /// Its metrics.
    pub summary: Summary,
    /// Its series, one bin per `bin_ms` (or per tick).
    #[serde(skip)]
    pub bins: Vec<Bin>,
}

/// One pass criterion, judged.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The criterion.
    pub expect: Expect,
    /// The value found (`None`: the metric has no value, or the controller did not run).
    pub value: Option<f64>,
    /// The bound it was held to, when it compares with another controller.
    pub bound: Option<f64>,
    /// Whether it holds.
    pub passed: bool,
    /// One line saying what was compared.
    pub detail: String,
}

/// Everything a scenario run produced.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// The scenario as run (shortened when quick).
    pub scenario: Scenario,
    /// The seed used.
    pub seed: u64,
    /// One result per controller that applies, in table order.
    pub results: Vec<ControllerResult>,
    /// The criteria.
    pub checks: Vec<Check>,
}

impl ScenarioReport {
    /// The result of controller `kind`.
    pub fn result(&self, kind: ControllerKind) -> Option<&ControllerResult> {
        self.results.iter().find(|r| r.controller == kind)
    }

    /// True when every criterion holds.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// Whether this is a telemetry (tick) experiment, where only transitions mean much.
    pub fn is_telemetry(&self) -> bool {
        self.scenario.telemetry.is_some()
    }
}

pub(crate) fn judge(scenario: &Scenario, results: &[ControllerResult]) -> Vec<Check> {
    scenario
        .expects
        .iter()
        .map(|e| {
            let value = |kind: ControllerKind, m: Metric| -> Option<Option<f64>> {
                results.iter().find(|r| r.controller == kind).map(|r| match &e.route {
                    Some(route) => r.summary.route_get(route, m),
                    None => r.summary.get(m),
                })
            };
            let Some(v) = value(e.controller, e.metric) else {
                return Check {
                    expect: e.clone(),
                    value: None,
                    bound: None,
                    passed: false,
                    detail: format!("{} did not run", e.controller),
                };
            };
            // A metric without a value (never detected, never recovered) is infinitely large.
            let x = v.unwrap_or(f64::INFINITY);
            let mut passed = true;
            let mut parts = Vec::new();
            let mut bound = None;
            if let Some(min) = e.min {
                passed &= x >= min;
                parts.push(format!(">= {min}"));
            }
            if let Some(max) = e.max {
                passed &= x <= max;
                parts.push(format!("<= {max}"));
            }
            if let Some(eq) = e.equals {
                passed &= x == eq;
                parts.push(format!("== {eq}"));
            }
            for (other, at_most) in [(&e.at_most, true), (&e.at_least, false)] {
                let Some(other) = other else { continue };
                let y = value(*other, e.metric).map(|o| o.unwrap_or(f64::INFINITY) * e.factor);
                match y {
                    None => {
                        passed = false;
                        parts.push(format!("{other} did not run"));
                    }
                    Some(y) => {
                        bound = Some(y);
                        passed &= if at_most { x <= y } else { x >= y };
                        let op = if at_most { "<=" } else { ">=" };
                        parts.push(format!("{op} {} x {other} ({})", e.factor, fmt(Some(y / e.factor))));
                    }
                }
            }
            Check {
                expect: e.clone(),
                value: v,
                bound,
                passed,
                detail: format!(
                    "{} {}{} = {} {}",
                    e.controller,
                    e.metric.as_str(),
                    e.route.as_ref().map(|r| format!("[{r}]")).unwrap_or_default(),
                    fmt(v),
                    parts.join(", ")
                ),
            }
        })
        .collect()
}

/// A number for tables: `never` when it has no value, 3 significant places.
pub(crate) fn fmt(v: Option<f64>) -> String {
    match v {
        None => "never".into(),
        Some(x) if x.is_infinite() => "never".into(),
        Some(x) if x == x.trunc() && x.abs() < 1e6 => format!("{x:.0}"),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn rows(report: &ScenarioReport) -> (Vec<&'static str>, Vec<Vec<String>>) {
    if report.is_telemetry() {
        let header = vec!["controller", "transitions", "open ticks", "final level"];
        let rows = report
            .results
            .iter()
            .map(|r| {
                let open = r.bins.iter().filter(|b| b.state == 2).count();
                let last = r.bins.last().map_or(0.0, |b| b.level);
                vec![
                    r.controller.to_string(),
                    r.summary.transitions.to_string(),
                    open.to_string(),
                    format!("{last:.1}"),
                ]
            })
            .collect();
        return (header, rows);
    }
    let header = vec![
        "controller",
        "goodput/s",
        "p50 ms",
        "p99 ms",
        "healthy shed",
        "shed",
        "errors",
        "detect s",
        "recover s",
        "transitions",
    ];
    let rows = report
        .results
        .iter()
        .map(|r| {
            let s = &r.summary;
            vec![
                r.controller.to_string(),
                fmt(Some(s.goodput)),
                fmt(Some(s.p50_ms)),
                fmt(Some(s.p99_ms)),
                pct(s.healthy_shed),
                pct(s.shed),
                pct(s.error_rate),
                fmt(s.detect_s),
                fmt(s.recover_s),
                s.transitions.to_string(),
            ]
        })
        .collect();
    (header, rows)
}

/// The comparison as an aligned text table, followed by the criteria.
pub fn text_table(report: &ScenarioReport) -> String {
    let (header, rows) = rows(report);
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| if i == 0 { format!("{c:<w$}", w = widths[i]) } else { format!("{c:>w$}", w = widths[i]) })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = String::new();
    out.push_str(&line(header.iter().map(|h| h.to_string()).collect()));
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    for c in &report.checks {
        let mark = if c.passed { "pass" } else { "FAIL" };
        out.push_str(&format!("  [{mark}] {}", c.detail));
        if !c.expect.why.is_empty() {
            out.push_str(&format!("  ({})", c.expect.why));
        }
        out.push('\n');
    }
    out
}

/// For scenarios with several routes, what reached each route under each controller, as a
/// Markdown table (`offered / ok / failed`); `None` for a single route.
pub fn markdown_routes(report: &ScenarioReport) -> Option<String> {
    routes_table(report, |c| format!("{} / {} / {}", c.offered, c.ok, c.failed))
}

/// For scenarios with several routes, each route's own healthy shed, detect and recover
/// under each controller, as a Markdown table (`healthy shed / detect s / recover s`);
/// `None` for a single route.
pub fn markdown_route_times(report: &ScenarioReport) -> Option<String> {
    routes_table(report, |c| format!("{} / {} / {}", pct(c.healthy_shed), fmt(c.detect_s), fmt(c.recover_s)))
}

fn routes_table(report: &ScenarioReport, cell: impl Fn(&crate::sim::RouteCount) -> String) -> Option<String> {
    let names: Vec<&str> = report.scenario.routes.iter().map(|r| r.name.as_str()).collect();
    if names.len() < 2 {
        return None;
    }
    let mut out = format!("| controller | {} |\n|---|{}\n", names.join(" | "), "---:|".repeat(names.len()));
    for r in &report.results {
        let cells: Vec<String> = r.summary.routes.iter().map(&cell).collect();
        out.push_str(&format!("| {} | {} |\n", r.controller, cells.join(" | ")));
    }
    Some(out)
}

/// The comparison as a Markdown table, followed by the criteria as a list.
pub fn markdown_table(report: &ScenarioReport) -> String {
    let (header, rows) = rows(report);
    let mut out = String::new();
    out.push_str(&format!("| {} |\n", header.join(" | ")));
    out.push_str(&format!(
        "|{}\n",
        header.iter().enumerate().map(|(i, _)| if i == 0 { "---|" } else { "---:|" }).collect::<String>()
    ));
    for r in rows {
        out.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    if !report.checks.is_empty() {
        out.push('\n');
        for c in &report.checks {
            let mark = if c.passed { "pass" } else { "**FAIL**" };
            let why = if c.expect.why.is_empty() { String::new() } else { format!(" — {}", c.expect.why) };
            out.push_str(&format!("- {mark}: `{}`{why}\n", c.detail));
        }
    }
    out
}
