//! Batch normalisation, as `tch::nn::batch_norm{1,2,3}d`.

use std::borrow::Borrow;

use tch::nn::{BatchNormConfig, ModuleT, Path};
use tch::Tensor;

use super::leaf::tch_wrapper;
use crate::nn::capture::{record, TapId};

/// A batch-norm layer; derefs to `tch::nn::BatchNorm` (`ws`, `bs`, `running_mean`, `running_var`, `nd`).
///
/// It also keeps the config it was built with ([`BatchNorm::config`]: `eps`, `momentum`…), which tch
/// keeps private, so that `distill::prune` can derive a channel-sliced copy that computes the same.
#[derive(Debug)]
pub struct BatchNorm {
    inner: tch::nn::BatchNorm,
    tap: TapId,
    config: Option<BatchNormConfig>,
}

tch_wrapper!(BatchNorm, tch::nn::BatchNorm, config: BatchNormConfig);

impl ModuleT for BatchNorm {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        record(self.tap, xs, |xs| self.inner.forward_t(xs, train))
    }
}

/// Batch norm over `(N, C)` or `(N, C, L)`, as `tch::nn::batch_norm1d`.
pub fn batch_norm1d<'a, T: Borrow<Path<'a>>>(vs: T, out_dim: i64, config: BatchNormConfig) -> BatchNorm {
    BatchNorm::from_tch_with_config(tch::nn::batch_norm1d(vs, out_dim, config), config)
}

/// Batch norm over `(N, C, H, W)`, as `tch::nn::batch_norm2d`.
pub fn batch_norm2d<'a, T: Borrow<Path<'a>>>(vs: T, out_dim: i64, config: BatchNormConfig) -> BatchNorm {
    BatchNorm::from_tch_with_config(tch::nn::batch_norm2d(vs, out_dim, config), config)
}

/// Batch norm over `(N, C, D, H, W)`, as `tch::nn::batch_norm3d`.
pub fn batch_norm3d<'a, T: Borrow<Path<'a>>>(vs: T, out_dim: i64, config: BatchNormConfig) -> BatchNorm {
    BatchNorm::from_tch_with_config(tch::nn::batch_norm3d(vs, out_dim, config), config)
}
