//! Overhead benchmarks (DESIGN §5, issue 5). Ratios are measured side by side in one run: the
//! contenders alternate in short rounds (cycling through every order, each round after a few untimed
//! warm-up calls), and each side's median round is reported.
//!
//! (a) idle: the small CNN on `distill::nn` layers, nothing armed, vs the same CNN on raw `tch::nn`
//!     layers with the same weights (forward, eval, no grad);
//! (b) step: a full distillation step through `distill!` vs the same step
//!     hand-written in tch, whose forward returns the intermediates explicitly;
//! (c) python: (b)'s step in PyTorch eager with forward hooks (benches/python/step_hooks.py, served
//!     over a pipe so that its rounds interleave with the Rust rounds), threads pinned equal;
//! (d) rss: peak RSS of (b)'s two sides, each in its own process.
//!
//! Run everything with `scripts/bench` (or `cargo bench --bench step -- [OPTIONS]`).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use clap::Parser;
use distill::nn as dnn;
use distill::prelude::*;
use tch::nn::{self as tnn, Module as _, ModuleT as _, OptimizerConfig, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

const TEACHER: [i64; 3] = [16, 32, 64];
const STUDENT: [i64; 3] = [8, 16, 32];
const STRIDES: [i64; 3] = [1, 2, 2];

#[derive(Parser, Debug)]
#[command(
    about = "distill overhead benchmarks: (a) idle, (b) step vs hand-written tch, (c) vs PyTorch hooks, (d) peak RSS"
)]
struct Args {
    /// Which benchmarks to run (comma-separated: idle, step, python, rss).
    #[arg(long, value_delimiter = ',', default_value = "idle,step,python,rss")]
    only: Vec<String>,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "8,128")]
    batch: Vec<i64>,
    /// Intra-op threads, for libtorch here and for PyTorch in the Python baseline.
    #[arg(long, default_value_t = 2)]
    threads: i32,
    /// Interleaved rounds per side (a multiple of 6 visits every order of three contenders equally).
    #[arg(long, default_value_t = 54)]
    rounds: usize,
    /// Target duration of one round, in milliseconds.
    #[arg(long, default_value_t = 30)]
    round_ms: u64,
    /// Python interpreter for (c).
    #[arg(long, default_value = "python3")]
    python: String,
    /// Leave glibc's allocator untuned (to show what `distill::tune_allocator` buys).
    #[arg(long)]
    untuned: bool,
    /// Internal: run one side of (b) in this process and print its peak RSS.
    #[arg(long, hide = true)]
    rss_child: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

// ---- the small CNN, on distill::nn ------------------------------------------------------------------

#[derive(Debug, Distillable)]
struct Block {
    conv: dnn::Conv2D,
    bn: dnn::BatchNorm,
}

#[derive(Debug, Distillable)]
struct Net {
    features: dnn::Seq<Block>,
    classifier: dnn::Linear,
}

fn conv_config(stride: i64) -> tnn::ConvConfig {
    tnn::ConvConfig { stride, padding: 1, bias: false, ..Default::default() }
}

impl Net {
    fn new(p: &tnn::Path, widths: &[i64]) -> Net {
        let mut features = dnn::Seq::new();
        let mut cin = 1;
        for (i, (&w, &s)) in widths.iter().zip(&STRIDES).enumerate() {
            let b = p / "features" / i;
            features.push(Block {
                conv: dnn::conv2d(&b / "conv", cin, w, 3, conv_config(s)),
                bn: dnn::batch_norm2d(&b / "bn", w, Default::default()),
            });
            cin = w;
        }
        Net { features, classifier: dnn::linear(p / "classifier", cin, 10, Default::default()) }
    }
}

impl tnn::ModuleT for Block {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.bn.forward_t(&self.conv.forward(xs), train).relu()
    }
}

impl tnn::ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.classifier.forward(&self.features.forward_t(xs, train).mean_dim([2, 3].as_slice(), false, None))
    }
}

// ---- the same CNN on raw tch::nn, with a forward that returns the intermediates ---------------------

struct RawNet {
    convs: Vec<tnn::Conv2D>,
    bns: Vec<tnn::BatchNorm>,
    classifier: tnn::Linear,
}

/// What the hand-written step needs: conv 0 and 1 outputs, block 2 output, logits.
struct Intermediates {
    c0: Tensor,
    c1: Tensor,
    b2: Tensor,
    logits: Tensor,
}

