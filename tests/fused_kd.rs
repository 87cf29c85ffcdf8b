//! The fused top-k KL (+ cross-entropy) with an analytic gradient ([`TopKKl::f_loss_masked`],
//! [`TokenKd`]) against the same loss through autograd in f64 ([`TopKKl::f_per_token`] and a
//! log-softmax cross-entropy): values and gradients with respect to the logits, with masks, labels
//! = −100, a NaN logit on a masked token, T = 1 and T = 2, k from 7 to V, in f64 and in f32.

use distill::criterion::{TokenCriterion, TokenKd, TokenReduction, TopKKl, TopKTail};
use tch::{Device, Kind, Tensor};

const B: i64 = 2;
const T: i64 = 6;
const V: i64 = 300;

struct Case {
    student: Tensor,
    teacher: Tensor,
    labels: Tensor,
    valid: Tensor,
}

/// Student and teacher logits `[B, T, V]` in f64 (scale 3, so that probabilities span many orders
/// of magnitude), labels with −100 on two tokens, a mask that leaves out a third one, whose student
/// logits are NaN (a padded position's).
fn case() -> Case {
    tch::manual_seed(300);
    let opts = (Kind::Double, Device::Cpu);
    let student = Tensor::randn([B, T, V], opts) * 3.0;
    let teacher = Tensor::randn([B, T, V], opts) * 3.0;
    let labels = Tensor::randint(V, [B, T], (Kind::Int64, Device::Cpu));
    let _ = labels.get(0).narrow(0, 0, 1).fill_(-100);
    let _ = labels.get(1).narrow(0, 3, 1).fill_(-100);
    let valid = Tensor::ones([B, T], (Kind::Int64, Device::Cpu));
    let _ = valid.get(1).narrow(0, T - 1, 1).fill_(0);
    let _ = student.get(1).get(T - 1).fill_(f64::NAN);
    Case { student, teacher, labels, valid }
}

/// The loss through autograd in f64 from the student logits `student` (f64) and the teacher encoding `top` (read in
/// f64): the reference value and gradient. The masked NaN row is zeroed first (its gradient is 0
/// by definition; autograd would spread its NaN through the log-softmax backward).
fn reference(
    c: &Case,
    student: &Tensor,
    top: &TopKTail,
    temperature: f64,
    r: TokenReduction,
    ce_weight: f64,
) -> (f64, Tensor) {
    let s = student.nan_to_num(0.0, None, None).detach().set_requires_grad(true);
    let top64 = TopKTail {
        ids: top.ids.shallow_clone(),
        log_probs: top.log_probs.to_kind(Kind::Double),
        tail: top.tail.to_kind(Kind::Double),
        temperature: top.temperature,
    };
    let kd = TopKKl::new(temperature).f_per_token(&s, &top64).unwrap();
    let mut mask = c.valid.ne(0);
    if ce_weight != 0.0 {
        mask = mask.logical_and(&c.labels.ne(-100));
    }
    let w = r.weights(&mask, Kind::Double).unwrap();
    let ce =
        s.log_softmax(-1, Kind::Double).gather(-1, &c.labels.clamp_min(0).unsqueeze(-1), false).squeeze_dim(-1).neg();
    let per_token = kd + ce * ce_weight;
    let loss = (per_token * &w).where_scalarother(&w.ne(0.0), 0.0).sum(Kind::Double);
    loss.backward();
    (loss.double_value(&[]), s.grad())
}

