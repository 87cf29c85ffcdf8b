//! What `SequenceKd`'s handling of masked tokens costs: one loss + backward of logits `[B, T, V]`
//! (f32) with the last tokens of each sequence labelled −100, three ways in one run:
//!
//! - **plain**: the formula as `SequenceKd` computed it before it looked at the masked rows — the
//!   divergence per token over every row (`Divergence::per_token`), the reduction's weights,
//!   selected where they are non-zero and summed — whose gradient is NaN in a masked row holding
//!   NaN logits;
//! - **SequenceKd**: `f_loss_with_targets` on the same clean logits: from one masked token in
//!   eight on, only the valid rows are computed; below that, every row, and the masked rows'
//!   per-token values are checked (`[B, T]`);
//! - **SequenceKd, NaN padding**: the masked rows hold NaN (below one in eight, the rows that fail
//!   the check are left out in a second computation).
//!
//! Before timing, the contenders are checked to give the same value and valid-row gradient, bit
//! for bit, and zeros in the masked rows. They alternate in rounds (every order equally often, one
//! untimed call each round), and each reports its median round; the ratios are over **plain**.
//!
//! Run: `cargo bench --bench sequence_kd -- [--batch N] [--tokens N] [--vocab N] [--padding F,F,…]
//! [--rounds N] [--threads N]` (`--padding`: the shares of each sequence masked, one run each), or
//! the same options through `SEQUENCE_KD_BENCH`. Under `cargo test --all-targets` (no `--bench`
//! argument) only the smoke test runs (small shapes, nothing timed).

use std::time::Instant;

use distill::criterion::{Criterion, Divergence, SequenceKd, TokenReduction};
use tch::{Device, Kind, Tensor};

#[derive(Clone, Debug)]
struct Args {
    batch: i64,
    tokens: i64,
    vocab: i64,
    /// The shares of each sequence's tokens, at its end, labelled −100: one run each.
    padding: Vec<f64>,
    rounds: usize,
    threads: i32,
}

impl Default for Args {
    fn default() -> Self {
        Args { batch: 4, tokens: 128, vocab: 8192, padding: vec![1.0 / 128.0, 0.25, 0.5], rounds: 40, threads: 2 }
    }
}

