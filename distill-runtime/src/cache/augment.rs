//! Augmentation replay: each view's parameters are drawn from (seed, sample id, view), stored with
//! the teacher's outputs for that view, and applied again to the student's input, so that teacher
//! and student see the same view of every sample.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::cache::CacheError;
use crate::error::Result;
use crate::rng::SplitMix64;

/// Number of `i64` parameters stored per sample and view (every augmentation uses a prefix of them).
pub(crate) const VIEW_PARAMS: usize = 3;

/// An augmentation whose parameters are drawn per sample and view and can be replayed.
///
/// New augmentations are new variants: each defines how its parameters are drawn
/// ([`draw`](Self::draw), at most three integers) and applied ([`apply`](Self::apply)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Augment {
    /// Every view is the input as is.
    #[default]
    None,
    /// A random crop of the input's own size from the input zero-padded by `padding` on each side
    /// (torchvision's `RandomCrop(size, padding)`), then, with `flip`, a horizontal flip with
    /// probability ½. Parameters: `[top, left, flipped]`, offsets into the padded input. The padding
    /// is zeros of the tensor as given: for standardised inputs that is the mean value, where
    /// torchvision, padding raw pixels, pads with black.
    CropFlip {
        /// Zero padding on each side of the last two dimensions.
        padding: i64,
        /// Whether views may be flipped horizontally.
        flip: bool,
    },
}

impl Augment {
    /// torchvision's `RandomCrop(size, padding)` followed by `RandomHorizontalFlip()`.
    pub fn crop_flip(padding: i64) -> Augment {
        Augment::CropFlip { padding, flip: true }
    }

    /// The parameters of view `view` of sample `id`: a pure function of `(seed, id, view)`.
    pub fn draw(self, seed: u64, id: i64, view: usize) -> [i64; VIEW_PARAMS] {
        match self {
            Augment::None => [0; VIEW_PARAMS],
            Augment::CropFlip { padding, flip } => {
                let mut rng = SplitMix64::new(
                    seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (view as u64).rotate_left(32),
                );
                let choices = 2 * padding.max(0) as u64 + 1;
                let top = (rng.next_u64() % choices) as i64;
                let left = (rng.next_u64() % choices) as i64;
                let flipped = if flip { (rng.next_u64() >> 63) as i64 } else { 0 };
                [top, left, flipped]
            }
        }
    }

    /// The parameters of view `view` for each sample of `ids`, as an `i64` tensor `[len, VIEW_PARAMS]`.
    pub fn draw_batch(self, seed: u64, ids: &[i64], view: usize) -> Tensor {
        let flat: Vec<i64> = ids.iter().flat_map(|&id| self.draw(seed, id, view)).collect();
        Tensor::from_slice(&flat).view([ids.len() as i64, VIEW_PARAMS as i64])
    }

    /// `xs` (`[N, …, H, W]`) with each sample's view applied; `params` is `[N, VIEW_PARAMS]` as
    /// [`draw_batch`](Self::draw_batch) gives.
    pub fn apply(self, xs: &Tensor, params: &Tensor) -> Result<Tensor> {
        let n = xs.size().first().copied().unwrap_or(0);
        if params.size() != [n, VIEW_PARAMS as i64] {
            return Err(CacheError::ViewParams { shape: params.size(), inputs: n }.into());
        }
        match self {
            Augment::None => Ok(xs.shallow_clone()),
            Augment::CropFlip { padding, .. } => crop_flip(xs, params, padding),
        }
    }
}

/// Crops each sample at its `[top, left]` from the zero-padded batch and flips the flagged ones.
fn crop_flip(xs: &Tensor, params: &Tensor, padding: i64) -> Result<Tensor> {
    let size = xs.size();
    if size.len() < 3 {
        return Err(CacheError::CropInput { shape: size }.into());
    }
    let (h, w) = (size[size.len() - 2], size[size.len() - 1]);
    let padded = xs.f_constant_pad_nd([padding, padding, padding, padding])?;
    let params = Vec::<i64>::try_from(params.to_kind(Kind::Int64).reshape([-1]))?;
    let views = params
        .chunks(VIEW_PARAMS)
        .enumerate()
        .map(|(i, p)| {
            let view = padded.f_get(i as i64)?.f_narrow(-2, p[0], h)?.f_narrow(-1, p[1], w)?;
            Ok(if p[2] != 0 { view.f_flip([-1])? } else { view })
        })
        .collect::<Result<Vec<_>>>()?;
    if views.is_empty() {
        return Ok(xs.shallow_clone());
    }
    Ok(Tensor::f_stack(&views, 0)?)
}