/// Error bounds of the fused loss in a float of unit roundoff `eps`, from the f64 reference.
///
/// Derivation. Per token, the log-softmax `log q_j = x_j − max − log Σ e^{x − max}` (x = s/T) is
/// off by at most ε·(|x_j − max| + log₂V + 2) ≤ ε·A with `A = 2·max|x| + 2·log₂V + 8` (the sums over
/// V and k entries are pairwise, ≤ log₂ of their length in ε each); a probability `q = e^{log q}`
/// then by ε·A relative, and the tail mass, a sum of positive such terms, too. Each bucket's term
/// `p·(log p − log q)` is off by ε·p·(|log p| + |log q| + A), cross-entropy's `−log q_y` by ε·A, the
/// gradient entries `w/T·(S·q_j − p_j)`, `w/T·q_j·(S − p_tail/q_tail)` and `w·(q_j − [j = y])` by
/// ε·A times the sum of the magnitudes of their terms. The teacher's values are the same numbers
/// on both sides (f32 read exactly into f64). Doubled for the rounding of exp, log and the products.
fn bounds(
    c: &Case,
    student: &Tensor,
    top: &TopKTail,
    temperature: f64,
    r: TokenReduction,
    ce_weight: f64,
    eps: f64,
) -> (f64, Tensor) {
    let s = student.nan_to_num(0.0, None, None);
    let x = &s / temperature;
    let a = x.abs().amax([-1], true) * 2.0 + (2.0 * (V as f64).log2() + 8.0);
    let lq = x.log_softmax(-1, Kind::Double);
    let q = lq.exp();
    let lp = top.log_probs.to_kind(Kind::Double);
    let p = lp.exp();
    let lp_tail = top.tail.to_kind(Kind::Double).unsqueeze(-1);
    let p_tail = lp_tail.exp();
    let kept = Tensor::zeros([B, T, V], (Kind::Double, Device::Cpu)).scatter(-1, &top.ids, &p.ones_like());
    let q_tail = (&q * (kept.ones_like() - &kept)).sum_dim_intlist(-1, true, Kind::Double);
    let lq_tail = q_tail.log();
    let lq_k = lq.gather(-1, &top.ids, false);
    let mass = p.sum_dim_intlist(-1, true, Kind::Double) + &p_tail;
    let y = c.labels.clamp_min(0).unsqueeze(-1);
    let lq1 = s.log_softmax(-1, Kind::Double);
    let a1 = s.abs().amax([-1], true) * 2.0 + (2.0 * (V as f64).log2() + 8.0);
    let mut mask = c.valid.ne(0);
    if ce_weight != 0.0 {
        mask = mask.logical_and(&c.labels.ne(-100));
    }
    let w = r.weights(&mask, Kind::Double).unwrap().unsqueeze(-1);
    let buckets =
        (&p * (lp.abs() + lq_k.abs() + &a)).nan_to_num(0.0, None, None).sum_dim_intlist(-1, true, Kind::Double)
            + (&p_tail * (lp_tail.abs() + lq_tail.abs() + &a)).nan_to_num(0.0, None, None);
    let ce_term = (lq1.gather(-1, &y, false).abs() + &a1) * ce_weight.abs();
    let value = (&w * (buckets + ce_term)).sum(Kind::Double).double_value(&[]) * 2.0 * eps;
    let tail_share = (&q * (&p_tail / &q_tail).nan_to_num(0.0, None, None)) * (kept.ones_like() - &kept);
    let kd_grad = (&q * &mass + kept.zeros_like().scatter(-1, &top.ids, &p) + tail_share) * &a / temperature;
    let onehot = kept.zeros_like().scatter(-1, &y, &y.ones_like().to_kind(Kind::Double));
    let ce_grad = (lq1.exp() + onehot) * &a1 * ce_weight.abs();
    (value, (kd_grad + ce_grad) * &w * (2.0 * eps))
}

fn check(kind: Kind, eps: f64) {
    assert_eq!(check_case(&case(), kind, eps, &[7, V - 1, V]), 24);
}