fn parse(words: impl Iterator<Item = String>) -> Args {
    let mut a = Args::default();
    let mut it = words.filter(|w| w != "--bench");
    while let Some(arg) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--batch" => a.batch = value.parse().expect("--batch N"),
            "--tokens" => a.tokens = value.parse().expect("--tokens N"),
            "--vocab" => a.vocab = value.parse().expect("--vocab N"),
            "--padding" => a.padding = value.split(',').map(|p| p.parse().expect("--padding F,F,…")).collect(),
            "--rounds" => a.rounds = value.parse().expect("--rounds N"),
            "--threads" => a.threads = value.parse().expect("--threads N"),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

struct Inputs {
    student: Tensor,
    teacher: Tensor,
    /// The student with NaN in every masked row.
    nan_student: Tensor,
    labels: Tensor,
}

fn inputs(a: &Args, padding: f64) -> Inputs {
    tch::manual_seed(4);
    let opts = (Kind::Float, Device::Cpu);
    let shape = [a.batch, a.tokens, a.vocab];
    let (student, teacher) = (Tensor::randn(shape, opts) * 2.0, Tensor::randn(shape, opts) * 2.0);
    let labels = Tensor::randint(a.vocab, [a.batch, a.tokens], (Kind::Int64, Device::Cpu));
    let padded = ((a.tokens as f64) * padding).round() as i64;
    let _ = labels.narrow(1, a.tokens - padded, padded).fill_(-100);
    let masked = labels.eq(-100).unsqueeze(-1);
    let nan_student = student.masked_fill(&masked, f64::NAN);
    Inputs { student, teacher, nan_student, labels }
}

const CONTENDERS: [&str; 3] = ["plain", "SequenceKd", "SequenceKd, NaN padding"];

/// One loss + backward by contender `which`; the value and the student's gradient.
fn step(kd: &SequenceKd, x: &Inputs, which: usize) -> (f64, Tensor) {
    let student = if which == 2 { &x.nan_student } else { &x.student };
    let s = student.detach().set_requires_grad(true);
    let loss = if which == 0 {
        let per_token = kd.divergence.per_token(&s, &x.teacher, kd.temperature).unwrap();
        let w = kd.reduction.weights(&x.labels.ne(-100), Kind::Float).unwrap();
        let zero = Tensor::zeros([], (Kind::Float, Device::Cpu));
        (per_token * &w).where_self(&w.ne(0.0), &zero).sum(Kind::Float)
    } else {
        kd.f_loss_with_targets(&s, &x.teacher, Some(&x.labels)).unwrap()
    };
    loss.backward();
    (loss.double_value(&[]), s.grad())
}

fn bits(t: &Tensor) -> Vec<u32> {
    Vec::<f32>::try_from(t.reshape([-1])).unwrap().iter().map(|v| v.to_bits()).collect()
}

/// The contenders' results agree as the module documentation says.
fn check(kd: &SequenceKd, x: &Inputs) {
    let (plain, sequence, nan) = (step(kd, x, 0), step(kd, x, 1), step(kd, x, 2));
    let valid = x.labels.ne(-100).unsqueeze(-1);
    let at = |g: &Tensor, rows: &Tensor| g.masked_select(rows);
    for (what, other) in [("clean", &sequence), ("NaN padding", &nan)] {
        assert_eq!(plain.0.to_bits(), other.0.to_bits(), "{kd:?}, {what}: value");
        assert_eq!(bits(&at(&plain.1, &valid)), bits(&at(&other.1, &valid)), "{kd:?}, {what}: valid rows");
        // Masked rows: 0 (the plain formula's may be −0).
        let masked = at(&other.1, &valid.logical_not());
        assert_eq!(masked.abs().sum(Kind::Double).double_value(&[]), 0.0, "{kd:?}, {what}: masked rows");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Every contender's median round time in seconds.
fn time(kd: &SequenceKd, x: &Inputs, rounds: usize) -> [f64; 3] {
    let orders = [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 2, 1], [2, 1, 0], [1, 0, 2]];
    let mut times: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        for &which in &orders[round % orders.len()] {
            let _ = step(kd, x, which); // untimed: caches and worker threads warm
            let start = Instant::now();
            let _ = step(kd, x, which);
            times[which].push(start.elapsed().as_secs_f64());
        }
    }
    times.map(median)
}

fn bench(a: &Args) {
    tch::set_num_threads(a.threads);
    println!(
        "SequenceKd loss + backward, f32 [{}, {}, {}], {} threads, medians of {} rounds:",
        a.batch, a.tokens, a.vocab, a.threads, a.rounds
    );
    for &padding in &a.padding {
        let x = inputs(a, padding);
        let masked = x.labels.eq(-100).sum(Kind::Int64).int64_value(&[]);
        println!("  {masked} of {} tokens masked ({:.1}%):", a.batch * a.tokens, padding * 100.0);
        for divergence in [Divergence::ForwardKl, Divergence::Jsd { beta: 0.5 }] {
            let kd = SequenceKd::new(divergence, 2.0).with_reduction(TokenReduction::Token);
            check(&kd, &x);
            let t = time(&kd, &x, a.rounds);
            let cells: Vec<String> = CONTENDERS
                .iter()
                .zip(t)
                .map(|(name, s)| format!("{name} {:.2} ms ({:.3}×)", s * 1e3, s / t[0]))
                .collect();
            println!("    {divergence:?}: {}", cells.join(", "));
        }
    }
}

fn main() {
    let words = std::env::var("SEQUENCE_KD_BENCH").unwrap_or_default();
    let args: Vec<String> = std::env::args().skip(1).chain(words.split_whitespace().map(str::to_owned)).collect();
    if args.iter().any(|arg| arg == "--bench") {
        bench(&parse(args.into_iter()));
    } else {
        smoke();
    }
}

/// The contenders agree on small shapes, over the valid rows alone and over every row (what
/// `cargo test --all-targets` runs: no `--bench` argument, nothing timed).
fn smoke() {
    let a = Args { batch: 2, tokens: 16, vocab: 33, ..Args::default() };
    for padding in [1.0 / 16.0, 0.25] {
        let x = inputs(&a, padding);
        for divergence in [Divergence::ForwardKl, Divergence::Jsd { beta: 0.5 }, Divergence::TotalVariation] {
            check(&SequenceKd::new(divergence, 2.0), &x);
        }
    }
    println!("sequence_kd smoke test: the contenders agree");
}
