//! Data-parallel training across real processes on localhost, over Gloo: each multi-rank test
//! re-executes this binary once per rank (see `harness`) and checks what the ranks wrote.

// The workspace's one set of error-bound helpers (this test uses a few of them).
#[allow(dead_code)]
#[path = "../../tests/common/bounds.rs"]
mod bounds;
mod harness;

use std::time::Duration;

use distill::prelude::*;
use distill_ddp::{DataParallel, DdpConfig, DdpError, DistributedSampler, ProcessGroup};
use harness::{assert_all_succeeded, free_port, run_ranks, scratch, worker};
use tch::nn::{OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

const DEADLINE: Duration = Duration::from_secs(180);

#[derive(Debug, Distillable)]
struct Net {
    conv: nn::Conv2D,
    fc: nn::Linear,
}

impl Net {
    fn new(p: &nn::Path, width: i64) -> Self {
        let cfg = nn::ConvConfig { padding: 1, ..Default::default() };
        Net {
            conv: nn::conv2d(p / "conv", 1, width, 3, cfg),
            fc: nn::linear(p / "fc", width * 36, 3, Default::default()),
        }
    }
}

impl nn::ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.conv.forward_t(xs, train).relu().flatten(1, -1).apply_t(&self.fc, train)
    }
}

distill! {
    /// Features through a learned adapter, and the logits.
    struct Kd for Net => Net {
        f: student.conv => learned_conv2d_adapter(teacher.conv) with Mse;
        logits: student => teacher with KlDiv::new(4.0);
    }
}

const SAMPLES: usize = 32;
const GLOBAL_BATCH: usize = 8;
const STEPS: usize = 3;

/// Trains the student and its adapter for `STEPS` SGD steps of `GLOBAL_BATCH` samples, split over
/// the ranks of `group` (one process when `None`); returns their store (the adapter under `kd`), its
/// values before the first step, and (in one process) the largest per-sample gradient magnitude
/// `(1/B) Σ_b |g_b|` of any parameter at any step: what the batch's gradient sums.
fn distill_steps(group: Option<&ProcessGroup>) -> (VarStore, Vec<(String, Tensor)>, f64) {
    let (rank, world) = group.map_or((0, 1), |g| (g.rank(), g.world_size()));
    // Rank-dependent initialisation: the broadcast must make it irrelevant.
    tch::manual_seed(10 + rank as i64);
    let teacher_vs = VarStore::new(Device::Cpu);
    let mut teacher_vs = teacher_vs;
    let teacher = Net::new(&teacher_vs.root(), 6);
    teacher_vs.freeze();
    let student_vs = VarStore::new(Device::Cpu);
    let student = Net::new(&student_vs.root(), 3);
    let kd = Kd::new(student_vs.root() / "kd", &student, &teacher).unwrap();
    tch::manual_seed(99);
    let xs = Tensor::randn([SAMPLES as i64, 1, 6, 6], (Kind::Float, Device::Cpu));
    let ys = Tensor::randint(3, [SAMPLES as i64], (Kind::Int64, Device::Cpu));

    let ddp = group.map(|g| DataParallel::with_bucket_bytes(g, &[&student_vs, &teacher_vs], 256).unwrap());
    if let Some(ddp) = &ddp {
        assert!(ddp.bucket_count() > 1, "small buckets, so that bucketing is exercised");
        ddp.broadcast_parameters().unwrap();
    }
    let initial = snapshot(&student_vs);
    let mut opt = tch::nn::Sgd { momentum: 0.9, ..Default::default() }.build(&student_vs, 0.05).unwrap();
    let order = DistributedSampler::new(SAMPLES, rank, world).unwrap().seed(5).indices(0);
    let per_rank = GLOBAL_BATCH / world;
    let mut magnitude = 0f64;
    for step in 0..STEPS {
        let batch = Tensor::from_slice(&order[step * per_rank..(step + 1) * per_rank]);
        let (bx, by) = (xs.index_select(0, &batch), ys.index_select(0, &batch));
        if ddp.is_none() {
            // The batch's loss is the mean of the samples' losses: its gradient sums theirs.
            let vars = student_vs.trainable_variables();
            let mut sums: Vec<Tensor> = vars.iter().map(Tensor::zeros_like).collect();
            for i in 0..per_rank as i64 {
                let out = kd.forward_t(&bx.narrow(0, i, 1), true).unwrap();
                let loss = out.student_output.cross_entropy_for_logits(&by.narrow(0, i, 1)) + out.loss();
                opt.zero_grad();
                loss.backward();
                for (sum, var) in sums.iter_mut().zip(&vars) {
                    *sum += var.grad().abs();
                }
            }
            for sum in &sums {
                magnitude = magnitude.max(sum.max().double_value(&[]) / per_rank as f64);
            }
        }
        let out = kd.forward_t(&bx, true).unwrap();
        let loss = out.student_output.cross_entropy_for_logits(&by) + out.loss();
        match &ddp {
            Some(ddp) => ddp.backward_step(&mut opt, &loss).unwrap(),
            None => opt.backward_step(&loss),
        }
    }
    (student_vs, initial, magnitude)
}

