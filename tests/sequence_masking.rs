//! `SequenceKd`'s masked and empty inputs: a masked token holding NaN or ±∞ logits on either side
//! changes nothing (the value and the valid rows' gradients are bit for bit those of clean padding,
//! the masked rows' gradient is exactly 0), the common path computes exactly as the plain formula,
//! and no token at all is a loss of 0, as no valid token is, here and in `ChunkedLoss`.

use distill::criterion::{
    ChunkedLoss, ChunkedTarget, Criterion, Divergence, SequenceKd, TokenCriterion, TokenReduction,
};
use distill::DistillError;
use tch::{Device, Kind, Tensor};

/// Every divergence, with the parameters that take their own code paths (β = 0 and 1, α = 0 and 1).
const DIVERGENCES: [Divergence; 11] = [
    Divergence::ForwardKl,
    Divergence::ReverseKl,
    Divergence::Jsd { beta: 0.5 },
    Divergence::Jsd { beta: 0.0 },
    Divergence::Jsd { beta: 1.0 },
    Divergence::SkewKl { alpha: 0.1 },
    Divergence::SkewKl { alpha: 1.0 },
    Divergence::SkewReverseKl { alpha: 0.1 },
    Divergence::SkewReverseKl { alpha: 0.0 },
    Divergence::SkewReverseKl { alpha: 1.0 },
    Divergence::TotalVariation,
];

const REDUCTIONS: [TokenReduction; 4] =
    [TokenReduction::Token, TokenReduction::Sequence, TokenReduction::Batch, TokenReduction::Sum];

const B: i64 = 2;
const V: i64 = 13;

/// Labels `[2, t]` with `masked` (batch, position) pairs −100, the others class indices.
fn labels(t: i64, masked: &[(i64, i64)]) -> Tensor {
    let labels = Tensor::arange(B * t, (Kind::Int64, Device::Cpu)).remainder(V).reshape([B, t]);
    for &(b, i) in masked {
        let _ = labels.get(b).get(i).fill_(-100);
    }
    labels
}

/// The two ways `SequenceKd` computes a padded batch: 4 of 10 tokens masked (padding at the end of
/// the first sequence, a prompt at the start of the second), computed over the valid rows alone;
/// and 2 of 24 (under one in eight), every row computed and the masked ones checked.
fn layouts() -> [(i64, Vec<(i64, i64)>); 2] {
    [(5, vec![(0, 3), (0, 4), (1, 0), (1, 1)]), (12, vec![(0, 11), (1, 0)])]
}

/// The logits with every masked row overwritten by `garbage` (row by row: NaN, +∞, −∞, or a
/// single NaN, +∞ or −∞ among finite values).
fn with_garbage(x: &Tensor, garbage: &str, masked: &[(i64, i64)]) -> Tensor {
    let x = x.copy();
    for (i, &(b, t)) in masked.iter().enumerate() {
        let mut row = x.get(b).get(t);
        match garbage {
            "nan" => {
                let _ = row.fill_(f64::NAN);
            }
            "inf" => {
                let _ = row.fill_(f64::INFINITY);
            }
            "-inf" => {
                let _ = row.fill_(f64::NEG_INFINITY);
            }
            // One non-finite entry per row, a different one in each.
            "mixed" => {
                let value = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY][i % 3];
                let _ = row.get(i as i64).fill_(value);
            }
            other => panic!("unknown garbage {other}"),
        }
    }
    x
}

fn bits(t: &Tensor) -> Vec<u64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap().iter().map(|v| v.to_bits()).collect()
}

/// The value and the gradients of both sides (the teacher requires one too: `SequenceKd` passes
/// it one) of `loss` on these logits.
fn run(loss: impl Fn(&Tensor, &Tensor) -> Tensor, s: &Tensor, t: &Tensor) -> (f64, Tensor, Tensor) {
    let s = s.detach().set_requires_grad(true);
    let t = t.detach().set_requires_grad(true);
    let value = loss(&s, &t);
    if value.requires_grad() {
        value.backward();
    }
    (value.double_value(&[]), grad(&s), grad(&t))
}

/// The gradient of `x`, zeros where none reached it (`SkewKl { alpha: 1 }` is `KL(p ‖ p)`, which
/// does not depend on the student; `SkewReverseKl { alpha: 1 }` does not depend on the teacher).
fn grad(x: &Tensor) -> Tensor {
    let g = x.grad();
    if g.defined() {
        g
    } else {
        x.zeros_like()
    }
}

/// Rows `[B, T]` of a gradient `[B, T, V]` where `rows` holds, flattened.
fn rows(grad: &Tensor, rows: &Tensor) -> Tensor {
    grad.masked_select(&rows.unsqueeze(-1))
}

