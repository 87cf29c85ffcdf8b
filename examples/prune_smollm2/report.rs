//! The run's outputs: phase timings, progress bars, the results table (mean ± sd over seeds) and
//! the loss-curve PNG.

use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;

use crate::train::History;

/// A timed phase of the run.
pub struct Phase {
    /// What it did.
    pub name: String,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Real tokens processed.
    pub tokens: usize,
}

impl Phase {
    /// Real tokens per second.
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }
}

/// A progress bar of `len` items labelled `label`, with the rate and the time left.
pub fn progress(len: u64, label: &str) -> ProgressBar {
    let style = ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    ProgressBar::new(len).with_style(style).with_prefix(label.to_owned())
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// `mean ± sd`, or the value alone for one seed.
pub fn show(values: &[f64], digits: usize) -> String {
    let (mean, sd) = mean_sd(values);
    if values.len() < 2 {
        format!("{mean:.digits$}")
    } else {
        format!("{mean:.digits$} ± {sd:.digits$}")
    }
}

/// The perplexities over seeds.
pub struct Perplexities {
    pub teacher: f64,
    pub pruned: f64,
    pub ce: Vec<f64>,
    pub kd: Vec<f64>,
}

/// The results table in markdown: perplexities, then every phase's time and rate.
pub fn markdown(header: &str, p: &Perplexities, phases: &[Phase]) -> String {
    let ratios: Vec<f64> = p.kd.iter().zip(&p.ce).map(|(kd, ce)| kd / ce).collect();
    let mut md = format!("{header}\n\n| model | validation perplexity |\n|---|---:|\n");
    let _ = writeln!(md, "| teacher (SmolLM2-135M-Instruct) | {:.2} |", p.teacher);
    let _ = writeln!(md, "| pruned, before fine-tuning | {:.2} |", p.pruned);
    let _ = writeln!(md, "| fine-tuned, cross-entropy only | {} |", show(&p.ce, 2));
    let _ = writeln!(md, "| fine-tuned, KD from the teacher cache | {} |", show(&p.kd, 2));
    let _ = writeln!(md, "\nKD / CE-only perplexity ratio: {} over {} seed(s)\n", show(&ratios, 3), ratios.len());
    md += "| phase | wall time (s) | real tokens/s |\n|---|---:|---:|\n";
    for phase in phases {
        let _ = writeln!(md, "| {} | {:.1} | {:.0} |", phase.name, phase.seconds, phase.tokens_per_second());
    }
    md
}

/// Fonts tried for the PNG's text; without one the curves are drawn without labels.
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn register_font() -> bool {
    FONTS.iter().filter_map(|path| std::fs::read(path).ok()).any(|bytes| {
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

/// Means of `window` consecutive values, at their middle step.
fn smooth(values: &[f64], window: usize) -> Vec<(f64, f64)> {
    values
        .chunks(window.max(1))
        .enumerate()
        .map(|(i, c)| ((i * window + c.len() / 2) as f64, c.iter().sum::<f64>() / c.len() as f64))
        .collect()
}

/// Draws the first seed's training losses and both runs' validation cross-entropy. Returns whether
/// text could be drawn (a font was found).
pub fn plot(path: &Path, ce: &History, kd: &History) -> Result<bool, Box<dyn Error>> {
    let text = register_font();
    let window = (ce.loss.len() / 60).max(1);
    let lines = [
        ("CE only: training cross-entropy", smooth(&ce.ce, window), RED),
        ("KD: training cross-entropy", smooth(&kd.ce, window), BLUE),
        ("KD: training loss (the whole KD objective)", smooth(&kd.loss, window), RGBColor(0, 150, 0)),
    ];
    let points = [
        ("CE only: validation cross-entropy", &ce.validation, RED),
        ("KD: validation cross-entropy", &kd.validation, BLUE),
    ];
    let all =
        lines.iter().flat_map(|l| l.1.iter().map(|p| p.1)).chain(points.iter().flat_map(|p| p.1.iter().map(|v| v.1)));
    let (lo, hi) = all.filter(|v| v.is_finite()).fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(14);
    if text {
        builder
            .caption("fine-tuning the pruned SmolLM2 (same batches)", ("sans-serif", 20))
            .x_label_area_size(36)
            .y_label_area_size(56);
    }
    let steps = ce.loss.len().max(2) as f64;
    let mut chart = builder.build_cartesian_2d(0f64..steps, (lo * 0.95).max(1e-3)..hi * 1.05)?;
    if text {
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc(format!("nats per token (training: mean of {window} steps)"))
            .draw()?;
    } else {
        chart.configure_mesh().x_labels(0).y_labels(0).draw()?;
    }
    for (name, series, color) in lines {
        let drawn = chart.draw_series(LineSeries::new(series, color.stroke_width(2)))?;
        if text {
            drawn.label(name).legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        }
    }
    for (name, values, color) in points {
        let marks = values.iter().map(|&(s, v)| Circle::new((s as f64, v), 5, color.filled()));
        let drawn = chart.draw_series(marks)?;
        if text {
            drawn.label(name).legend(move |(x, y)| Circle::new((x + 9, y), 5, color.filled()));
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
    root.present()?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd() {
        let (mean, sd) = mean_sd(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(mean, 2.5);
        // Σ(x − 2.5)² = 5, over n − 1 = 3.
        assert!((sd - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert_eq!(mean_sd(&[7.0]), (7.0, 0.0));
        assert_eq!(show(&[7.0], 2), "7.00");
    }

    #[test]
    fn the_png_is_written() {
        let history = |scale: f64| History {
            loss: (0..50).map(|i| scale * 4.0 / (1.0 + i as f64).sqrt()).collect(),
            ce: (0..50).map(|i| 4.0 / (1.0 + i as f64).sqrt()).collect(),
            validation: vec![(25, 1.2), (50, 1.0)],
            seconds: 1.0,
            tokens: 1,
        };
        let path = std::env::temp_dir().join(format!("distill-lm-plot-{}.png", std::process::id()));
        plot(&path, &history(1.0), &history(0.5)).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 1000);
        std::fs::remove_file(&path).unwrap();
    }
}