fn read(path: &std::path::Path) -> Vec<(String, Tensor)> {
    let mut named = Tensor::read_safetensors(path).unwrap();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

fn max_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    assert_eq!(a.iter().map(|x| &x.0).collect::<Vec<_>>(), b.iter().map(|x| &x.0).collect::<Vec<_>>());
    a.iter().zip(b).map(|((_, x), (_, y))| (x - y).abs().max().double_value(&[])).fold(0.0, f64::max)
}

fn snapshot(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

#[test]
fn two_ranks_with_batch_b_match_one_rank_with_batch_2b() {
    if let Some(w) = worker() {
        let group = w.join(Duration::from_secs(60));
        let (student_vs, _, _) = distill_steps(Some(&group));
        student_vs.save(w.file("student.safetensors")).unwrap();
        return;
    }
    let out = scratch("equivalence");
    assert_all_succeeded(&run_ranks(
        "two_ranks_with_batch_b_match_one_rank_with_batch_2b",
        2,
        &out,
        DEADLINE,
        |_| vec![],
    ));
    let (student_vs, initial, magnitude) = distill_steps(None);
    let reference = snapshot(&student_vs);
    let names: Vec<&str> = reference.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["conv.bias", "conv.weight", "fc.bias", "fc.weight", "kd.f.weight"], "student and adapter");
    let rank0 = read(&out.join("rank0-student.safetensors"));
    let rank1 = read(&out.join("rank1-student.safetensors"));
    assert_eq!(max_diff(&rank0, &rank1), 0.0, "the ranks hold different parameters");
    let diff = max_diff(&rank0, &reference);
    // The two runs differ only in how a step's gradient sums the samples' (two halves averaged, or
    // all at once): each rounds relative to `G = (1/B) Σ_b |g_b|` through the conv's reduction over
    // the batch's B · 36 positions and the elementwise chains (`bounds::sum_depth`,
    // `CHAIN_DEPTH`), so a step's gradients differ by `δg ≤ 2 · depth · u · G`. SGD with momentum m
    // moves the parameters by lr · Σ_s Σ_{j≤s} m^(s−j) g_j, which carries `δg` into them; each
    // step's parameter difference feeds back into the next gradients by at most itself (lr‖H‖ ≤ 1,
    // which a descent at this rate needs), hence the factor 2^STEPS.
    let (lr, momentum) = (0.05, 0.9f64);
    let carried: f64 = (1..=STEPS).map(|s| (0..s).map(|j| momentum.powi(j as i32)).sum::<f64>()).sum();
    let depth = bounds::CHAIN_DEPTH + bounds::sum_depth(GLOBAL_BATCH * 36);
    let bound = 2f64.powi(STEPS as i32) * lr * carried * 2.0 * depth * bounds::U_F32 * magnitude;
    println!("parameters after {STEPS} steps: 2 ranks vs 1 rank differ by at most {diff:e} (bound {bound:e})");
    assert!(diff <= bound, "2 ranks × {} differ from 1 rank × {GLOBAL_BATCH} by {diff} > {bound:e}", GLOBAL_BATCH / 2);
    // The steps moved the parameters: the comparison is not between two initial states.
    let moved = max_diff(&snapshot(&student_vs), &initial);
    assert!(moved > 1e-3, "the student moved by only {moved}");
    // The bound can still tell a mistake: it is below 10⁻³ of how far the steps moved the parameters.
    assert!(bound < 1e-3 * moved, "the bound {bound:e} cannot tell a 1e-3 error in a movement of {moved:e}");
}

fn linear_store(seed: i64) -> VarStore {
    tch::manual_seed(seed);
    let vs = VarStore::new(Device::Cpu);
    let _ = tch::nn::linear(vs.root() / "fc", 5, 4, Default::default());
    let mut stats = vs.root().zeros_no_train("running_mean", &[4]);
    tch::no_grad(|| stats.copy_(&Tensor::randn([4], (Kind::Float, Device::Cpu))));
    vs
}

