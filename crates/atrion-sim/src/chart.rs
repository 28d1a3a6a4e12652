//! SVG charts (plotters' SVG backend): one chart per scenario with a line per controller,
//! and the stability map's heat map.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::ScenarioReport;
use crate::stability::StabilityMap;

/// A chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw chart: {0}")]
pub struct ChartError(String);

fn err<E: std::fmt::Display>(e: E) -> ChartError {
    ChartError(e.to_string())
}

const COLORS: [RGBColor; 7] = [
    RGBColor(120, 120, 120), // none
    RGBColor(214, 39, 40),   // breaker
    RGBColor(255, 127, 14),  // aimd
    RGBColor(148, 103, 189), // gradient2
    RGBColor(140, 86, 75),   // envoy
    RGBColor(31, 119, 180),  // atrion-reference
    RGBColor(44, 160, 44),   // atrion-default
];

fn color(name: &str) -> RGBColor {
    crate::NAMES.iter().position(|n| *n == name).map_or(BLACK, |i| COLORS[i])
}

/// A line of a panel: legend, color, points.
type Line = (String, RGBColor, Vec<(f64, f64)>);

struct Panel<'a> {
    title: &'a str,
    y_label: &'a str,
    /// (legend, color, points)
    lines: Vec<Line>,
}

fn draw_panel(area: &DrawingArea<SVGBackend, Shift>, panel: &Panel, x_max: f64) -> Result<(), ChartError> {
    let y_max = panel
        .lines
        .iter()
        .flat_map(|(_, _, pts)| pts.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.08;
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(err)?;
    chart.configure_mesh().x_desc("seconds").y_desc(panel.y_label).light_line_style(WHITE).draw().map_err(err)?;
    for (name, c, pts) in &panel.lines {
        let c = *c;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// The chart of one scenario: offered and admitted load, latency, resistance or limit, and
/// state over time, one line per controller. Returns the SVG document.
pub fn scenario_svg(report: &ScenarioReport) -> Result<String, ChartError> {
    let s = &report.scenario;
    let telemetry = report.is_telemetry();
    let width = match &s.telemetry {
        Some(t) => t.tick_ms / 1e3,
        None => s.bin_ms / 1e3,
    };
    let x = |i: usize| (i as f64 + 1.0) * width;
    let series = |f: &dyn Fn(&crate::Bin) -> f64| -> Vec<Line> {
        report
            .results
            .iter()
            .map(|r| {
                let pts = r.bins.iter().enumerate().map(|(i, b)| (x(i), f(b))).collect();
                (r.controller.clone(), color(&r.controller), pts)
            })
            .collect()
    };
    let mut panels = Vec::new();
    if !telemetry {
        let mut load = series(&|b| f64::from(b.admitted) / width);
        if let Some(first) = report.results.first() {
            let offered = first.bins.iter().enumerate().map(|(i, b)| (x(i), f64::from(b.offered) / width)).collect();
            load.insert(0, ("offered".into(), BLACK, offered));
        }
        panels.push(Panel { title: "offered and admitted load", y_label: "requests/s", lines: load });
        panels.push(Panel {
            title: "mean latency of completed requests",
            y_label: "ms",
            lines: series(&|b| {
                let n = f64::from(b.ok + b.failed);
                if n > 0.0 { b.latency_sum / n } else { 0.0 }
            }),
        });
        panels.push(Panel { title: "goodput (within SLO)", y_label: "requests/s", lines: series(&|b| b.good / width) });
    }
    let levels: Vec<_> = series(&|b| b.level)
        .into_iter()
        .filter(|(n, _, _)| n != "none")
        .map(|(n, c, p)| {
            let unit = match n.as_str() {
                "breaker" => "failure %",
                "aimd" | "gradient2" | "envoy" => "limit",
                _ => "resistance",
            };
            (format!("{n} ({unit})"), c, p)
        })
        .collect();
    panels.push(Panel {
        title: "resistance (Atrion), limit (limiters), failure % (breaker)",
        y_label: "level",
        lines: levels,
    });
    let states: Vec<_> = series(&|b| f64::from(b.state))
        .into_iter()
        .enumerate()
        .map(|(k, (n, c, p))| (n, c, p.into_iter().map(|(x, y)| (x, y + 0.04 * k as f64)).collect()))
        .collect();
    panels.push(Panel { title: "state: 0 closed, 1 half-open, 2 open", y_label: "state", lines: states });

    let x_max = report.results.first().map_or(1.0, |r| x(r.bins.len().saturating_sub(1)));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 260 * panels.len() as u32 + 40)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let title = format!("{}: {}", s.name, s.description);
        let root = root.titled(&title, ("sans-serif", 18)).map_err(err)?;
        let areas = root.split_evenly((panels.len(), 1));
        for (area, panel) in areas.iter().zip(&panels) {
            draw_panel(area, panel, x_max)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The stability map as a heat map (green stable, red chaotic), with each cell's score.
pub fn stability_svg(map: &StabilityMap) -> Result<String, ChartError> {
    let (nx, ny) = (map.lambdas.len(), map.sigmas.len());
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 640)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let title = format!(
            "stability map ({:?} model): mean {:.1}%, {} stable, {} chaotic",
            map.config.model,
            map.mean * 100.0,
            map.stable,
            map.chaotic
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0..nx, 0..ny)
            .map_err(err)?;
        let lambdas = map.lambdas.clone();
        let sigmas = map.sigmas.clone();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("scar decay lambda (1/s)")
            .y_desc("trauma sigma")
            .x_labels(nx)
            .y_labels(ny)
            .x_label_formatter(&|i| lambdas.get(*i).map_or(String::new(), |v| format!("{v:.2}")))
            .y_label_formatter(&|j| sigmas.get(*j).map_or(String::new(), |v| format!("{v:.1}")))
            .draw()
            .map_err(err)?;
        let cells = (0..nx).flat_map(|i| (0..ny).map(move |j| (i, j)));
        chart
            .draw_series(cells.clone().map(|(i, j)| {
                let s = map.scores[i][j];
                let c = RGBColor((255.0 * (1.0 - s)) as u8, (200.0 * s) as u8, 60);
                Rectangle::new([(i, j), (i + 1, j + 1)], c.filled())
            }))
            .map_err(err)?;
        chart
            .draw_series(cells.map(|(i, j)| {
                Text::new(format!("{:.0}", map.scores[i][j] * 100.0), (i, j + 1), ("sans-serif", 12).into_font())
            }))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}
