//! The run's outputs: a markdown table of accuracies and a PNG of the loss curves.

use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::train::History;

/// One row of the results table.
pub struct Row {
    pub name: &'static str,
    pub params: i64,
    pub accuracy: f64,
    /// The PyTorch reference run's number, when this run uses the reference settings.
    pub reference: Option<f64>,
    pub note: String,
}

/// The markdown table.
pub fn markdown(rows: &[Row], header: &str) -> String {
    let mut md = String::new();
    writeln!(md, "{header}\n").unwrap();
    writeln!(md, "| model | parameters | test accuracy | PyTorch reference | notes |").unwrap();
    writeln!(md, "|---|---:|---:|---:|---|").unwrap();
    for r in rows {
        let reference = r.reference.map_or("—".to_owned(), |v| format!("{v:.2}%"));
        writeln!(md, "| {} | {} | {:.2}% | {} | {} |", r.name, r.params, r.accuracy, reference, r.note).unwrap();
    }
    md
}

/// Fonts tried for the PNG's text; without one the curves are drawn without labels.
const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn register_font() -> bool {
    for path in FONTS {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// Saves a loss history as CSV (a header of term names, one row per step).
pub fn save_history(path: &Path, history: &History) -> std::io::Result<()> {
    let mut csv = history.names.join(",") + "\n";
    for row in &history.steps {
        csv += &row.iter().map(f64::to_string).collect::<Vec<_>>().join(",");
        csv.push('\n');
    }
    std::fs::write(path, csv)
}

/// Reads a history written by [`save_history`]; `None` when absent or malformed.
pub fn load_history(path: &Path) -> Option<History> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let names: Vec<&'static str> =
        lines.next()?.split(',').map(|n| &*Box::leak(n.to_owned().into_boxed_str())).collect();
    let steps = lines
        .map(|l| l.split(',').map(|v| v.parse().ok()).collect::<Option<Vec<f64>>>())
        .collect::<Option<Vec<_>>>()?;
    Some(History { names, steps, elapsed: Default::default() })
}

/// Moving average over `window` steps, as `(step, value)` points.
fn smooth(values: &[f64], window: usize) -> Vec<(f64, f64)> {
    let window = window.max(1);
    values
        .chunks(window)
        .enumerate()
        .map(|(i, c)| ((i * window + c.len() / 2) as f64, c.iter().sum::<f64>() / c.len() as f64))
        .collect()
}

/// A panel: several named series over steps.
struct Panel<'a> {
    title: &'a str,
    series: Vec<(String, Vec<f64>, RGBColor)>,
}

/// Draws the loss curves. Returns whether text (titles, axes, legends) could be drawn.
pub fn plot(path: &Path, teacher: Option<&History>, ce: &History, kd: &History) -> Result<bool, Box<dyn Error>> {
    let text = register_font();
    draw(path, teacher, ce, kd, text)?;
    Ok(text)
}

fn draw(path: &Path, teacher: Option<&History>, ce: &History, kd: &History, text: bool) -> Result<(), Box<dyn Error>> {
    let mut panels = Vec::new();
    if let Some(t) = teacher {
        panels.push(Panel {
            title: "teacher training (one-cycle SGD)",
            series: vec![("cross-entropy".into(), t.series("loss").unwrap_or_default(), BLUE)],
        });
    }
    panels.push(Panel {
        title: "fine-tuning the pruned student (same batches)",
        series: vec![
            ("CE only: cross-entropy".into(), ce.series("loss").unwrap_or_default(), RED),
            ("distill: cross-entropy term".into(), kd.series("ce").unwrap_or_default(), BLUE),
            ("distill: total (CE + features + KD)".into(), kd.series("loss").unwrap_or_default(), RGBColor(0, 150, 0)),
        ],
    });
    let root = BitMapBackend::new(path, (640 * panels.len() as u32, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    for (area, panel) in root.split_evenly((1, panels.len())).iter().zip(&panels) {
        let steps = panel.series.iter().map(|s| s.1.len()).max().unwrap_or(1).max(2);
        let window = (steps / 150).max(1);
        let smoothed: Vec<_> = panel.series.iter().map(|(n, v, c)| (n, smooth(v, window), *c)).collect();
        let values = || smoothed.iter().flat_map(|s| s.1.iter().map(|p| p.1)).filter(|v| *v > 0.0);
        let ymax = values().fold(1e-3f64, f64::max) * 1.2;
        let ymin = values().fold(ymax, f64::min) / 1.2;
        let mut builder = ChartBuilder::on(area);
        builder.margin(12);
        if text {
            builder.caption(panel.title, ("sans-serif", 18)).x_label_area_size(36).y_label_area_size(52);
        }
        let mut chart = builder.build_cartesian_2d(0f64..steps as f64, (ymin..ymax).log_scale())?;
        if text {
            chart
                .configure_mesh()
                .y_labels(12)
                .y_label_formatter(&|v| format!("{v:.2}"))
                .x_label_formatter(&|v| format!("{v:.0}"))
                .x_desc("step")
                .y_desc(format!("loss, log scale (mean of {window} steps)"))
                .draw()?;
        } else {
            chart.configure_mesh().x_labels(0).y_labels(0).draw()?;
        }
        for (name, points, color) in smoothed {
            let drawn = chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?;
            if text {
                drawn
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
            }
        }
        if text {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(names: &[&'static str], steps: usize) -> History {
        let steps = (0..steps).map(|i| names.iter().map(|_| 2.0 / (1.0 + i as f64)).collect()).collect();
        History { names: names.to_vec(), steps, elapsed: Default::default() }
    }

    #[test]
    fn png_is_written_with_and_without_a_font() {
        let (teacher, ce, kd) = (history(&["loss"], 40), history(&["loss"], 30), history(&["loss", "ce"], 30));
        for text in [false, true] {
            let path = std::env::temp_dir().join(format!("distill-plot-{}-{text}.png", std::process::id()));
            if text && !register_font() {
                continue;
            }
            draw(&path, Some(&teacher), &ce, &kd, text).unwrap();
            assert!(std::fs::metadata(&path).unwrap().len() > 1000);
            std::fs::remove_file(&path).unwrap();
        }
    }

    #[test]
    fn history_round_trips_through_csv() {
        let h = history(&["loss", "ce"], 5);
        let path = std::env::temp_dir().join(format!("distill-history-{}.csv", std::process::id()));
        save_history(&path, &h).unwrap();
        let back = load_history(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back.names, h.names);
        assert_eq!(back.steps, h.steps);
    }
}