/// Runs every temperature, reduction and cross-entropy weight on `c` with each `k` of `ks`;
/// returns how many combinations were checked.
fn check_case(c: &Case, kind: Kind, eps: f64, ks: &[i64]) -> usize {
    let mut checked = 0;
    for temperature in [1.0, 2.0] {
        for &k in ks {
            let top = TopKTail::f_encode(&c.teacher.to_kind(kind), k, temperature).unwrap();
            for r in [TokenReduction::Token, TokenReduction::Sequence] {
                for ce_weight in [0.0, 0.5] {
                    let kd = TopKKl::new(temperature).with_reduction(r);
                    let s = c.student.to_kind(kind).detach().set_requires_grad(true);
                    let loss = if ce_weight == 0.0 {
                        kd.f_loss_masked(&s, &top, Some(&c.valid)).unwrap()
                    } else {
                        TokenKd::new(kd, ce_weight).f_loss(&s, &top, &c.labels, Some(&c.valid)).unwrap()
                    };
                    assert_eq!(loss.kind(), kind);
                    loss.backward();
                    let got = (loss.double_value(&[]), s.grad().to_kind(Kind::Double));
                    // The reference starts from the same (rounded) student logits.
                    let rounded = c.student.to_kind(kind).to_kind(Kind::Double);
                    let want = reference(c, &rounded, &top, temperature, r, ce_weight);
                    let (bv, bg) = bounds(c, &rounded, &top, temperature, r, ce_weight, eps);
                    let name = format!("{kind:?} T = {temperature} k = {k} {r:?} CE × {ce_weight}");
                    assert!((got.0 - want.0).abs() <= bv, "{name}: value {} vs {} (bound {bv:e})", got.0, want.0);
                    let over = ((&got.1 - &want.1).abs() - &bg).max().double_value(&[]);
                    assert!(over <= 0.0, "{name}: a gradient entry exceeds its bound by {over:e}");
                    // The masked token (NaN logits) gets exactly zero; the others do not vanish.
                    assert_eq!(got.1.get(1).get(T - 1).abs().max().double_value(&[]), 0.0, "{name}");
                    assert!(want.1.abs().max().double_value(&[]) > 1e-3, "{name}");
                    checked += 1;
                }
            }
        }
    }
    checked
}

/// A student whose probabilities outside the teacher's top 7 underflow in f32 (logits near −150,
/// e^{−150} ≈ 7e-66; at T = 2, e^{−75} ≈ 3e-33, a tail sum below the precision threshold) while the
/// teacher keeps a third of its mass there: the fused loss takes the tail from a log-sum-exp of
/// the excluded logits, and still equals the f64 computation within the bound.
#[test]
fn an_underflowing_student_tail_is_taken_from_its_logits() {
    let mut c = case();
    let k = 7;
    let teacher = TopKTail::f_encode(&c.teacher, k, 1.0).unwrap();
    let kept =
        Tensor::zeros([B, T, V], (Kind::Double, Device::Cpu)).scatter(-1, &teacher.ids, &teacher.log_probs.ones_like());
    let tail = kept.ones_like() - &kept;
    // The teacher: its top 7 scaled down, the rest lifted to hold about half of the mass.
    c.teacher = &c.teacher * &kept * 0.3 + (&c.teacher * 0.1 - 2.0) * &tail;
    let nan_row = c.student.get(1).get(T - 1).copy();
    c.student = &c.teacher * &kept + (Tensor::randn([B, T, V], (Kind::Double, Device::Cpu)) - 150.0) * &tail;
    c.student.get(1).get(T - 1).copy_(&nan_row);
    let top = TopKTail::f_encode(&c.teacher, k, 1.0).unwrap();
    let p_tail = top.tail.exp();
    assert!(p_tail.min().double_value(&[]) > 0.05, "teacher tail {p_tail:?}");
    assert!(top.ids.sort(-1, false).0.equal(&teacher.ids.sort(-1, false).0), "the kept ids moved");
    let q = c.student.to_kind(Kind::Float).softmax(-1, Kind::Float);
    assert_eq!((q * tail.to_kind(Kind::Float)).narrow(0, 0, 1).sum(Kind::Float).double_value(&[]), 0.0);
    for (kind, eps) in [(Kind::Float, f64::from(f32::EPSILON) / 2.0), (Kind::Double, f64::EPSILON / 2.0)] {
        assert_eq!(check_case(&c, kind, eps, &[k]), 8);
    }
}

