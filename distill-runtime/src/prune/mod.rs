//! Structured (channel) pruning helpers: choose filters to keep, and derive channel-sliced copies of
//! `Conv2D`, `BatchNorm` and `Linear` layers under a new `nn::Path`.
//!
//! A pruned conv remembers which channels of its source it kept ([`Conv::pruned_from`], a
//! [`KeptChannels`]), so that `conv2d_adapter` and `inverted_conv2d_adapter` select exactly those
//! channels, however the student's weights change in training. A [`PruneRecord`] collects these
//! records by module path, saves them beside a checkpoint, and attaches them to a student built fresh.
//!
//! ```no_run
//! # extern crate distill_runtime as distill;
//! # fn main() -> Result<(), distill::DistillError> {
//! use distill::{nn, prune};
//! let (teacher_vs, student_vs) = (nn::VarStore::new(tch::Device::Cpu), nn::VarStore::new(tch::Device::Cpu));
//! let conv = nn::conv2d(teacher_vs.root() / "conv", 3, 64, 3, Default::default());
//! let bn = nn::batch_norm2d(teacher_vs.root() / "bn", 64, Default::default());
//! let keep = prune::l1_keep(&conv.ws, prune::keep_count(64, 0.25)?)?; // the 16 strongest filters
//! let small_conv = prune::prune_conv2d(student_vs.root() / "conv", &conv, &keep, None)?;
//! let small_bn = prune::prune_batch_norm(student_vs.root() / "bn", &bn, &keep)?;
//! # Ok(()) }
//! ```
//!
//! Copies keep the kept indices' order (a shuffled `keep` gives a shuffled copy), are made under
//! `tch::no_grad`, and create the same variables as tch's constructors (`weight`, `bias`,
//! `running_mean`, `running_var`) with the same config, so the copy computes exactly the kept
//! channels of the original.
//!
//! [`Conv::pruned_from`]: crate::nn::Conv::pruned_from

mod record;

use std::borrow::Borrow;

use tch::nn::{BatchNormConfig, ConvConfigND, LinearConfig, Path};
use tch::{Device, Kind, Tensor};

use crate::channels::check_indices;
pub use crate::channels::KeptChannels;
use crate::error::Result;
pub use crate::error::{PruneError, RecordProblem};
use crate::nn::{self, BatchNorm, Conv2D, Linear};
pub use record::PruneRecord;

/// The indices of the `keep` filters (slices along dimension 0) of `weight` with the largest L1 norm,
/// ascending. Equal norms keep the lower index; a filter with a NaN in it ranks below every other.
///
/// # Errors
/// [`PruneError::RankUndefined`], [`PruneError::RankScalar`] when `weight` has no dimension,
/// [`PruneError::KeepOutOfRange`] when `keep` is not in `1..=weight.size()[0]`.
pub fn l1_keep(weight: &Tensor, keep: i64) -> Result<Vec<i64>> {
    if !weight.defined() {
        return Err(PruneError::RankUndefined.into());
    }
    let size = weight.size();
    let Some(&filters) = size.first() else {
        return Err(PruneError::RankScalar.into());
    };
    if !(1..=filters).contains(&keep) {
        return Err(PruneError::KeepOutOfRange { keep, filters, shape: size }.into());
    }
    let norms = weight
        .f_detach()?
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Double)?
        .f_reshape([filters, -1])?
        .f_abs()?
        .f_sum_dim_intlist(1, false, Kind::Double)?;
    let norms = Vec::<f64>::try_from(&norms)?;
    let mut order: Vec<i64> = (0..filters).collect();
    // Largest first; NaN norms rank last; ties keep the lower index (the sort is stable).
    order.sort_by(|&x, &y| {
        let (nx, ny) = (norms[x as usize], norms[y as usize]);
        nx.is_nan().cmp(&ny.is_nan()).then(ny.total_cmp(&nx))
    });
    let mut kept = order[..keep as usize].to_vec();
    kept.sort_unstable();
    Ok(kept)
}

/// How many of `channels` channels to keep for a keep `ratio` in `(0, 1]`: `round(channels · ratio)`,
/// at least 1. For example `keep_count(64, 0.25) == Ok(16)`.
///
/// # Errors
/// [`PruneError::KeepRatio`] when `channels < 1` or `ratio` is not in `(0, 1]`.
pub fn keep_count(channels: i64, ratio: f64) -> Result<i64> {
    if channels < 1 || !(ratio > 0.0 && ratio <= 1.0) {
        return Err(PruneError::KeepRatio { ratio, channels }.into());
    }
    Ok(((channels as f64 * ratio).round() as i64).clamp(1, channels))
}

