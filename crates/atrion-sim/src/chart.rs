//! SVG charts (plotters' SVG backend): one chart per scenario with a line per controller,
//! and the stability map's heat map.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::controller::ControllerKind;
use crate::report::ScenarioReport;
use crate::stability::StabilityMap;

/// A chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw chart: {0}")]
pub struct ChartError(String);

fn err<E: std::fmt::Display>(e: E) -> ChartError {
    ChartError(e.to_string())
}

/// Each controller's line color; in table order, also the palette of [`lines_svg`].
const fn color(kind: ControllerKind) -> RGBColor {
    match kind {
        ControllerKind::None => RGBColor(120, 120, 120),
        ControllerKind::Breaker => RGBColor(214, 39, 40),
        ControllerKind::Aimd => RGBColor(255, 127, 14),
        ControllerKind::Gradient2 => RGBColor(148, 103, 189),
        ControllerKind::Envoy => RGBColor(140, 86, 75),
        ControllerKind::AtrionReference => RGBColor(31, 119, 180),
        ControllerKind::AtrionDefault => RGBColor(44, 160, 44),
        ControllerKind::AtrionAimd => RGBColor(23, 190, 207),
    }
}

/// A line of a panel: legend, color, points.
type Line = (String, RGBColor, Vec<(f64, f64)>);

struct Panel<'a> {
    title: &'a str,
    y_label: &'a str,
    /// (legend, color, points)
    lines: Vec<Line>,
}

fn draw_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    panel: &Panel,
    x_max: f64,
    x_desc: &str,
) -> Result<(), ChartError> {
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
    chart.configure_mesh().x_desc(x_desc).y_desc(panel.y_label).max_light_lines(0).draw().map_err(err)?;
    for (name, c, pts) in &panel.lines {
        let c = *c;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.mix(0.85).stroke_width(2)))
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

/// At most this many points per line: 100 ms bins are merged for the chart.
const MAX_POINTS: usize = 300;

/// Merges `k` bins into one: counts add up, the level is the last, the state the worst.
fn merge(bins: &[crate::Bin], k: usize) -> Vec<crate::Bin> {
    bins.chunks(k)
        .map(|c| {
            let mut m = crate::Bin::default();
            for b in c {
                m.offered += b.offered;
                m.admitted += b.admitted;
                m.shed += b.shed;
                m.ok += b.ok;
                m.failed += b.failed;
                m.good += b.good;
                m.latency_sum += b.latency_sum;
                m.level = b.level;
                m.state = m.state.max(b.state);
            }
            m
        })
        .collect()
}

