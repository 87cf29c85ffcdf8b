//! Convolutions: `conv1d`, `conv2d`, `conv3d` and the generic `conv`, as in tch.

use std::borrow::Borrow;

use tch::nn::{ConvConfig, ConvConfigND, Module, Path};
use tch::Tensor;

use super::leaf::tch_wrapper;
use crate::capture::{record, TapId};

/// A convolution over `ND` spatial dimensions; derefs to `tch::nn::Conv<ND>` (`ws`, `bs`).
///
/// It also keeps the config it was built with ([`Conv::config`]), which tch keeps private, so that
/// `distill::prune` can derive a channel-sliced copy with the same stride, padding, dilation, groups.
#[derive(Debug)]
pub struct Conv<ND> {
    inner: tch::nn::Conv<ND>,
    tap: TapId,
    config: Option<ConvConfigND<ND>>,
}

/// 1-D convolution.
pub type Conv1D = Conv<[i64; 1]>;
/// 2-D convolution.
pub type Conv2D = Conv<[i64; 2]>;
/// 3-D convolution.
pub type Conv3D = Conv<[i64; 3]>;

tch_wrapper!(Conv<ND>, tch::nn::Conv<ND>, config: ConvConfigND<ND>);

impl<ND: std::fmt::Debug + Send> Module for Conv<ND>
where
    tch::nn::Conv<ND>: Module,
{
    fn forward(&self, xs: &Tensor) -> Tensor {
        record(self.tap, xs, |xs| self.inner.forward(xs))
    }
}

/// A convolution with per-dimension kernel size and config, as `tch::nn::conv`.
pub fn conv<'a, ND, T>(vs: T, in_dim: i64, out_dim: i64, ksizes: ND, config: ConvConfigND<ND>) -> Conv<ND>
where
    ND: AsRef<[i64]>,
    T: Borrow<Path<'a>>,
    ND: Copy,
{
    Conv::from_tch_with_config(tch::nn::conv(vs, in_dim, out_dim, ksizes, config), config)
}

/// A 1-D convolution, as `tch::nn::conv1d` (same variables: `weight`, `bias`).
pub fn conv1d<'a, T: Borrow<Path<'a>>>(vs: T, in_dim: i64, out_dim: i64, ksize: i64, config: ConvConfig) -> Conv1D {
    Conv::from_tch_with_config(tch::nn::conv1d(vs, in_dim, out_dim, ksize, config), nd_config(config))
}

/// A 2-D convolution, as `tch::nn::conv2d` (same variables: `weight`, `bias`).
pub fn conv2d<'a, T: Borrow<Path<'a>>>(vs: T, in_dim: i64, out_dim: i64, ksize: i64, config: ConvConfig) -> Conv2D {
    Conv::from_tch_with_config(tch::nn::conv2d(vs, in_dim, out_dim, ksize, config), nd_config(config))
}

/// A 3-D convolution, as `tch::nn::conv3d` (same variables: `weight`, `bias`).
pub fn conv3d<'a, T: Borrow<Path<'a>>>(vs: T, in_dim: i64, out_dim: i64, ksize: i64, config: ConvConfig) -> Conv3D {
    Conv::from_tch_with_config(tch::nn::conv3d(vs, in_dim, out_dim, ksize, config), nd_config(config))
}

/// The per-dimension config tch derives from a `ConvConfig` (the same value in every dimension).
fn nd_config<const N: usize>(config: ConvConfig) -> ConvConfigND<[i64; N]> {
    ConvConfigND {
        stride: [config.stride; N],
        padding: [config.padding; N],
        dilation: [config.dilation; N],
        groups: config.groups,
        bias: config.bias,
        ws_init: config.ws_init,
        bs_init: config.bs_init,
        padding_mode: config.padding_mode,
    }
}
