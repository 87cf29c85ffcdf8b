//! Benchmark of the vocabulary-chunked loss (`ChunkedLoss`) against the unchunked path: a student's
//! final hidden states `[B, T, H]` and `lm_head` weight `[V, H]` with full teacher logits
//! `[B, T, V]`, forward KL at T = 1 per token, loss + backward. Defaults: B = 1, T = 2048,
//! V = 49 152, H = 576 (SmolLM2-135M's head), chunks of 256 tokens (`--chunk`), f32.
//!
//! - Peak RSS growth of loss + backward, each path in its own process (this binary re-executed with
//!   `--rss-child naive|chunked`): the kernel's high-water mark is reset (`/proc/self/clear_refs`)
//!   after the inputs exist, and the growth is VmHWM − VmRSS before the call. The median of
//!   `--rss-samples` processes per path, interleaved.
//! - Time: the two paths alternate in one process (`--rounds` rounds after one untimed warm-up
//!   each); the median of each and their ratio.
//! - Equality: the value and both gradients of the two paths, max |Δ| relative to the largest entry.
//!
//! `cargo bench --bench chunked_loss -- [--tokens N] [--vocab N] [--hidden N] [--chunk N]
//! [--rounds N] [--rss-samples N] [--threads N]`. Under `cargo test --all-targets` (no `--bench`
//! argument) it runs a small smoke test: both paths agree; nothing is timed.

use std::process::Command;
use std::time::Instant;

use distill::criterion::{ChunkedLoss, ChunkedTarget, Divergence, SequenceKd};
use tch::{Device, Kind, Tensor};

#[derive(Clone, Debug)]
struct Args {
    tokens: i64,
    vocab: i64,
    hidden: i64,
    chunk: i64,
    rounds: usize,
    rss_samples: usize,
    threads: i32,
    rss_child: Option<String>,
    bench: bool,
}