#[test]
fn broadcast_makes_differently_seeded_ranks_identical() {
    if let Some(w) = worker() {
        let group = w.join(Duration::from_secs(60));
        let vs = linear_store(100 + w.rank as i64);
        vs.save(w.file("before.safetensors")).unwrap();
        let ddp = DataParallel::new(&group, &[&vs]).unwrap();
        assert_eq!(ddp.parameter_names(), ["0/fc.bias", "0/fc.weight"]);
        ddp.broadcast_parameters().unwrap();
        vs.save(w.file("after.safetensors")).unwrap();
        return;
    }
    let out = scratch("broadcast");
    assert_all_succeeded(&run_ranks(
        "broadcast_makes_differently_seeded_ranks_identical",
        2,
        &out,
        DEADLINE,
        |_| vec![],
    ));
    let before0 = read(&out.join("rank0-before.safetensors"));
    let before1 = read(&out.join("rank1-before.safetensors"));
    assert_eq!(before0.len(), 3, "weight, bias and a buffer");
    assert!(before0.iter().zip(&before1).all(|((_, a), (_, b))| a != b), "seeds gave different values");
    assert_eq!(max_diff(&read(&out.join("rank0-after.safetensors")), &before0), 0.0);
    assert_eq!(max_diff(&read(&out.join("rank1-after.safetensors")), &before0), 0.0);
}

#[test]
fn a_rank_that_exits_early_makes_the_other_fail_within_the_timeout() {
    if let Some(w) = worker() {
        let group = w.join(Duration::from_secs(5));
        group.barrier().unwrap();
        if w.rank == 1 {
            std::process::exit(0);
        }
        let t = Tensor::ones([16], (Kind::Float, Device::Cpu));
        let err = group.all_reduce_sum(&[&t]).and_then(|()| group.all_reduce_sum(&[&t])).unwrap_err();
        assert!(matches!(err, DdpError::Backend { op: "all_reduce", .. }), "{err:?}");
        std::fs::write(w.file("error.txt"), err.to_string()).unwrap();
        return;
    }
    let out = scratch("early-exit");
    let ranks =
        run_ranks("a_rank_that_exits_early_makes_the_other_fail_within_the_timeout", 2, &out, DEADLINE, |_| vec![]);
    assert_all_succeeded(&ranks);
    let message = std::fs::read_to_string(out.join("rank0-error.txt")).unwrap();
    assert!(message.starts_with("all_reduce failed: "), "{message}");
}