/// The chart of one scenario: offered and admitted load, latency, goodput, Atrion's
/// resistance, the limiters' limits, and state over time, one line per controller. Returns
/// the SVG document.
pub fn scenario_svg(report: &ScenarioReport) -> Result<String, ChartError> {
    let s = &report.scenario;
    let telemetry = report.is_telemetry();
    let n = report.results.first().map_or(0, |r| r.bins.len());
    let k = n.div_ceil(MAX_POINTS).max(1);
    let width = match &s.telemetry {
        Some(t) => t.tick_ms / 1e3,
        None => s.bin_ms / 1e3,
    } * k as f64;
    let merged: Vec<(ControllerKind, Vec<crate::Bin>)> =
        report.results.iter().map(|r| (r.controller, merge(&r.bins, k))).collect();
    let x = |i: usize| (i as f64 + 1.0) * width;
    let series = |keep: &dyn Fn(ControllerKind) -> bool, f: &dyn Fn(&crate::Bin) -> f64| -> Vec<Line> {
        merged
            .iter()
            .filter(|(kind, _)| keep(*kind))
            .map(|(kind, bins)| {
                let pts = bins.iter().enumerate().map(|(i, b)| (x(i), f(b))).collect();
                (kind.name().to_owned(), color(*kind), pts)
            })
            .collect()
    };
    let all = |_: ControllerKind| true;
    let atrion = |k: ControllerKind| k.is_atrion();
    let limiter = |k: ControllerKind| k.is_limiter();
    let mut panels = Vec::new();
    if !telemetry {
        let mut load = series(&all, &|b| f64::from(b.admitted) / width);
        if let Some((_, first)) = merged.first() {
            let offered = first.iter().enumerate().map(|(i, b)| (x(i), f64::from(b.offered) / width)).collect();
            load.push(("offered".into(), BLACK, offered));
        }
        panels.push(Panel { title: "offered (black) and admitted load", y_label: "requests/s", lines: load });
        panels.push(Panel {
            title: "mean latency of completed requests",
            y_label: "ms",
            lines: series(&all, &|b| {
                let n = f64::from(b.ok + b.failed);
                if n > 0.0 { b.latency_sum / n } else { 0.0 }
            }),
        });
        panels.push(Panel {
            title: "goodput (successes within the SLO)",
            y_label: "requests/s",
            lines: series(&all, &|b| b.good / width),
        });
    }
    let route = s.routes.get(s.chart_route()).map_or("the route", |r| r.name.as_str());
    let resistance_title = format!("Atrion: resistance of {route}");
    let limit_title = format!("limiters: concurrency limit of {route}");
    let state_title = format!("state of {route}: 0 closed, 1 half-open, 2 open");
    let resistance = series(&atrion, &|b| b.level);
    if !resistance.is_empty() {
        panels.push(Panel { title: &resistance_title, y_label: "ohms", lines: resistance });
    }
    let limits = series(&limiter, &|b| b.level);
    if !limits.is_empty() {
        panels.push(Panel { title: &limit_title, y_label: "requests", lines: limits });
    }
    let states: Vec<_> = series(&|k| k != ControllerKind::None && !limiter(k), &|b| f64::from(b.state))
        .into_iter()
        .enumerate()
        .map(|(k, (n, c, p))| (n, c, p.into_iter().map(|(x, y)| (x, y + 0.04 * k as f64)).collect()))
        .collect();
    panels.push(Panel { title: &state_title, y_label: "state", lines: states });

    let x_max = x(n.div_ceil(k).saturating_sub(1)).max(width);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 240 * panels.len() as u32 + 40)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let title = format!("{}: {}", s.name, s.description);
        let root = root.titled(&title, ("sans-serif", 18)).map_err(err)?;
        let areas = root.split_evenly((panels.len(), 1));
        for (area, panel) in areas.iter().zip(&panels) {
            draw_panel(area, panel, x_max, "seconds")?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A named line of measured points, for [`lines_svg`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend.
    pub name: String,
    /// `(x, y)` points, in order of `x`.
    pub points: Vec<(f64, f64)>,
}

/// A panel of [`lines_svg`]: its title, its y axis, its lines.
#[derive(Debug, Clone, PartialEq)]
pub struct LinePanel {
    /// The panel's title.
    pub title: String,
    /// The y axis's label.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
}

/// Measurements beside the wind tunnel's, drawn the same way: panels of lines over one x
/// axis (a fleet's cost against its number of nodes). Returns the SVG document.
pub fn lines_svg(title: &str, x_label: &str, panels: &[LinePanel]) -> Result<String, ChartError> {
    let x_max = panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|pt| pt.0)))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.04;
    let drawn: Vec<Panel> = panels
        .iter()
        .map(|p| Panel {
            title: &p.title,
            y_label: &p.y_label,
            lines: p
                .series
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    (s.name.clone(), color(ControllerKind::ALL[(i + 1) % ControllerKind::ALL.len()]), s.points.clone())
                })
                .collect(),
        })
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 300 * drawn.len().max(1) as u32 + 40)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(title, ("sans-serif", 18)).map_err(err)?;
        let areas = root.split_evenly((drawn.len().max(1), 1));
        for (area, panel) in areas.iter().zip(&drawn) {
            draw_panel(area, panel, x_max, x_label)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The axis label at `x` in half-cell units: a cell's value at its centre (odd `x`).
fn label(values: &[f64], x: usize, places: usize) -> String {
    if x % 2 == 0 {
        return String::new();
    }
    values.get(x / 2).map_or(String::new(), |v| format!("{v:.places$}"))
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
            .build_cartesian_2d(0..2 * nx, 0..2 * ny)
            .map_err(err)?;
        let lambdas = map.lambdas.clone();
        let sigmas = map.sigmas.clone();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("scar decay lambda (1/s)")
            .y_desc("trauma sigma")
            .x_labels(2 * nx + 1)
            .y_labels(2 * ny + 1)
            .x_label_formatter(&|x| label(&lambdas, *x, 2))
            .y_label_formatter(&|y| label(&sigmas, *y, 1))
            .draw()
            .map_err(err)?;
        let cells = (0..nx).flat_map(|i| (0..ny).map(move |j| (i, j)));
        chart
            .draw_series(cells.clone().map(|(i, j)| {
                let s = map.scores[i][j];
                let c = RGBColor((255.0 * (1.0 - s)) as u8, (200.0 * s) as u8, 60);
                Rectangle::new([(2 * i, 2 * j), (2 * i + 2, 2 * j + 2)], c.filled())
            }))
            .map_err(err)?;
        chart
            .draw_series(cells.map(|(i, j)| {
                Text::new(
                    format!("{:.0}", map.scores[i][j] * 100.0),
                    (2 * i + 1, 2 * j + 1),
                    ("sans-serif", 12).into_font(),
                )
            }))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}
