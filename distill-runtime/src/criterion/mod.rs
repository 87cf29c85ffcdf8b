//! Losses between a student tensor and a teacher tensor.
//!
//! A [`Criterion`] turns a pair into a scalar loss. Any `Fn(&Tensor, &Tensor) -> Tensor` is one;
//! `criterion * weight` (or [`Criterion::weighted`]) scales one.

use tch::Tensor;

mod weighted;

pub use weighted::{weighted, Weighted};

/// A loss between the student's and the teacher's tensor of one pair.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a distillation criterion",
    label = "not a criterion",
    note = "use one of `distill::criterion` (Mse, L1, KlDiv, …) or a closure `|student: &Tensor, teacher: &Tensor| -> Tensor`"
)]
pub trait Criterion {
    /// The loss (a scalar tensor) between `student` and `teacher`.
    fn loss(&self, student: &Tensor, teacher: &Tensor) -> Tensor;

    /// The loss with the batch's targets (class indices), for criteria that use labels (DKD).
    /// The default ignores `targets`.
    fn loss_with_targets(&self, student: &Tensor, teacher: &Tensor, targets: Option<&Tensor>) -> Tensor {
        let _ = targets;
        self.loss(student, teacher)
    }

    /// Whether a pair with these shapes (after adapters) can be compared. The default demands equal
    /// shapes; relational criteria accept any batch-aligned pair.
    fn accepts_shapes(&self, student: &[i64], teacher: &[i64]) -> bool {
        student == teacher
    }

    /// This criterion scaled by `weight`.
    fn weighted(self, weight: f64) -> Weighted<Self>
    where
        Self: Sized,
    {
        weighted(self, weight)
    }
}

impl<F: Fn(&Tensor, &Tensor) -> Tensor> Criterion for F {
    fn loss(&self, student: &Tensor, teacher: &Tensor) -> Tensor {
        self(student, teacher)
    }
}
