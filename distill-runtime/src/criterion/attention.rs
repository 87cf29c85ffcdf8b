//! [`AttentionTransfer`] (Zagoruyko & Komodakis 2017).

use tch::Tensor;

use super::check::{at_least, parameter, same_batch};
use super::{catalogue_criterion, normalize, rows};
use crate::error::{CriterionError, Result};

/// Attention transfer, Zagoruyko & Komodakis, "Paying More Attention to Attention" (ICLR 2017), as in
/// the authors' code and RepDistiller's `distiller_zoo/AT.py`:
///
/// `am(x) = F.normalize(x.pow(p).mean(1).view(N, -1))` (the channel-averaged `p`-th power of a feature
/// map, flattened and L2-normalised per sample, norms clamped below at 1e-12), and the loss is
/// `(am(s) − am(t)).pow(2).mean()`.
///
/// Student and teacher may have different channel counts: only the batch size and the number of
/// positions (H·W) must agree. RepDistiller pools the larger map when the sizes differ; here an
/// adapter or an explicit pooling does that, and [`Criterion::check_shapes`](super::Criterion::check_shapes)
/// rejects the pair. The paper weights the sum of AT terms by β = 1000
/// (`AttentionTransfer::default() * 1000.0`). A power `p` that is not finite and > 0 is invalid.
///
/// A `p` that is not a whole number needs non-negative features (post-ReLU maps, as the paper's):
/// the fractional power of a negative value is NaN, so [`Criterion::f_loss`](super::Criterion::f_loss) returns
/// [`CriterionError::FractionalPowerOfNegative`] when either tensor holds one (a check over both
/// tensors on each call, made for fractional `p` only), and [`Criterion::loss`](super::Criterion::loss) panics with it.
/// A whole-number `p` takes any features.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionTransfer {
    /// The power applied element-wise before averaging over channels (the paper uses 2).
    pub p: f64,
}

impl AttentionTransfer {
    /// Attention transfer with power `p`.
    pub const fn new(p: f64) -> Self {
        AttentionTransfer { p }
    }
}

/// `p = 2`, as the paper.
impl Default for AttentionTransfer {
    fn default() -> Self {
        AttentionTransfer::new(2.0)
    }
}

impl AttentionTransfer {
    fn attention_map(&self, x: &Tensor) -> Tensor {
        normalize(&rows(&x.pow_tensor_scalar(self.p).mean_dim(1, false, None)), 1)
    }
}

impl AttentionTransfer {
    /// The loss, after the check that the features have a real `p`-th power.
    fn compute(&self, student: &Tensor, teacher: &Tensor, _: Option<&Tensor>) -> Result<Tensor> {
        self.check_values(student, teacher)?;
        Ok((self.attention_map(student) - self.attention_map(teacher)).square().mean(None))
    }

    /// With a `p` that is not a whole number, no negative value on either side (its power is NaN).
    fn check_values(&self, student: &Tensor, teacher: &Tensor) -> Result<()> {
        if self.p.fract() == 0.0 {
            return Ok(());
        }
        for (tensor, x) in [("the student tensor", student), ("the teacher tensor", teacher)] {
            if x.f_lt(0.0)?.f_any()?.f_int64_value(&[])? != 0 {
                let (name, p) = ("AttentionTransfer's p", self.p);
                return Err(CriterionError::FractionalPowerOfNegative { name, p, tensor }.into());
            }
        }
        Ok(())
    }
}

// The check of negative values under a fractional `p` runs after those of the parameters and
// shapes, in `compute`.
catalogue_criterion!(AttentionTransfer {
    /// `p` finite and > 0 (at `p ≤ 0`, zero activations give infinite maps).
    fn validate(&self) -> std::result::Result<(), String> {
        parameter("AttentionTransfer's p", self.p, 0.0, true)
    }

    /// Feature maps of at least 3 dimensions (`(N, C, H, W…)`), the same batch size `N` and the same
    /// number of positions (product of the dimensions after the channels), nothing empty; channel
    /// counts may differ.
    fn check_shapes(&self, student: &[i64], teacher: &[i64]) -> std::result::Result<(), String> {
        for shape in [student, teacher] {
            at_least(shape, 3, "(N, C, H, W…): feature maps, whose channels it averages per position")?;
        }
        same_batch(student, teacher, 1)?;
        let (s, t) = (student[2..].iter().product::<i64>(), teacher[2..].iter().product::<i64>());
        if s != t {
            return Err(format!("it needs the same number of positions (H·W) on both sides, got {s} and {t}"));
        }
        Ok(())
    }
});
