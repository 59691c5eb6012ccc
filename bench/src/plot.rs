//! The plots, as SVG, with plotters.

use std::path::Path;

use plotters::prelude::*;

use crate::stats::Record;

const COLORS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(127, 127, 127)];

type Res = Result<(), Box<dyn std::error::Error>>;

/// The font text is measured and drawn with: Debian's fonts-dejavu-core.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the font once per process.
fn font() -> Res {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *DONE.get_or_init(|| match std::fs::read(FONT) {
        // plotters keeps the font for the life of the process.
        Ok(bytes) => {
            plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice())).is_ok()
        }
        Err(_) => false,
    });
    if ok {
        Ok(())
    } else {
        Err(format!("no usable font at {FONT}: apt-get install fonts-dejavu-core").into())
    }
}

/// Writes `name`.svg and `name`.png; returns the files written.
pub fn single(records: &[Record], dir: &Path, name: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    font()?;
    let svg = dir.join(format!("{name}.svg"));
    draw_single(records, SVGBackend::new(&svg, (1100, 520)).into_drawing_area())?;
    let png = dir.join(format!("{name}.png"));
    draw_single(records, BitMapBackend::new(&png, (1100, 520)).into_drawing_area())?;
    Ok(vec![svg.display().to_string(), png.display().to_string()])
}

/// A bar chart of the single-container medians (log scale), one group per
/// workload, one bar per system, with each anchor's ratio to cnm written on
/// its bar.
fn draw_single<DB: DrawingBackend>(records: &[Record], root: DrawingArea<DB, plotters::coord::Shift>) -> Res
where
    DB::ErrorType: 'static,
{
    let mut workloads: Vec<&str> = records.iter().map(|r| r.workload.as_str()).collect();
    workloads.dedup();
    let mut systems: Vec<&str> = Vec::new();
    for r in records {
        if !systems.contains(&r.system.as_str()) {
            systems.push(&r.system);
        }
    }
    // cnm first, then the anchors.
    systems.sort_by_key(|s| (*s != "cnm", *s));
    let max = records.iter().map(|r| r.median_ms).fold(1.0f64, f64::max) * 3.0;
    let min = records.iter().map(|r| r.median_ms).fold(max, f64::min).max(0.001) / 3.0;

    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("single container: median per workload (ms, log scale)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..workloads.len() as f64, (min..max).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(workloads.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.26 {
                workloads.get(i).map(|s| s.to_string()).unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("ms")
        .draw()?;
    let width = 0.8 / systems.len() as f64;
    for (si, system) in systems.iter().enumerate() {
        let color = COLORS[si % COLORS.len()];
        let bars: Vec<(f64, f64, f64, String)> = records
            .iter()
            .filter(|r| r.system == *system)
            .filter_map(|r| {
                let wi = workloads.iter().position(|w| *w == r.workload)?;
                let x0 = wi as f64 + 0.1 + si as f64 * width;
                let cnm = records.iter().find(|c| c.workload == r.workload && c.system == "cnm").map(|c| c.median_ms);
                let label = match cnm {
                    Some(c) if *system != "cnm" && c > 0.0 => format!("{:.0}x", r.median_ms / c),
                    _ => format!("{:.2}", r.median_ms),
                };
                Some((x0, r.median_ms, width, label))
            })
            .collect();
        chart
            .draw_series(bars.iter().map(|(x0, y, w, _)| Rectangle::new([(*x0, min), (*x0 + w, *y)], color.filled())))?
            .label(*system)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        chart.draw_series(bars.iter().map(|(x0, y, w, label)| {
            Text::new(label.clone(), (*x0 + w / 2.0 - 0.02, *y * 1.15), ("sans-serif", 11).into_font())
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Writes `name`.svg and `name`.png: one line per system, the median of
/// each bucket of `bucket` consecutive samples against how many came before.
pub fn lines(
    series: &[(String, Vec<f64>)],
    bucket: usize,
    title: &str,
    x_desc: &str,
    dir: &Path,
    name: &str,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    font()?;
    let points: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(system, v)| {
            let pts = v
                .chunks(bucket)
                .enumerate()
                .map(|(i, c)| {
                    let mut c = c.to_vec();
                    c.sort_by(f64::total_cmp);
                    ((i * bucket) as f64, c[c.len() / 2])
                })
                .collect();
            (system.clone(), pts)
        })
        .collect();
    xy(&points, title, x_desc, dir, name)
}

/// Writes `name`.svg and `name`.png: one line per system through `points`
/// (x, milliseconds), the y axis logarithmic.
pub fn xy(
    points: &[(String, Vec<(f64, f64)>)],
    title: &str,
    x_desc: &str,
    dir: &Path,
    name: &str,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    font()?;
    let svg = dir.join(format!("{name}.svg"));
    draw_lines(points, title, x_desc, SVGBackend::new(&svg, (1100, 520)).into_drawing_area())?;
    let png = dir.join(format!("{name}.png"));
    draw_lines(points, title, x_desc, BitMapBackend::new(&png, (1100, 520)).into_drawing_area())?;
    Ok(vec![svg.display().to_string(), png.display().to_string()])
}

fn draw_lines<DB: DrawingBackend>(
    points: &[(String, Vec<(f64, f64)>)],
    title: &str,
    x_desc: &str,
    root: DrawingArea<DB, plotters::coord::Shift>,
) -> Res
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let all = points.iter().flat_map(|(_, p)| p.iter());
    let xmax = all.clone().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let ymax = all.clone().map(|p| p.1).fold(0.01, f64::max) * 3.0;
    let ymin = all.map(|p| p.1).fold(ymax, f64::min).max(0.001) / 3.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, (ymin..ymax).log_scale())?;
    chart.configure_mesh().x_desc(x_desc).y_desc("ms (median, log scale)").draw()?;
    let mut order: Vec<&(String, Vec<(f64, f64)>)> = points.iter().collect();
    order.sort_by_key(|(s, _)| (s != "cnm", s.clone()));
    for (i, (system, pts)) in order.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(system.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 15, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    root.present()?;
    Ok(())
}