#[test]
fn non_finite_logits_at_masked_tokens_change_nothing() {
    for (t_len, masked_at) in layouts() {
        for kind in [Kind::Float, Kind::Double] {
            tch::manual_seed(11);
            let opts = (kind, Device::Cpu);
            let (s, t) = (Tensor::randn([B, t_len, V], opts) * 3.0, Tensor::randn([B, t_len, V], opts) * 3.0);
            let labels = labels(t_len, &masked_at);
            let valid = labels.ne(-100);
            let masked = valid.logical_not();
            for divergence in DIVERGENCES {
                // Every reduction in f32; the reduction is not what the precision changes.
                let reductions = if kind == Kind::Float { &REDUCTIONS[..] } else { &REDUCTIONS[..1] };
                for &reduction in reductions {
                    let kd = SequenceKd::new(divergence, 2.0).with_reduction(reduction);
                    let by_labels = |s: &Tensor, t: &Tensor| kd.f_loss_with_targets(s, t, Some(&labels)).unwrap();
                    let by_mask = |s: &Tensor, t: &Tensor| kd.f_loss_masked(s, t, Some(&valid)).unwrap();
                    let clean = run(by_labels, &s, &t);
                    assert!(clean.0.is_finite(), "{divergence:?}: {}", clean.0);
                    for garbage in ["nan", "inf", "-inf", "mixed"] {
                        let sides = [
                            ("student", with_garbage(&s, garbage, &masked_at), t.shallow_clone()),
                            ("teacher", s.shallow_clone(), with_garbage(&t, garbage, &masked_at)),
                            ("both", with_garbage(&s, garbage, &masked_at), with_garbage(&t, garbage, &masked_at)),
                        ];
                        for (side, gs, gt) in &sides {
                            let case = format!(
                                "T {t_len}, {kind:?} {divergence:?} {reduction:?}: {garbage} on the {side} side"
                            );
                            for (entry, got) in [("labels", run(by_labels, gs, gt)), ("mask", run(by_mask, gs, gt))] {
                                assert_eq!(
                                    got.0.to_bits(),
                                    clean.0.to_bits(),
                                    "{case} ({entry}): value {} vs {}",
                                    got.0,
                                    clean.0
                                );
                                for (which, g, c) in [("student", &got.1, &clean.1), ("teacher", &got.2, &clean.2)] {
                                    let at_masked = rows(g, &masked);
                                    assert!(
                                        bits(&at_masked).iter().all(|&b| f64::from_bits(b) == 0.0),
                                        "{case} ({entry}): the {which} gradient at masked rows is not 0: {at_masked:?}"
                                    );
                                    assert_eq!(
                                        bits(&rows(g, &valid)),
                                        bits(&rows(c, &valid)),
                                        "{case} ({entry}): the {which} gradient at valid rows differs"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Without garbage the loss is the plain formula, bit for bit: the divergence per token over every
/// row, then the reduction's weights, selected where they are non-zero and summed (as before the
/// masked rows were looked at), for the value and the valid rows' gradients — also when only the
/// valid rows are computed: every operation is row-wise or elementwise. Shapes with a vocabulary that is no
/// multiple of a vector's lanes, and one large enough to be split between threads.
#[test]
fn clean_padding_computes_exactly_the_plain_formula() {
    let mut shapes: Vec<(i64, i64, Tensor)> = layouts().into_iter().map(|(t, m)| (t, V, labels(t, &m))).collect();
    for masked in [16, 1] {
        // [4, 64, 999]: 255 744 elements, past libtorch's grain size of 32 768 per thread.
        let labels = Tensor::arange(4 * 64, (Kind::Int64, Device::Cpu)).remainder(999).reshape([4, 64]);
        let _ = labels.narrow(1, 64 - masked, masked).fill_(-100);
        shapes.push((64, 999, labels));
    }
    for (t_len, vocab, labels) in shapes {
        tch::manual_seed(12);
        let b = labels.size()[0];
        let opts = (Kind::Float, Device::Cpu);
        let (s, t) = (Tensor::randn([b, t_len, vocab], opts) * 3.0, Tensor::randn([b, t_len, vocab], opts) * 3.0);
        let valid = labels.ne(-100);
        for divergence in DIVERGENCES {
            for reduction in REDUCTIONS {
                let kd = SequenceKd::new(divergence, 2.0).with_reduction(reduction);
                let got = run(|s, t| kd.f_loss_with_targets(s, t, Some(&labels)).unwrap(), &s, &t);
                let plain = run(
                    |s, t| {
                        let per_token = divergence.per_token(s, t, 2.0).unwrap();
                        let w = reduction.weights(&valid, Kind::Float).unwrap();
                        (per_token * &w).where_self(&w.ne(0.0), &Tensor::zeros([], opts)).sum(Kind::Float)
                    },
                    &s,
                    &t,
                );
                let case = format!("[{b}, {t_len}, {vocab}] {divergence:?} {reduction:?}");
                assert_eq!(got.0.to_bits(), plain.0.to_bits(), "{case}: value");
                for (which, g, p) in [("student", &got.1, &plain.1), ("teacher", &got.2, &plain.2)] {
                    assert_eq!(bits(&rows(g, &valid)), bits(&rows(p, &valid)), "{case}: {which} gradient");
                    // Masked rows: 0 on both sides (the plain formula's may be −0, from 0 · −x).
                    let masked = valid.logical_not();
                    assert_eq!(rows(g, &masked).abs().sum(Kind::Double).double_value(&[]), 0.0, "{case}: {which}");
                    assert_eq!(rows(p, &masked).abs().sum(Kind::Double).double_value(&[]), 0.0, "{case}: {which}");
                }
            }
        }
    }
}

/// No token (`B = 0` or `T = 0`) is no valid token: 0 with a zero gradient, through every entry
/// point and reduction, as `ChunkedLoss` gives for the same inputs (and TRL 1.16's
/// `generalized_jsd_loss`). An empty vocabulary is no distribution: an error.
#[test]
fn no_token_is_a_loss_of_zero_and_an_empty_vocabulary_an_error() {
    let opts = (Kind::Float, Device::Cpu);
    for (b, t) in [(2, 0), (0, 3)] {
        let s = Tensor::randn([b, t, V], opts).set_requires_grad(true);
        let teacher = Tensor::randn([b, t, V], opts);
        let labels = Tensor::zeros([b, t], (Kind::Int64, Device::Cpu));
        for divergence in DIVERGENCES {
            for reduction in REDUCTIONS {
                let kd = SequenceKd::new(divergence, 2.0).with_reduction(reduction);
                let case = format!("[{b}, {t}, {V}] {divergence:?} {reduction:?}");
                let losses = [
                    ("f_loss", kd.f_loss(&s, &teacher)),
                    ("labels", kd.f_loss_with_targets(&s, &teacher, Some(&labels))),
                    ("mask", kd.f_loss_masked(&s, &teacher, Some(&labels.ne(0)))),
                    ("no mask", kd.f_loss_masked(&s, &teacher, None)),
                ];
                for (entry, loss) in losses {
                    let loss = loss.unwrap_or_else(|err| panic!("{case} ({entry}): {err}"));
                    // Every divergence but `KL(p ‖ p)` depends on the student.
                    let constant = divergence == Divergence::SkewKl { alpha: 1.0 };
                    assert_eq!(loss.requires_grad(), !constant, "{case} ({entry})");
                    assert_eq!(loss.size(), Vec::<i64>::new(), "{case} ({entry})");
                    assert_eq!(loss.double_value(&[]), 0.0, "{case} ({entry})");
                    // Differentiable: a training step on an empty batch runs its backward.
                    if loss.requires_grad() {
                        loss.backward();
                        assert_eq!(s.grad().size(), [b, t, V], "{case} ({entry})");
                    }
                }
            }
        }
        let h = Tensor::randn([b, t, 4], opts);
        let w = Tensor::randn([V, 4], opts);
        let z = h.matmul(&w.tr());
        let target = ChunkedTarget::Logits { teacher: &z, criterion: SequenceKd::new(Divergence::ReverseKl, 2.0) };
        let chunked = ChunkedLoss::new(2).f_loss(&h, &w, &target, None).unwrap();
        let direct = SequenceKd::new(Divergence::ReverseKl, 2.0).f_loss_masked(&z, &z, None).unwrap();
        assert_eq!((chunked.double_value(&[]), direct.double_value(&[])), (0.0, 0.0), "[{b}, {t}]");
    }
    let empty = Tensor::zeros([2, 3, 0], opts);
    let err = SequenceKd::default().f_loss(&empty, &empty).unwrap_err();
    assert!(matches!(&err, DistillError::ShapeMismatch { reason, .. } if reason.contains("vocabulary")), "{err:?}");
    assert!(SequenceKd::default().f_loss_masked(&empty, &empty, None).is_err());
}

/// Every token masked is also 0 with a zero gradient, garbage in every row included.
#[test]
fn every_token_masked_is_zero_with_a_zero_gradient_whatever_the_logits() {
    let opts = (Kind::Float, Device::Cpu);
    let s = Tensor::full([B, 5, V], f64::NAN, opts);
    let t = Tensor::full([B, 5, V], f64::INFINITY, opts);
    let none = Tensor::full([B, 5], -100, (Kind::Int64, Device::Cpu));
    for divergence in DIVERGENCES {
        for reduction in REDUCTIONS {
            let kd = SequenceKd::new(divergence, 1.0).with_reduction(reduction);
            let (value, gs, gt) = run(|s, t| kd.f_loss_with_targets(s, t, Some(&none)).unwrap(), &s, &t);
            assert_eq!(value, 0.0, "{divergence:?} {reduction:?}");
            for g in [gs, gt] {
                assert_eq!(g.abs().max().double_value(&[]), 0.0, "{divergence:?} {reduction:?}");
            }
        }
    }
}
