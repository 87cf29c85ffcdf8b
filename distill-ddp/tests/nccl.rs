//! The NCCL backend (the `cuda` feature): a clean error without the GPU a rank needs, and on a
//! machine with GPUs a one-rank all-reduce and the two-rank equivalence. Without GPUs (or without
//! the feature) the GPU tests print why they did not run; `DISTILL_REQUIRE_CUDA=1` (set by
//! `scripts/gpu-check`) turns that into a failure.

mod harness;

use std::time::Duration;

use distill_ddp::{nccl_available, Backend, DataParallel, DdpConfig, DdpError, DistributedSampler, ProcessGroup};
use harness::{assert_all_succeeded, free_port, run_ranks, scratch, worker};
use tch::nn::{self, Module, OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

fn cuda_devices() -> usize {
    usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
}

/// Whether a test needing `gpus` GPUs and NCCL can run here; prints why not otherwise (or fails,
/// under `DISTILL_REQUIRE_CUDA=1`).
fn can_run(test: &str, gpus: usize) -> bool {
    let reason = if !nccl_available() {
        "distill-ddp was built without its `cuda` feature".to_owned()
    } else if cuda_devices() < gpus {
        format!("{gpus} CUDA device(s) needed, {} available", cuda_devices())
    } else {
        return true;
    };
    let required = std::env::var("DISTILL_REQUIRE_CUDA").is_ok_and(|v| v == "1");
    assert!(!required, "{test}: DISTILL_REQUIRE_CUDA=1, but {reason}");
    println!("skipped {test}: {reason}");
    false
}

fn nccl_config(rank: usize, world_size: usize, local_rank: usize, port: u16) -> DdpConfig {
    let mut config = DdpConfig::new(rank, world_size, "127.0.0.1", port)
        .unwrap()
        .with_backend(Backend::Nccl)
        .with_timeout(Duration::from_secs(60))
        .with_rendezvous_timeout(Duration::from_secs(60));
    config.local_rank = Some(local_rank);
    config
}

#[test]
fn an_nccl_group_without_its_gpu_is_an_error_not_a_crash() {
    // The GPU one past the last this process has: none on a machine without GPUs.
    let missing = cuda_devices();
    let started = std::time::Instant::now();
    let err = ProcessGroup::new(&nccl_config(0, 1, missing, free_port())).unwrap_err();
    if nccl_available() {
        assert!(
            matches!(err, DdpError::NoCudaDevice { device, available } if device == missing && available == missing),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("no CUDA device is available for this rank"), "{err}");
    } else {
        assert!(matches!(&err, DdpError::NcclNotCompiled) && err.to_string().contains("not compiled in"), "{err:?}");
    }
    // Checked before any rendezvous: nothing waited.
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[test]
fn a_one_rank_nccl_all_reduce_keeps_the_values() {
    if !can_run("a_one_rank_nccl_all_reduce_keeps_the_values", 1) {
        return;
    }
    let group = ProcessGroup::new(&nccl_config(0, 1, 0, free_port())).unwrap();
    assert_eq!(group.device(), Device::Cuda(0));
    let values = [1.5f32, -2.0, 0.25];
    let t = Tensor::from_slice(&values).to_device(Device::Cuda(0));
    group.all_reduce_sum(&[&t]).unwrap();
    group.barrier().unwrap();
    assert_eq!(Vec::<f32>::try_from(&t.to_device(Device::Cpu)).unwrap(), values);
    // A CPU tensor is refused before it reaches NCCL.
    let cpu = Tensor::from_slice(&values);
    assert!(
        matches!(group.all_reduce_sum(&[&cpu]), Err(e @ DdpError::WrongDevice { .. }) if e.to_string().contains("Cuda(0)"))
    );
}

const SAMPLES: usize = 32;
const GLOBAL_BATCH: usize = 8;
const STEPS: usize = 3;

/// `STEPS` SGD steps on a small MLP, each of `GLOBAL_BATCH` samples split over the ranks of `group`
/// (one process on cuda:0 when `None`); returns the final parameters on the CPU.
fn train(group: Option<&ProcessGroup>) -> Vec<(String, Tensor)> {
    let (rank, world) = group.map_or((0, 1), |g| (g.rank(), g.world_size()));
    let device = group.map_or(Device::Cuda(0), ProcessGroup::device);
    // Rank-dependent initialisation: the broadcast must make it irrelevant.
    tch::manual_seed(20 + rank as i64);
    let vs = VarStore::new(device);
    let model = nn::seq()
        .add(nn::linear(vs.root() / "a", 6, 16, Default::default()))
        .add_fn(|x| x.tanh())
        .add(nn::linear(vs.root() / "b", 16, 3, Default::default()));
    tch::manual_seed(7);
    let xs = Tensor::randn([SAMPLES as i64, 6], (Kind::Float, Device::Cpu)).to_device(device);
    let ys = Tensor::randint(3, [SAMPLES as i64], (Kind::Int64, Device::Cpu)).to_device(device);
    let ddp = group.map(|g| DataParallel::with_bucket_bytes(g, &[&vs], 256).unwrap());
    if let Some(ddp) = &ddp {
        ddp.broadcast_parameters().unwrap();
    }
    let mut opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&vs, 0.1).unwrap();
    let order = DistributedSampler::new(SAMPLES, rank, world).unwrap().seed(3).indices(0);
    let per_rank = GLOBAL_BATCH / world;
    for step in 0..STEPS {
        let batch = Tensor::from_slice(&order[step * per_rank..(step + 1) * per_rank]).to_device(device);
        let loss = model.forward(&xs.index_select(0, &batch)).cross_entropy_for_logits(&ys.index_select(0, &batch));
        match &ddp {
            Some(ddp) => ddp.backward_step(&mut opt, &loss).unwrap(),
            None => opt.backward_step(&loss),
        }
    }
    let mut named: Vec<(String, Tensor)> =
        vs.variables().into_iter().map(|(n, t)| (n, t.detach().to_device(Device::Cpu))).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

#[test]
fn two_nccl_ranks_with_batch_b_match_one_gpu_with_batch_2b() {
    if let Some(w) = worker() {
        let config = DdpConfig::from_env().unwrap().with_backend(Backend::Nccl).with_timeout(Duration::from_secs(60));
        let group = ProcessGroup::new(&config.with_rendezvous_timeout(Duration::from_secs(60))).unwrap();
        Tensor::write_safetensors(&train(Some(&group)), w.file("params.safetensors")).unwrap();
        return;
    }
    if !can_run("two_nccl_ranks_with_batch_b_match_one_gpu_with_batch_2b", 2) {
        return;
    }
    let out = scratch("nccl-equivalence");
    assert_all_succeeded(&run_ranks(
        "two_nccl_ranks_with_batch_b_match_one_gpu_with_batch_2b",
        2,
        &out,
        Duration::from_secs(300),
        |_| vec![],
    ));
    let reference = train(None);
    for rank in 0..2 {
        let mut got = Tensor::read_safetensors(out.join(format!("rank{rank}-params.safetensors"))).unwrap();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got.iter().map(|g| &g.0).collect::<Vec<_>>(), reference.iter().map(|r| &r.0).collect::<Vec<_>>());
        let diff = got
            .iter()
            .zip(&reference)
            .map(|((_, a), (_, b))| (a - b).abs().max().double_value(&[]))
            .fold(0.0, f64::max);
        println!("rank {rank}: 2 NCCL ranks vs 1 GPU differ by at most {diff:e}");
        // Averaging two half-batch means instead of one full-batch mean reorders f32 sums: a few
        // ulps per step on gradients of order 1, compounded over 3 momentum steps at lr 0.1.
        assert!(diff < 1e-5, "rank {rank}: 2 ranks × {} differ from 1 × {GLOBAL_BATCH} by {diff}", GLOBAL_BATCH / 2);
    }
}