impl RawNet {
    fn new(p: &tnn::Path, widths: &[i64]) -> RawNet {
        let (mut convs, mut bns, mut cin) = (Vec::new(), Vec::new(), 1);
        for (i, (&w, &s)) in widths.iter().zip(&STRIDES).enumerate() {
            let b = p / "features" / i;
            convs.push(tnn::conv2d(&b / "conv", cin, w, 3, conv_config(s)));
            bns.push(tnn::batch_norm2d(&b / "bn", w, Default::default()));
            cin = w;
        }
        RawNet { convs, bns, classifier: tnn::linear(p / "classifier", cin, 10, Default::default()) }
    }

    /// The plain forward, for (a): intermediates are dropped as soon as the next layer has run.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut h = xs.shallow_clone();
        for (conv, bn) in self.convs.iter().zip(&self.bns) {
            h = bn.forward_t(&conv.forward(&h), train).relu();
        }
        self.classifier.forward(&h.mean_dim([2, 3].as_slice(), false, None))
    }

    fn forward_intermediates(&self, xs: &Tensor, train: bool) -> Intermediates {
        let c0 = self.convs[0].forward(xs);
        let b0 = self.bns[0].forward_t(&c0, train).relu();
        let c1 = self.convs[1].forward(&b0);
        let b1 = self.bns[1].forward_t(&c1, train).relu();
        let c2 = self.convs[2].forward(&b1);
        let b2 = self.bns[2].forward_t(&c2, train).relu();
        let logits = self.classifier.forward(&b2.mean_dim([2, 3].as_slice(), false, None));
        Intermediates { c0, c1, b2, logits }
    }
}

// ---- losses and adapters -----------------------------------------------------------------------------

mod hand {
    //! The hand-written side's losses and adapters, written out in tch as a user without the library
    //! would (same formulas as `distill::criterion`'s `Mse`, `AttentionTransfer`, `KlDiv`).
    use super::*;

    pub fn mse(s: &Tensor, t: &Tensor) -> Tensor {
        s.mse_loss(t, Reduction::Mean)
    }

    pub fn attention_transfer(s: &Tensor, t: &Tensor) -> Tensor {
        let am = |x: &Tensor| {
            let a = x.pow_tensor_scalar(2).mean_dim([1].as_slice(), false, None).flatten(1, -1);
            let norm = a.norm_scalaropt_dim(2, [1].as_slice(), true).clamp_min(1e-12);
            a / norm
        };
        (am(s) - am(t)).pow_tensor_scalar(2).mean(None)
    }

    pub fn kl_div(s: &Tensor, t: &Tensor, temperature: f64) -> Tensor {
        let n = s.size()[0] as f64;
        let ls = (s / temperature).log_softmax(-1, None);
        let pt = (t / temperature).softmax(-1, None);
        ls.kl_div(&pt, Reduction::Sum, false) * (temperature * temperature / n)
    }

    /// A 1×1 conv without bias selecting teacher channel `j` for student channel `j` (the student is
    /// the first channels of the teacher).
    pub fn selection_adapter(p: tnn::Path, teacher: i64, student: i64) -> tnn::Conv2D {
        let conv = tnn::conv2d(p, teacher, student, 1, tnn::ConvConfig { bias: false, ..Default::default() });
        let eye = Tensor::eye_m(student, teacher, (Kind::Float, Device::Cpu)).view([student, teacher, 1, 1]);
        tch::no_grad(|| conv.ws.shallow_clone().copy_(&eye));
        conv
    }
}

/// Copies the first channels of `teacher` into `student` (a pruned copy, as the adapters expect).
fn slice_into(student_vs: &VarStore, teacher_vs: &VarStore) {
    let teacher = teacher_vs.variables();
    tch::no_grad(|| {
        for (name, mut var) in student_vs.variables() {
            let src = &teacher[&name];
            let mut view = src.shallow_clone();
            for (dim, &size) in var.size().iter().enumerate() {
                view = view.narrow(dim as i64, 0, size);
            }
            var.copy_(&view);
        }
    });
}

// ---- the two Rust sides of (b) -------------------------------------------------------------------------

trait Side {
    /// One training step; returns the loss (before the update).
    fn step(&mut self, xs: &Tensor, ys: &Tensor) -> Tensor;
}

