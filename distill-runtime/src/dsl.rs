//! What a `distill!` model gives its user: each pair of an output is a [`Pair`].
//!
//! For a declaration `distill! { pub struct Kd for Student => Teacher { f0: …; kd: …; } }` the macro
//! generates `Kd<'m>` (built by `Kd::new(path, &student, &teacher)`, run by `forward_t`), `KdOutput<'d>`
//! with one `Pair` field per label (`out.f0.student`, `out.kd.loss()`), and `KdLosses` with one scalar
//! per label. The support code those items call is not part of the public API.

use std::fmt;

use tch::Tensor;

use crate::criterion::{name_pair, Criterion};
use crate::error::{DistillError, Result};

/// The traits a `distill!` block or a derive needs of the user's types, named in its compile errors
/// (`the trait ChildAt is not implemented for Block`). Their messages say what to write instead;
/// they are not meant to be implemented or named by users.
#[doc(hidden)]
pub use crate::__private::{ChildAt, IntoAdapter, Model, PathSchema, RecordedElement, SlotIndex};

/// One pair of a `distill!` output: the student's and the teacher's tensor after adapters, and the
/// pair's criterion.
pub struct Pair<'d> {
    /// The student's tensor, after its adapter if it has one.
    pub student: Tensor,
    /// The teacher's tensor, after its adapter if it has one (on the student's device).
    pub teacher: Tensor,
    label: &'d str,
    criterion: &'d (dyn Criterion + 'd),
    targets: Option<Tensor>,
    step: Option<u64>,
    rescaled_to: Option<usize>,
}

impl<'d> Pair<'d> {
    pub(crate) fn new(student: Tensor, teacher: Tensor, label: &'d str, criterion: &'d (dyn Criterion + 'd)) -> Self {
        Pair { student, teacher, label, criterion, targets: None, step: None, rescaled_to: None }
    }

    /// This pair at training step `step` (the model's, if it has one), rescaled to the pair at index
    /// `rescaled_to` of the same output, if any.
    pub(crate) fn with_balance(mut self, step: Option<u64>, rescaled_to: Option<usize>) -> Self {
        self.step = step;
        self.rescaled_to = rescaled_to;
        self
    }

    /// The pair's label, as declared (or derived from its path) in `distill!`.
    pub fn label(&self) -> &'d str {
        self.label
    }

    /// The pair's criterion.
    pub fn criterion(&self) -> &'d (dyn Criterion + 'd) {
        self.criterion
    }

    /// The targets given with [`set_targets`](Self::set_targets), if any.
    pub fn targets(&self) -> Option<&Tensor> {
        self.targets.as_ref()
    }

    /// Gives the batch's targets (class indices) to criteria that use them (`loss_with_targets`).
    pub fn set_targets(&mut self, targets: &Tensor) {
        self.targets = Some(targets.shallow_clone());
    }

    /// The training step the model was at for this forward (`set_step`), if it was given one.
    pub fn step(&self) -> Option<u64> {
        self.step
    }

    /// The index (in declaration order) of the pair whose loss this pair's is rescaled to in the
    /// output's total (the model's `rescale_to(label)`), if any; never the pair itself.
    pub fn rescaled_to(&self) -> Option<usize> {
        self.rescaled_to
    }

    /// The pair's weight at its step: the product of its wrappers' constant weights
    /// and schedules; 1 for a bare criterion.
    ///
    /// # Errors
    /// [`DistillError::MissingStep`] for a scheduled criterion without a step.
    pub fn weight(&self) -> Result<f64> {
        match self.step {
            Some(step) => Ok(self.criterion.weight_at(step)),
            None if self.criterion.is_scheduled() => Err(DistillError::MissingStep { pair: self.label.to_owned() }),
            // Without a schedule the weight does not depend on the step.
            None => Ok(self.criterion.weight_at(0)),
        }
    }

    /// The pair's (weighted) loss: the criterion on `student` and `teacher`, with the targets if set,
    /// at the pair's step when its weight follows a schedule. It is not rescaled: rescaling to
    /// another pair's loss happens in the output's `losses()` and `loss()`.
    ///
    /// Unchecked in the tch style: it panics where the criterion cannot compute (targets that do not
    /// fit, for a criterion that uses them); [`f_loss`](Self::f_loss) is the fallible twin.
    pub fn loss(&self) -> Tensor {
        self.f_loss().unwrap_or_else(|err| panic!("{err}"))
    }

    /// The pair's loss, or an error naming the pair when its criterion cannot compute it: the checked
    /// twin of [`loss`](Self::loss) (`loss_at` of the criterion, or `Criterion::f_loss_with_targets`
    /// without a step).
    pub fn f_loss(&self) -> Result<Tensor> {
        let (s, t, targets) = (&self.student, &self.teacher, self.targets.as_ref());
        match self.step {
            Some(step) => self.criterion.f_loss_at(step, s, t, targets),
            None => self.criterion.f_loss_with_targets(s, t, targets),
        }
        .map_err(|err| name_pair(err, self.label))
    }

    /// The loss of the pair's innermost criterion, before any weight or schedule
    /// (inside its `Weighted` and `Scheduled` wrappers), or an error naming the pair.
    pub fn f_unweighted_loss(&self) -> Result<Tensor> {
        self.criterion
            .f_unweighted_loss(&self.student, &self.teacher, self.targets.as_ref())
            .map_err(|err| name_pair(err, self.label))
    }
}

impl fmt::Debug for Pair<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pair")
            .field("label", &self.label)
            .field("student", &self.student.size())
            .field("teacher", &self.teacher.size())
            .field("targets", &self.targets.as_ref().map(Tensor::size))
            .field("step", &self.step)
            .field("rescaled_to", &self.rescaled_to)
            .finish()
    }
}
