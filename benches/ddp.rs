//! Benchmark: one distillation step at the same global batch, run as 1 process × 2 threads and as
//! 2 processes × 1 thread (data-parallel over Gloo on localhost), side by side in one run.
//!
//! `cargo bench --bench ddp [-- --steps N --batches 128,512]` (under `cargo test --all-targets`,
//! without `--bench`, it runs once at batch 16 as a smoke test).
//!
//! The coordinator (this process) times the single-process step itself, then starts two copies of
//! this binary as ranks 0 and 1 and reads rank 0's timings. The step: teacher CNN (widths
//! 32/64/128/256) and student (8/16/32/64) on 28×28 inputs, learned adapters on blocks 1–3 with
//! MSE, KL on the logits, cross-entropy, SGD with momentum. In the data-parallel run, "all-reduce"
//! is the time spent in gradient averaging, waiting for the slower rank included.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use distill::prelude::*;
use distill_ddp::{DataParallel, DdpConfig, ProcessGroup};
use tch::nn::{OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Distillable)]
struct Block {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

#[derive(Debug, Distillable)]
struct Net {
    features: nn::Seq<Block>,
    classifier: nn::Linear,
}

impl Net {
    fn new(p: &nn::Path, widths: [i64; 4]) -> Net {
        let mut features = nn::Seq::new();
        let mut input = 1;
        for (i, (width, stride)) in widths.into_iter().zip([1, 2, 2, 2]).enumerate() {
            let b = p / "features" / i;
            let cfg = nn::ConvConfig { stride, padding: 1, bias: false, ..Default::default() };
            features.push(Block {
                conv: nn::conv2d(&b / "conv", input, width, 3, cfg),
                bn: nn::batch_norm2d(&b / "bn", width, Default::default()),
            });
            input = width;
        }
        Net { features, classifier: nn::linear(p / "classifier", input, 10, Default::default()) }
    }
}

impl nn::ModuleT for Block {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.bn.forward_t(&xs.apply(&self.conv), train).relu()
    }
}

impl nn::ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.features.forward_t(xs, train).mean_dim([2, 3].as_slice(), false, Kind::Float).apply(&self.classifier)
    }
}

distill! {
    struct Kd for Net => Net {
        f1: student.features[1].conv => learned_conv2d_adapter(teacher.features[1].conv) with Mse;
        f2: student.features[2].conv => learned_conv2d_adapter(teacher.features[2].conv) with Mse;
        f3: student.features[3].conv => learned_conv2d_adapter(teacher.features[3].conv) with Mse;
        kd: student => teacher with KlDiv::new(4.0);
    }
}

