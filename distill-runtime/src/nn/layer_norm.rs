//! Layer normalisation, as `tch::nn::layer_norm`.

use std::borrow::Borrow;

use tch::nn::{LayerNormConfig, Module, Path};
use tch::Tensor;

use super::leaf::tch_wrapper;
use crate::nn::capture::{record, TapId};

/// A layer-norm layer; derefs to `tch::nn::LayerNorm`.
#[derive(Debug)]
pub struct LayerNorm {
    inner: tch::nn::LayerNorm,
    tap: TapId,
}

tch_wrapper!(LayerNorm, tch::nn::LayerNorm);

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Tensor {
        record(self.tap, xs, |xs| self.inner.forward(xs))
    }
}

/// Layer norm over the trailing `normalized_shape`, as `tch::nn::layer_norm`.
pub fn layer_norm<'a, T: Borrow<Path<'a>>>(vs: T, normalized_shape: Vec<i64>, config: LayerNormConfig) -> LayerNorm {
    LayerNorm::from_tch(tch::nn::layer_norm(vs, normalized_shape, config))
}
