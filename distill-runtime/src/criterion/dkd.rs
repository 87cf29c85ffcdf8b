//! [`Dkd`] (Zhao et al. 2022).

use tch::{Kind, Reduction, Tensor};

use super::check::{equal_non_empty, logits_2d, parameter};
use super::logits::where_teacher_positive;
use super::wide::computed_in;
use super::{batch_size, catalogue_criterion};

/// mdistiller's offset subtracted from the target logit so that the softmax over the other classes
/// ignores it.
const TARGET_MASK: f64 = 1000.0;

/// Decoupled KD, Zhao et al., "Decoupled Knowledge Distillation" (CVPR 2022), as the official mdistiller
/// `dkd_loss`, on logits `(N, C)` with class labels `y` (`N` indices):
///
/// with `p = softmax(s/T)`, `q = softmax(t/T)`, the ground-truth mask `g` (1 at `(i, y_i)`, else 0):
///
/// - **TCKD** (target class): the binary distributions `b = [Σ p·g, Σ p·(1 − g)]` per sample;
///   `Σ kl_div(log b_s, b_t) · T² / N`;
/// - **NCKD** (non-target classes): the softmax over the other classes, obtained by subtracting 1000
///   from the target logit: `Σ kl_div(log_softmax(s/T − 1000·g), softmax(t/T − 1000·g)) · T² / N`;
///
/// and the loss is `α · TCKD + β · NCKD`. mdistiller also ramps the loss in linearly over the first
/// epochs (`min(epoch / warmup, 1)`, warmup 20); that schedule is the training loop's, e.g. by
/// rebuilding `Dkd::default() * ramp` each epoch.
///
/// **Labels.** [`Criterion::loss_with_targets`] takes the batch's class indices (any integer kind, `N`
/// or `N × 1` elements, each in `0..C`; anything else — one-hot rows, a wrong count — is an error
/// from [`Criterion::check_targets`]). Without targets — [`Criterion::loss`], or
/// `loss_with_targets(.., None)` — the
/// **teacher's argmax stands in for the label**: the loss is then DKD with respect to the teacher's
/// prediction, which differs from the paper's wherever the teacher is wrong. Give the labels to get the
/// paper's loss.
///
/// **Half precision.** For f16 and bf16 logits the non-target term is computed in f32, as in
/// mdistiller, where the bool mask of `logits / T − 1000 · mask` promotes it (the target term stays
/// in the input's precision); the loss is then an f32 scalar, as mdistiller's, while the gradient
/// keeps the logits' kind. NCKD's terms are differences of log-probabilities of the order of
/// `log C`, which half precision would round to a few percent of the loss.
///
/// α and β must be finite and ≥ 0, the temperature finite and > 0; the logits need at least 2
/// classes (the non-target term is over the others). A class both sides rule out (a `−∞` logit on
/// each) contributes 0, as in [`KlDiv`](super::KlDiv), where mdistiller's loss is NaN.
///
/// [`Criterion::loss_with_targets`]: super::Criterion::loss_with_targets
/// [`Criterion::loss`]: super::Criterion::loss
/// [`Criterion::check_targets`]: super::Criterion::check_targets
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dkd {
    /// Weight of the target-class term TCKD (mdistiller default: 1).
    pub alpha: f64,
    /// Weight of the non-target-class term NCKD (mdistiller default for CIFAR-100: 8).
    pub beta: f64,
    /// Softmax temperature (mdistiller default: 4).
    pub temperature: f64,
}

impl Dkd {
    /// DKD with these term weights and temperature.
    pub const fn new(alpha: f64, beta: f64, temperature: f64) -> Self {
        Dkd { alpha, beta, temperature }
    }
}

/// `α = 1`, `β = 8`, `T = 4`, mdistiller's defaults.
impl Default for Dkd {
    fn default() -> Self {
        Dkd::new(1.0, 8.0, 4.0)
    }
}

