//! A criterion whose weight follows a schedule over training steps.

use std::ops::Mul;

use tch::Tensor;

use super::{Criterion, Weighting};
use crate::error::{DistillError, Result};
use crate::schedule::Schedule;

/// `criterion` weighted by `schedule`'s value at the training step: `schedule(step) · criterion(s, t)`.
/// Built by `criterion * schedule` (`Mse * Schedule::warmup(0.0, 1.0, 500)`),
/// [`Criterion::scheduled`] (for closures too).
///
/// Its loss depends on the step, so it has no meaning without one: [`Criterion::loss`] panics and
/// [`Criterion::f_loss`] returns [`DistillError::MissingStep`]; compute it with
/// [`loss_at`](Scheduled::loss_at)`(step, …)`, or in a `distill!` model after `set_step(step)`. An invalid
/// schedule ([`Schedule::validate`]) is an invalid criterion. Constant factors compose:
/// `(Mse * schedule) * 2.0` scales the schedule, `(Mse * 2.0) * schedule` keeps the weight inside.
///
/// ```
/// # extern crate distill_runtime as distill;
/// use distill::criterion::{Criterion, Mse};
/// use distill::schedule::Schedule;
/// use tch::Tensor;
///
/// let mse = Mse * Schedule::warmup(0.0, 1.0, 100);
/// let (s, t) = (Tensor::from_slice(&[1.0f64, 2.0]), Tensor::from_slice(&[0.0f64, 0.0]));
/// assert_eq!(mse.loss_at(50, &s, &t, None).double_value(&[]), 0.5 * 2.5);
/// assert!(mse.f_loss(&s, &t).is_err()); // no step: an error, never step 0
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Scheduled<C> {
    /// The scheduled criterion.
    pub criterion: C,
    /// Its weight by training step.
    pub schedule: Schedule,
}

impl<C: Criterion> Scheduled<C> {
    /// The loss at training step `step`: the wrapped criterion's loss (before any weight inside
    /// it) times the product of the factors at `step`. Unchecked in the tch style; panics where
    /// [`f_loss_at`](Self::f_loss_at) is an error. The same as `loss_at` of a `dyn Criterion`.
    pub fn loss_at(&self, step: u64, student: &Tensor, teacher: &Tensor, targets: Option<&Tensor>) -> Tensor {
        (self as &dyn Criterion).loss_at(step, student, teacher, targets)
    }

    /// The checked twin of [`loss_at`](Self::loss_at).
    ///
    /// # Errors
    /// [`DistillError::InvalidCriterion`] for an invalid schedule or weight, and what the wrapped
    /// criterion's `f_loss_with_targets` reports.
    pub fn f_loss_at(&self, step: u64, student: &Tensor, teacher: &Tensor, targets: Option<&Tensor>) -> Result<Tensor> {
        (self as &dyn Criterion).f_loss_at(step, student, teacher, targets)
    }
}

impl<C: Criterion> Criterion for Scheduled<C> {
    // Both panic: a scheduled loss needs the step (`Scheduled::loss_at`).
    super::panicking_loss!();

    /// [`DistillError::MissingStep`]: a scheduled loss needs the step ([`Scheduled::f_loss_at`]).
    fn f_loss_with_targets(&self, _: &Tensor, _: &Tensor, _: Option<&Tensor>) -> Result<Tensor> {
        Err(DistillError::MissingStep { pair: String::new() })
    }

    fn validate(&self) -> std::result::Result<(), String> {
        self.schedule.validate()?;
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
        Some(Weighting::Scheduled(&self.schedule, &self.criterion))
    }
}

/// A constant factor scales the schedule: `(c * schedule) * 2.0` is `c * (schedule * 2.0)`.
impl<C> Mul<f64> for Scheduled<C> {
    type Output = Scheduled<C>;
    fn mul(self, factor: f64) -> Scheduled<C> {
        Scheduled { criterion: self.criterion, schedule: self.schedule * factor }
    }
}

/// Schedules multiply: `(c * a) * b` is `c` scheduled by `a · b`.
impl<C> Mul<Schedule> for Scheduled<C> {
    type Output = Scheduled<C>;
    fn mul(self, schedule: Schedule) -> Scheduled<C> {
        Scheduled { criterion: self.criterion, schedule: self.schedule * schedule }
    }
}
