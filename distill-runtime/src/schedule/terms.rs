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
/// reference term: `min(|reference| / |unweighted|, MAX_RESCALE)`, both detached
/// ([`Distillation::set_rescale_to`](crate::Distillation::set_rescale_to)).
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
pub(crate) fn rescale_factor(term: &Tensor, reference: &Tensor) -> Tensor {
    (reference.detach().abs() / term.detach().abs().clamp_min(RESCALE_EPS)).clamp_max(MAX_RESCALE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    #[test]
    fn the_factor_brings_a_term_to_its_reference_and_gives_the_reference_no_gradient() {
        let feature = Tensor::from(0.02f64).set_requires_grad(true);
        let logits = Tensor::from(-1.5f64).set_requires_grad(true);
        let factor = rescale_factor(&feature, &logits);
        assert!((value(&factor) - 75.0).abs() < 1e-9, "|-1.5| / 0.02");
        let term = &feature * factor;
        assert!((value(&term) - 1.5).abs() < 1e-12, "the magnitude of the reference");
        term.backward();
        assert!((value(&feature.grad()) - 75.0).abs() < 1e-9);
        assert!(!logits.grad().defined(), "the reference gets no gradient through the factor");
    }

    #[test]
    fn a_zero_term_stays_zero_and_a_tiny_one_is_capped() {
        let logits = Tensor::from(1.5f64);
        let zero = Tensor::from(0.0f64);
        assert_eq!(value(&(&zero * rescale_factor(&zero, &logits))), 0.0);
        let tiny = Tensor::from(1e-9f64);
        assert_eq!(value(&rescale_factor(&tiny, &logits)), MAX_RESCALE);
    }
}