#[test]
fn fused_equals_autograd_in_f64() {
    check(Kind::Double, f64::EPSILON / 2.0);
}

#[test]
fn fused_equals_autograd_in_f32() {
    check(Kind::Float, f64::from(f32::EPSILON) / 2.0);
}

/// Without a gradient on the logits the value is the same, and nothing is differentiable.
#[test]
fn value_without_gradient() {
    let c = case();
    let top = TopKTail::f_encode(&c.teacher, 9, 1.0).unwrap();
    let kd = TokenKd::new(TopKKl::new(1.0), 0.25).with_kd_weight(2.0);
    let plain = kd.f_loss(&c.student, &top, &c.labels, Some(&c.valid)).unwrap();
    assert!(!plain.requires_grad());
    let s = c.student.detach().set_requires_grad(true);
    let carried = kd.f_loss(&s, &top, &c.labels, Some(&c.valid)).unwrap();
    assert_eq!(plain.double_value(&[]), carried.double_value(&[]));
    // kd_weight 2, ce_weight 0.25: twice the KD alone plus a quarter of the cross-entropy alone.
    let kd_only = TokenKd::new(TopKKl::new(1.0), 0.0).f_loss(&c.student, &top, &c.labels, Some(&c.valid)).unwrap();
    let ce_only =
        TokenKd::new(TopKKl::new(1.0), 1.0).with_kd_weight(0.0).f_loss(&c.student, &top, &c.labels, Some(&c.valid));
    let sum = 2.0 * kd_only.double_value(&[]) + 0.25 * ce_only.unwrap().double_value(&[]);
    assert!((plain.double_value(&[]) - sum).abs() < 1e-12 * sum.abs());
}

#[test]
fn invalid_inputs_are_errors() {
    let c = case();
    let top = TopKTail::f_encode(&c.teacher, 9, 1.0).unwrap();
    let kd = TokenKd::new(TopKKl::new(1.0), 0.5);
    let out = c.labels.ones_like() * V;
    assert!(kd.f_loss(&c.student, &top, &out, None).is_err());
    assert!(kd.f_loss(&c.student, &top, &c.labels.narrow(1, 0, 2), None).is_err());
    assert!(kd.f_loss(&c.student, &top, &c.labels.to_kind(Kind::Float), None).is_err());
    assert!(kd.f_loss(&c.student, &top, &c.labels, Some(&c.valid.narrow(1, 0, 2))).is_err());
    assert!(TokenKd::new(TopKKl::new(1.0), f64::NAN).f_loss(&c.student, &top, &c.labels, None).is_err());
    assert!(TokenKd::new(TopKKl::new(0.0), 1.0).f_loss(&c.student, &top, &c.labels, None).is_err());
    let short = TopKTail::f_encode(&c.teacher.narrow(1, 0, 2), 9, 1.0).unwrap();
    assert!(kd.f_loss(&c.student, &short, &c.labels, None).is_err());
}

/// The student rules out (logits −inf) every token of the teacher's tail, which holds mass: the
/// loss is +inf (the autograd form says so per token), and the fused form with a gradient says the
/// loss is not finite, not that a gradient overflowed.
#[test]
fn an_infinite_loss_is_named_as_such() {
    use distill::criterion::CriterionError;
    use distill::DistillError;
    let opts = (Kind::Float, Device::Cpu);
    tch::manual_seed(6);
    let teacher = Tensor::randn([1, 2, 6], opts);
    let top = TopKTail::f_encode(&teacher, 2, 1.0).unwrap();
    assert!(top.tail.exp().min().double_value(&[]) > 0.01, "the teacher's tail holds mass");
    let student =
        Tensor::full([1, 2, 6], f64::NEG_INFINITY, opts).scatter(-1, &top.ids, &Tensor::randn([1, 2, 2], opts));
    let kd = TopKKl::new(1.0);
    let per_token = Vec::<f64>::try_from(kd.f_per_token(&student, &top).unwrap().reshape([-1])).unwrap();
    assert_eq!(per_token, [f64::INFINITY, f64::INFINITY]);
    assert_eq!(kd.f_loss_masked(&student, &top, None).unwrap().double_value(&[]), f64::INFINITY);
    let s = student.set_requires_grad(true);
    let labels = Tensor::from_slice(&[0i64, 1]).reshape([1, 2]);
    for err in [
        kd.f_loss_masked(&s, &top, None).map(drop).unwrap_err(),
        TokenKd::new(kd, 0.5).f_loss(&s, &top, &labels, None).map(drop).unwrap_err(),
    ] {
        assert!(err.to_string().starts_with("the loss is inf: "), "{err}");
        assert!(
            matches!(err, DistillError::Criterion(CriterionError::LossNotFinite { value }) if value == f64::INFINITY)
        );
    }
}

