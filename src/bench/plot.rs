//! `bench --plot FILE.svg`: the run as one picture, for people who look
//! before they read.
//!
//! Three charts, stacked: the latency distribution of every path (open
//! loop, from each request's due time; percentiles on a "nines" axis so
//! that p50, p90, p99 and p99.9 get the same room, latency on a log axis),
//! then the CPU time per scrape and the RSS (idle, steady, peak) of each
//! measured sidecar process. Drawn with plotters' SVG backend: text is
//! written as SVG `<text>` and laid out with plotters' built-in estimate,
//! so no font is needed on the machine that draws it.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::BoxError;
use super::report::{PathReport, Report};

const WIDTH: u32 = 960;
const HEIGHT: u32 = 1200;
const COLORS: [RGBColor; 6] = [
    RGBColor(40, 40, 40),
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];
/// The percentile axis ends at p99.9: three nines.
const NINES: f64 = 3.0;

/// A path as the pictures name it: `sidecar epoll gzip`, `direct plain`, …
pub fn label(path: &PathReport) -> String {
    match &path.driver {
        Some(driver) => format!("{} {driver} {}", path.path, path.encoding),
        None => format!("{} {}", path.path, path.encoding),
    }
}

/// Draws `report` to `file` as SVG.
pub fn write_svg(report: &Report, file: &Path) -> Result<(), BoxError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw(report, &root).map_err(|e| format!("drawing the plot: {e}"))?;
        root.present()
            .map_err(|e| format!("drawing the plot: {e}"))?;
    }
    std::fs::write(file, svg).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;
/// One figure of a path, if it was measured.
type Figure = dyn Fn(&PathReport) -> Option<f64>;

fn draw(report: &Report, root: &Area) -> DrawResult {
    root.fill(&WHITE)?;
    let s = &report.settings;
    let size = match s.payload_bytes {
        0 => String::new(),
        bytes => format!(" {} KiB", bytes / 1024),
    };
    let title = format!(
        "{}{size} ({}), {} req/s over {} connections, {} s per path; {} cores, {}",
        s.payload,
        s.engine,
        s.rate,
        s.connections,
        s.duration_s,
        report.machine.cores,
        report.machine.cpu
    );
    let root = root.titled(&title, ("sans-serif", 19))?;
    let (latency, rest) = root.split_vertically(HEIGHT * 9 / 20);
    let (cpu, memory) = rest.split_vertically(HEIGHT * 5 / 20);
    draw_latency(report, &latency)?;
    let sidecars: Vec<(usize, &PathReport)> = report
        .paths
        .iter()
        .enumerate()
        .filter(|(_, p)| p.cpu_us_per_scrape.is_some() || p.rss_idle_mib.is_some())
        .filter(|(_, p)| p.path != "direct")
        .collect();
    draw_cpu(&sidecars, &cpu)?;
    draw_memory(&sidecars, &memory)?;
    Ok(())
}

/// The quantile (0..1) at `x` on the nines axis: 0 at 0, 0.9 at 1, 0.99 at 2.
fn quantile_at(x: f64) -> f64 {
    1.0 - 10f64.powf(-x)
}

/// `(x on the nines axis, latency ms)` along a path's distribution.
fn curve(sorted_ms: &[f64]) -> Vec<(f64, f64)> {
    if sorted_ms.is_empty() {
        return Vec::new();
    }
    let steps = 150;
    (0..=steps)
        .map(|i| {
            let x = NINES * f64::from(i) / f64::from(steps);
            let q = quantile_at(x);
            // Nearest rank; the epsilon keeps 0.999 × 1000 at rank 999.
            let rank = (q * sorted_ms.len() as f64 - 1e-9).ceil() as usize;
            (x, sorted_ms[rank.clamp(1, sorted_ms.len()) - 1])
        })
        .collect()
}

