//! `ChunkedLoss` with masked tokens whose hidden states (or teacher rows) hold NaN or ±∞, as a
//! padded position of a model can: the value and the valid rows' gradients are bit for bit those of
//! finite padding, `∂L/∂W` too, and the masked rows' gradient is exactly 0, for every divergence
//! (the analytic and the autograd chunk gradients), a top-k teacher and cross-entropy, chunked and
//! unchunked.

use distill::criterion::{ChunkedLoss, ChunkedTarget, Divergence, SequenceKd, TokenReduction, TopKKl, TopKTail};
use tch::{Device, Kind, Tensor};

/// Every divergence, with the parameters that take the analytic chunk gradient (forward KL,
/// `Jsd { beta: 0 }`, `SkewKl { alpha: 0 }`) or their own formula (β = 1, α = 0 of the skew reverse KL).
const DIVERGENCES: [Divergence; 10] = [
    Divergence::ForwardKl,
    Divergence::ReverseKl,
    Divergence::Jsd { beta: 0.5 },
    Divergence::Jsd { beta: 0.0 },
    Divergence::Jsd { beta: 1.0 },
    Divergence::SkewKl { alpha: 0.1 },
    Divergence::SkewKl { alpha: 0.0 },
    Divergence::SkewReverseKl { alpha: 0.1 },
    Divergence::SkewReverseKl { alpha: 0.0 },
    Divergence::TotalVariation,
];

const B: i64 = 2;
const T: i64 = 6;
const H: i64 = 8;
const V: i64 = 13;

/// Masked (batch, position) pairs: padding at the end of the first sequence, a prompt at the start
/// of the second; with chunks of 1, 3, 4 and B·T tokens, chunks that are fully valid, partly masked
/// and fully masked.
const MASKED: [(i64, i64); 4] = [(0, 4), (0, 5), (1, 0), (1, 1)];

/// `x` (`[B, T, …]`) with every masked row overwritten by `garbage`: NaN, +∞, −∞, or one NaN, +∞
/// or −∞ (a different one per row) among finite values.
fn with_garbage(x: &Tensor, garbage: &str) -> Tensor {
    let x = x.copy();
    for (i, &(b, t)) in MASKED.iter().enumerate() {
        let mut row = x.get(b).get(t);
        let value = match garbage {
            "nan" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            "mixed" => {
                let value = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY][i % 3];
                if row.dim() > 0 {
                    row = row.get(i as i64 % row.size()[0]);
                }
                value
            }
            other => panic!("unknown garbage {other}"),
        };
        let _ = row.fill_(value);
    }
    x
}

fn bits(t: &Tensor) -> Vec<u64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap().iter().map(|v| v.to_bits()).collect()
}

/// Value, `∂L/∂h` and `∂L/∂W` of one path (`chunk`: `None` for the unchunked reference).
fn run(
    h: &Tensor,
    w: &Tensor,
    target: &ChunkedTarget<'_>,
    valid: &Tensor,
    chunk: Option<i64>,
) -> (f64, Tensor, Tensor) {
    let h = h.detach().set_requires_grad(true);
    let w = w.detach().set_requires_grad(true);
    let loss = match chunk {
        Some(c) => ChunkedLoss::new(c).f_loss(&h, &w, target, Some(valid)),
        None => ChunkedLoss::new(1).f_loss_unchunked(&h, &w, target, Some(valid)),
    }
    .unwrap();
    loss.backward();
    (loss.double_value(&[]), h.grad(), w.grad())
}

/// The masked rows' gradient is exactly 0, and everything else is bit for bit the clean run's.
fn assert_same(case: &str, got: &(f64, Tensor, Tensor), clean: &(f64, Tensor, Tensor), valid: &Tensor) {
    assert_eq!(got.0.to_bits(), clean.0.to_bits(), "{case}: value {} vs {}", got.0, clean.0);
    let rows = |g: &Tensor, m: &Tensor| g.masked_select(&m.unsqueeze(-1));
    let at_masked = rows(&got.1, &valid.logical_not());
    assert!(bits(&at_masked).iter().all(|&b| f64::from_bits(b) == 0.0), "{case}: ∂L/∂h at masked rows {at_masked:?}");
    assert_eq!(bits(&rows(&got.1, valid)), bits(&rows(&clean.1, valid)), "{case}: ∂L/∂h at valid rows");
    assert_eq!(bits(&got.2), bits(&clean.2), "{case}: ∂L/∂W");
}

struct Inputs {
    h: Tensor,
    w: Tensor,
    teacher: Tensor,
    labels: Tensor,
    valid: Tensor,
}

fn inputs(kind: Kind) -> Inputs {
    tch::manual_seed(77);
    let opts = (kind, Device::Cpu);
    let labels = Tensor::arange(B * T, (Kind::Int64, Device::Cpu)).remainder(V).reshape([B, T]);
    for (b, t) in MASKED {
        let _ = labels.get(b).get(t).fill_(-100);
    }
    let valid = labels.ne(-100);
    Inputs {
        h: Tensor::randn([B, T, H], opts),
        w: Tensor::randn([V, H], opts) * 0.5,
        teacher: Tensor::randn([B, T, V], opts) * 2.0,
        labels,
        valid,
    }
}

