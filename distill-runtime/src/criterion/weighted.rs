//! A criterion scaled by a constant.

use std::ops::Mul;

use tch::Tensor;

use super::Criterion;

/// `criterion` scaled by `weight`: `weight · criterion(s, t)`. Built by `criterion * weight`,
/// [`Criterion::weighted`] or [`weighted`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weighted<C> {
    /// The scaled criterion.
    pub criterion: C,
    /// The factor.
    pub weight: f64,
}

/// Scales `criterion` by `weight` (works for closures too).
pub fn weighted<C: Criterion>(criterion: C, weight: f64) -> Weighted<C> {
    Weighted { criterion, weight }
}

impl<C: Criterion> Criterion for Weighted<C> {
    fn loss(&self, student: &Tensor, teacher: &Tensor) -> Tensor {
        self.criterion.loss(student, teacher) * self.weight
    }
    fn loss_with_targets(&self, student: &Tensor, teacher: &Tensor, targets: Option<&Tensor>) -> Tensor {
        self.criterion.loss_with_targets(student, teacher, targets) * self.weight
    }
    fn accepts_shapes(&self, student: &[i64], teacher: &[i64]) -> bool {
        self.criterion.accepts_shapes(student, teacher)
    }
}

/// Weights multiply: `(c * 2.0) * 3.0` is `c` weighted by 6.
impl<C> Mul<f64> for Weighted<C> {
    type Output = Weighted<C>;
    fn mul(self, weight: f64) -> Weighted<C> {
        Weighted { criterion: self.criterion, weight: self.weight * weight }
    }
}

/// Weights multiply from the left too: `3.0 * (c * 2.0)` is `c` weighted by 6.
impl<C> Mul<Weighted<C>> for f64 {
    type Output = Weighted<C>;
    fn mul(self, weighted: Weighted<C>) -> Weighted<C> {
        weighted * self
    }
}