/// A copy of `conv` under `path` with output channels `out_keep` and, if given, input channels
/// `in_keep` (both in the given order; all input channels when `None`): same kernel, stride, padding,
/// dilation and padding mode, variables `weight` (`conv.ws[out_keep][:, in_keep]`) and, if `conv` has
/// one, `bias` (`conv.bs[out_keep]`) — whether its config says `bias` or not.
///
/// The copy carries the record of its pruning ([`Conv::pruned_from`](crate::nn::Conv::pruned_from):
/// `conv`'s weight shape and the kept indices), from which the selection adapters are built.
///
/// # Errors
/// - [`ChannelMapError::ChannelOutOfRange`], [`ChannelMapError::DuplicateChannel`] for a bad index;
///   [`ChannelMapError::NoneKept`] for an empty list;
/// - [`PruneError::Grouped`] when `conv` is grouped, [`PruneError::UnknownConfig`] when it was wrapped
///   with `Conv::from_tch` (its config is then unknown: use `Conv::from_tch_with_config`);
/// - [`PruneError::TensorRank`] when its weight has another number of dimensions than a 2-D conv's.
///
/// [`ChannelMapError::ChannelOutOfRange`]: crate::adapter::ChannelMapError::ChannelOutOfRange
/// [`ChannelMapError::DuplicateChannel`]: crate::adapter::ChannelMapError::DuplicateChannel
/// [`ChannelMapError::NoneKept`]: crate::adapter::ChannelMapError::NoneKept
pub fn prune_conv2d<'a, P: Borrow<Path<'a>>>(
    path: P,
    conv: &Conv2D,
    out_keep: &[i64],
    in_keep: Option<&[i64]>,
) -> Result<Conv2D> {
    let Some(&config) = conv.config() else {
        return Err(PruneError::UnknownConfig { layer: "conv", wrapper: "Conv" }.into());
    };
    // The bias the conv holds, not the one its config claims: a config that disagrees (given to
    // `from_tch_with_config`, or a bias set or removed since) would drop the source's bias from
    // the copy, or give the copy one the source does not have.
    let config = ConvConfigND { bias: conv.bs.is_some(), ..config };
    if config.groups != 1 {
        return Err(PruneError::Grouped { groups: config.groups }.into());
    }
    let size = weight_shape(&conv.ws, 4, "conv2d")?;
    let (out_idx, out_dim) = indices(out_keep, size[0], "output channel", conv.ws.device())?;
    let (in_idx, in_dim) = match in_keep {
        Some(keep) => {
            let (idx, dim) = indices(keep, size[1], "input channel", conv.ws.device())?;
            (Some(idx), dim)
        }
        None => (None, size[1]),
    };
    let input = in_keep.map_or_else(|| (0..size[1]).collect(), <[i64]>::to_vec);
    let kept = KeptChannels::new(&size, out_keep.to_vec(), input)?;
    let mut pruned = nn::conv(path, in_dim, out_dim, [size[2], size[3]], config);
    let mut weight = conv.ws.f_index_select(0, &out_idx)?;
    if let Some(in_idx) = &in_idx {
        weight = weight.f_index_select(1, in_idx)?;
    }
    copy_into(&pruned.ws, &weight)?;
    if let (Some(dst), Some(src)) = (&pruned.bs, &conv.bs) {
        copy_into(dst, &src.f_index_select(0, &out_idx)?)?;
    }
    pruned.set_pruned_from(kept)?;
    Ok(pruned)
}

