//! The run's results, as the markdown table BENCHMARKS.md shows.

use crate::timing::fmt_ms;

/// Adds `A / B = ratio×` for two median times to the summary table and returns the ratio.
pub(crate) fn add_ratio(summary: &mut Summary, bench: &'static str, batch: i64, a: f64, b: f64) -> f64 {
    let ratio = a / b;
    summary.add(bench, batch, format!("{} / {} = {ratio:.3}×", fmt_ms(a), fmt_ms(b)));
    ratio
}

/// The run's results as a markdown table (benchmarks × batch sizes), for BENCHMARKS.md.
#[derive(Default)]
pub(crate) struct Summary {
    rows: Vec<(&'static str, Vec<(i64, String)>)>,
}

impl Summary {
    pub(crate) fn add(&mut self, bench: &'static str, batch: i64, cell: String) {
        match self.rows.iter_mut().find(|(b, _)| *b == bench) {
            Some((_, cells)) => cells.push((batch, cell)),
            None => self.rows.push((bench, vec![(batch, cell)])),
        }
    }

    pub(crate) fn print(&self, batches: &[i64]) {
        println!("\n| benchmark |{}", batches.iter().map(|b| format!(" batch {b} |")).collect::<String>());
        println!("|---|{}", "---|".repeat(batches.len()));
        for (bench, cells) in &self.rows {
            let cell = |b: i64| cells.iter().find(|(x, _)| *x == b).map_or("—".to_owned(), |(_, c)| c.clone());
            println!("| {bench} |{}", batches.iter().map(|&b| format!(" {} |", cell(b))).collect::<String>());
        }
    }
}