/// Hand-written tch: raw layers, explicit intermediates, losses written out.
struct Hand {
    teacher: RawNet,
    student: RawNet,
    adapters: [tnn::Conv2D; 2],
    opt: tnn::Optimizer,
    _vs: (VarStore, VarStore),
}

impl Hand {
    fn new(teacher_src: &VarStore) -> Hand {
        let mut tvs = VarStore::new(Device::Cpu);
        let teacher = RawNet::new(&tvs.root(), &TEACHER);
        tvs.copy(teacher_src).expect("same variables");
        tvs.freeze();
        let svs = VarStore::new(Device::Cpu);
        let student = RawNet::new(&svs.root(), &STUDENT);
        slice_into(&svs, &tvs);
        let kd = svs.root() / "kd";
        let adapters = [
            hand::selection_adapter(&kd / "f0", TEACHER[0], STUDENT[0]),
            hand::selection_adapter(&kd / "f1", TEACHER[1], STUDENT[1]),
        ];
        let opt = tnn::Sgd { momentum: 0.9, ..Default::default() }.build(&svs, 0.01).unwrap();
        Hand { teacher, student, adapters, opt, _vs: (tvs, svs) }
    }
}

impl Side for Hand {
    fn step(&mut self, xs: &Tensor, ys: &Tensor) -> Tensor {
        let t = tch::no_grad(|| self.teacher.forward_intermediates(xs, false));
        let s = self.student.forward_intermediates(xs, true);
        let loss = s.logits.cross_entropy_for_logits(ys)
            + hand::mse(&s.c0, &self.adapters[0].forward(&t.c0))
            + hand::mse(&s.c1, &self.adapters[1].forward(&t.c1))
            + hand::attention_transfer(&s.b2, &t.b2)
            + hand::kl_div(&s.logits, &t.logits, 4.0);
        self.opt.backward_step(&loss);
        loss
    }
}

distill! {
    /// (b)'s step through the DSL: two adapter pairs, attention transfer, KD on the logits.
    struct SmallKd for Net => Net {
        f0: student.features[0].conv => conv2d_adapter(teacher.features[0].conv) with Mse;
        f1: student.features[1].conv => conv2d_adapter(teacher.features[1].conv) with Mse;
        at2: student.features[2] => teacher.features[2] with AttentionTransfer::default();
        logits: student => teacher with KlDiv::new(4.0);
    }
}

/// Through `distill!`: `distill::nn` models, pairs captured by the engine, losses by the library.
struct Front {
    kd: SmallKd<'static>,
    opt: tnn::Optimizer,
}

impl Front {
    fn new(teacher_src: &VarStore) -> Front {
        // Leaked: `SmallKd` borrows both models, and the bench keeps them for the whole process.
        let tvs: &'static mut VarStore = Box::leak(Box::new(VarStore::new(Device::Cpu)));
        let teacher: &'static Net = Box::leak(Box::new(Net::new(&tvs.root(), &TEACHER)));
        tvs.copy(teacher_src).expect("same variables");
        tvs.freeze();
        let svs: &'static VarStore = Box::leak(Box::new(VarStore::new(Device::Cpu)));
        let student: &'static Net = Box::leak(Box::new(Net::new(&svs.root(), &STUDENT)));
        slice_into(svs, tvs);
        let kd = SmallKd::new(svs.root() / "kd", student, teacher).expect("valid pairs");
        let opt = tnn::Sgd { momentum: 0.9, ..Default::default() }.build(svs, 0.01).unwrap();
        Front { kd, opt }
    }
}

impl Side for Front {
    fn step(&mut self, xs: &Tensor, ys: &Tensor) -> Tensor {
        let out = self.kd.forward_t(xs, true).expect("checked pairs");
        let loss = out.student_output.cross_entropy_for_logits(ys) + out.loss();
        self.opt.backward_step(&loss);
        loss
    }
}

// ---- measuring ------------------------------------------------------------------------------------------

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Steps per round so that one round lasts about `round_ms`.
fn calibrate(mut f: impl FnMut(), round_ms: u64) -> usize {
    for _ in 0..5 {
        f();
    }
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed().as_millis() < 50 || n < 3 {
        f();
        n += 1;
    }
    let per = start.elapsed().as_secs_f64() / n as f64;
    ((round_ms as f64 / 1e3 / per).round() as usize).max(1)
}

