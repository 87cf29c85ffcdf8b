//! Element-wise regression losses: [`Mse`], [`L1`], [`SmoothL1`], and [`Cosine`] distance.

use tch::{Reduction, Tensor};

use super::{equal_with_dims, Criterion};

/// Mean squared error, `F.mse_loss(s, t)` (reduction `mean`): `mean((s − t)²)` over all elements.
///
/// The FitNets hint loss (Romero et al. 2015) once an adapter has matched the shapes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Mse;

impl Criterion for Mse {
    fn loss(&self, student: &Tensor, teacher: &Tensor) -> Tensor {
        student.mse_loss(teacher, Reduction::Mean)
    }
}

/// Mean absolute error, `F.l1_loss(s, t)` (reduction `mean`): `mean(|s − t|)` over all elements.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct L1;

impl Criterion for L1 {
    fn loss(&self, student: &Tensor, teacher: &Tensor) -> Tensor {
        student.l1_loss(teacher, Reduction::Mean)
    }
}

/// Huber-style loss, `F.smooth_l1_loss(s, t, beta=beta)` (reduction `mean`): with `d = |s − t|`,
/// `0.5·d²/β` where `d < β`, else `d − 0.5·β`, averaged over all elements. `β = 0` is plain L1.
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

impl Criterion for SmoothL1 {
    fn loss(&self, student: &Tensor, teacher: &Tensor) -> Tensor {
        student.smooth_l1_loss(teacher, Reduction::Mean, self.beta)
    }
}

/// Cosine distance along the channel dimension (1): `mean(1 − F.cosine_similarity(s, t, dim=1, eps=1e-8))`,
/// the mean taken over the batch (and over any further dimensions, e.g. each pixel of a feature map).
///
/// PyTorch's `cosine_similarity` divides each vector by its norm clamped below at `eps`, so zero vectors
/// give similarity 0 rather than NaN.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cosine;

impl Criterion for Cosine {
    fn loss(&self, student: &Tensor, teacher: &Tensor) -> Tensor {
        // mean(1 − cos) = 1 − mean(cos): one scalar subtraction instead of one per element.
        1.0 - Tensor::cosine_similarity(student, teacher, 1, 1e-8).mean(None)
    }

    /// Equal shapes with a channel dimension (at least 2-D).
    fn accepts_shapes(&self, student: &[i64], teacher: &[i64]) -> bool {
        equal_with_dims(student, teacher, 2)
    }
}
