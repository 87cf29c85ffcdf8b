//! How a wrapper criterion weighs the criterion inside it, and the losses a distillation derives
//! from that: the weight at a step, the loss at a step, the loss before any weight.
//!
//! A weight or a schedule is a wrapper ([`Weighted`](super::Weighted), [`Scheduled`](super::Scheduled)),
//! not a method every criterion carries: a wrapper says what it wraps through
//! [`Criterion::weighting`], and the functions here walk the wrappers down to the innermost
//! criterion. They are methods of `dyn Criterion`, so a boxed criterion of any kind has them.

use tch::Tensor;

use super::Criterion;
use crate::error::{DistillError, Result};
use crate::schedule::Schedule;

/// What a wrapper criterion applies to the criterion it wraps (from [`Criterion::weighting`]).
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum Weighting<'c> {
    /// A constant factor, and the criterion it scales ([`Weighted`](super::Weighted)).
    Constant(f64, &'c dyn Criterion),
    /// A factor by training step, and the criterion it scales ([`Scheduled`](super::Scheduled)).
    Scheduled(&'c Schedule, &'c dyn Criterion),
}

impl std::fmt::Debug for Weighting<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Weighting::Constant(weight, _) => f.debug_tuple("Constant").field(weight).finish_non_exhaustive(),
            Weighting::Scheduled(schedule, _) => f.debug_tuple("Scheduled").field(schedule).finish_non_exhaustive(),
        }
    }
}

impl<'c> dyn Criterion + 'c {
    /// The loss at training step `step` (the optimizer step count, from 0): for a criterion with a
    /// schedule anywhere among its wrappers, the innermost criterion's loss times the product of
    /// the wrappers' factors at `step`; for any other, the same as
    /// [`loss_with_targets`](Criterion::loss_with_targets). Unchecked in the tch style;
    /// `f_loss_at` is the fallible twin.
    pub fn loss_at(&self, step: u64, student: &Tensor, teacher: &Tensor, targets: Option<&Tensor>) -> Tensor {
        self.f_loss_at(step, student, teacher, targets).unwrap_or_else(|err| panic!("{err}"))
    }

    /// The checked twin of `loss_at`.
    ///
    /// # Errors
    /// As [`f_loss_with_targets`](Criterion::f_loss_with_targets), and
    /// [`DistillError::InvalidCriterion`] for a weight that is not finite or an invalid schedule.
    pub fn f_loss_at(&self, step: u64, student: &Tensor, teacher: &Tensor, targets: Option<&Tensor>) -> Result<Tensor> {
        if !self.is_scheduled() {
            return self.f_loss_with_targets(student, teacher, targets);
        }
        Ok(self.f_unweighted_loss(student, teacher, targets)? * self.weight_at(step))
    }

    /// The product of the wrappers' factors at `step`: 1 for a criterion that wraps none.
    pub(crate) fn weight_at(&self, step: u64) -> f64 {
        match self.weighting() {
            None => 1.0,
            Some(Weighting::Constant(weight, inner)) => weight * inner.weight_at(step),
            Some(Weighting::Scheduled(schedule, inner)) => schedule.value(step) * inner.weight_at(step),
        }
    }

    /// Whether a schedule is among the wrappers, so that the weight depends on the step.
    pub(crate) fn is_scheduled(&self) -> bool {
        match self.weighting() {
            None => false,
            Some(Weighting::Constant(_, inner)) => inner.is_scheduled(),
            Some(Weighting::Scheduled(..)) => true,
        }
    }

    /// The innermost criterion's loss, before any weight or schedule, checked as
    /// [`f_loss_with_targets`](Criterion::f_loss_with_targets); each wrapper's factor is checked on
    /// the way down, as the wrapper's own loss checks it.
    pub(crate) fn f_unweighted_loss(
        &self,
        student: &Tensor,
        teacher: &Tensor,
        targets: Option<&Tensor>,
    ) -> Result<Tensor> {
        let invalid = |reason| DistillError::InvalidCriterion { pair: String::new(), reason };
        match self.weighting() {
            None => self.f_loss_with_targets(student, teacher, targets),
            Some(Weighting::Constant(weight, inner)) => {
                if !weight.is_finite() {
                    return Err(invalid(format!("the weight must be finite, got {weight}")));
                }
                inner.f_unweighted_loss(student, teacher, targets)
            }
            Some(Weighting::Scheduled(schedule, inner)) => {
                schedule.validate().map_err(invalid)?;
                inner.f_unweighted_loss(student, teacher, targets)
            }
        }
    }
}
