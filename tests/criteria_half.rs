//! `KlDiv` and `SoftCrossEntropy` on f16 and bf16 logits: computed in f32, as `torch.autocast`
//! runs `log_softmax` and `kl_div`, and returned in the logits' kind. Computed in half precision,
//! each log-probability is rounded at `u·|log q|` (`u` = 2⁻¹¹ for f16, 2⁻⁸ for bf16) while, at a
//! large temperature, `log p − log q` shrinks as 1/T, and the `T²` factor multiplies that rounding
//! by `T²`: at T = 300 the f16 loss was off by several times its value, the bf16 one negative.
//!
//! The reference is the f64 loss (and gradient) of the same half-precision inputs, which f32 and f64
//! represent exactly, so the two computations evaluate one formula on the same numbers.
//!
//! Loss bound. The f32 computation is `x = s/T`, `y = t/T` (one rounding each), the log-softmax and
//! softmax (max, shift, exp, blocked sum over the classes, log, difference), `kl_div`'s
//! `xlogy(p, p) − p·log q` (soft cross-entropy: `p·log q`), a blocked sum over the `N·C` terms
//! (soft cross-entropy: over the classes, then a mean over the batch) and the scale `T²/N`. Each
//! element's chain rounds at most `CHAIN_DEPTH` times relative to its operands, and each sum adds
//! `sum_depth(N·C)` roundings relative to Σ|terms|; both are bounded through the magnitude `M` of
//! `common::criterion_bounds::softmax_pair`, `T²/N · Σ (p + q)·(|x| + |y| + |lse_s| + |lse_t| + 1)`
//! (each log-probability is rounded relative to `|x| + |lse|`, each probability relative to itself,
//! weighted by the probability that multiplies it; the rounding of `x` and `y` is relative to `|x|`,
//! `|y|`). So `|L₃₂ − L| ≤ E = (CHAIN_DEPTH + sum_depth(N·C))·(u₃₂ + u₆₄)·M`, the `u₆₄` for the f64
//! reference's own rounding. Returning the loss in the inputs' kind rounds once more:
//! `u·|L₃₂| ≤ u·(|L| + E)`. Bound: `E + u·(|L| + E)`. The half-precision computation instead carries
//! `u·T²·Σ p·|log q| / N ≈ u·T²·log C`, 100 at T = 300 in f16, where `E` is about 1.
//!
//! Gradient bound, per element of the student's logits: the exact gradient is `g = T/N·(q − p)`
//! (both criteria, on `(N, C)` logits). Backward in f32: the seed `T²/N` (one rounding), `kl_div`'s
//! `−p·seed` (`p` rounded through the softmax chain), the log-softmax's `g − q·Σg` (`q = exp(log q)`,
//! relative to `|x| + |lse|`; the sum over `C`), the division by `T` (one rounding): within
//! `(CHAIN_DEPTH + sum_depth(C))·(u₃₂ + u₆₄)·T/N·(p + q)·(|x| + |y| + |lse_s| + |lse_t| + 1)`. Then
//! the cast to the inputs' kind: `u` of the result, plus `η` absolute where it is subnormal (half
//! the smallest subnormal: 2⁻²⁵ for f16, 2⁻¹³⁴ for bf16).

use distill::criterion::{Criterion, CriterionError, KlDiv, SoftCrossEntropy};
use distill::DistillError;
use tch::{Device, Kind, Tensor};

mod common;

use common::bounds::{self, compare, values, CHAIN_DEPTH, U_F32, U_F64};
use common::criterion_bounds::softmax_pair;

/// The half-precision kinds: unit roundoff `u` (2⁻¹¹, 2⁻⁸) and `η`, the absolute rounding among
/// subnormals (half the smallest subnormal: 2⁻²⁵ for f16, 2⁻¹³⁴ for bf16, whose range is f32's).
const KINDS: [(Kind, f64, f64); 2] =
    [(Kind::Half, bounds::U_F16, 2.980_232_238_769_531_3e-8), (Kind::BFloat16, 3.906_25e-3, 4.591_774_807_899_561e-41)];

/// f16's largest finite number, and the least value that rounds to +∞ in it (65 504 + half a step).
const F16_MAX: f64 = 65504.0;
const F16_OVERFLOW: f64 = 65520.0;

fn randn(seed: i64, shape: &[i64]) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

/// `(N, C) = (8, 10)` pairs: unrelated logits (a KL of order 1 at any T) and a student close to its
/// teacher (a small KL, against which each log-probability's rounding is large even at T = 1).
fn pairs() -> Vec<(&'static str, Tensor, Tensor)> {
    let teacher = randn(1, &[8, 10]) * 3.0;
    vec![
        ("unrelated", randn(2, &[8, 10]) * 3.0, teacher.shallow_clone()),
        ("close", &teacher + randn(3, &[8, 10]) * 0.1, teacher),
    ]
}