/// A copy of `bn` under `path` with channels `keep` (in that order): same dimensionality and config
/// (`eps`, `momentum`), variables `weight` and `bias` if `bn` holds either (affine as its tensors
/// are, whatever its config says; one it lacks is 1 or 0, as computed without it), `running_mean`
/// and `running_var`, all sliced to `keep`.
///
/// # Errors
/// As [`prune_conv2d`] for the indices; [`PruneError::UnknownConfig`] when `bn` was wrapped with
/// `BatchNorm::from_tch` (config unknown); [`PruneError::BatchNormDims`] for a batch norm of another
/// dimension than the pruning rebuilds; [`PruneError::TensorRank`] when its running mean is not 1-D.
pub fn prune_batch_norm<'a, P: Borrow<Path<'a>>>(path: P, bn: &BatchNorm, keep: &[i64]) -> Result<BatchNorm> {
    let Some(&config) = bn.config() else {
        return Err(PruneError::UnknownConfig { layer: "batch norm", wrapper: "BatchNorm" }.into());
    };
    // Affine as the batch norm's tensors are, not as its config claims (see `prune_conv2d`).
    let config = BatchNormConfig { affine: bn.ws.is_some() || bn.bs.is_some(), ..config };
    let channels = weight_shape(&bn.running_mean, 1, "batch norm's running mean")?[0];
    let (idx, dim) = indices(keep, channels, "channel", bn.running_mean.device())?;
    let pruned = match bn.nd {
        1 => nn::batch_norm1d(path, dim, config),
        2 => nn::batch_norm2d(path, dim, config),
        3 => nn::batch_norm3d(path, dim, config),
        dims => return Err(PruneError::BatchNormDims { dims }.into()),
    };
    // A scale or shift the source lacks (a half-affine batch norm) is the identity's: 1 and 0.
    for (dst, src, identity) in [(&pruned.ws, &bn.ws, 1.0), (&pruned.bs, &bn.bs, 0.0)] {
        match (dst, src) {
            (Some(dst), Some(src)) => copy_into(dst, &src.f_index_select(0, &idx)?)?,
            (Some(dst), None) => copy_into(dst, &dst.f_full_like(identity)?)?,
            _ => {}
        }
    }
    copy_into(&pruned.running_mean, &bn.running_mean.f_index_select(0, &idx)?)?;
    copy_into(&pruned.running_var, &bn.running_var.f_index_select(0, &idx)?)?;
    Ok(pruned)
}

/// A copy of `lin` under `path` with output features `out_keep` and input features `in_keep` (each in
/// the given order; all when `None`): variables `weight` (`lin.ws[out_keep][:, in_keep]`) and, if `lin`
/// has one, `bias` (`lin.bs[out_keep]`).
///
/// # Errors
/// As [`prune_conv2d`] for the indices; [`PruneError::TensorRank`] when its weight is not 2-D.
pub fn prune_linear<'a, P: Borrow<Path<'a>>>(
    path: P,
    lin: &Linear,
    out_keep: Option<&[i64]>,
    in_keep: Option<&[i64]>,
) -> Result<Linear> {
    let size = weight_shape(&lin.ws, 2, "linear")?;
    let device = lin.ws.device();
    let out = out_keep.map(|keep| indices(keep, size[0], "output feature", device)).transpose()?;
    let inp = in_keep.map(|keep| indices(keep, size[1], "input feature", device)).transpose()?;
    let out_dim = out.as_ref().map_or(size[0], |o| o.1);
    let in_dim = inp.as_ref().map_or(size[1], |i| i.1);
    let config = LinearConfig { bias: lin.bs.is_some(), ..Default::default() };
    let pruned = nn::linear(path, in_dim, out_dim, config);
    let mut weight = lin.ws.shallow_clone();
    if let Some((idx, _)) = &out {
        weight = weight.f_index_select(0, idx)?;
    }
    if let Some((idx, _)) = &inp {
        weight = weight.f_index_select(1, idx)?;
    }
    copy_into(&pruned.ws, &weight)?;
    if let (Some(dst), Some(src)) = (&pruned.bs, &lin.bs) {
        let bias = match &out {
            Some((idx, _)) => src.f_index_select(0, idx)?,
            None => src.shallow_clone(),
        };
        copy_into(dst, &bias)?;
    }
    Ok(pruned)
}

/// The shape of a layer's `tensor`, checked to have `dims` dimensions.
fn weight_shape(tensor: &Tensor, dims: usize, what: &'static str) -> Result<Vec<i64>> {
    let size = if tensor.defined() { tensor.size() } else { Vec::new() };
    if size.len() != dims || !tensor.defined() {
        return Err(PruneError::TensorRank { what, shape: size, dims }.into());
    }
    Ok(size)
}

/// Checks kept indices against a size of `channels` and returns them as an index tensor on `device`,
/// with their count.
fn indices(keep: &[i64], channels: i64, what: &'static str, device: Device) -> Result<(Tensor, i64)> {
    check_indices(keep, channels, what)?;
    Ok((Tensor::from_slice(keep).f_to_device(device)?, keep.len() as i64))
}

/// Copies `src` into the variable `dst` (a shallow clone shares its storage) without recording it for
/// autograd.
fn copy_into(dst: &Tensor, src: &Tensor) -> Result<()> {
    let mut dst = dst.shallow_clone();
    tch::no_grad(|| dst.f_copy_(src))?;
    Ok(())
}
