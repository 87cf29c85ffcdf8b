//! A criterion scaled by a constant.

use std::ops::Mul;

use tch::Tensor;

use super::{Criterion, Weighting};
use crate::error::{DistillError, Result};

/// `criterion` scaled by `weight`: `weight · criterion(s, t)`. Built by `criterion * weight` or
/// [`Criterion::weighted`] (for closures too: `(|s: &Tensor, t: &Tensor| …).weighted(0.5)`). A
/// weight that is not finite is invalid ([`Criterion::validate`]); shapes and targets are checked
/// by the scaled criterion.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weighted<C> {
    /// The scaled criterion.
    pub criterion: C,
    /// The factor.
    pub weight: f64,
}

impl<C> Weighted<C> {
    fn check_weight(&self) -> std::result::Result<(), String> {
        if !self.weight.is_finite() {
            return Err(format!("the weight must be finite, got {}", self.weight));
        }
        Ok(())
    }
}

impl<C: Criterion> Criterion for Weighted<C> {
    /// The scaled criterion's loss times the weight; panics on a non-finite weight, and as the scaled
    /// criterion does.
    fn loss(&self, student: &Tensor, teacher: &Tensor) -> Tensor {
        self.loss_with_targets(student, teacher, None)
    }

    fn loss_with_targets(&self, student: &Tensor, teacher: &Tensor, targets: Option<&Tensor>) -> Tensor {
        if let Err(reason) = self.check_weight() {
            panic!("invalid criterion: {reason}");
        }
        self.criterion.loss_with_targets(student, teacher, targets) * self.weight
    }

    fn validate(&self) -> std::result::Result<(), String> {
        self.check_weight()?;
        self.criterion.validate()
    }

    fn check_shapes(&self, student: &[i64], teacher: &[i64]) -> std::result::Result<(), String> {
        self.criterion.check_shapes(student, teacher)
    }

    fn check_targets(&self, student: &[i64], targets: &Tensor) -> std::result::Result<(), String> {
        self.criterion.check_targets(student, targets)
    }

    fn teacher_encoding(&self) -> super::TeacherEncoding {
        self.criterion.teacher_encoding()
    }

    fn weighting(&self) -> Option<Weighting<'_>> {
        Some(Weighting::Constant(self.weight, &self.criterion))
    }

    fn f_loss_with_targets(&self, student: &Tensor, teacher: &Tensor, targets: Option<&Tensor>) -> Result<Tensor> {
        self.check_weight().map_err(|reason| DistillError::InvalidCriterion { pair: String::new(), reason })?;
        Ok(self.criterion.f_loss_with_targets(student, teacher, targets)? * self.weight)
    }
}

/// Weights multiply: `(c * 2.0) * 3.0` is `c` weighted by 6.
impl<C> Mul<f64> for Weighted<C> {
    type Output = Weighted<C>;
    fn mul(self, weight: f64) -> Weighted<C> {
        Weighted { criterion: self.criterion, weight: self.weight * weight }
    }
}

/// A weighted criterion follows a schedule with its weight inside: `(c * 2.0) * schedule`.
impl<C> Mul<crate::schedule::Schedule> for Weighted<C> {
    type Output = super::Scheduled<Weighted<C>>;
    fn mul(self, schedule: crate::schedule::Schedule) -> super::Scheduled<Weighted<C>> {
        super::Scheduled { criterion: self, schedule }
    }
}

/// Weights multiply from the left too: `3.0 * (c * 2.0)` is `c` weighted by 6.
impl<C> Mul<Weighted<C>> for f64 {
    type Output = Weighted<C>;
    fn mul(self, weighted: Weighted<C>) -> Weighted<C> {
        weighted * self
    }
}
