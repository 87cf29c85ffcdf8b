//! The terms of a distillation's loss, weighted and unweighted, and their rescaling to a reference
//! term.

use tch::Tensor;

/// Floor of a term's magnitude when it is rescaled: a term that is (numerically) 0 stays 0 instead
/// of being divided by 0.
pub(crate) const RESCALE_EPS: f64 = 1e-12;

/// The largest factor a term is rescaled by.
///
/// A term far below its reference has (nearly) converged, typically a feature pair of a pruned copy
/// that starts matched: its loss is rounding noise, and bringing that noise to the reference's
/// magnitude would multiply its gradient by up to 10¹¹ and throw the layer away from the teacher in
/// one step. Capped, such a term weighs at most this many times its own value; a term within this
/// ratio of its reference is rescaled exactly.
pub const MAX_RESCALE: f64 = 1e3;

/// One term of a distillation's loss: the criterion's own value, its weight at the step, and what
/// enters the total.
///
/// `weighted = weight · rescale · unweighted`, with `rescale` 1 unless the term is rescaled to a
/// reference term (see [`rescale_factor`]).
#[derive(Debug)]
pub struct LossTerm {
    /// What enters the total.
    pub weighted: Tensor,
    /// The criterion's own loss, before any weight, schedule or rescaling.
    pub unweighted: Tensor,
    /// The weight at the step: the product of the constant weights (`criterion * 0.5`) and the
    /// schedules' values.
    pub weight: f64,
    /// The rescaling factor (a scalar, without gradient), when the term is rescaled to a reference
    /// term.
    pub rescale: Option<Tensor>,
}

/// The factor that brings `term` to the magnitude of `reference`:
/// `min(|reference| / max(|term|, ε), MAX_RESCALE)`, both detached, so that `factor · term` has the
/// value of `reference` (in absolute value) and the gradient of `term`, scaled — or, for a term
/// below `1 / MAX_RESCALE` of its reference, [`MAX_RESCALE`] times its own value and gradient.
///
/// Both are scalar losses of the same batch; the factor is recomputed at every step (no running
/// state), so a resumed run needs nothing but its step to continue exactly.
pub fn rescale_factor(term: &Tensor, reference: &Tensor) -> Tensor {
    (reference.detach().abs() / term.detach().abs().clamp_min(RESCALE_EPS)).clamp_max(MAX_RESCALE)
}

/// `term` rescaled to the magnitude of `reference` ([`rescale_factor`] times `term`): the dynamic
/// API's counterpart of a `distill!` model's `rescale_to(label)`.
///
/// ```
/// use distill_runtime::schedule::rescaled;
/// use tch::Tensor;
///
/// let feature = Tensor::from(0.02f64).set_requires_grad(true);
/// let logits = Tensor::from(1.5f64);
/// let term = rescaled(&feature, &logits);
/// assert!((term.double_value(&[]) - 1.5).abs() < 1e-12); // the logits term's magnitude
/// term.backward();
/// assert!((feature.grad().double_value(&[]) - 75.0).abs() < 1e-9); // the feature's gradient, × 1.5 / 0.02
/// ```
pub fn rescaled(term: &Tensor, reference: &Tensor) -> Tensor {
    term * rescale_factor(term, reference)
}
