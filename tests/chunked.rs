//! The chunked vocabulary loss equals the unchunked one (value, and gradients with respect to the
//! hidden states and the `lm_head` weight) within the rounding of the same operations summed in
//! another order, for full teacher logits (every divergence), a top-k teacher with an exact tail,
//! and cross-entropy with ignored labels; in f64 and f32.

use distill::criterion::{ChunkedLoss, ChunkedTarget, Divergence, SequenceKd, TokenReduction, TopKKl, TopKTail};
use distill::DistillError;
use tch::{Device, Kind, Tensor};

const B: i64 = 2;
const T: i64 = 7;
const H: i64 = 16;
const V: i64 = 50;

struct Inputs {
    h: Tensor,
    w: Tensor,
    teacher: Tensor,
    labels: Tensor,
    valid: Tensor,
}

fn inputs(kind: Kind) -> Inputs {
    tch::manual_seed(576);
    let opts = (Kind::Double, Device::Cpu);
    let labels = Tensor::randint(V, [B, T], (Kind::Int64, Device::Cpu));
    let _ = labels.narrow(1, 0, 2).fill_(-100);
    let valid = Tensor::ones([B, T], (Kind::Int64, Device::Cpu));
    let _ = valid.narrow(1, T - 1, 1).fill_(0);
    Inputs {
        h: (Tensor::randn([B, T, H], opts) * 2.0).to_kind(kind),
        w: (Tensor::randn([V, H], opts) * 0.5).to_kind(kind),
        teacher: (Tensor::randn([B, T, V], opts) * 3.0).to_kind(kind),
        labels,
        valid,
    }
}

/// Value and gradients (hidden, weight) of one path.
fn run(x: &Inputs, target: &ChunkedTarget<'_>, chunk: Option<i64>) -> (f64, Tensor, Tensor) {
    let h = x.h.detach().set_requires_grad(true);
    let w = x.w.detach().set_requires_grad(true);
    let loss = match chunk {
        Some(c) => ChunkedLoss::new(c).f_loss(&h, &w, target, Some(&x.valid)),
        None => ChunkedLoss::new(1).f_loss_unchunked(&h, &w, target, Some(&x.valid)),
    }
    .unwrap();
    loss.backward();
    (loss.double_value(&[]), h.grad().to_kind(Kind::Double), w.grad().to_kind(Kind::Double))
}

/// Bounds for the difference between the two paths in a float of unit roundoff `eps`.
///
/// Derivation. Both paths compute the same per-token operations; what differs is the order of
/// sums: the logits `z = h Wᵀ` (an H-term dot product each, possibly blocked differently by the
/// matmul kernel: |Δz_iv| ≤ ε·H·Σ_k|h_ik||W_vk| =: ε·H·A_iv), the V-term log-sum-exps, the sum of
/// the weighted token losses (N terms) and the gradient products `∂L/∂h = G W` (V terms) and
/// `∂L/∂W = Gᵀ h` (N terms, accumulated chunk by chunk). A logit error Δz moves a log-probability by
/// at most |Δz|/T plus the log-sum-exp's shift, itself a p-weighted mean of the Δz; with every
/// per-token loss and its logit gradient `G_iv` bounded by `M_iv = w_i/T·(p_iv + q_iv)·c_i`
/// (`c_i = 2 + |log-probability| terms`, as in the sequence criteria's derivation), each of
/// those contributes ε·(H·max_v A_iv/T + log₂V + 4)·M. Then:
/// - value: `ε·Σ_i w_i Σ_v (p + q)·c_i·(H·max A_i/T + log₂V + log₂N + 4)`;
/// - `∂L/∂h_ik`: `ε·Σ_v M_iv |W_vk|·(H·max A_i/T + log₂V + 4 + V)`;
/// - `∂L/∂W_vk`: `ε·Σ_i M_iv |h_ik|·(H·max A_i/T + log₂V + 4 + N)`.
///
/// Doubled for the constant factors of exp/log (≤ 1 ulp each). Computed from the f64 inputs.
fn bounds(x: &Inputs, temperature: f64, eps: f64) -> (f64, Tensor, Tensor) {
    let h = x.h.to_kind(Kind::Double).reshape([B * T, H]);
    let w = x.w.to_kind(Kind::Double);
    let z = h.matmul(&w.tr()) / temperature;
    let zt = x.teacher.to_kind(Kind::Double).reshape([B * T, V]) / temperature;
    let (lq, lp) = (z.log_softmax(-1, Kind::Double), zt.log_softmax(-1, Kind::Double));
    let mass = lp.exp() + lq.exp();
    let c = lq.abs() + lp.abs() + 2.0;
    let a = h.abs().matmul(&w.abs().tr());
    let shift = a.amax([-1], true) * (H as f64 / temperature) + ((V as f64).log2() + 4.0);
    let weights =
        TokenReduction::Token.weights(&x.valid, Kind::Double).unwrap().reshape([B * T, 1]).clamp_min(0.0) + 0.0;
    // Cross-entropy's weights: the labelled tokens only; bound with the larger of the two.
    let m = &mass * &c * &weights.clamp_min(1.0 / (B * T) as f64) / temperature;
    let n = (B * T) as f64;
    let value = (&m * (&shift + n.log2())).sum(Kind::Double).double_value(&[]) * temperature * 2.0 * eps;
    let gh = (&m * &shift).matmul(&w.abs()) * (2.0 * eps) + m.matmul(&w.abs()) * (2.0 * eps * V as f64);
    let gw = (&m * &shift).tr().matmul(&h.abs()) * (2.0 * eps) + m.tr().matmul(&h.abs()) * (2.0 * eps * n);
    (value, gh.reshape([B, T, H]), gw)
}