#[test]
fn a_rank_that_stops_taking_part_makes_the_other_time_out() {
    if let Some(w) = worker() {
        let group = w.join(Duration::from_secs(2));
        group.barrier().unwrap();
        if w.rank == 1 {
            // Alive, connected, silent: only the timeout can end rank 0's wait. Leaves once rank 0
            // has written its result (or after a minute).
            let done = w.out.join("rank0-error.txt");
            for _ in 0..600 {
                if done.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            std::process::exit(0);
        }
        let t = Tensor::ones([16], (Kind::Float, Device::Cpu));
        let err = group.all_reduce_sum(&[&t]).unwrap_err();
        std::fs::write(w.file("error.txt"), err.to_string()).unwrap();
        std::process::exit(0);
    }
    let out = scratch("silent-peer");
    let ranks = run_ranks(
        "a_rank_that_stops_taking_part_makes_the_other_time_out",
        2,
        &out,
        Duration::from_secs(60),
        |_| vec![],
    );
    assert!(ranks[0].succeeded(), "rank 0: {:?}\n{}", ranks[0].status, ranks[0].output);
    let message = std::fs::read_to_string(out.join("rank0-error.txt")).unwrap();
    assert!(message.starts_with("all_reduce failed: ") && message.to_lowercase().contains("timed out"), "{message}");
}

#[test]
fn ranks_with_different_parameters_all_fail() {
    if let Some(w) = worker() {
        let group = w.join(Duration::from_secs(60));
        let vs = linear_store(1);
        if w.rank == 1 {
            let _ = vs.root().zeros("extra", &[2]);
        }
        let err = DataParallel::new(&group, &[&vs]).unwrap_err();
        assert!(matches!(err, DdpError::RankMismatch(_)), "{err:?}");
        std::fs::write(w.file("error.txt"), err.to_string()).unwrap();
        return;
    }
    let out = scratch("mismatch");
    assert_all_succeeded(&run_ranks("ranks_with_different_parameters_all_fail", 2, &out, DEADLINE, |_| vec![]));
    let message = std::fs::read_to_string(out.join("rank0-error.txt")).unwrap();
    assert!(message.contains("1 rank(s) have other parameters"), "{message}");
}

fn single_rank() -> ProcessGroup {
    ProcessGroup::new(&DdpConfig::new(0, 1, "127.0.0.1", free_port()).unwrap().with_timeout(Duration::from_secs(30)))
        .unwrap()
}

#[test]
fn a_single_rank_group_keeps_values_and_leaves_unused_parameters_without_gradient() {
    let group = single_rank();
    assert!(group.is_main());
    let t = Tensor::from_slice(&[1.0f32, -2.0]);
    group.all_reduce_sum(&[&t]).unwrap();
    assert_eq!(Vec::<f32>::try_from(&t).unwrap(), vec![1.0, -2.0]);

    let vs = VarStore::new(Device::Cpu);
    let used = vs.root().var_copy("used", &Tensor::from_slice(&[3.0f32]));
    let unused = vs.root().var_copy("unused", &Tensor::from_slice(&[1.0f32, 1.0]));
    let ddp = DataParallel::new(&group, &[&vs]).unwrap();
    (&used * &used).sum(Kind::Float).backward();
    assert!(!unused.grad().defined());
    ddp.average_gradients().unwrap();
    assert_eq!(Vec::<f32>::try_from(&used.grad()).unwrap(), vec![6.0]);
    // No rank has a gradient for it: it keeps none, so that an optimizer skips it as in one process.
    assert!(!unused.grad().defined());

    let path = scratch("save").join("vs.safetensors");
    group.save_on_main(&vs, &path).unwrap();
    assert_eq!(read(&path).len(), 2);
    let err = group.save_on_main(&vs, scratch("save-missing").join("no/such/dir/vs.safetensors")).unwrap_err();
    assert!(matches!(err, DdpError::Torch(_)), "{err:?}");
}

#[test]
fn collectives_check_their_tensors() {
    let group = single_rank();
    let strided = Tensor::zeros([3, 2], (Kind::Float, Device::Cpu)).tr();
    assert!(
        matches!(group.all_reduce_sum(&[&strided]), Err(e @ DdpError::NotContiguous { .. }) if e.to_string().contains("contiguous"))
    );
    let (a, b) = (Tensor::zeros([2], (Kind::Float, Device::Cpu)), Tensor::zeros([2], (Kind::Int64, Device::Cpu)));
    assert!(
        matches!(group.all_reduce_sum(&[&a, &b]), Err(e @ DdpError::MixedKinds { .. }) if e.to_string().contains("one kind"))
    );
    assert!(
        matches!(group.broadcast(&a, 1), Err(e @ DdpError::RankOutOfRange { rank: 1, .. }) if e.to_string().contains("out of range"))
    );
}

#[test]
fn a_rendezvous_without_the_other_ranks_times_out() {
    // Rank 1 of 2 whose rank 0 never starts the store: connecting gives up after the timeout.
    let config =
        DdpConfig::new(1, 2, "127.0.0.1", free_port()).unwrap().with_rendezvous_timeout(Duration::from_secs(2));
    let start = std::time::Instant::now();
    let err = ProcessGroup::new(&config).unwrap_err();
    // libtorch's connect retries and this crate's deadline end at the same time: either may report.
    assert!(matches!(err, DdpError::Backend { op: "TCPStore", .. } | DdpError::RendezvousTimeout { .. }), "{err:?}");
    // Thread wake-ups on a loaded machine: well under a second late.
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
}

distill! {
    /// A hint through an adapter sized by the dry run.
    struct Fitted for Net => Net {
        f: fitted_conv1x1_adapter(student.conv) => teacher.conv with Mse;
    }
}

#[test]
fn data_parallel_before_the_dry_run_that_sizes_a_fitted_adapter_says_to_run_it_first() {
    let group = single_rank();
    let (vs, teacher_vs) = (VarStore::new(Device::Cpu), VarStore::new(Device::Cpu));
    let (student, teacher) = (Net::new(&(vs.root() / "student"), 2), Net::new(&teacher_vs.root(), 4));
    let kd = Fitted::new(vs.root() / "kd", &student, &teacher).unwrap();
    let err = DataParallel::new(&group, &[&vs]).unwrap_err().to_string();
    assert!(err.contains("`0/kd.f.weight` has no elements") && err.contains("`dry_run`"), "{err}");

    kd.dry_run(&Tensor::zeros([1, 1, 6, 6], (Kind::Float, Device::Cpu))).unwrap();
    let ddp = DataParallel::new(&group, &[&vs]).unwrap();
    assert!(ddp.parameter_names().iter().any(|name| name == "0/kd.f.weight"), "{:?}", ddp.parameter_names());
}
