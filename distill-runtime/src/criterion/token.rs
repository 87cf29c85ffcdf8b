//! The one shape of the token-level criteria: a per-token loss of a language model's logits against
//! the teacher's side in the form the criterion reads, reduced over the valid tokens.

use tch::Tensor;

use crate::error::Result;

/// A criterion of a language model's logits, token by token: [`SequenceKd`](super::SequenceKd)
/// against the teacher's logits, [`TopKKl`](super::TopKKl) against its top-k with the tail,
/// [`SampledKl`](super::SampledKl) against sampled tokens.
///
/// Each is also a [`Criterion`](super::Criterion), whose teacher tensor is the packed form a cache
/// stores and whose targets are token labels (−100 left out); this trait takes the teacher's side
/// as its own type, and the valid tokens as a mask.
pub trait TokenCriterion {
    /// The teacher's side as the criterion reads it: logits `[B, T, V]`, a `TopKTail`, a
    /// `SampledLogits`.
    type Teacher: ?Sized;

    /// The per-token losses `[B, T]` of student logits `[B, T, V]` against `teacher`, unreduced and
    /// for every token; differentiable by autograd.
    ///
    /// # Errors
    /// When the shapes disagree, the logits are not floating-point or a parameter is invalid:
    /// [`CriterionError`](super::CriterionError) for [`TopKKl`](super::TopKKl) and
    /// [`SampledKl`](super::SampledKl); for [`SequenceKd`](super::SequenceKd) the errors of
    /// [`Criterion::f_loss`](super::Criterion::f_loss), that is
    /// [`DistillError::InvalidCriterion`](crate::DistillError::InvalidCriterion) for its parameters,
    /// [`DistillError::ShapeMismatch`](crate::DistillError::ShapeMismatch) for the shapes and
    /// [`CriterionError`](super::CriterionError) for the tensors' kinds and devices.
    fn f_per_token(&self, student: &Tensor, teacher: &Self::Teacher) -> Result<Tensor>;

    /// The loss of student logits `[B, T, V]` against `teacher` over the tokens where `valid`
    /// (`[B, T]`, non-zero is valid, as an attention mask) holds, or every token without it,
    /// reduced as the criterion's `reduction` says ([`TokenReduction`](super::TokenReduction)).
    ///
    /// # Errors
    /// As [`f_per_token`](Self::f_per_token), and [`CriterionError`](super::CriterionError) for an
    /// undefined mask or one of another shape
    /// ([`MaskShape`](super::CriterionError::MaskShape)); [`TopKKl`](super::TopKKl)'s fused form also
    /// [`LossNotFinite`](super::CriterionError::LossNotFinite) when the loss itself is infinite or
    /// NaN with logits that require a gradient,
    /// [`LossOutOfRange`](super::CriterionError::LossOutOfRange) when it does not fit the logits'
    /// half-precision kind, and [`GradientOverflow`](super::CriterionError::GradientOverflow) when
    /// the gradient of a finite loss cannot be carried exactly.
    fn f_loss_masked(&self, student: &Tensor, teacher: &Self::Teacher, valid: Option<&Tensor>) -> Result<Tensor>;

    /// The unchecked twin of [`f_loss_masked`](Self::f_loss_masked): panics with its error.
    fn loss_masked(&self, student: &Tensor, teacher: &Self::Teacher, valid: Option<&Tensor>) -> Tensor {
        self.f_loss_masked(student, teacher, valid).unwrap_or_else(|err| panic!("{err}"))
    }
}