fn check(kind: Kind, eps: f64) {
    let x = inputs(kind);
    let top = TopKTail::f_encode(&x.teacher, 6, 2.0).unwrap();
    let mut targets: Vec<(String, ChunkedTarget<'_>, f64)> = Vec::new();
    for d in [
        Divergence::ForwardKl,
        Divergence::ReverseKl,
        Divergence::Jsd { beta: 0.5 },
        Divergence::SkewKl { alpha: 0.1 },
        Divergence::SkewReverseKl { alpha: 0.1 },
        Divergence::TotalVariation,
    ] {
        for r in [TokenReduction::Token, TokenReduction::Sequence] {
            let criterion = SequenceKd::new(d, 2.0).with_reduction(r);
            targets.push((format!("{d:?} {r:?}"), ChunkedTarget::Logits { teacher: &x.teacher, criterion }, 2.0));
        }
    }
    targets.push(("top-k".into(), ChunkedTarget::TopK { teacher: &top, criterion: TopKKl::new(2.0) }, 2.0));
    let ce = ChunkedTarget::CrossEntropy { labels: &x.labels, reduction: TokenReduction::Token };
    targets.push(("cross-entropy".into(), ce, 1.0));
    for (name, target, temperature) in &targets {
        let (v0, h0, w0) = run(&x, target, None);
        let (bv, bh, bw) = bounds(&x, *temperature, eps);
        for chunk in [1, 3, 5, B * T, 100] {
            let (v, h, w) = run(&x, target, Some(chunk));
            assert!((v - v0).abs() <= bv, "{kind:?} {name} chunk {chunk}: value {v} vs {v0} (bound {bv:e})");
            let over = |d: Tensor, b: &Tensor| (d.abs() - b).max().double_value(&[]);
            assert!(over(&h - &h0, &bh) <= 0.0, "{kind:?} {name} chunk {chunk}: ∂L/∂h exceeds its bound");
            assert!(over(&w - &w0, &bw) <= 0.0, "{kind:?} {name} chunk {chunk}: ∂L/∂W exceeds its bound");
            assert!(h0.abs().max().double_value(&[]) > 0.0 && w0.abs().max().double_value(&[]) > 0.0);
        }
    }
}

#[test]
fn chunked_equals_unchunked_in_f64() {
    check(Kind::Double, f64::EPSILON / 2.0);
}

#[test]
fn chunked_equals_unchunked_in_f32() {
    check(Kind::Float, f64::from(f32::EPSILON) / 2.0);
}

/// The unchunked cross-entropy is PyTorch's `cross_entropy(ignore_index = −100)` (mean over labelled
/// tokens), and the chunked value equals it.
#[test]
fn cross_entropy_matches_torch() {
    let x = inputs(Kind::Double);
    let ce = ChunkedTarget::CrossEntropy { labels: &x.labels, reduction: TokenReduction::Token };
    let ours = ChunkedLoss::new(3).f_loss(&x.h, &x.w, &ce, None).unwrap().double_value(&[]);
    let logits = x.h.matmul(&x.w.tr()).reshape([B * T, V]);
    let torch = logits.cross_entropy_loss::<Tensor>(&x.labels.reshape([-1]), None, tch::Reduction::Mean, -100, 0.0);
    // |Δ| ≤ ε₆₄ · (log₂V + log₂N + H + 8) · Σ|ℓ|/N, with ℓ ≤ 40 here: < 1e-12.
    assert!((ours - torch.double_value(&[])).abs() < 1e-12, "{ours} vs {}", torch.double_value(&[]));
}

#[test]
fn shape_and_chunk_errors() {
    let x = inputs(Kind::Float);
    let ce = ChunkedTarget::CrossEntropy { labels: &x.labels, reduction: TokenReduction::Token };
    assert!(ChunkedLoss::new(0).f_loss(&x.h, &x.w, &ce, None).is_err());
    assert!(ChunkedLoss::new(4).f_loss(&x.h, &x.w.narrow(1, 0, 8), &ce, None).is_err());
    let short = x.labels.narrow(1, 0, 3);
    let bad = ChunkedTarget::CrossEntropy { labels: &short, reduction: TokenReduction::Token };
    assert!(ChunkedLoss::new(4).f_loss(&x.h, &x.w, &bad, None).is_err());
    let out = x.labels.ones_like() * V;
    let bad = ChunkedTarget::CrossEntropy { labels: &out, reduction: TokenReduction::Token };
    assert!(ChunkedLoss::new(4).f_loss(&x.h, &x.w, &bad, None).is_err());
}

/// Labels of any integer kind the label check accepts give the same loss and gradients as `i64`
/// labels, chunked and unchunked: the reference converts them as the chunked path does.
#[test]
fn integer_labels_of_every_kind_agree_chunked_and_unchunked() {
    let x = inputs(Kind::Double);
    fn ce(labels: &Tensor) -> ChunkedTarget<'_> {
        ChunkedTarget::CrossEntropy { labels, reduction: TokenReduction::Token }
    }
    let (v0, h0, w0) = run(&x, &ce(&x.labels), Some(3));
    let (u0, _, _) = run(&x, &ce(&x.labels), None);
    assert!((v0 - u0).abs() < 1e-12 && v0 > 1.0, "{v0} vs {u0}");
    for kind in [Kind::Int, Kind::Int16, Kind::Int8] {
        let labels = x.labels.to_kind(kind);
        for chunk in [Some(3), None] {
            let (v, h, w) = run(&x, &ce(&labels), chunk);
            assert!((v - v0).abs() < 1e-12, "{kind:?} {chunk:?}: {v} vs {v0}");
            assert!((&h - &h0).abs().max().double_value(&[]) < 1e-12, "{kind:?} {chunk:?}: ∂L/∂h");
            assert!((&w - &w0).abs().max().double_value(&[]) < 1e-12, "{kind:?} {chunk:?}: ∂L/∂W");
        }
    }
}

