//! [`AttentionTransfer`] (Zagoruyko & Komodakis 2017).

use tch::Tensor;

use super::check::{at_least, parameter, same_batch};
use super::{catalogue_criterion, normalize, rows};

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
    fn compute(&self, student: &Tensor, teacher: &Tensor, _: Option<&Tensor>) -> Tensor {
        (self.attention_map(student) - self.attention_map(teacher)).square().mean(None)
    }
}

catalogue_criterion!(AttentionTransfer {
    /// `p` finite and > 0 (at `p ≤ 0`, zero activations give infinite maps).
    fn validate(&self) -> Result<(), String> {
        parameter("AttentionTransfer's p", self.p, 0.0, true)
    }

    /// Feature maps of at least 3 dimensions (`(N, C, H, W…)`), the same batch size `N` and the same
    /// number of positions (product of the dimensions after the channels), nothing empty; channel
    /// counts may differ.
    fn check_shapes(&self, student: &[i64], teacher: &[i64]) -> Result<(), String> {
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
