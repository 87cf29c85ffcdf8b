//! Gradient averaging across real processes on localhost, over Gloo: parameters that only some
//! ranks (or none) give a gradient, sparse gradients, and ranks built with different bucket sizes.

mod harness;

use std::time::Duration;

use distill_ddp::{DataParallel, DdpConfig, DdpError, ProcessGroup};
use harness::{assert_all_succeeded, free_port, run_ranks, scratch, worker};
use tch::nn::{OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

const DEADLINE: Duration = Duration::from_secs(120);

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap()
}

/// `a` is used on every rank, `b` on rank 1 only, `c` on none, and the sparse embedding `e` on
/// every rank, each with other rows. Buckets of 16 bytes put `a` and `b` together and `c` alone.
fn store() -> VarStore {
    let vs = VarStore::new(Device::Cpu);
    let root = vs.root();
    for name in ["a", "b", "c"] {
        let _ = root.var_copy(name, &Tensor::from_slice(&[1.0f32, 2.0]));
    }
    let config = tch::nn::EmbeddingConfig { sparse: true, ..Default::default() };
    let e = tch::nn::embedding(&root / "e", 4, 2, config);
    tch::no_grad(|| e.ws.shallow_clone().copy_(&Tensor::ones([4, 2], (Kind::Float, Device::Cpu))));
    vs
}

fn var(vs: &VarStore, name: &str) -> Tensor {
    vs.variables().remove(name).unwrap()
}

/// Rank `rank`'s loss over `store()`: `(rank + 1)·Σa`, `3·Σb` on rank 1, and the embedding of
/// row `rank` (rank 0) or rows 1 and 1 (rank 1).
fn loss(vs: &VarStore, rank: usize) -> Tensor {
    let mut loss = (var(vs, "a") * (rank as f64 + 1.0)).sum(Kind::Float);
    if rank == 1 {
        loss += (var(vs, "b") * 3.0).sum(Kind::Float);
    }
    let rows = if rank == 0 { Tensor::from_slice(&[0i64]) } else { Tensor::from_slice(&[1i64, 1]) };
    loss + Tensor::embedding(&var(vs, "e.weight"), &rows, -1, false, true).sum(Kind::Float)
}

#[test]
fn gradients_missing_on_some_ranks_are_averaged_and_missing_on_all_stay_missing() {
    if let Some(w) = worker() {
        let group = w.join(Duration::from_secs(60));
        let vs = store();
        let ddp = DataParallel::with_bucket_bytes(&group, &[&vs], 16).unwrap();
        assert_eq!(ddp.bucket_count(), 3);
        // SGD with weight decay: a zero gradient would move `c`, an undefined one leaves it.
        let mut opt = tch::nn::Sgd { wd: 0.5, ..Default::default() }.build(&vs, 0.1).unwrap();
        ddp.backward_step(&mut opt, &loss(&vs, w.rank)).unwrap();
        let grad = |name: &str| {
            let g = var(&vs, name).grad();
            if g.defined() {
                format!("{:?}", values(&g))
            } else {
                "none".to_owned()
            }
        };
        let report = format!(
            "a {} b {} c {} e {} sparse {}\nc = {:?}",
            grad("a"),
            grad("b"),
            grad("c"),
            grad("e.weight"),
            var(&vs, "e.weight").grad().is_sparse(),
            values(&var(&vs, "c")),
        );
        std::fs::write(w.file("report.txt"), report).unwrap();
        return;
    }
    let out = scratch("missing-gradients");
    assert_all_succeeded(&run_ranks(
        "gradients_missing_on_some_ranks_are_averaged_and_missing_on_all_stay_missing",
        2,
        &out,
        DEADLINE,
        |_| vec![],
    ));
    // a: (1 + 2) / 2; b: (0 + 3) / 2, created on rank 0; c: no gradient anywhere, not moved by the
    // weight decay; e: row 0 once on rank 0, row 1 twice on rank 1, halved, dense.
    let expected = "a [1.5, 1.5] b [1.5, 1.5] c none e [0.5, 0.5, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0] sparse false\n\
                    c = [1.0, 2.0]";
    for rank in 0..2 {
        let report = std::fs::read_to_string(out.join(format!("rank{rank}-report.txt"))).unwrap();
        assert_eq!(report, expected, "rank {rank}");
    }
}

#[test]
fn ranks_with_different_bucket_sizes_all_fail_instead_of_aborting() {
    if let Some(w) = worker() {
        let group = w.join(Duration::from_secs(60));
        let vs = store();
        let bytes = if w.rank == 0 { 16 } else { 1 << 20 };
        let err = DataParallel::with_bucket_bytes(&group, &[&vs], bytes).unwrap_err();
        assert!(matches!(err, DdpError::RankMismatch(_)), "{err:?}");
        std::fs::write(w.file("error.txt"), err.to_string()).unwrap();
        return;
    }
    let out = scratch("bucket-sizes");
    assert_all_succeeded(&run_ranks(
        "ranks_with_different_bucket_sizes_all_fail_instead_of_aborting",
        2,
        &out,
        DEADLINE,
        |_| vec![],
    ));
    let message = std::fs::read_to_string(out.join("rank1-error.txt")).unwrap();
    assert!(message.contains("another bucket size") && message.contains("buckets of 1048576 bytes"), "{message}");
}

#[test]
fn a_single_rank_averages_a_sparse_gradient_and_leaves_unused_parameters_alone() {
    let config = DdpConfig::new(0, 1, "127.0.0.1", free_port()).unwrap().with_timeout(Duration::from_secs(30));
    let group = ProcessGroup::new(&config).unwrap();
    let vs = store();
    let ddp = DataParallel::new(&group, &[&vs]).unwrap();
    let mut opt = tch::nn::Sgd { wd: 0.5, momentum: 0.9, ..Default::default() }.build(&vs, 0.1).unwrap();
    for _ in 0..2 {
        ddp.backward_step(&mut opt, &loss(&vs, 0)).unwrap();
    }
    assert!(!var(&vs, "b").grad().defined() && !var(&vs, "c").grad().defined());
    assert_eq!(values(&var(&vs, "b")), [1.0, 2.0]);
    assert_eq!(values(&var(&vs, "c")), [1.0, 2.0]);
    let e = var(&vs, "e.weight");
    assert!(!e.grad().is_sparse());
    assert_eq!(values(&e.grad()), [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
}
