//! Element-wise regression losses: [`Mse`], [`L1`], [`SmoothL1`], and [`Cosine`] distance.

use tch::{Reduction, Tensor};

use super::catalogue_criterion;
use super::check::{equal_non_empty, equal_with_classes, parameter};

/// `F.cosine_similarity`'s default `eps`: vector norms are clamped below at it.
const COSINE_EPS: f64 = 1e-8;

/// Mean squared error, `F.mse_loss(s, t)` (reduction `mean`): `mean((s − t)²)` over all elements.
///
/// The FitNets hint loss (Romero et al. 2015) once an adapter has matched the shapes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Mse;

impl Mse {
    fn compute(&self, student: &Tensor, teacher: &Tensor, _: Option<&Tensor>) -> Tensor {
        student.mse_loss(teacher, Reduction::Mean)
    }
}

catalogue_criterion!(Mse {
    /// Equal, non-empty shapes (no broadcasting).
    fn check_shapes(&self, student: &[i64], teacher: &[i64]) -> Result<(), String> {
        equal_non_empty(student, teacher)
    }
});

/// Mean absolute error, `F.l1_loss(s, t)` (reduction `mean`): `mean(|s − t|)` over all elements.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct L1;

impl L1 {
    fn compute(&self, student: &Tensor, teacher: &Tensor, _: Option<&Tensor>) -> Tensor {
        student.l1_loss(teacher, Reduction::Mean)
    }
}

catalogue_criterion!(L1 {
    /// Equal, non-empty shapes (no broadcasting).
    fn check_shapes(&self, student: &[i64], teacher: &[i64]) -> Result<(), String> {
        equal_non_empty(student, teacher)
    }
});

/// Huber-style loss, `F.smooth_l1_loss(s, t, beta=beta)` (reduction `mean`): with `d = |s − t|`,
/// `0.5·d²/β` where `d < β`, else `d − 0.5·β`, averaged over all elements. `β = 0` is plain L1; a
/// negative or non-finite `β` is invalid ([`Criterion::validate`](super::Criterion::validate)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SmoothL1 {
    /// Where the loss turns from quadratic to linear (PyTorch's default: 1).
    pub beta: f64,
}

impl SmoothL1 {
    /// Smooth L1 with threshold `beta`.
    pub const fn new(beta: f64) -> Self {
        SmoothL1 { beta }
    }
}

/// `beta = 1`, as PyTorch.
impl Default for SmoothL1 {
    fn default() -> Self {
        SmoothL1::new(1.0)
    }
}

impl SmoothL1 {
    fn compute(&self, student: &Tensor, teacher: &Tensor, _: Option<&Tensor>) -> Tensor {
        student.smooth_l1_loss(teacher, Reduction::Mean, self.beta)
    }
}

catalogue_criterion!(SmoothL1 {
    /// `β` finite and ≥ 0.
    fn validate(&self) -> Result<(), String> {
        parameter("SmoothL1's beta", self.beta, 0.0, false)
    }

    /// Equal, non-empty shapes (no broadcasting).
    fn check_shapes(&self, student: &[i64], teacher: &[i64]) -> Result<(), String> {
        equal_non_empty(student, teacher)
    }
});

/// Cosine distance along the channel dimension (1): `mean(1 − F.cosine_similarity(s, t, dim=1, eps=1e-8))`,
/// the mean taken over the batch (and over any further dimensions, e.g. each pixel of a feature map).
///
/// PyTorch's `cosine_similarity` divides each vector by its norm clamped below at `eps`, so zero vectors
/// give similarity 0 rather than NaN.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cosine;

impl Cosine {
    fn compute(&self, student: &Tensor, teacher: &Tensor, _: Option<&Tensor>) -> Tensor {
        // mean(1 − cos) = 1 − mean(cos): one scalar subtraction instead of one per element.
        1.0 - Tensor::cosine_similarity(student, teacher, 1, COSINE_EPS).mean(None)
    }
}

catalogue_criterion!(Cosine {
    /// Equal, non-empty shapes with a channel dimension (at least 2-D).
    fn check_shapes(&self, student: &[i64], teacher: &[i64]) -> Result<(), String> {
        equal_with_classes(student, teacher)
    }
});
