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

/// The message of `f_loss`'s error, which must be of the expected variant.
fn rejection(result: Result<Tensor, DistillError>) -> DistillError {
    match result {
        Ok(loss) => panic!("accepted, loss {loss:?}"),
        Err(err) => err,
    }
}

/// A criterion, a student and a teacher shape it rejects, and words of the reason.
type Rejected = (Box<dyn Criterion>, Vec<i64>, Vec<i64>, &'static str);

#[test]
fn f_loss_says_why_shapes_do_not_fit() {
    let cases: Vec<Rejected> = vec![
        (Box::new(Mse), vec![4, 1, 3, 3], vec![4, 8, 3, 3], "equal shapes"),
        (Box::new(L1), vec![0, 3], vec![0, 3], "empty"),
        (Box::new(Cosine), vec![5], vec![5], "at least 2 dimensions"),
        (Box::new(KlDiv::default()), vec![6], vec![6], "at least 2 dimensions"),
        (Box::new(AttentionTransfer::default()), vec![4], vec![4], "at least 3 dimensions"),
        (Box::new(AttentionTransfer::default()), vec![4, 10], vec![4, 10], "feature maps"),
        (Box::new(AttentionTransfer::default()), vec![2, 3, 4, 4], vec![2, 5, 3, 3], "positions (H·W)"),
        (Box::new(Rkd::default()), vec![0, 5], vec![0, 5], "at least 2 samples"),
        (Box::new(Rkd::default()), vec![1, 5], vec![1, 3], "at least 2 samples in the batch, got 1"),
        (Box::new(SimilarityPreserving), vec![3, 5], vec![4, 5], "same batch size"),
        (Box::new(Pkt), vec![], vec![], "batch dimension"),
        (Box::new(Dist::default()), vec![2, 3, 4], vec![2, 3, 4], "logits of 2 dimensions"),
        (Box::new(Dkd::default()), vec![4, 1], vec![4, 1], "at least 2 classes"),
    ];
    for (criterion, s, t, reason) in cases {
        let (student, teacher) = (randn(&s), randn(&t));
        let err = rejection(criterion.f_loss(&student, &teacher));
        let message = err.to_string();
        assert!(matches!(err, DistillError::ShapeMismatch { .. }), "{message}");
        assert!(message.contains(reason) && message.contains(&format!("{s:?}")), "{s:?}/{t:?}: {message}");
        assert!(criterion.check_shapes(&s, &t).is_err());
        assert!(panics(|| criterion.loss(&student, &teacher)), "{s:?}/{t:?}: `loss` panics where `f_loss` fails");
    }
    // Accepted shapes give the loss itself.
    let (s, t) = (randn(&[4, 3, 2, 2]), randn(&[4, 6, 2, 2]));
    let loss = AttentionTransfer::default().f_loss(&s, &t).unwrap();
    assert_eq!(loss.double_value(&[]), AttentionTransfer::default().loss(&s, &t).double_value(&[]));
    // Tensors of different kinds or integer tensors are errors too, not libtorch panics.
    let err = rejection(Mse.f_loss(&randn(&[2, 3]), &randn(&[2, 3]).to_kind(Kind::Double)));
    assert!(err.to_string().contains("floating-point"), "{err}");
    let ints = Tensor::from_slice(&[1i64, 2]);
    assert!(Mse.f_loss(&ints, &ints).is_err());
    assert!(Mse.f_loss(&Tensor::new(), &randn(&[2])).is_err(), "an undefined tensor");
}

#[test]
fn invalid_parameters_are_errors_not_nan() {
    let (s, t) = (randn(&[4, 10]), randn(&[4, 10]));
    let maps = (randn(&[4, 3, 2, 2]), randn(&[4, 3, 2, 2]));
    let invalid: Vec<(Box<dyn Criterion>, &str, bool)> = vec![
        (Box::new(KlDiv::new(0.0)), "KlDiv's temperature must be finite and > 0, got 0", false),
        (Box::new(KlDiv::new(-1.0)), "got -1", false),
        (Box::new(KlDiv::new(f64::NAN)), "got NaN", false),
        (Box::new(SoftCrossEntropy::new(0.0)), "SoftCrossEntropy's temperature", false),
        (Box::new(SoftCrossEntropy::new(f64::INFINITY)), "got inf", false),
        (Box::new(SmoothL1::new(-0.5)), "SmoothL1's beta must be finite and ≥ 0", false),
        (Box::new(AttentionTransfer::new(0.0)), "AttentionTransfer's p", true),
        (Box::new(Rkd::new(-1.0, 50.0)), "Rkd's distance_weight", false),
        (Box::new(Dist::new(1.0, 1.0, 0.0)), "Dist's tau", false),
        (Box::new(Dkd::new(1.0, f64::NAN, 4.0)), "Dkd's beta", false),
        (Box::new(Mse * f64::NAN), "the weight must be finite", false),
    ];
    for (criterion, reason, on_maps) in invalid {
        let (student, teacher) = if on_maps { (&maps.0, &maps.1) } else { (&s, &t) };
        let err = rejection(criterion.f_loss(student, teacher));
        let message = err.to_string();
        assert!(matches!(err, DistillError::InvalidCriterion { .. }) && message.contains(reason), "{message}");
        assert!(criterion.validate().is_err());
        assert!(panics(|| criterion.loss(student, teacher)), "{reason}");
    }
    // The edge of each domain is valid: β = 0 is L1, weights 0 switch a term off.
    assert!(SmoothL1::new(0.0).f_loss(&s, &t).is_ok());
    assert!(Rkd::new(0.0, 0.0).f_loss(&s, &t).is_ok());
    assert!((Mse * 0.0).f_loss(&s, &t).is_ok());
}

#[test]
fn dkd_targets_are_checked() {
    let (s, t) = (randn(&[4, 5]), randn(&[4, 5]));
    let dkd = Dkd::default();
    let labels = Tensor::from_slice(&[0i64, 4, 2, 1]);
    let loss = dkd.f_loss_with_targets(&s, &t, Some(&labels)).unwrap();
    assert_eq!(loss.double_value(&[]), dkd.loss_with_targets(&s, &t, Some(&labels)).double_value(&[]));
    assert!(dkd.f_loss_with_targets(&s, &t, Some(&labels.reshape([4, 1]))).is_ok());
    let one_hot = labels.one_hot(5);
    let bad: [(Tensor, &str); 6] = [
        (Tensor::from_slice(&[0i64, 5, 2, 1]), "in 0..5, got 5"),
        (Tensor::from_slice(&[0i64, -1, 2, 1]), "in 0..5, got -1"),
        (Tensor::from_slice(&[0i64, 1, 2]), "one class index per sample"),
        (one_hot.shallow_clone(), "one-hot"),
        (one_hot.to_kind(Kind::Float), "one-hot"),
        (Tensor::from_slice(&[0.0f32, 1.0, 2.0, 3.0]), "integer tensor"),
    ];
    for (targets, reason) in bad {
        let err = rejection(dkd.f_loss_with_targets(&s, &t, Some(&targets)));
        let message = err.to_string();
        assert!(matches!(err, DistillError::InvalidTargets { .. }) && message.contains(reason), "{message}");
        assert!(panics(|| dkd.loss_with_targets(&s, &t, Some(&targets))), "{reason}");
        // Weighted, the same.
        assert!((dkd * 2.0).f_loss_with_targets(&s, &t, Some(&targets)).is_err());
    }
    // Criteria without labels ignore targets.
    assert!(Mse.f_loss_with_targets(&s, &t, Some(&Tensor::from_slice(&[9i64]))).is_ok());
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

distill! {
    struct Cold for Mlp => Mlp {
        logits: student => teacher with KlDiv::new(0.0) * 0.5;
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

#[test]
fn distill_reports_invalid_parameters_naming_the_pair() -> Result<(), DistillError> {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = (mlp(vs.root() / "s"), mlp(vs.root() / "t"));
    // `KlDiv::new` stays a const fn; `new()` checks the parameters, before any step.
    let err = Cold::new(vs.root() / "kd", &student, &teacher).err().expect("T = 0 is rejected by new()");
    let message = err.to_string();
    assert!(matches!(&err, DistillError::InvalidCriterion { pair, .. } if pair == "logits"), "{message}");
    assert!(message.contains("pair `logits`") && message.contains("temperature"), "{message}");
    Ok(())
}

distill! {
    struct Decoupled for Mlp => Mlp {
        dkd: student => teacher with Dkd::default();
    }
}

#[test]
fn distill_pairs_have_a_checked_loss_for_targets() -> Result<(), DistillError> {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = (mlp(vs.root() / "s"), mlp(vs.root() / "t"));
    let kd = Decoupled::new(vs.root() / "kd", &student, &teacher)?;
    let xs = randn(&[4, 6]);
    let good = kd.forward_t(&xs, true)?.with_targets(&Tensor::from_slice(&[0i64, 1, 2, 0]));
    assert_eq!(good.dkd.f_loss()?.double_value(&[]), good.loss().double_value(&[]));
    let bad = kd.forward_t(&xs, true)?.with_targets(&Tensor::from_slice(&[0i64, 1, 3, 0])); // 3 classes
    let err = bad.dkd.f_loss().unwrap_err();
    assert!(matches!(&err, DistillError::InvalidTargets { pair, .. } if pair == "dkd"), "{err}");
    assert!(
        err.to_string().starts_with("pair `dkd`: invalid targets") && err.to_string().contains("0..3, got 3"),
        "{err}"
    );
    // The whole output's loss has the same fallible twin: the error, where `loss()` panics.
    assert_eq!(good.f_loss()?.double_value(&[]), good.loss().double_value(&[]));
    assert_eq!(good.f_losses()?.dkd.double_value(&[]), good.losses().dkd.double_value(&[]));
    let total_err = bad.f_loss().unwrap_err();
    assert!(matches!(&total_err, DistillError::InvalidTargets { pair, .. } if pair == "dkd"), "{total_err}");
    assert!(matches!(bad.f_losses(), Err(DistillError::InvalidTargets { .. })));
    assert!(panics(|| bad.loss()), "loss() panics where f_loss() is an error");
    Ok(())
}