fn draw_latency(report: &Report, area: &Area) -> DrawResult {
    let curves: Vec<(String, Vec<(f64, f64)>)> = report
        .paths
        .iter()
        .map(|p| (label(p), curve(&p.latencies_ms)))
        .collect();
    let values = || curves.iter().flat_map(|(_, c)| c.iter().map(|&(_, ms)| ms));
    let low = values().fold(f64::INFINITY, f64::min).max(1e-3);
    let high = values().fold(0.0, f64::max).max(low * 2.0);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Latency distribution per path (open loop, from each request's due time)",
            ("sans-serif", 18),
        )
        .margin(12)
        .margin_right(32)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..NINES, (low * 0.8..high * 1.25).log_scale())?;
    chart
        .configure_mesh()
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 14))
        .x_desc("percentile")
        .x_labels(4)
        .y_desc("latency (ms, log scale)")
        .x_label_formatter(&|&x| match 100.0 * quantile_at(x) {
            p if p < 0.5 => "min".to_owned(),
            p => format!("p{}", (p * 10.0).round() / 10.0),
        })
        .y_label_formatter(&|y| format!("{y}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, (name, points)) in curves.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    Ok(())
}

/// A bar chart over `sidecars`: the values of `series` side by side for
/// each path, in its color, darkest first (the caption names them).
fn bars(
    area: &Area,
    caption: &str,
    y_desc: &str,
    sidecars: &[(usize, &PathReport)],
    series: &[&Figure],
) -> DrawResult {
    let n = sidecars.len().max(1);
    let high = sidecars
        .iter()
        .flat_map(|(_, p)| series.iter().filter_map(|f| f(p)))
        .fold(0.0, f64::max)
        .max(1e-3);
    let names: Vec<String> = sidecars.iter().map(|(_, p)| label(p)).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..high * 1.4)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 14))
        .y_desc(y_desc)
        .x_labels(n + 1)
        .x_label_formatter(&|x| match (x.round() - x).abs() < 0.01 && *x >= 0.0 {
            true => names.get(x.round() as usize).cloned().unwrap_or_default(),
            false => String::new(),
        })
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    let width = 0.7 / series.len() as f64;
    for (k, value) in series.iter().enumerate() {
        let shade = 1.0 - 0.3 * k as f64;
        let rects: Vec<Rectangle<(f64, f64)>> = sidecars
            .iter()
            .enumerate()
            .filter_map(|(i, (color, p))| {
                let v = value(p)?;
                let left = i as f64 - 0.35 + width * k as f64;
                let color = COLORS[color % COLORS.len()].mix(shade);
                Some(Rectangle::new(
                    [(left, 0.0), (left + width * 0.92, v)],
                    color.filled(),
                ))
            })
            .collect();
        chart.draw_series(rects)?;
        // The value above each bar.
        let style = TextStyle::from(("sans-serif", 13).into_font())
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(sidecars.iter().enumerate().filter_map(|(i, (_, p))| {
            let v = value(p)?;
            let x = i as f64 - 0.35 + width * (k as f64 + 0.46);
            let text = match v {
                v if v >= 100.0 => format!("{v:.0}"),
                v => format!("{v:.1}"),
            };
            Some(Text::new(text, (x, v + high * 0.01), style.clone()))
        }))?;
    }
    Ok(())
}

fn draw_cpu(sidecars: &[(usize, &PathReport)], area: &Area) -> DrawResult {
    bars(
        area,
        "CPU time per scrape of each sidecar process (latency phase)",
        "µs per scrape",
        sidecars,
        &[&|p: &PathReport| p.cpu_us_per_scrape],
    )
}

fn draw_memory(sidecars: &[(usize, &PathReport)], area: &Area) -> DrawResult {
    bars(
        area,
        "Resident memory of each sidecar process: idle, steady (median under load), peak (VmHWM)",
        "RSS (MiB)",
        sidecars,
        &[
            &|p: &PathReport| p.rss_idle_mib,
            &|p: &PathReport| p.rss_steady_mib,
            &|p: &PathReport| p.rss_peak_mib,
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nines_axis() {
        assert_eq!(quantile_at(0.0), 0.0);
        assert!((quantile_at(1.0) - 0.9).abs() < 1e-9);
        assert!((quantile_at(3.0) - 0.999).abs() < 1e-9);
    }

    #[test]
    fn a_curve_runs_from_the_fastest_to_the_p999() {
        let sorted: Vec<f64> = (1..=1000).map(f64::from).collect();
        let points = curve(&sorted);
        assert_eq!(points.first(), Some(&(0.0, 1.0)));
        assert_eq!(points.last(), Some(&(3.0, 999.0)));
        assert!(points.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!(curve(&[]).is_empty());
    }
}
