//! The learning-curve plot of a run (SVG).

use crate::error::{Error, Result};
use crate::run::MetricsLine;
use plotters::prelude::*;
use std::path::Path;

/// Draws evaluation return and training return against env steps into an SVG file
/// (written through a temporary file and a rename).
pub fn learning_curve(metrics: &[MetricsLine], path: &Path, title: &str) -> Result<()> {
    let points = |f: fn(&MetricsLine) -> Option<f32>| -> Vec<(f64, f64)> {
        metrics
            .iter()
            .filter_map(|m| f(m).map(|v| (m.env_steps as f64, f64::from(v))))
            .filter(|(_, v)| v.is_finite())
            .collect()
    };
    let eval = points(|m| m.eval_return);
    let train = points(|m| m.mean_train_return);
    let mut svg = String::new();
    draw(
        &mut svg,
        title,
        &[
            ("eval return (deterministic)", &eval),
            ("train return", &train),
        ],
    )
    .map_err(|reason| Error::Plot {
        path: path.to_path_buf(),
        reason,
    })?;
    crate::run::write_atomic(path, svg.as_bytes())
}

fn draw(svg: &mut String, title: &str, series: &[(&str, &[(f64, f64)])]) -> Result<(), String> {
    let (x_range, y_range) = ranges(series.iter().flat_map(|(_, p)| p.iter().copied()));
    let root = SVGBackend::with_string(svg, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, y_range)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("env steps")
        .y_desc("episode return")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (label, points)) in series.iter().enumerate() {
        if points.is_empty() {
            continue;
        }
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

/// Axis ranges covering the points with a 5% margin; a unit range when there are none.
pub(crate) fn ranges(
    points: impl Iterator<Item = (f64, f64)>,
) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let pad = |lo: f64, hi: f64| {
        if lo > hi {
            (0.0, 1.0)
        } else {
            let m = ((hi - lo) * 0.05).max(1e-3 * hi.abs().max(1.0));
            (lo - m, hi + m)
        }
    };
    let (x0, x1) = pad(x0, x1);
    let (y0, y1) = pad(y0, y1);
    (x0..x1, y0..y1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_contains_both_series() {
        let metrics: Vec<MetricsLine> = (0..5)
            .map(|e| MetricsLine {
                epoch: e,
                env_steps: 100 * e as u64,
                eval_return: (e % 2 == 0).then_some(-100.0 + e as f32),
                mean_train_return: (e > 0).then_some(-120.0 + e as f32),
                ..MetricsLine::default()
            })
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("curve.svg");
        learning_curve(&metrics, &path, "test").expect("plot");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("eval return") && svg.contains("train return"));
        // Axes and ticks are 1 px wide; the two series and their legend samples 2 px.
        let series: Vec<&str> = svg
            .lines()
            .filter(|l| l.starts_with("<polyline") && l.contains("stroke-width=\"2\""))
            .collect();
        assert_eq!(series.len(), 4, "two series + two legend samples");
        let points = |l: &str| {
            l.split("points=\"")
                .nth(1)
                .map_or(0, |p| p.matches(',').count())
        };
        assert_eq!(points(series[0]), 3, "eval points at epochs 0, 2, 4");
        assert_eq!(points(series[1]), 4, "train points at epochs 1..=4");
        // No metrics at all still gives a valid (empty) plot.
        learning_curve(&[], &path, "empty").expect("empty plot");
    }
}
