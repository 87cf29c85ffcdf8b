//! Rotary position embeddings, with transformers' `rotate_half` layout: the two halves of a head are
//! the two coordinates of each rotated pair (`x[i]` with `x[i + d/2]`).

use tch::{Device, Kind, Tensor};

/// The inverse frequencies `θ^(-2i/d)`, `i < d/2`, of a head of width `d`, and the rotation they give
/// each position. Not a module: it has no variables and computes no function of the hidden states.
#[derive(Debug)]
pub struct RotaryEmbedding {
    /// `[d/2]` f32, as transformers' `inv_freq` buffer.
    pub inv_freq: Tensor,
}

impl RotaryEmbedding {
    /// The frequencies of a head of width `head_dim` (even) with base `theta`, computed in f32 exactly
    /// as transformers does (`1 / θ^(arange(0, d, 2) / d)`), so that the angles agree to the bit.
    pub fn new(head_dim: i64, theta: f64, device: Device) -> RotaryEmbedding {
        let exponents =
            Tensor::arange_start_step(0, head_dim, 2, (Kind::Int64, device)).to_kind(Kind::Float) / head_dim as f64;
        let inv_freq = Tensor::pow_scalar(theta, &exponents).reciprocal();
        RotaryEmbedding { inv_freq }
    }

    /// `(cos, sin)` of the angles `position · inv_freq`, each `[B, 1, T, d]` (the `d/2` angles twice,
    /// as transformers concatenates them), for `position_ids` `[B, T]`. Computed in f32; cast to `kind`.
    pub fn cos_sin(&self, position_ids: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let freqs = position_ids.to_kind(Kind::Float).unsqueeze(-1) * self.inv_freq.view([1, 1, -1]);
        let angles = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        (angles.cos().to_kind(kind), angles.sin().to_kind(kind))
    }
}

/// `[-x₂, x₁]` for `x = [x₁, x₂]` split in halves along the last dimension.
fn rotate_half(xs: &Tensor) -> Tensor {
    let half = xs.size().last().copied().unwrap_or(0) / 2;
    let x1 = xs.narrow(-1, 0, half);
    let x2 = xs.narrow(-1, half, half);
    Tensor::cat(&[&x2.neg(), &x1], -1)
}

/// `x · cos + rotate_half(x) · sin` for heads `[B, H, T, d]` and `cos`/`sin` `[B, 1, T, d]`.
pub(crate) fn apply_rotary(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    xs * cos + rotate_half(xs) * sin
}
