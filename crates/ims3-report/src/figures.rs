//! The charts of a run as SVG, drawn with plotters (its SVG backend needs no font files: text
//! stays `<text>` elements). Every chart has a title, axis labels and a legend; the same data
//! gives the same bytes.
//!
//! - [`curves_with_bands`]: lines with a mean +- std band (test accuracy vs epoch per method);
//! - [`small_multiples`]: one panel per named series (fine-tuning loss terms vs step);
//! - [`embedding_panels`]: 2-D embeddings of real and distilled features, one panel per method,
//!   coloured by class with the class names in the legend;
//! - [`line_chart`]: one or more plain lines (the S3 objective per sweep).

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::ReportError;

/// matplotlib's tab10 colours.
pub const TAB10: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

fn colour(i: usize) -> RGBColor {
    let [r, g, b] = TAB10[i % TAB10.len()];
    RGBColor(r, g, b)
}

fn err<E: std::fmt::Debug>(e: E) -> ReportError {
    ReportError::Draw(format!("{e:?}"))
}

/// `[lo, hi]` of `values` widened by 5% on each side (a flat range by 1).
fn padded(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { 0.05 * (hi - lo) } else { 1.0 };
    (lo - pad, hi + pad)
}

/// Tick labels for counts (epochs, steps, sweeps): whole numbers, and nothing between them.
fn integer_ticks(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-9 { format!("{x:.0}") } else { String::new() }
}

/// One line with a band: `(x, mean, std)` per point.
#[derive(Clone, Debug)]
pub struct BandSeries {
    pub label: String,
    pub points: Vec<(f64, f64, f64)>,
}

/// Lines of the means with shaded mean +- std bands, one colour per series.
pub fn curves_with_bands(title: &str, x_label: &str, y_label: &str, series: &[BandSeries], size: (u32, u32)) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let xs = padded(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
        let ys = padded(series.iter().flat_map(|s| s.points.iter().flat_map(|p| [p.1 - p.2, p.1 + p.2])));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(xs.0..xs.1, ys.0..ys.1)
            .map_err(err)?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).x_label_formatter(&integer_ticks).draw().map_err(err)?;
        for (i, s) in series.iter().enumerate() {
            let c = colour(i);
            let mut band: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, p.1 + p.2)).collect();
            band.extend(s.points.iter().rev().map(|p| (p.0, p.1 - p.2)));
            chart.draw_series(std::iter::once(Polygon::new(band, c.mix(0.15)))).map_err(err)?;
            chart
                .draw_series(LineSeries::new(s.points.iter().map(|p| (p.0, p.1)), c.stroke_width(2)))
                .map_err(err)?
                .label(s.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).position(SeriesLabelPosition::LowerRight).draw().map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Plain lines `(x, y)`, one colour per series.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[(String, Vec<(f64, f64)>)], size: (u32, u32)) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw_lines(&root, title, x_label, y_label, series, 18, true)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Lines on `area`; x values are counts (steps, sweeps, epochs) and labelled as integers. One
/// series alone is named by the title, so `legend` may leave its legend out.
fn draw_lines(
    area: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    font: u32,
    legend: bool,
) -> Result<(), ReportError> {
    let xs = padded(series.iter().flat_map(|s| s.1.iter().map(|p| p.0)));
    let ys = padded(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)));
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", font))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(xs.0..xs.1, ys.0..ys.1)
        .map_err(err)?;
    chart.configure_mesh().x_desc(x_label).y_desc(y_label).x_label_formatter(&integer_ticks).draw().map_err(err)?;
    for (i, (label, points)) in series.iter().enumerate() {
        let c = colour(i);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)).point_size(2))
            .map_err(err)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    if legend {
        chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw().map_err(err)?;
    }
    Ok(())
}