/// A finite loss whose gradient overflows the logits' kind: f16 logits tied on two tokens where the
/// teacher, at T = 10⁻⁶, puts all its mass on the first. The loss is log 2 (q = ½, ½ against p = 1,
/// 0), the gradient ±½/T = ±5·10⁵, past f16's 65 504: that is still a gradient overflow. Without a
/// gradient the loss is log 2 to f16's rounding (2⁻¹¹ relative).
#[test]
fn a_finite_loss_whose_gradient_overflows_is_a_gradient_overflow() {
    use distill::criterion::CriterionError;
    use distill::DistillError;
    let t = 1e-6;
    let teacher = Tensor::from_slice(&[2.0f32, 1.0, 0.0, 0.0]).view([1, 1, 4]);
    let top = TopKTail::f_encode(&teacher, 2, t).unwrap();
    let student = Tensor::from_slice(&[1.0f32, 1.0, -3.0, -3.0]).view([1, 1, 4]).to_kind(Kind::Half);
    let kd = TopKKl::new(t);
    let value = kd.f_loss_masked(&student, &top, None).unwrap().double_value(&[]);
    assert!((value - 2f64.ln()).abs() <= 2f64.ln() * 2f64.powi(-11), "{value}");
    let err = kd.f_loss_masked(&student.set_requires_grad(true), &top, None).map(drop).unwrap_err();
    assert!(matches!(err, DistillError::Criterion(CriterionError::GradientOverflow)), "{err}");
}

/// A finite loss past f16's largest number (65 504), here a sum over 8 tokens of a KL of about
/// 10⁴ each, is an error naming it in f16, not +inf; the mean over the tokens fits and is returned.
#[test]
fn a_sum_past_the_half_precision_range_is_an_error() {
    use distill::criterion::CriterionError;
    use distill::DistillError;
    let mut teacher = vec![0.0f32; 8 * 4];
    let mut student = vec![0.0f32; 8 * 4];
    for token in 0..8 {
        teacher[token * 4] = 100.0;
        student[token * 4 + 1] = 1e4;
    }
    let top = TopKTail::f_encode(&Tensor::from_slice(&teacher).view([1, 8, 4]), 2, 1.0).unwrap();
    let student = Tensor::from_slice(&student).view([1, 8, 4]).to_kind(Kind::Half);
    // Per token KL ≈ log p₀ − log q₀ = 0 − (0 − 10⁴) = 10⁴ (p₀ = 1 − 3e-44, q₀ = e^{−10⁴}).
    let mean = TopKKl::new(1.0).f_loss_masked(&student, &top, None).unwrap().double_value(&[]);
    assert!((mean - 1e4).abs() <= 1e4 * 2f64.powi(-11), "{mean}");
    let err = TopKKl::new(1.0).with_reduction(TokenReduction::Sum).f_loss_masked(&student, &top, None).unwrap_err();
    let message = err.to_string();
    match err {
        DistillError::Criterion(CriterionError::LossOutOfRange { value, kind: Kind::Half }) => {
            assert!((value - 8e4).abs() <= 8e4 * 1e-6, "{value}")
        }
        other => panic!("{other}"),
    }
    assert!(message.contains("does not fit"), "{message}");
}
