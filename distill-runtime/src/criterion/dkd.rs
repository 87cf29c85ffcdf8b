//! [`Dkd`] (Zhao et al. 2022).

use tch::{Kind, Reduction, Tensor};

use super::{batch_size, equal_with_dims, Criterion};

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
/// or `N × 1` elements). Without targets — [`Criterion::loss`], or `loss_with_targets(.., None)` — the
/// **teacher's argmax stands in for the label**: the loss is then DKD with respect to the teacher's
/// prediction, which differs from the paper's wherever the teacher is wrong. Give the labels to get the
/// paper's loss.
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

impl Criterion for Dkd {
    /// DKD with the teacher's argmax as the label (see the type's documentation).
    fn loss(&self, student: &Tensor, teacher: &Tensor) -> Tensor {
        self.loss_with_targets(student, teacher, None)
    }

    fn loss_with_targets(&self, student: &Tensor, teacher: &Tensor, targets: Option<&Tensor>) -> Tensor {
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
        let tckd = b_student.log().kl_div(&b_teacher, Reduction::Sum, false);

        let mask = gt * 1000.0;
        let log_p_student = (s_scaled - &mask).log_softmax(1, None);
        let p_teacher = (t_scaled - &mask).softmax(1, None);
        let nckd = log_p_student.kl_div(&p_teacher, Reduction::Sum, false);

        (tckd * self.alpha + nckd * self.beta) * (t * t / batch_size(student))
    }

    /// Equal 2-D shapes (logits `(N, C)`).
    fn accepts_shapes(&self, student: &[i64], teacher: &[i64]) -> bool {
        equal_with_dims(student, teacher, 2) && student.len() == 2
    }
}