/// One panel per `(name, points)`, in a grid of `columns` panels, each with its own scale and
/// the name as its title and y label.
pub fn small_multiples(title: &str, x_label: &str, panels: &[(String, Vec<(f64, f64)>)], columns: usize, panel: (u32, u32)) -> Result<String, ReportError> {
    let columns = columns.max(1);
    let rows = panels.len().div_ceil(columns).max(1);
    let size = (panel.0 * columns as u32, panel.1 * rows as u32 + 30);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(title, ("sans-serif", 20)).map_err(err)?;
        for (area, (name, points)) in root.split_evenly((rows, columns)).iter().zip(panels) {
            draw_lines(area, name, x_label, name, &[(name.clone(), points.clone())], 15, false)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// One point of an embedding.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedPoint {
    pub xy: [f64; 2],
    pub class: usize,
}

/// One method's panel: the real points (small, pale) and its distilled points.
#[derive(Clone, Debug, Default)]
pub struct EmbeddingPanel {
    pub title: String,
    pub real: Vec<EmbeddedPoint>,
    pub distilled: Vec<EmbeddedPoint>,
}

/// Panels side by side on one shared scale, real points as small pale dots and distilled ones
/// as outlined squares in their class's colour, and a legend column at the right: one entry per
/// class name, and the two marker kinds.
pub fn embedding_panels(title: &str, axis: &str, panels: &[EmbeddingPanel], classes: &[String], panel_size: u32) -> Result<String, ReportError> {
    let legend_w = 40 + 8 * classes.iter().map(|c| c.chars().count()).max().unwrap_or(8).max(20) as u32;
    let n = panels.len().max(1) as u32;
    let size = (panel_size * n + legend_w, panel_size + 30);
    let all = || panels.iter().flat_map(|p| p.real.iter().chain(&p.distilled));
    let xs = padded(all().map(|p| p.xy[0]));
    let ys = padded(all().map(|p| p.xy[1]));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(title, ("sans-serif", 20)).map_err(err)?;
        let (plots, legend) = root.split_horizontally(panel_size * n);
        for (area, p) in plots.split_evenly((1, n as usize)).iter().zip(panels) {
            let mut chart = ChartBuilder::on(area)
                .caption(p.title.as_str(), ("sans-serif", 16))
                .margin(8)
                .x_label_area_size(32)
                .y_label_area_size(44)
                .build_cartesian_2d(xs.0..xs.1, ys.0..ys.1)
                .map_err(err)?;
            chart.configure_mesh().x_desc(format!("{axis} 1")).y_desc(format!("{axis} 2")).x_labels(4).y_labels(4).draw().map_err(err)?;
            chart.draw_series(p.real.iter().map(|q| Circle::new((q.xy[0], q.xy[1]), 2, colour(q.class).mix(0.3).filled()))).map_err(err)?;
            chart
                .draw_series(p.distilled.iter().map(|q| {
                    let col = colour(q.class);
                    EmptyElement::at((q.xy[0], q.xy[1])) + Rectangle::new([(-4, -4), (4, 4)], col.filled()) + Rectangle::new([(-4, -4), (4, 4)], BLACK.stroke_width(1))
                }))
                .map_err(err)?;
        }
        // The legend column: classes by colour, then the two marker kinds.
        let font = ("sans-serif", 12).into_font();
        let row = |i: usize| 40 + 20 * i as i32;
        for (c, name) in classes.iter().enumerate() {
            let col = colour(c);
            legend.draw(&Rectangle::new([(10, row(c) - 6), (22, row(c) + 6)], col.filled())).map_err(err)?;
            legend.draw(&Text::new(name.as_str(), (30, row(c) - 6), font.clone())).map_err(err)?;
        }
        let k = classes.len() + 1;
        legend.draw(&Circle::new((16, row(k)), 2, BLACK.mix(0.4).filled())).map_err(err)?;
        legend.draw(&Text::new("real (small dots)", (30, row(k) - 6), font.clone())).map_err(err)?;
        legend.draw(&Rectangle::new([(10, row(k + 1) - 6), (22, row(k + 1) + 6)], BLACK.stroke_width(1))).map_err(err)?;
        legend.draw(&Text::new("distilled (squares)", (30, row(k + 1) - 6), font)).map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}