const CHUNKS: [Option<i64>; 5] = [Some(1), Some(3), Some(4), Some(B * T), None];

#[test]
fn non_finite_hidden_states_or_teacher_logits_at_masked_tokens_change_nothing() {
    for kind in [Kind::Float, Kind::Double] {
        let x = inputs(kind);
        for divergence in DIVERGENCES {
            for reduction in [TokenReduction::Token, TokenReduction::Sum] {
                let criterion = SequenceKd::new(divergence, 2.0).with_reduction(reduction);
                let clean_target = ChunkedTarget::Logits { teacher: &x.teacher, criterion };
                for chunk in CHUNKS {
                    let clean = run(&x.h, &x.w, &clean_target, &x.valid, chunk);
                    assert!(clean.0.is_finite() && clean.0 != 0.0, "{divergence:?}: {}", clean.0);
                    for garbage in ["nan", "inf", "-inf", "mixed"] {
                        let (gh, gt) = (with_garbage(&x.h, garbage), with_garbage(&x.teacher, garbage));
                        for (side, h, teacher) in
                            [("hidden", &gh, &x.teacher), ("teacher", &x.h, &gt), ("both", &gh, &gt)]
                        {
                            let target = ChunkedTarget::Logits { teacher, criterion };
                            let got = run(h, &x.w, &target, &x.valid, chunk);
                            let case =
                                format!("{kind:?} {divergence:?} {reduction:?} chunk {chunk:?}: {garbage} {side}");
                            assert_same(&case, &got, &clean, &x.valid);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn non_finite_hidden_states_at_masked_tokens_change_nothing_for_top_k_and_cross_entropy() {
    for kind in [Kind::Float, Kind::Double] {
        let x = inputs(kind);
        let top = TopKTail::f_encode(&x.teacher, 4, 2.0).unwrap();
        // The teacher's encoding of a padded row may be garbage too (ids stay in range).
        let bad_top = |garbage: &str| TopKTail {
            ids: top.ids.shallow_clone(),
            log_probs: with_garbage(&top.log_probs, garbage),
            tail: with_garbage(&top.tail, garbage),
            temperature: top.temperature,
        };
        let all = Tensor::ones([B, T], (Kind::Bool, Device::Cpu));
        for chunk in CHUNKS {
            let top_target = ChunkedTarget::TopK { teacher: &top, criterion: TopKKl::new(2.0) };
            let ce = ChunkedTarget::CrossEntropy { labels: &x.labels, reduction: TokenReduction::Token };
            // Cross-entropy masked by its labels alone (no mask) and by a mask as well.
            for (name, target, valid) in [("top-k", &top_target, &x.valid), ("ce", &ce, &all), ("ce", &ce, &x.valid)] {
                let clean = run(&x.h, &x.w, target, valid, chunk);
                assert!(clean.0.is_finite() && clean.0 > 0.0, "{name}: {}", clean.0);
                for garbage in ["nan", "inf", "-inf", "mixed"] {
                    let got = run(&with_garbage(&x.h, garbage), &x.w, target, valid, chunk);
                    let case = format!("{kind:?} {name} chunk {chunk:?}: {garbage} hidden");
                    assert_same(&case, &got, &clean, &x.valid);
                    if name == "top-k" {
                        let teacher = bad_top(garbage);
                        let bad = ChunkedTarget::TopK { teacher: &teacher, criterion: TopKKl::new(2.0) };
                        for (side, h) in [("teacher", x.h.shallow_clone()), ("both", with_garbage(&x.h, garbage))] {
                            let got = run(&h, &x.w, &bad, valid, chunk);
                            assert_same(&format!("{case} / {side}"), &got, &clean, &x.valid);
                        }
                    }
                }
            }
        }
    }
}

/// Every token masked, with NaN hidden states everywhere: 0 with a zero gradient.
#[test]
fn every_token_masked_with_nan_hidden_states_is_zero_with_a_zero_gradient() {
    let x = inputs(Kind::Float);
    let h = Tensor::full([B, T, H], f64::NAN, (Kind::Float, Device::Cpu));
    let none = Tensor::zeros([B, T], (Kind::Bool, Device::Cpu));
    for divergence in [Divergence::ForwardKl, Divergence::ReverseKl] {
        let target = ChunkedTarget::Logits { teacher: &x.teacher, criterion: SequenceKd::new(divergence, 1.0) };
        for chunk in CHUNKS {
            let (value, gh, gw) = run(&h, &x.w, &target, &none, chunk);
            assert_eq!(value, 0.0, "{divergence:?} {chunk:?}");
            assert_eq!(gh.abs().max().double_value(&[]), 0.0, "{divergence:?} {chunk:?}");
            assert_eq!(gw.abs().max().double_value(&[]), 0.0, "{divergence:?} {chunk:?}");
        }
    }
}
