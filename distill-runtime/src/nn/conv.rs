//! Convolutions: `conv1d`, `conv2d`, `conv3d` and the generic `conv`, as in tch.

use std::borrow::Borrow;

use tch::nn::{ConvConfig, ConvConfigND, Module, Path};
use tch::Tensor;

use super::leaf::{tappable_leaf, tch_deref};
use crate::channels::KeptChannels;
use crate::error::Result;
use crate::nn::capture::{record, TapId};

/// A convolution over `ND` spatial dimensions; derefs to `tch::nn::Conv<ND>` (`ws`, `bs`).
///
/// It also keeps the config it was built with ([`Conv::config`]), which tch keeps private, so that
/// `distill::prune` can derive a channel-sliced copy with the same stride, padding, dilation, groups;
/// and, for a channel-pruned copy, which channels of its source it kept ([`Conv::pruned_from`]), so
/// that the selection adapters need not recover them from weights that training has changed.
#[derive(Debug)]
pub struct Conv<ND> {
    inner: tch::nn::Conv<ND>,
    tap: TapId,
    config: Option<ConvConfigND<ND>>,
    pruned_from: Option<KeptChannels>,
}

/// 1-D convolution.
pub type Conv1D = Conv<[i64; 1]>;
/// 2-D convolution.
pub type Conv2D = Conv<[i64; 2]>;
/// 3-D convolution.
pub type Conv3D = Conv<[i64; 3]>;

tappable_leaf!(Conv<ND>);
tch_deref!(Conv<ND>, tch::nn::Conv<ND>);

impl<ND> Conv<ND> {
    /// Wraps a tch layer, giving it a fresh tap. tch keeps a layer's config private, so the wrapper
    /// does not know it ([`config`](Self::config) is `None`) and operations that need it (e.g.
    /// `distill::prune`) return an error: prefer [`from_tch_with_config`](Self::from_tch_with_config).
    pub fn from_tch(inner: tch::nn::Conv<ND>) -> Self {
        Conv { inner, tap: TapId::fresh(), config: None, pruned_from: None }
    }

    /// Wraps a tch layer built with `config`, giving it a fresh tap.
    pub fn from_tch_with_config(inner: tch::nn::Conv<ND>, config: ConvConfigND<ND>) -> Self {
        Conv { inner, tap: TapId::fresh(), config: Some(config), pruned_from: None }
    }

    /// The config the layer was built with; `None` when it was wrapped with `from_tch`.
    pub fn config(&self) -> Option<&ConvConfigND<ND>> {
        self.config.as_ref()
    }

    /// Which channels of its source this conv kept, when it is a channel-pruned copy: set by
    /// `distill::prune::prune_conv2d`, or attached with [`set_pruned_from`](Self::set_pruned_from).
    /// The record survives training and `VarStore::load`, which change only the weights.
    pub fn pruned_from(&self) -> Option<&KeptChannels> {
        self.pruned_from.as_ref()
    }

    /// Records that this conv is a channel-pruned copy holding the channels `kept` of its source —
    /// for a student built fresh (not by pruning), e.g. before loading a trained checkpoint, from a
    /// saved `distill::prune::PruneRecord`. Replaces an earlier record.
    ///
    /// # Errors
    /// [`ChannelMapError::RecordPrunedMismatch`](crate::error::ChannelMapError::RecordPrunedMismatch)
    /// when the record's pruned shape is not this conv's weight shape.
    pub fn set_pruned_from(&mut self, kept: KeptChannels) -> Result<()> {
        let shape = if self.inner.ws.defined() { self.inner.ws.size() } else { Vec::new() };
        if shape != kept.pruned_shape() {
            let recorded = kept.pruned_shape();
            return Err(crate::error::ChannelMapError::RecordPrunedMismatch { recorded, given: shape }.into());
        }
        self.pruned_from = Some(kept);
        Ok(())
    }

    /// This conv with the record `kept` attached (see [`set_pruned_from`](Self::set_pruned_from)).
    ///
    /// # Errors
    /// As [`set_pruned_from`](Self::set_pruned_from).
    pub fn with_pruned_from(mut self, kept: KeptChannels) -> Result<Self> {
        self.set_pruned_from(kept)?;
        Ok(self)
    }
}

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