/// A top-k teacher's log-probabilities are read row by row beside its ids: a tensor of the same
/// element count in another layout (transposed) is an error, not a misaligned read, and so is k = 0.
#[test]
fn a_top_k_teacher_whose_parts_do_not_fit_is_an_error() {
    let x = inputs(Kind::Double);
    let top = TopKTail::f_encode(&x.teacher, 6, 2.0).unwrap();
    let transposed = TopKTail {
        ids: top.ids.shallow_clone(),
        log_probs: top.log_probs.transpose(1, 2).contiguous(),
        tail: top.tail.shallow_clone(),
        temperature: top.temperature,
    };
    let empty = TopKTail {
        ids: top.ids.narrow(2, 0, 0),
        log_probs: top.log_probs.narrow(2, 0, 0),
        tail: top.tail.shallow_clone(),
        temperature: top.temperature,
    };
    let h = x.h.detach();
    for (teacher, want) in [
        (&transposed, "a top-k tail needs log_probs of the shape of its ids [..., k]"),
        (&empty, "k must be in 1..=50 (the vocabulary), got 0"),
    ] {
        let target = ChunkedTarget::TopK { teacher, criterion: TopKKl::new(2.0) };
        for result in [
            ChunkedLoss::new(4).f_loss(&h, &x.w, &target, Some(&x.valid)),
            ChunkedLoss::new(4).f_loss_unchunked(&h, &x.w, &target, Some(&x.valid)),
        ] {
            let err = result.unwrap_err();
            assert!(matches!(err, DistillError::Criterion(_)), "{err:?}");
            assert!(err.to_string().contains(want), "{err}");
        }
    }
    // The same parts in the right layout are accepted.
    let target = ChunkedTarget::TopK { teacher: &top, criterion: TopKKl::new(2.0) };
    assert!(ChunkedLoss::new(4).f_loss(&h, &x.w, &target, Some(&x.valid)).unwrap().double_value(&[]) > 0.0);
}

/// `f_loss` gives the teacher logits no gradient; `f_loss_unchunked`, plain autograd, gives them one.
#[test]
fn only_the_unchunked_reference_gives_the_teacher_a_gradient() {
    let x = inputs(Kind::Double);
    for divergence in [Divergence::ForwardKl, Divergence::ReverseKl] {
        let teacher = x.teacher.detach().set_requires_grad(true);
        let target = ChunkedTarget::Logits { teacher: &teacher, criterion: SequenceKd::new(divergence, 2.0) };
        let h = x.h.detach().set_requires_grad(true);
        ChunkedLoss::new(3).f_loss(&h, &x.w, &target, Some(&x.valid)).unwrap().backward();
        assert!(!teacher.grad().defined(), "{divergence:?}: f_loss");
        assert!(h.grad().abs().max().double_value(&[]) > 0.0);
        ChunkedLoss::new(3).f_loss_unchunked(&h, &x.w, &target, Some(&x.valid)).unwrap().backward();
        assert!(teacher.grad().abs().max().double_value(&[]) > 0.0, "{divergence:?}: f_loss_unchunked");
    }
}