impl Dkd {
    /// DKD with `targets` as labels, or the teacher's argmax (see the type's documentation).
    fn compute(&self, student: &Tensor, teacher: &Tensor, targets: Option<&Tensor>) -> Tensor {
        let index = match targets {
            Some(targets) => targets.to_device(student.device()).to_kind(Kind::Int64).reshape([-1, 1]),
            None => teacher.argmax(1, true),
        };
        let gt = student.zeros_like().scatter_value(1, &index, 1.0);
        let other = student.ones_like().scatter_value(1, &index, 0.0);
        let t = self.temperature;
        let (s_scaled, t_scaled) = (student / t, teacher / t);

        let binary = |p: Tensor| {
            Tensor::cat(&[(&p * &gt).sum_dim_intlist(1, true, None), (&p * &other).sum_dim_intlist(1, true, None)], 1)
        };
        let b_student = binary(s_scaled.softmax(1, None));
        let b_teacher = binary(t_scaled.softmax(1, None));
        // A class both sides rule out (−∞ logits) counts as absent, as in `KlDiv`.
        let tckd = where_teacher_positive(b_student.log(), &b_teacher).kl_div(&b_teacher, Reduction::Sum, false);

        // mdistiller subtracts `1000.0 * gt_mask`, a Python float times a bool mask: a tensor of
        // the default dtype, f32, which promotes half-precision logits. Its non-target term is
        // computed in f32 from `s/T` rounded to the input's precision (the division comes first),
        // and so is this one; f32 and f64 are not converted.
        let (kind, wide) = (student.kind(), computed_in(student.kind()));
        let mask = gt.to_kind(wide) * TARGET_MASK;
        let p_teacher = (t_scaled.to_kind(wide) - &mask).softmax(1, None);
        let log_p_student = where_teacher_positive((s_scaled.to_kind(wide) - &mask).log_softmax(1, None), &p_teacher);
        let nckd = log_p_student.kl_div(&p_teacher, Reduction::Sum, false);

        let n = batch_size(student);
        if kind == wide {
            (tckd * self.alpha + nckd * self.beta) * (t * t / n)
        } else {
            // In half precision each scalar step rounds: mdistiller's order, each term scaled in
            // its own precision (the target term in the input's, the other in f32), summed in f32.
            tckd * (t * t) / n * self.alpha + nckd * (t * t) / n * self.beta
        }
    }
}

catalogue_criterion!(Dkd {
    /// α and β finite and ≥ 0, the temperature finite and > 0.
    fn validate(&self) -> Result<(), String> {
        parameter("Dkd's alpha", self.alpha, 0.0, false)?;
        parameter("Dkd's beta", self.beta, 0.0, false)?;
        parameter("Dkd's temperature", self.temperature, 0.0, true)
    }

    /// Equal, non-empty 2-D shapes (logits `(N, C)`) with at least 2 classes.
    fn check_shapes(&self, student: &[i64], teacher: &[i64]) -> Result<(), String> {
        equal_non_empty(student, teacher)?;
        logits_2d(student)?;
        if student[1] < 2 {
            return Err(format!("DKD needs at least 2 classes (a target and the others), got {}", student[1]));
        }
        Ok(())
    }

    /// One class index in `0..C` per sample, of an integer kind, `N` or `N × 1` elements.
    fn check_targets(&self, student: &[i64], targets: &Tensor) -> Result<(), String> {
        check_labels(student, targets)
    }
});

/// Whether `targets` are `N` class indices in `0..C` for logits of shape `[N, C]`, and if not, why.
fn check_labels(student: &[i64], targets: &Tensor) -> Result<(), String> {
    let (samples, classes) = match student {
        [n, c] => (*n, *c),
        _ => return Ok(()), // the shapes' own check reports this
    };
    let shape = targets.size();
    let one_hot = if shape == [samples, classes] {
        " (one-hot rows? pass the class indices, `labels.argmax(1, false)`)"
    } else {
        ""
    };
    let kind = targets.kind();
    if !matches!(kind, Kind::Uint8 | Kind::Int8 | Kind::Int16 | Kind::Int | Kind::Int64) {
        return Err(format!(
            "DKD's targets must be class indices, an integer tensor; got a {kind:?} tensor of shape {shape:?}{one_hot}"
        ));
    }
    let count: i64 = shape.iter().product();
    if count != samples || shape.len() > 2 || (shape.len() == 2 && shape[1] != 1) {
        return Err(format!(
            "DKD needs one class index per sample, shape [{samples}] or [{samples}, 1]; got shape {shape:?}{one_hot}"
        ));
    }
    let (low, high) = match (targets.f_min(), targets.f_max()) {
        (Ok(low), Ok(high)) => (low.int64_value(&[]), high.int64_value(&[])),
        (Err(err), _) | (_, Err(err)) => return Err(format!("cannot read DKD's targets: {err}")),
    };
    if low < 0 || high >= classes {
        let bad = if low < 0 { low } else { high };
        return Err(format!("DKD's targets must be class indices in 0..{classes}, got {bad}"));
    }
    Ok(())
}
