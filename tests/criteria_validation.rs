//! Criteria given what they cannot compute: invalid parameters, shapes and targets are errors that say
//! why (through `f_loss`, and through `distill!` naming the pair), never a silent NaN, a broadcast or
//! a libtorch panic.

use distill::prelude::*;
use nn::Module;
use tch::{nn::VarStore, Device, Kind, Tensor};

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

/// Whether `f` panics (the tch-style `loss` on what `f_loss` rejects).
fn panics(f: impl FnOnce() -> Tensor) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err()
}

#[test]
fn loss_never_broadcasts_or_returns_nan_for_invalid_input() {
    let (s, t) = (randn(&[4, 1, 3, 3]), randn(&[4, 8, 3, 3]));
    assert!(panics(|| Mse.loss(&s, &t)), "1 vs 8 channels must not broadcast");
    let (s, t) = (randn(&[4, 10]), randn(&[4, 10]));
    for temperature in [0.0, -1.0, f64::NAN] {
        assert!(panics(|| KlDiv::new(temperature).loss(&s, &t)), "KlDiv T = {temperature}");
        assert!(panics(|| SoftCrossEntropy::new(temperature).loss(&s, &t)), "SoftCrossEntropy T = {temperature}");
    }
    let labels = Tensor::from_slice(&[0i64, 1, 2]); // 3 labels for 4 samples
    assert!(panics(|| Dkd::default().loss_with_targets(&s, &t, Some(&labels))), "wrong label count");
}

#[derive(Debug, Distillable)]
struct Mlp {
    hidden: nn::Linear,
    head: nn::Linear,
}

impl nn::ModuleT for Mlp {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        self.head.forward(&self.hidden.forward(xs).relu())
    }
}

fn mlp(p: nn::Path) -> Mlp {
    Mlp {
        hidden: nn::linear(&p / "hidden", 6, 10, Default::default()),
        head: nn::linear(&p / "head", 10, 3, Default::default()),
    }
}

distill! {
    struct Attention for Mlp => Mlp {
        at: student.hidden => teacher.hidden with AttentionTransfer::default();
    }
}

distill! {
    struct Relational for Mlp => Mlp {
        rkd: student.hidden => teacher.hidden with Rkd::default();
    }
}

#[test]
fn distill_says_why_a_criterion_rejects_equal_shapes() -> Result<(), DistillError> {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = (mlp(vs.root() / "s"), mlp(vs.root() / "t"));
    let err = Attention::new(vs.root() / "a", &student, &teacher)?.forward_t(&randn(&[4, 6]), true).unwrap_err();
    let message = err.to_string();
    assert!(!message.contains("does not match") && message.contains("`at`") && message.contains("3"), "{message}");
    let err = Relational::new(vs.root() / "r", &student, &teacher)?.forward_t(&randn(&[1, 6]), true).unwrap_err();
    let message = err.to_string();
    assert!(
        !message.contains("does not match") && message.contains("`rkd`") && message.contains("2 samples"),
        "{message}"
    );
    Ok(())
}
