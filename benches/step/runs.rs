//! Benchmarks (a) idle and (b)/(c) step, and the smoke test that replaces them under `cargo test`.

use distill::prelude::*;
use tch::nn::VarStore;
use tch::Device;

use crate::models::{batch_data, teacher_weights, Net, RawNet, TEACHER};
use crate::python::Python;
use crate::sides::{Front, Hand, Side};
use crate::summary::{add_ratio, Summary};
use crate::timing::{calibrate, fmt_ms, interleave, time_round};
use crate::Args;

/// Both nets of (a) compute the same forward, to this tolerance (absolute and relative).
const SAME_FORWARD: f64 = 1e-6;
/// Both sides of (b) compute the same loss, to this relative tolerance (the sums run in other orders).
const SAME_LOSS: f64 = 1e-4;
/// Untimed steps of the library's side before (b)'s rounds (the hand-written side warms up while
/// calibrating).
const STEP_WARM_UP: usize = 5;

pub(crate) fn bench_idle(args: &Args, batch: i64, summary: &mut Summary) {
    let src = teacher_weights();
    let dvs = VarStore::new(Device::Cpu);
    let dnet = Net::new(&dvs.root(), &TEACHER);
    let mut rvs = VarStore::new(Device::Cpu);
    let rnet = RawNet::new(&rvs.root(), &TEACHER);
    let mut dvs = dvs;
    dvs.copy(&src).unwrap();
    rvs.copy(&src).unwrap();
    let (xs, _) = batch_data(batch);
    let _guard = tch::no_grad_guard();
    let same = dnet.forward_t(&xs, false).allclose(&rnet.forward_t(&xs, false), SAME_FORWARD, SAME_FORWARD, false);
    assert!(same, "distill::nn and tch::nn nets disagree");
    let n = calibrate(|| drop(rnet.forward_t(&xs, false)), args.round_ms);
    let mut raw = || time_round(n, || drop(rnet.forward_t(&xs, false)));
    let mut ours = || time_round(n, || drop(dnet.forward_t(&xs, false)));
    let m = interleave(args.rounds, &mut [&mut raw, &mut ours]);
    let ratio = add_ratio(summary, "(a) idle: `distill::nn` / `tch::nn` forward", batch, m[1], m[0]);
    println!(
        "(a) idle   batch {batch:>3}: distill::nn {} vs tch::nn {} per forward → {ratio:.3}× (target ≤ 1.01×)",
        fmt_ms(m[1]),
        fmt_ms(m[0])
    );
}

pub(crate) fn bench_step(args: &Args, batch: i64, python: bool, summary: &mut Summary) {
    let device = args.device();
    let mut src = teacher_weights();
    src.set_device(device);
    let (xs, ys) = batch_data(batch);
    let (xs, ys) = (xs.to_device(device), ys.to_device(device));
    let mut hand = Hand::new(&src);
    let mut front = Front::new(&src);
    // On a GPU, a step is timed until its kernels have finished (on both sides alike).
    let wait = || {
        if let Device::Cuda(index) = device {
            tch::Cuda::synchronize(index as i64);
        }
    };
    // Both sides start from the same weights: their first losses must agree.
    let (lh, lf) = (hand.step(&xs, &ys).double_value(&[]), front.step(&xs, &ys).double_value(&[]));
    assert!((lh - lf).abs() <= SAME_LOSS * lh.abs(), "the two sides compute different steps: {lh} vs {lf}");
    let n = calibrate(
        || {
            drop(hand.step(&xs, &ys));
            wait()
        },
        args.round_ms,
    );
    for _ in 0..STEP_WARM_UP {
        drop(front.step(&xs, &ys));
    }
    wait();
    let mut py = if python && device == Device::Cpu {
        match Python::start(args, batch) {
            Ok(py) => Some(py),
            Err(e) => {
                println!("(c) python batch {batch:>3}: skipped: {e}");
                None
            }
        }
    } else {
        None
    };
    let mut run_hand = || {
        time_round(n, || {
            drop(hand.step(&xs, &ys));
            wait()
        })
    };
    let mut run_front = || {
        time_round(n, || {
            drop(front.step(&xs, &ys));
            wait()
        })
    };
    let m = match py.as_mut() {
        Some(py) => {
            let mut run_py = || py.round(n);
            interleave(args.rounds, &mut [&mut run_hand, &mut run_front, &mut run_py])
        }
        None => interleave(args.rounds, &mut [&mut run_hand, &mut run_front]),
    };
    let on = if device == Device::Cpu { String::new() } else { format!(" on {device:?}") };
    let label = if device == Device::Cpu {
        "(b) `distill!` step / hand-written tch step"
    } else {
        "(b) `distill!` step / hand-written tch step, on CUDA"
    };
    let ratio = add_ratio(summary, label, batch, m[1], m[0]);
    println!(
        "(b) step   batch {batch:>3}{on}: distill {} vs hand-written tch {} per step → {ratio:.3}× (target ≤ 1.03×)",
        fmt_ms(m[1]),
        fmt_ms(m[0])
    );
    if let Some(&p) = m.get(2) {
        let r = add_ratio(summary, "(c) `distill!` step / PyTorch hooks step", batch, m[1], p);
        summary.add("(c′) hand-written tch / PyTorch hooks", batch, format!("{:.3}×", m[0] / p));
        println!(
            "(c) python batch {batch:>3}: distill {} vs PyTorch hooks {} per step → {r:.3}× (hand-written tch {:.3}×){}",
            fmt_ms(m[1]),
            fmt_ms(p),
            m[0] / p,
            if batch == 8 { "; target ≤ 0.6×" } else { "" }
        );
    }
}

/// Both sides of (a) and (b) compute the same thing and run; no timing.
pub(crate) fn smoke_test() {
    let src = teacher_weights();
    for batch in [2, 8] {
        let (xs, ys) = batch_data(batch);
        let (mut hand, mut front) = (Hand::new(&src), Front::new(&src));
        for _ in 0..3 {
            let (lh, lf) = (hand.step(&xs, &ys).double_value(&[]), front.step(&xs, &ys).double_value(&[]));
            assert!((lh - lf).abs() <= SAME_LOSS * lh.abs(), "batch {batch}: {lh} vs {lf}");
        }
    }
    let (dvs, mut rvs) = (VarStore::new(Device::Cpu), VarStore::new(Device::Cpu));
    let (dnet, rnet) = (Net::new(&dvs.root(), &TEACHER), RawNet::new(&rvs.root(), &TEACHER));
    rvs.copy(&dvs).unwrap();
    let xs = batch_data(4).0;
    assert!(dnet.forward_t(&xs, false).allclose(&rnet.forward_t(&xs, false), SAME_FORWARD, SAME_FORWARD, false));
    crate::cached::smoke_test();
    println!("bench smoke test: both sides of each benchmark agree (timings: `scripts/bench`)");
}
