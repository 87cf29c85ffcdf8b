//! Overhead benchmarks. Ratios are measured side by side in one run: the contenders alternate in
//! short rounds (cycling through every order, each round after a few untimed warm-up calls), and each
//! side's median round is reported.
//!
//! (a) idle: the small CNN on `distill::nn` layers, nothing armed, vs the same CNN on raw `tch::nn`
//!     layers with the same weights (forward, eval, no grad);
//! (b) step: a full distillation step through `distill!` vs the same step hand-written in tch, whose
//!     forward returns the intermediates explicitly;
//! (c) python: (b)'s step in PyTorch eager with forward hooks (benches/python/step_hooks.py, served
//!     over a pipe so that its rounds interleave with the Rust rounds), threads pinned equal;
//! (d) rss: peak RSS of (b)'s two sides, each in its own process;
//! (e) cache: (b)'s step with the teacher read from a teacher cache vs the live step, the
//!     cross-entropy-only step and (c)'s PyTorch step; bytes a cache stores per sample.
//!
//! Run everything with `scripts/bench` (or `cargo bench --bench step -- [OPTIONS]`). Under
//! `cargo test --all-targets` the binary runs a smoke test instead: both sides of each benchmark
//! compute the same thing; nothing is timed.
//!
//! The parts: the workload's models (`models`) and the two Rust sides of a step (`sides`); timing
//! by interleaved rounds (`timing`); the benchmarks (`runs`), the Python baseline (`python`) and the
//! peak-RSS processes (`rss`); the summary table (`summary`).

mod cached;
mod models;
mod python;
mod rss;
mod runs;
mod sides;
mod summary;
mod timing;

use clap::Parser;

use crate::summary::Summary;

#[derive(Parser, Debug)]
#[command(
    about = "distill overhead benchmarks: (a) idle, (b) step vs hand-written tch, (c) vs PyTorch hooks, (d) peak RSS, \
             (e) teacher cache"
)]
pub(crate) struct Args {
    /// Which benchmarks to run (comma-separated: idle, step, python, rss, cache).
    #[arg(long, value_delimiter = ',', default_value = "idle,step,python,rss,cache")]
    pub(crate) only: Vec<String>,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "8,128")]
    pub(crate) batch: Vec<i64>,
    /// Where (b) runs: `cpu`, or `cuda` (the first GPU; (c), the PyTorch baseline, runs on the CPU
    /// only and is skipped then). The other benchmarks run on the CPU.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    pub(crate) device: String,
    /// Intra-op threads, for libtorch here and for PyTorch in the Python baseline.
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: i32,
    /// Interleaved rounds per side (a multiple of 6 visits every order of three contenders equally).
    #[arg(long, default_value_t = 54)]
    pub(crate) rounds: usize,
    /// Target duration of one round, in milliseconds.
    #[arg(long, default_value_t = 30)]
    pub(crate) round_ms: u64,
    /// Python interpreter for (c).
    #[arg(long, default_value = "python3")]
    pub(crate) python: String,
    /// Leave glibc's allocator untuned (to show what `distill::tune_allocator` buys).
    #[arg(long)]
    pub(crate) untuned: bool,
    /// Internal: run one side of (b) in this process and print its peak RSS.
    #[arg(long, hide = true)]
    pub(crate) rss_child: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub(crate) bench: bool,
}

impl Args {
    /// The device of `--device`.
    pub(crate) fn device(&self) -> tch::Device {
        if self.device == "cuda" {
            tch::Device::Cuda(0)
        } else {
            tch::Device::Cpu
        }
    }
}

fn main() {
    let args = Args::parse();
    let tuned = if args.untuned { false } else { distill::tune_allocator() };
    tch::set_num_threads(args.threads);
    if let Some(side) = &args.rss_child {
        rss::rss_child(&args, side);
        return;
    }
    if !args.bench {
        // `cargo test --all-targets` runs bench binaries without `--bench`: check, do not time.
        runs::smoke_test();
        return;
    }
    if let Err(e) = distill::device::check_device(args.device()) {
        eprintln!("--device {}: {e}", args.device);
        std::process::exit(2);
    }
    let on = |name: &str| args.only.iter().any(|o| o == name);
    println!(
        "distill benchmarks: {} threads, allocator tuned: {tuned}, {} interleaved rounds of ~{} ms per side, medians",
        args.threads, args.rounds, args.round_ms
    );
    println!(
        "small CNN: teacher {:?}, student {:?}, 28×28; step = 2 adapter pairs (MSE) + AT + KD (T=4) + CE, SGD",
        models::TEACHER,
        models::STUDENT
    );
    let mut summary = Summary::default();
    for &batch in &args.batch {
        if on("idle") {
            runs::bench_idle(&args, batch, &mut summary);
        }
        if on("step") || on("python") {
            runs::bench_step(&args, batch, on("python"), &mut summary);
        }
        if on("rss") {
            rss::bench_rss(&args, batch, &mut summary);
        }
        if on("cache") {
            cached::bench_cache(&args, batch, &mut summary);
        }
    }
    summary.print(&args.batch);
}
