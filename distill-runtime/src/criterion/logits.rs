//! Soft-target losses on logits: [`KlDiv`] (Hinton KD) and [`SoftCrossEntropy`].

use tch::{Reduction, Tensor};

use super::check::{equal_with_classes, parameter};
use super::wide::{computed_in, in_kind};
use super::{batch_size, catalogue_criterion};
use crate::error::Result;

/// Hinton et al. 2015, "Distilling the Knowledge in a Neural Network": the KL divergence from the
/// teacher's to the student's softened class distribution,
///
/// `T² · F.kl_div(F.log_softmax(s/T, dim=1), F.softmax(t/T, dim=1), reduction="batchmean")`
///
/// i.e. `T²/N · Σ softmax(t/T) · (log softmax(t/T) − log_softmax(s/T))`, summed over classes (dim 1) and
/// any further dimensions, divided by the batch size `N`. The `T²` keeps gradient magnitudes independent
/// of the temperature, as in the paper. A temperature that is not finite and > 0 is invalid
/// ([`Criterion::validate`](super::Criterion::validate)). A class both sides rule out (a `−∞`
/// logit on each) contributes 0, as `0 · log 0 = 0` says, where `F.kl_div` gives NaN; every other
/// value is `F.kl_div`'s, bit for bit.
///
/// **Half precision.** f16 and bf16 logits are computed on in f32, as `torch.autocast` runs
/// `log_softmax` and `kl_div`, and the loss is returned in their kind
/// ([`LossOutOfRange`](super::CriterionError::LossOutOfRange) when it does not fit it). In half
/// precision each `log p − log q`, about `1/T` at a large temperature, would be rounded relative to
/// `|log p|`, and the `T²` factor multiplies that rounding by `T²`: at `T = 300` the loss would be
/// off by several times its value, or negative.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KlDiv {
    /// Softmax temperature `T` (> 0).
    pub temperature: f64,
}

impl KlDiv {
    /// Hinton KD at temperature `temperature`.
    pub const fn new(temperature: f64) -> Self {
        KlDiv { temperature }
    }
}

/// `T = 4`, the default of RepDistiller (`--kd_T`) and mdistiller (`KD.TEMPERATURE`).
impl Default for KlDiv {
    fn default() -> Self {
        KlDiv::new(4.0)
    }
}

impl KlDiv {
    fn compute(&self, student: &Tensor, teacher: &Tensor, _: Option<&Tensor>) -> Result<Tensor> {
        let t = self.temperature;
        in_wide_kind(student, teacher, |student, teacher| {
            let p_teacher = (teacher / t).softmax(1, None);
            let log_p_student = where_teacher_positive((student / t).log_softmax(1, None), &p_teacher);
            log_p_student.kl_div(&p_teacher, Reduction::Sum, false) * (t * t / batch_size(student))
        })
    }
}

catalogue_criterion!(KlDiv {
    /// The temperature finite and > 0.
    fn validate(&self) -> Result<(), String> {
        parameter("KlDiv's temperature", self.temperature, 0.0, true)
    }

    /// Equal, non-empty shapes with a class dimension (at least 2-D).
    fn check_shapes(&self, student: &[i64], teacher: &[i64]) -> Result<(), String> {
        equal_with_classes(student, teacher)
    }
});

/// Cross-entropy against the teacher's soft targets,
///
/// `T² · mean_N(−Σ_c softmax(t/T)_c · log_softmax(s/T)_c)`
///
/// summed over classes (dim 1) and averaged over the batch (and any further dimensions). It differs
/// from [`KlDiv`] by the teacher's entropy (a constant for the student), so the student gradients are
/// the same when there are no further dimensions. A temperature that is not finite and > 0 is invalid.
/// A class both sides rule out (a `−∞` logit on each) contributes 0, not NaN. f16 and bf16 logits
/// are computed on in f32 and the loss returned in their kind, as for [`KlDiv`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftCrossEntropy {
    /// Softmax temperature `T` (> 0).
    pub temperature: f64,
}

impl SoftCrossEntropy {
    /// Soft-target cross-entropy at temperature `temperature`.
    pub const fn new(temperature: f64) -> Self {
        SoftCrossEntropy { temperature }
    }
}

/// `T = 4`, as [`KlDiv`].
impl Default for SoftCrossEntropy {
    fn default() -> Self {
        SoftCrossEntropy::new(4.0)
    }
}

impl SoftCrossEntropy {
    fn compute(&self, student: &Tensor, teacher: &Tensor, _: Option<&Tensor>) -> Result<Tensor> {
        let t = self.temperature;
        in_wide_kind(student, teacher, |student, teacher| {
            let p_teacher = (teacher / t).softmax(1, None);
            let log_p_student = where_teacher_positive((student / t).log_softmax(1, None), &p_teacher);
            (p_teacher * log_p_student).sum_dim_intlist(1, false, None).mean(None) * (-t * t)
        })
    }
}

/// `loss` of `student` and `teacher` (of one kind, as the catalogue's checks ensure), computed in
/// f32 for f16 and bf16 inputs — both sides upcast, so that gradients reach both in their kind —
/// and returned in their kind through [`in_kind`]. f32 and f64 inputs are passed as they are: the
/// same operations, bit for bit.
fn in_wide_kind(student: &Tensor, teacher: &Tensor, loss: impl FnOnce(&Tensor, &Tensor) -> Tensor) -> Result<Tensor> {
    let kind = student.f_kind()?;
    let wide = computed_in(kind);
    if wide == kind {
        return Ok(loss(student, teacher));
    }
    in_kind(&loss(&student.f_to_kind(wide)?, &teacher.f_to_kind(wide)?), kind)
}

/// `log_p_student` where the teacher's probability is positive, and 0 where it is 0: a class the
/// teacher rules out then contributes `0 · 0 = 0` also where the student rules it out too
/// (`log q = −∞`, where `0 · −∞` is NaN, in the loss and in every logit's gradient). Elsewhere the
/// values, and so the loss, are unchanged bit for bit.
pub(super) fn where_teacher_positive(log_p_student: Tensor, p_teacher: &Tensor) -> Tensor {
    log_p_student.where_scalarother(&p_teacher.gt(0.0), 0.0)
}

catalogue_criterion!(SoftCrossEntropy {
    /// The temperature finite and > 0.
    fn validate(&self) -> Result<(), String> {
        parameter("SoftCrossEntropy's temperature", self.temperature, 0.0, true)
    }

    /// Equal, non-empty shapes with a class dimension (at least 2-D).
    fn check_shapes(&self, student: &[i64], teacher: &[i64]) -> Result<(), String> {
        equal_with_classes(student, teacher)
    }
});