/// Seconds per call over `n` calls, after a few untimed ones: the first calls after another
/// contender's round pay for cold caches and sleeping worker threads, whoever runs them.
fn time_round(n: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warm_up(n) {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_secs_f64() / n as f64
}

/// Untimed calls before each round (the Python server does the same).
fn warm_up(n: usize) -> usize {
    (n / 10).max(2)
}

/// Medians (seconds per call) of interleaved rounds of each contender. The order cycles through
/// every permutation, so each contender follows each other one equally often.
fn interleave(rounds: usize, contenders: &mut [&mut dyn FnMut() -> f64]) -> Vec<f64> {
    let k = contenders.len();
    let orders = permutations(k);
    let mut times = vec![Vec::with_capacity(rounds); k];
    for r in 0..rounds {
        for &i in &orders[r % orders.len()] {
            times[i].push(contenders[i]());
        }
    }
    times.into_iter().map(median).collect()
}

fn permutations(k: usize) -> Vec<Vec<usize>> {
    if k <= 1 {
        return vec![(0..k).collect()];
    }
    let mut out = Vec::new();
    for p in permutations(k - 1) {
        for at in 0..k {
            let mut q = p.clone();
            q.insert(at, k - 1);
            out.push(q);
        }
    }
    out
}

/// Adds `A / B = ratio×` for two median times to the summary table and returns the ratio.
fn add_ratio(summary: &mut Summary, bench: &'static str, batch: i64, a: f64, b: f64) -> f64 {
    let ratio = a / b;
    summary.add(bench, batch, format!("{} / {} = {ratio:.3}×", fmt_ms(a), fmt_ms(b)));
    ratio
}

fn fmt_ms(s: f64) -> String {
    format!("{:.3} ms", s * 1e3)
}

/// The random teacher both sides start from.
fn teacher_weights() -> VarStore {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let _ = Net::new(&vs.root(), &TEACHER);
    vs
}

fn batch_data(batch: i64) -> (Tensor, Tensor) {
    tch::manual_seed(1);
    (
        Tensor::randn([batch, 1, 28, 28], (Kind::Float, Device::Cpu)),
        Tensor::randint(10, [batch], (Kind::Int64, Device::Cpu)),
    )
}

fn bench_idle(args: &Args, batch: i64, summary: &mut Summary) {
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
    let same = dnet.forward_t(&xs, false).allclose(&rnet.forward_t(&xs, false), 1e-6, 1e-6, false);
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

/// The Python baseline, served over a pipe.
struct Python {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/python/step_hooks.py")
}

impl Python {
    fn start(args: &Args, batch: i64) -> Result<Python, String> {
        let mut child = Command::new(&args.python)
            .arg(script())
            .args(["--serve", "--batch", &batch.to_string(), "--threads", &args.threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", args.python))?;
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim() != "ready" {
            return Err(format!("the Python baseline did not start (is torch importable? PYTHONPATH is set by scripts/libtorch.sh); said {line:?}"));
        }
        Ok(Python { child, stdin, stdout })
    }

    /// Seconds per step over `n` steps.
    fn round(&mut self, n: usize) -> f64 {
        writeln!(self.stdin, "{n}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().parse::<f64>().expect("Python answers with seconds") / n as f64
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

fn bench_step(args: &Args, batch: i64, python: bool, summary: &mut Summary) {
    let src = teacher_weights();
    let (xs, ys) = batch_data(batch);
    let mut hand = Hand::new(&src);
    let mut front = Front::new(&src);
    // Both sides start from the same weights: their first losses must agree.
    let (lh, lf) = (hand.step(&xs, &ys).double_value(&[]), front.step(&xs, &ys).double_value(&[]));
    assert!((lh - lf).abs() <= 1e-4 * lh.abs(), "the two sides compute different steps: {lh} vs {lf}");
    let n = calibrate(|| drop(hand.step(&xs, &ys)), args.round_ms);
    for _ in 0..5 {
        drop(front.step(&xs, &ys));
    }
    let mut py = if python {
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
    let mut run_hand = || time_round(n, || drop(hand.step(&xs, &ys)));
    let mut run_front = || time_round(n, || drop(front.step(&xs, &ys)));
    let m = match py.as_mut() {
        Some(py) => {
            let mut run_py = || py.round(n);
            interleave(args.rounds, &mut [&mut run_hand, &mut run_front, &mut run_py])
        }
        None => interleave(args.rounds, &mut [&mut run_hand, &mut run_front]),
    };
    let ratio = add_ratio(summary, "(b) `distill!` step / hand-written tch step", batch, m[1], m[0]);
    println!(
        "(b) step   batch {batch:>3}: distill {} vs hand-written tch {} per step → {ratio:.3}× (target ≤ 1.03×)",
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
fn smoke_test() {
    let src = teacher_weights();
    for batch in [2, 8] {
        let (xs, ys) = batch_data(batch);
        let (mut hand, mut front) = (Hand::new(&src), Front::new(&src));
        for _ in 0..3 {
            let (lh, lf) = (hand.step(&xs, &ys).double_value(&[]), front.step(&xs, &ys).double_value(&[]));
            assert!((lh - lf).abs() <= 1e-4 * lh.abs(), "batch {batch}: {lh} vs {lf}");
        }
    }
    let (dvs, mut rvs) = (VarStore::new(Device::Cpu), VarStore::new(Device::Cpu));
    let (dnet, rnet) = (Net::new(&dvs.root(), &TEACHER), RawNet::new(&rvs.root(), &TEACHER));
    rvs.copy(&dvs).unwrap();
    let xs = batch_data(4).0;
    assert!(dnet.forward_t(&xs, false).allclose(&rnet.forward_t(&xs, false), 1e-6, 1e-6, false));
    println!("bench smoke test: both sides of each benchmark agree (timings: `scripts/bench`)");
}

/// Runs one side of (b) for a while in this process and prints its peak RSS.
fn rss_child(args: &Args, side: &str) {
    let batch = args.batch[0];
    let src = teacher_weights();
    let (xs, ys) = batch_data(batch);
    let mut s: Box<dyn Side> = match side {
        "hand" => Box::new(Hand::new(&src)),
        "distill" => Box::new(Front::new(&src)),
        other => panic!("unknown side {other}"),
    };
    // Reset the kernel's high-water mark (VmHWM) so that it covers the training steps only.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = proc_status_kib("VmRSS");
    for _ in 0..RSS_STEPS {
        drop(s.step(&xs, &ys));
    }
    println!("maxrss_kib {}", maxrss_kib());
    if let (true, Some(before), Some(hwm)) = (reset, before, proc_status_kib("VmHWM")) {
        println!("steps_kib {}", hwm - before);
    }
}

/// A `kB` field of `/proc/self/status` (Linux).
/// Training steps per RSS process (memory peaks within the first few).
const RSS_STEPS: usize = 50;
/// Processes per side for (d); the median is reported.
const RSS_SAMPLES: usize = 5;

fn proc_status_kib(field: &str) -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()
}

fn maxrss_kib() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss
}

/// What a child process reported: peak RSS (KiB) and, where the kernel allows resetting the
/// high-water mark, how far RSS rose during the training steps.
#[derive(Clone, Copy, Debug)]
struct Rss {
    peak: i64,
    steps: Option<i64>,
}

fn child_rss(mut cmd: Command) -> Option<Rss> {
    let out = cmd.stderr(Stdio::inherit()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok());
    Some(Rss { peak: field("maxrss_kib ")?, steps: field("steps_kib ") })
}

fn bench_rss(args: &Args, batch: i64, summary: &mut Summary) {
    let exe = std::env::current_exe().unwrap();
    let side = |name: &str| {
        let mut cmd = Command::new(&exe);
        cmd.args(["--rss-child", name, "--batch", &batch.to_string(), "--threads", &args.threads.to_string()]);
        if args.untuned {
            cmd.arg("--untuned");
        }
        child_rss(cmd)
    };
    let python = || {
        let mut py = Command::new(&args.python);
        py.arg(script()).args(["--rss", "--steps", &RSS_STEPS.to_string(), "--batch", &batch.to_string()]);
        py.args(["--threads", &args.threads.to_string()]);
        child_rss(py)
    };
    // Several processes per side, interleaved; the median of each (samples scatter by 1 MiB at batch 8
    // and up to ±8 MiB at batch 128: heap layout depends on how the two worker threads interleave).
    let (mut hands, mut fronts, mut pythons) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RSS_SAMPLES {
        hands.extend(side("hand"));
        fronts.extend(side("distill"));
        pythons.extend(python());
    }
    if std::env::var_os("DISTILL_BENCH_VERBOSE").is_some() {
        eprintln!("rss samples (KiB): hand {hands:?}, distill {fronts:?}, python {pythons:?}");
    }
    let mid = |v: &[Rss], f: fn(&Rss) -> Option<i64>| {
        let mut v: Vec<i64> = v.iter().filter_map(f).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    };
    let peak = |r: &Rss| Some(r.peak);
    let steps = |r: &Rss| r.steps;
    let (hand, front, py) = (mid(&hands, peak), mid(&fronts, peak), mid(&pythons, peak));
    let (hand_steps, front_steps, py_steps) = (mid(&hands, steps), mid(&fronts, steps), mid(&pythons, steps));
    let mib = |k: Option<i64>| k.map_or("n/a".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    let ratio = |a: Option<i64>, b: Option<i64>| match (a, b) {
        (Some(a), Some(b)) if b > 0 => format!("{:.3}×", a as f64 / b as f64),
        _ => "n/a".into(),
    };
    summary.add(
        "(d) peak RSS, `distill!` / hand-written",
        batch,
        format!("{} / {} = {}", mib(front), mib(hand), ratio(front, hand)),
    );
    summary.add(
        "(d) RSS growth during the steps, `distill!` / hand-written",
        batch,
        format!("{} / {} = {}", mib(front_steps), mib(hand_steps), ratio(front_steps, hand_steps)),
    );
    summary.add(
        "(d′) PyTorch process: peak RSS (growth during the steps)",
        batch,
        format!("{} ({})", mib(py), mib(py_steps)),
    );
    println!(
        "(d) rss    batch {batch:>3}: distill {} vs hand-written tch {} peak RSS → {}; during the steps +{} vs +{} → {} (PyTorch hooks: {}, +{})",
        mib(front),
        mib(hand),
        ratio(front, hand),
        mib(front_steps),
        mib(hand_steps),
        ratio(front_steps, hand_steps),
        mib(py),
        mib(py_steps)
    );
}

fn main() {
    let args = Args::parse();
    let tuned = if args.untuned { false } else { distill::tune_allocator() };
    tch::set_num_threads(args.threads);
    if let Some(side) = &args.rss_child {
        rss_child(&args, side);
        return;
    }
    if !args.bench {
        // `cargo test --all-targets` runs bench binaries without `--bench`: check, do not time.
        smoke_test();
        return;
    }
    let on = |name: &str| args.only.iter().any(|o| o == name);
    println!(
        "distill benchmarks: {} threads, allocator tuned: {tuned}, {} interleaved rounds of ~{} ms per side, medians",
        args.threads, args.rounds, args.round_ms
    );
    println!("small CNN: teacher {TEACHER:?}, student {STUDENT:?}, 28×28; step = 2 adapter pairs (MSE) + AT + KD (T=4) + CE, SGD");
    let mut summary = Summary::default();
    for &batch in &args.batch {
        if on("idle") {
            bench_idle(&args, batch, &mut summary);
        }
        if on("step") || on("python") {
            bench_step(&args, batch, on("python"), &mut summary);
        }
        if on("rss") {
            bench_rss(&args, batch, &mut summary);
        }
    }
    summary.print(&args.batch);
}

/// The run's results as a markdown table (benchmarks × batch sizes), for BENCHMARKS.md.
#[derive(Default)]
struct Summary {
    rows: Vec<(&'static str, Vec<(i64, String)>)>,
}

impl Summary {
    fn add(&mut self, bench: &'static str, batch: i64, cell: String) {
        match self.rows.iter_mut().find(|(b, _)| *b == bench) {
            Some((_, cells)) => cells.push((batch, cell)),
            None => self.rows.push((bench, vec![(batch, cell)])),
        }
    }

    fn print(&self, batches: &[i64]) {
        println!("\n| benchmark |{}", batches.iter().map(|b| format!(" batch {b} |")).collect::<String>());
        println!("|---|{}", "---|".repeat(batches.len()));
        for (bench, cells) in &self.rows {
            let cell = |b: i64| cells.iter().find(|(x, _)| *x == b).map_or("—".to_owned(), |(_, c)| c.clone());
            println!("| {bench} |{}", batches.iter().map(|&b| format!(" {} |", cell(b))).collect::<String>());
        }
    }
}