/// Median step time and median gradient-averaging time, in milliseconds.
struct Timing {
    step_ms: f64,
    all_reduce_ms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `steps` timed distillation steps (after warm-up) at `batch` samples on this process.
fn run_steps(group: Option<&ProcessGroup>, batch: i64, steps: usize) -> Timing {
    tch::manual_seed(0);
    let teacher_vs = VarStore::new(Device::Cpu);
    let teacher = Net::new(&teacher_vs.root(), [32, 64, 128, 256]);
    let vs = VarStore::new(Device::Cpu);
    let student = Net::new(&vs.root(), [8, 16, 32, 64]);
    let kd = Kd::new(vs.root() / "kd", &student, &teacher).expect("pairs");
    let ddp = group.map(|g| DataParallel::new(g, &[&vs]).expect("same parameters"));
    if let Some(ddp) = &ddp {
        ddp.broadcast_parameters().expect("broadcast");
    }
    let mut opt = tch::nn::Sgd { momentum: 0.9, ..Default::default() }.build(&vs, 0.01).expect("SGD");
    let xs = Tensor::randn([batch, 1, 28, 28], (Kind::Float, Device::Cpu));
    let ys = Tensor::randint(10, [batch], (Kind::Int64, Device::Cpu));
    let (mut step_times, mut reduce_times) = (Vec::new(), Vec::new());
    for i in 0..steps + 5 {
        let start = Instant::now();
        let out = kd.forward_t(&xs, true).expect("forward");
        let loss = out.student_output.cross_entropy_for_logits(&ys) + out.loss();
        opt.zero_grad();
        loss.backward();
        let reduce_start = Instant::now();
        if let Some(ddp) = &ddp {
            ddp.average_gradients().expect("all-reduce");
        }
        let reduce = reduce_start.elapsed();
        opt.step();
        if i >= 5 {
            step_times.push(start.elapsed().as_secs_f64() * 1e3);
            reduce_times.push(reduce.as_secs_f64() * 1e3);
        }
    }
    Timing { step_ms: median(step_times), all_reduce_ms: median(reduce_times) }
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
}

/// A rank started by the coordinator: prints `step_ms all_reduce_ms` on rank 0.
fn rank_main(batch: i64, steps: usize) {
    let config = DdpConfig::from_env().expect("rank environment").with_timeout(Duration::from_secs(120));
    let group = ProcessGroup::new(&config).expect("rendezvous");
    let timing = run_steps(Some(&group), batch / group.world_size() as i64, steps);
    group.println_main(format_args!("{} {}", timing.step_ms, timing.all_reduce_ms));
}

fn two_processes(batch: i64, steps: usize) -> Timing {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|rank| {
            Command::new(&exe)
                .args(["--rank-batch", &batch.to_string(), "--steps", &steps.to_string()])
                .envs([("RANK", rank.to_string()), ("WORLD_SIZE", "2".into())])
                .envs([("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", port.as_str())])
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a rank")
        })
        .collect();
    let outputs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().expect("rank output")).collect();
    for (rank, o) in outputs.iter().enumerate() {
        assert!(o.status.success(), "rank {rank} failed: {:?}", o.status);
    }
    let text = String::from_utf8_lossy(&outputs[0].stdout);
    let numbers: Vec<f64> = text.split_whitespace().map(|t| t.parse().expect("timings")).collect();
    Timing { step_ms: numbers[0], all_reduce_ms: numbers[1] }
}

fn main() {
    let tuned = distill::tune_allocator();
    let steps: usize = arg("--steps", "30").parse().expect("--steps N");
    if std::env::var_os("RANK").is_some() {
        tch::set_num_threads(1);
        rank_main(arg("--rank-batch", "128").parse().expect("--rank-batch N"), steps);
        return;
    }
    let mut batches: Vec<i64> =
        arg("--batches", "128,512").split(',').map(|b| b.trim().parse().expect("--batches B1,B2")).collect();
    let mut steps = steps;
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench binaries without `--bench`: run both sides once,
        // small, to check that they work; time nothing.
        println!("bench smoke test (timings: `cargo bench --bench ddp`)");
        (batches, steps) = (vec![16], 1);
    }
    println!("distillation step, same global batch: 1 process × 2 threads vs 2 processes × 1 thread (Gloo, localhost)");
    println!("{steps} timed steps after 5 warm-up, medians; allocator tuned: {tuned}");
    println!(
        "{:>6} | {:>14} | {:>14} | {:>11} | {:>15} | {:>15}",
        "batch", "1×2 step (ms)", "2×1 step (ms)", "2×1 / 1×2", "all-reduce (ms)", "all-reduce share"
    );
    for batch in batches {
        tch::set_num_threads(2);
        let single = run_steps(None, batch, steps);
        let double = two_processes(batch, steps);
        println!(
            "{batch:>6} | {:>14.1} | {:>14.1} | {:>10.2}× | {:>15.2} | {:>14.1}%",
            single.step_ms,
            double.step_ms,
            double.step_ms / single.step_ms,
            double.all_reduce_ms,
            100.0 * double.all_reduce_ms / double.step_ms
        );
    }
}