fn parse() -> Args {
    let mut a = Args {
        tokens: 2048,
        vocab: 49_152,
        hidden: 576,
        chunk: 256,
        rounds: 5,
        rss_samples: 3,
        threads: 2,
        rss_child: None,
        bench: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--tokens" => a.tokens = value().parse().expect("--tokens N"),
            "--vocab" => a.vocab = value().parse().expect("--vocab N"),
            "--hidden" => a.hidden = value().parse().expect("--hidden N"),
            "--chunk" => a.chunk = value().parse().expect("--chunk N"),
            "--rounds" => a.rounds = value().parse().expect("--rounds N"),
            "--rss-samples" => a.rss_samples = value().parse().expect("--rss-samples N"),
            "--threads" => a.threads = value().parse().expect("--threads N"),
            "--rss-child" => a.rss_child = Some(value()),
            "--bench" => a.bench = true,
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

struct Inputs {
    hidden: Tensor,
    weight: Tensor,
    teacher: Tensor,
}

/// Hidden states ~ N(0, 1), a weight ~ N(0, 1/H) (logits of unit scale), teacher logits ~ N(0, 2²).
fn inputs(a: &Args) -> Inputs {
    tch::manual_seed(2048);
    let opts = (Kind::Float, Device::Cpu);
    Inputs {
        hidden: Tensor::randn([1, a.tokens, a.hidden], opts),
        weight: Tensor::randn([a.vocab, a.hidden], opts) / (a.hidden as f64).sqrt(),
        teacher: Tensor::randn([1, a.tokens, a.vocab], opts) * 2.0,
    }
}

/// One loss + backward of `path`; returns the value and the two gradients.
fn step(a: &Args, x: &Inputs, path: &str) -> (f64, Tensor, Tensor) {
    let h = x.hidden.detach().set_requires_grad(true);
    let w = x.weight.detach().set_requires_grad(true);
    let target = ChunkedTarget::Logits { teacher: &x.teacher, criterion: SequenceKd::new(Divergence::ForwardKl, 1.0) };
    let loss = match path {
        "chunked" => ChunkedLoss::new(a.chunk).f_loss(&h, &w, &target, None),
        "naive" => ChunkedLoss::new(a.chunk).f_loss_unchunked(&h, &w, &target, None),
        other => panic!("unknown path {other}"),
    }
    .expect("loss");
    loss.backward();
    (loss.double_value(&[]), h.grad(), w.grad())
}

fn proc_status_kib(field: &str) -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// In a child process: the RSS growth (KiB) of one loss + backward of `path`.
fn rss_child(a: &Args, path: &str) {
    let x = inputs(a);
    // Touch everything the step reads before the high-water mark is reset.
    let _ = (x.hidden.sum(Kind::Float), x.weight.sum(Kind::Float), x.teacher.sum(Kind::Float));
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = proc_status_kib("VmRSS").expect("VmRSS");
    let out = step(a, &x, path);
    let hwm = proc_status_kib("VmHWM").expect("VmHWM");
    drop(out);
    assert!(reset, "cannot reset VmHWM (/proc/self/clear_refs)");
    println!("growth_kib {}", hwm - before);
}

fn child_growth(a: &Args, path: &str) -> i64 {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .args(["--rss-child", path, "--tokens", &a.tokens.to_string(), "--vocab", &a.vocab.to_string()])
        .args(["--hidden", &a.hidden.to_string(), "--chunk", &a.chunk.to_string(), "--threads", &a.threads.to_string()])
        .output()
        .expect("child");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("growth_kib "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("child {path} failed: {}", String::from_utf8_lossy(&out.stderr)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// max |a − b| / max |b|.
fn rel(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[])
}

fn main() {
    let a = parse();
    tch::set_num_threads(a.threads);
    if let Some(path) = &a.rss_child {
        rss_child(&a, path);
        return;
    }
    if !a.bench {
        // Smoke test: small sizes, both paths agree.
        let small = Args { tokens: 64, vocab: 500, hidden: 32, chunk: 16, ..a };
        let x = inputs(&small);
        let (v0, h0, w0) = step(&small, &x, "naive");
        let (v1, h1, w1) = step(&small, &x, "chunked");
        assert!((v0 - v1).abs() <= 1e-5 * v0.abs(), "values {v0} vs {v1}");
        assert!(rel(&h1, &h0) < 1e-5 && rel(&w1, &w0) < 1e-5, "gradients differ");
        println!("chunked_loss smoke test: both paths agree");
        return;
    }
    println!(
        "chunked vocabulary loss: B = 1, T = {}, V = {}, H = {}, chunk {} tokens, f32, forward KL, {} threads",
        a.tokens, a.vocab, a.hidden, a.chunk, a.threads
    );
    let x = inputs(&a);
    // Equality, and one untimed warm-up of each path.
    let (v0, h0, w0) = step(&a, &x, "naive");
    let (v1, h1, w1) = step(&a, &x, "chunked");
    println!(
        "values: naive {v0:.9} chunked {v1:.9} (rel. Δ {:.2e}); gradients max rel. Δ: hidden {:.2e}, weight {:.2e}",
        (v1 - v0).abs() / v0.abs(),
        rel(&h1, &h0),
        rel(&w1, &w0)
    );
    drop((h0, w0, h1, w1));
    let (mut naive, mut chunked) = (Vec::new(), Vec::new());
    for round in 0..a.rounds {
        // Alternate which path goes first.
        let order: [&str; 2] = if round % 2 == 0 { ["naive", "chunked"] } else { ["chunked", "naive"] };
        for path in order {
            let start = Instant::now();
            drop(step(&a, &x, path));
            let secs = start.elapsed().as_secs_f64();
            if path == "naive" {
                naive.push(secs)
            } else {
                chunked.push(secs)
            }
        }
    }
    let (tn, tc) = (median(naive.clone()), median(chunked.clone()));
    println!("time (median of {} rounds): naive {tn:.3} s, chunked {tc:.3} s → {:.3}×", a.rounds, tc / tn);
    let (mut gn, mut gc) = (Vec::new(), Vec::new());
    for _ in 0..a.rss_samples {
        gn.push(child_growth(&a, "naive") as f64);
        gc.push(child_growth(&a, "chunked") as f64);
    }
    let (rn, rc) = (median(gn.clone()), median(gc.clone()));
    println!(
        "peak RSS growth of loss + backward (median of {} processes): naive {:.1} MiB, chunked {:.1} MiB → 1/{:.1}",
        a.rss_samples,
        rn / 1024.0,
        rc / 1024.0,
        rn / rc
    );
    eprintln!("samples: time naive {naive:?} chunked {chunked:?}; growth KiB naive {gn:?} chunked {gc:?}");
}
