//! SVG plots (plotters): p99 versus offered rate, and percentile spectra.

use crate::scenario::ServerKind;
use anyhow::{Result, anyhow};
use plotters::prelude::*;
use std::path::Path;

fn color(server: ServerKind) -> RGBColor {
    match server {
        ServerKind::Coreline => RGBColor(214, 39, 40),
        ServerKind::Axum => RGBColor(31, 119, 180),
        ServerKind::Actix => RGBColor(44, 160, 44),
        ServerKind::Floor => RGBColor(90, 90, 90),
        ServerKind::FastapiOnnx => RGBColor(148, 103, 189),
    }
}

/// A named, coloured line.
type Line = (String, RGBColor, Vec<(f64, f64)>);

fn by_server(series: &[(ServerKind, Vec<(f64, f64)>)]) -> Vec<Line> {
    series
        .iter()
        .map(|(s, p)| (s.name().to_owned(), color(*s), p.clone()))
        .collect()
}

/// Lines of (x, y) on log-log axes.
fn log_log(
    path: &Path,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Line],
    percentile_axis: bool,
) -> Result<()> {
    let points = series
        .iter()
        .flat_map(|(_, _, p)| p.iter())
        .filter(|(x, y)| *x > 0.0 && *y > 0.0);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Err(anyhow!("nothing to plot for {caption}"));
    }
    if percentile_axis {
        x0 = 1.0;
    }
    let err = |e: DrawingAreaErrorKind<std::io::Error>| anyhow!("plotting {}: {e}", path.display());
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (x0 * 0.9..x1 * 1.1).log_scale(),
            (y0 * 0.8..y1 * 1.25).log_scale(),
        )
        .map_err(err)?;
    let percentile_label = |v: &f64| {
        let p = 100.0 * (1.0 - 1.0 / v);
        if p < 99.0 {
            format!("{p:.0}%")
        } else {
            format!(
                "{}%",
                format!("{p:.4}")
                    .trim_end_matches('0')
                    .trim_end_matches('.')
            )
        }
    };
    let plain_label = |v: &f64| format!("{v:.0}");
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_desc)
        .y_desc(y_desc)
        .y_label_formatter(&|v| format!("{v:.0}"));
    if percentile_axis {
        mesh.x_label_formatter(&percentile_label);
    } else {
        mesh.x_label_formatter(&plain_label);
    }
    mesh.draw().map_err(err)?;
    for (name, c, pts) in series {
        let c = *c;
        let pts: Vec<(f64, f64)> = pts
            .iter()
            .copied()
            .filter(|(x, y)| *x > 0.0 && *y > 0.0)
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 2, c.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// p99 (µs) versus offered rate (requests/s), one line per server.
pub fn p99_vs_rate(
    path: &Path,
    title: &str,
    series: &[(ServerKind, Vec<(f64, f64)>)],
) -> Result<()> {
    log_log(
        path,
        title,
        "offered rate (requests/s)",
        "p99 latency (µs)",
        &by_server(series),
        false,
    )
}

/// Percentile spectrum: latency (µs) versus percentile, one line per server.
/// `series` holds (quantile, µs) pairs.
pub fn spectrum(path: &Path, title: &str, series: &[(ServerKind, Vec<(f64, f64)>)]) -> Result<()> {
    spectrum_lines(path, title, by_server(series))
}

/// Percentile spectrum with one line per label (e.g. config variants).
pub fn spectrum_labeled(
    path: &Path,
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    const PALETTE: [RGBColor; 4] = [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(90, 90, 90),
    ];
    let lines = series
        .iter()
        .enumerate()
        .map(|(i, (l, p))| (l.clone(), PALETTE[i % PALETTE.len()], p.clone()))
        .collect();
    spectrum_lines(path, title, lines)
}

fn spectrum_lines(path: &Path, title: &str, lines: Vec<Line>) -> Result<()> {
    let mapped: Vec<Line> = lines
        .into_iter()
        .map(|(name, c, pts)| {
            let pts = pts
                .iter()
                .filter(|(q, _)| *q < 1.0)
                .map(|&(q, v)| (1.0 / (1.0 - q), v))
                .collect();
            (name, c, pts)
        })
        .collect();
    log_log(
        path,
        title,
        "percentile",
        "latency from intended send (µs)",
        &mapped,
        true,
    )
}