fn criteria(temperature: f64) -> [(&'static str, Box<dyn Criterion>); 2] {
    [("KlDiv", Box::new(KlDiv::new(temperature))), ("SoftCrossEntropy", Box::new(SoftCrossEntropy::new(temperature)))]
}

/// The loss bound `E` of the f32 computation (and the f64 reference) on `(N, C)` logits, and the
/// per-element gradient bound before the cast (see the module's derivation).
fn f32_bounds(s: &Tensor, t: &Tensor, temperature: f64) -> (f64, Tensor) {
    let (n, c) = (s.size()[0], s.size()[1]);
    let u = U_F32 + U_F64;
    let loss = (CHAIN_DEPTH + bounds::sum_depth((n * c) as usize)) * u * softmax_pair(s, t, temperature);
    let (x, y) = (s / temperature, t / temperature);
    let (lse_s, lse_t) = (x.logsumexp([1], true), y.logsumexp([1], true));
    let weight = x.softmax(1, Kind::Double) + y.softmax(1, Kind::Double);
    let logs = x.abs() + y.abs() + lse_s.abs() + lse_t.abs() + 1.0;
    let grad = weight * logs * ((CHAIN_DEPTH + bounds::sum_depth(c as usize)) * u * temperature / n as f64);
    (loss, grad)
}

/// Checks one criterion on one pair rounded to `kind`, against the f64 loss and gradient of the
/// rounded logits; returns what failed, with the margins.
fn check(
    criterion: &dyn Criterion,
    s: &Tensor,
    t: &Tensor,
    temperature: f64,
    (kind, u, eta): (Kind, f64, f64),
) -> Vec<String> {
    let mut failures = Vec::new();
    let (s, t) = (s.to_kind(kind), t.to_kind(kind));
    let s64 = s.to_kind(Kind::Double).set_requires_grad(true);
    let t64 = t.to_kind(Kind::Double);
    let want = criterion.f_loss(&s64, &t64).unwrap();
    want.backward();
    let (want, want_grad) = (want.double_value(&[]), s64.grad());
    let (e, grad_bound) = f32_bounds(&s64.detach(), &t64, temperature);
    let student = s.set_requires_grad(true);
    let teacher = t.set_requires_grad(true);
    let result = criterion.f_loss(&student, &teacher);
    if kind == Kind::Half && want - e >= F16_OVERFLOW {
        // Past f16's range: an error naming the f32 value.
        match result {
            Err(DistillError::Criterion(CriterionError::LossOutOfRange { value, kind: k })) if k == kind => {
                let c = compare(&[value], &[want], |_| e);
                bounds::record("  out of range, its value", &c);
                if !c.passes() {
                    failures.push(format!("LossOutOfRange's value {c}"));
                }
            }
            other => failures.push(format!("loss {want} past f16's range gave {other:?}")),
        }
        return failures;
    }
    assert!(kind != Kind::Half || want + e < F16_MAX, "a case at f16's border: {want} ± {e}");
    let loss = match result {
        Ok(loss) => loss,
        Err(err) => return vec![format!("error {err}")],
    };
    if loss.kind() != kind {
        failures.push(format!("loss kind {:?}", loss.kind()));
    }
    let c = compare(&[loss.double_value(&[])], &[want], |_| e + u * (want.abs() + e));
    bounds::record("  loss", &c);
    if !c.passes() {
        failures.push(format!("loss {c}"));
    }
    loss.backward();
    let grad = student.grad();
    if grad.kind() != kind {
        failures.push(format!("student gradient kind {:?}", grad.kind()));
    }
    let (want_grad, grad_bound) = (values(&want_grad), values(&grad_bound));
    let c = compare(&values(&grad), &want_grad, |i| grad_bound[i] + u * (want_grad[i].abs() + grad_bound[i]) + eta);
    bounds::record("  student gradient", &c);
    if !c.passes() {
        failures.push(format!("student gradient {c}"));
    }
    // The teacher (upcast too) gets its gradient, in its kind.
    let teacher_grad = teacher.grad();
    let finite = bool::try_from(teacher_grad.isfinite().all()).unwrap();
    if teacher_grad.kind() != kind || !finite || bounds::abs_sum(&teacher_grad) == 0.0 {
        failures.push(format!("teacher gradient {:?}, finite {finite}", teacher_grad.kind()));
    }
    failures
}

/// At T = 1 and T = 300, in f16 and bf16, for both criteria and both pairs: the loss and the
/// student's gradient equal the f64 ones of the same inputs within f32's rounding and one rounding
/// to the kind; the soft cross-entropy at T = 300 (about `T²·log C` = 2·10⁵) is past f16's range.
#[test]
fn half_precision_logits_are_computed_in_f32() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for temperature in [1.0, 300.0] {
        for (name, criterion) in criteria(temperature) {
            for (pair, s, t) in pairs() {
                for kind in KINDS {
                    let what = format!("{name} T = {temperature} {pair} {:?}", kind.0);
                    eprintln!("{what}");
                    failures.extend(
                        check(criterion.as_ref(), &s, &t, temperature, kind)
                            .into_iter()
                            .map(|f| format!("{what}: {f}")),
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 16);
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// A KL that does not fit f16 (120 000: the teacher is sure of class 0, where the student's
/// log-probability is −120 000) is an error naming its value; in bf16 it fits. Computed in f16, the
/// log-probability itself overflowed and the loss read +∞.
#[test]
fn a_loss_past_the_f16_range_is_an_error() {
    let student = Tensor::from_slice(&[-60000.0f32, 60000.0]).view([1, 2]);
    let teacher = Tensor::from_slice(&[60000.0f32, -60000.0]).view([1, 2]);
    let kl = KlDiv::new(1.0);
    let err = kl.f_loss(&student.to_kind(Kind::Half), &teacher.to_kind(Kind::Half)).unwrap_err();
    let message = err.to_string();
    match err {
        DistillError::Criterion(CriterionError::LossOutOfRange { value, kind: Kind::Half }) => {
            assert_eq!(value, 120000.0, "exact in f32: 0 − (−60000 − 60000)");
        }
        other => panic!("{other}"),
    }
    assert!(message.contains("does not fit the inputs' kind Half"), "{message}");
    let (s, t) = (student.to_kind(Kind::BFloat16), teacher.to_kind(Kind::BFloat16));
    let want = kl.f_loss(&s.to_kind(Kind::Double), &t.to_kind(Kind::Double)).unwrap().double_value(&[]);
    let loss = kl.f_loss(&s, &t).unwrap();
    assert_eq!(loss.kind(), Kind::BFloat16);
    // One rounding to bf16 of an f32 value exact here (the difference of two bf16 numbers).
    assert!((loss.double_value(&[]) - want).abs() <= 3.906_25e-3 * want, "{loss} vs {want}");
}

/// A class both sides rule out (`−∞` on each) still counts as absent in half precision: the loss
/// and gradients are those of the logits without it, finite, and that class's gradient is 0.
#[test]
fn a_class_both_sides_rule_out_is_absent_in_half_precision() {
    let temperature = 300.0;
    let (s, t) = (randn(4, &[4, 6]) * 3.0, randn(5, &[4, 6]) * 3.0);
    let ruled_out = Tensor::full([4, 1], f64::NEG_INFINITY, (Kind::Float, Device::Cpu));
    for (name, criterion) in criteria(temperature) {
        for (kind, u, _) in KINDS {
            let (sk, tk) = (s.to_kind(kind), t.to_kind(kind));
            let (s64, t64) = (sk.to_kind(Kind::Double), tk.to_kind(Kind::Double));
            let want = criterion.f_loss(&s64, &t64).unwrap().double_value(&[]);
            let (e, _) = f32_bounds(&s64, &t64, temperature);
            let student = Tensor::cat(&[&sk, &ruled_out.to_kind(kind)], 1).set_requires_grad(true);
            let teacher = Tensor::cat(&[&tk, &ruled_out.to_kind(kind)], 1);
            if kind == Kind::Half && want > F16_MAX {
                assert!(criterion.f_loss(&student, &teacher).is_err(), "{name} {kind:?}");
                continue;
            }
            let loss = criterion.f_loss(&student, &teacher).unwrap();
            let c = compare(&[loss.double_value(&[])], &[want], |_| e + u * (want.abs() + e));
            assert!(c.passes(), "{name} {kind:?}: {c}");
            loss.backward();
            let grad = student.grad();
            assert!(bool::try_from(grad.isfinite().all()).unwrap(), "{name} {kind:?}: {grad}");
            assert_eq!(bounds::abs_sum(&grad.narrow(1, 6, 1)), 0.0, "{name} {kind:?}");
        }
    }
}

/// f32 and f64 logits are computed as before, with no cast: the losses are those of PyTorch's
/// formulas written out with the same operations, bit for bit.
#[test]
fn f32_and_f64_logits_are_computed_as_given() {
    let temperature = 4.0;
    let (s, t) = (randn(6, &[5, 7]) * 3.0, randn(7, &[5, 7]) * 3.0);
    for kind in [Kind::Float, Kind::Double] {
        let (s, t) = (s.to_kind(kind), t.to_kind(kind));
        let p = (&t / temperature).softmax(1, None);
        let log_q = (&s / temperature).log_softmax(1, None);
        let scale = temperature * temperature;
        let kl = log_q.kl_div(&p, tch::Reduction::Sum, false) * (scale / 5.0);
        let ce = (&p * &log_q).sum_dim_intlist(1, false, None).mean(None) * -scale;
        for (name, criterion, want) in [
            ("KlDiv", Box::new(KlDiv::new(temperature)) as Box<dyn Criterion>, kl),
            ("SoftCrossEntropy", Box::new(SoftCrossEntropy::new(temperature)), ce),
        ] {
            let loss = criterion.f_loss(&s, &t).unwrap();
            assert_eq!(loss.kind(), kind);
            let (got, want) = (loss.double_value(&[]), want.double_value(&[]));
            assert_eq!(got.to_bits(), want.to_bits(), "{name} {kind:?}: {got} vs {want}");
        }
    }
}
