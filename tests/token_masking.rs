//! No token at all (`B = 0` or `T = 0`) is no valid token for the top-k criteria, as for
//! `SequenceKd`: `TopKKl` (direct and as a `Criterion` over its packed encoding), `TokenKd` and the
//! packed `SampledKl` give 0 with a zero gradient for every reduction, instead of a libtorch
//! reshape error or a shape error; an empty vocabulary and `k = 0` remain errors.

use distill::criterion::{Criterion, SampledKl, TokenCriterion, TokenKd, TokenReduction, TopKKl, TopKTail};
use distill::DistillError;
use tch::{Device, Kind, Tensor};

const REDUCTIONS: [TokenReduction; 4] =
    [TokenReduction::Token, TokenReduction::Sequence, TokenReduction::Batch, TokenReduction::Sum];

const V: i64 = 11;

/// A scalar 0 that requires a gradient, whose backward runs and leaves a gradient of the logits'
/// shape (empty: there is no token to give one).
fn assert_zero_with_zero_gradient(case: &str, loss: distill::Result<Tensor>, s: &Tensor) {
    let loss = loss.unwrap_or_else(|err| panic!("{case}: {err}"));
    assert_eq!(loss.size(), Vec::<i64>::new(), "{case}");
    assert_eq!(loss.double_value(&[]), 0.0, "{case}");
    assert!(loss.requires_grad(), "{case}: a training step on an empty batch runs its backward");
    loss.backward();
    let g = s.grad();
    assert_eq!(g.size(), s.size(), "{case}");
    assert_eq!(g.numel(), 0, "{case}");
}

#[test]
fn no_token_is_a_loss_of_zero_for_the_top_k_criteria() {
    let opts = (Kind::Float, Device::Cpu);
    for (b, t) in [(2, 0), (0, 3), (0, 0)] {
        let s = Tensor::randn([b, t, V], opts).set_requires_grad(true);
        let teacher = Tensor::randn([b, t, V], opts);
        let top = TopKTail::f_encode(&teacher, 4, 2.0).unwrap();
        let packed = top.f_pack().unwrap();
        // `[B, T, 3n]`, n = 3, built directly: `SampledLogits::f_encode` does not encode no token.
        let sampled = Tensor::zeros([b, t, 9], opts);
        let labels = Tensor::zeros([b, t], (Kind::Int64, Device::Cpu));
        let mask = labels.eq(0);
        for reduction in REDUCTIONS {
            let kd = TopKKl::new(2.0).with_reduction(reduction);
            let token_kd = TokenKd::new(kd, 0.5);
            let sampled_kl = SampledKl::new(2.0).with_reduction(reduction);
            let losses = [
                ("TopKKl, no mask", kd.f_loss_masked(&s, &top, None)),
                ("TopKKl, mask", kd.f_loss_masked(&s, &top, Some(&mask))),
                ("TokenKd, no mask", token_kd.f_loss(&s, &top, &labels, None)),
                ("TokenKd, mask", token_kd.f_loss(&s, &top, &labels, Some(&mask))),
                ("packed TopKKl", kd.f_loss_with_targets(&s, &packed, None)),
                ("packed TopKKl, labels", kd.f_loss_with_targets(&s, &packed, Some(&labels))),
                ("packed SampledKl", sampled_kl.f_loss_with_targets(&s, &sampled, None)),
                ("packed SampledKl, labels", sampled_kl.f_loss_with_targets(&s, &sampled, Some(&labels))),
            ];
            for (entry, loss) in losses {
                assert_zero_with_zero_gradient(&format!("[{b}, {t}, {V}] {reduction:?}: {entry}"), loss, &s);
            }
        }
    }
}

/// The packed criteria accept no token but still need a vocabulary and, for the top-k, `k ≥ 1`.
#[test]
fn an_empty_vocabulary_or_no_kept_token_is_still_a_shape_error() {
    let opts = (Kind::Float, Device::Cpu);
    let shape_error = |case: &str, result: distill::Result<Tensor>, want: &str| {
        let err = result.map(drop).unwrap_err();
        assert!(matches!(&err, DistillError::ShapeMismatch { reason, .. } if reason.contains(want)), "{case}: {err:?}");
    };
    let no_vocabulary = Tensor::zeros([2, 3, 0], opts);
    shape_error(
        "TopKKl, V = 0",
        TopKKl::new(1.0).f_loss(&no_vocabulary, &Tensor::zeros([2, 3, 3], opts)),
        "vocabulary",
    );
    shape_error(
        "SampledKl, V = 0",
        SampledKl::new(1.0).f_loss(&no_vocabulary, &Tensor::zeros([2, 3, 3], opts)),
        "vocabulary",
    );
    // k = 0: a packed width of 1, with tokens or without.
    for t in [3, 0] {
        let s = Tensor::zeros([2, t, V], opts);
        shape_error("TopKKl, k = 0", TopKKl::new(1.0).f_loss(&s, &Tensor::zeros([2, t, 1], opts)), "k ≥ 1");
    }
}
