//! A route's charts, drawn as SVG with plotters: time runs from the history's start
//! (negative seconds) to now (0).

use plotters::coord::Shift;
use plotters::prelude::*;

use atrion::Mode;

/// One sample, as the charts read it.
pub(super) struct Point {
    /// Seconds before the last sample (0 or less).
    pub ago_s: f64,
    pub mode: Mode,
    pub resistance: f64,
    pub scar: f64,
    pub break_point: f64,
    pub mean: f64,
    pub sd: f64,
}

const WIDTH: u32 = 880;
const HEIGHT: u32 = 300;
const TIMELINE: u32 = 56;

const RESISTANCE: RGBColor = RGBColor(31, 119, 180);
const SCAR: RGBColor = RGBColor(255, 127, 14);
const BREAK: RGBColor = RGBColor(198, 40, 40);

/// A mode's colour, as the page shows it.
fn mode_color(mode: Mode) -> RGBColor {
    match mode {
        Mode::Bootstrap => RGBColor(158, 158, 158),
        Mode::Operational => RGBColor(46, 125, 50),
        Mode::Open => RGBColor(198, 40, 40),
        Mode::HalfOpen => RGBColor(230, 160, 20),
    }
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn y_max<'a>(values: impl Iterator<Item = &'a f64>) -> f64 {
    values.copied().filter(|v| v.is_finite()).fold(0.0, f64::max).max(1.0) * 1.1
}

type Line<'a> = (&'a str, RGBColor, bool, Vec<(f64, f64)>);

fn lines(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    window: f64,
    y_desc: &str,
    lines: &[Line<'_>],
) -> Result<(), String> {
    let top = y_max(lines.iter().flat_map(|(_, _, _, pts)| pts.iter().map(|p| &p.1)));
    let mut chart = ChartBuilder::on(area)
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(-window..0.0, 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds ago")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{:.0}", (-x).max(0.0) + 0.0))
        .max_light_lines(0)
        .draw()
        .map_err(err)?;
    for (name, c, dashed, pts) in lines {
        let c = *c;
        let style = c.stroke_width(2);
        let drawn = if *dashed {
            chart.draw_series(DashedLineSeries::new(pts.iter().copied(), 8, 5, style))
        } else {
            chart.draw_series(LineSeries::new(pts.iter().copied(), style))
        }
        .map_err(err)?;
        drawn.label(*name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)
}

/// The mode timeline: a band coloured by mode, one slice per sample.
fn timeline(area: &DrawingArea<SVGBackend<'_>, Shift>, window: f64, points: &[Point]) -> Result<(), String> {
    let mut chart = ChartBuilder::on(area)
        .margin_left(8)
        .margin_right(8)
        .y_label_area_size(60)
        .x_label_area_size(0)
        .caption("mode: bootstrap (grey), operational (green), open (red), half-open (amber)", ("sans-serif", 12))
        .build_cartesian_2d(-window..0.0, 0.0..1.0)
        .map_err(err)?;
    chart.configure_mesh().disable_mesh().disable_x_axis().y_labels(0).draw().map_err(err)?;
    chart
        .draw_series(points.windows(2).map(|w| {
            // The slice up to a sample shows the mode it found: the newest mode is drawn.
            Rectangle::new([(w[0].ago_s.max(-window), 0.0), (w[1].ago_s, 1.0)], mode_color(w[1].mode).filled())
        }))
        .map_err(err)?;
    Ok(())
}

/// An SVG document of `size`, on white, drawn by `draw`.
fn svg(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn series(points: &[Point], f: fn(&Point) -> f64) -> Vec<(f64, f64)> {
    points.iter().map(|p| (p.ago_s, f(p))).collect()
}

/// Resistance, scar and the break point over time, with the mode timeline under them.
pub(super) fn resistance(points: &[Point], window: f64) -> Result<String, String> {
    svg((WIDTH, HEIGHT + TIMELINE), |root| {
        let (top, bottom) = root.split_vertically(HEIGHT);
        lines(
            &top,
            window,
            "ohms",
            &[
                ("resistance", RESISTANCE, false, series(points, |p| p.resistance)),
                ("scar", SCAR, false, series(points, |p| p.scar)),
                ("break point", BREAK, true, series(points, |p| p.break_point)),
            ],
        )?;
        timeline(&bottom, window, points)
    })
}

/// The tuner's mean, and the mean plus and minus one deviation, over time.
pub(super) fn tuner(points: &[Point], window: f64) -> Result<String, String> {
    svg((WIDTH, HEIGHT), |root| {
        lines(
            root,
            window,
            "ohms",
            &[
                ("tuner mean", RESISTANCE, false, series(points, |p| p.mean)),
                ("mean + deviation", SCAR, true, series(points, |p| p.mean + p.sd)),
                ("mean - deviation", SCAR, true, series(points, |p| (p.mean - p.sd).max(0.0))),
                ("break point", BREAK, true, series(points, |p| p.break_point)),
            ],
        )
    })
}
