//! Selection adapters between a conv and its channel-pruned copy.

use std::borrow::Borrow;

use tch::nn::{Init, Module, Path};
use tch::{Device, Kind, Tensor};

use super::channel_map::{find_conv2d_mapping, ChannelMapping};
use super::pointwise;
use crate::capture::{record, TapId};
use crate::error::{DistillError, Result};
use crate::nn::leaf::tappable_leaf;
use crate::nn::Conv2D;

/// Narrows a teacher conv's output to the channels its pruned student conv kept: a 1×1 conv without
/// bias, `source` (teacher) output channels → `target` (student) output channels.
///
/// Built by [`conv2d_adapter`]. Its weight (variable `weight`, shape `[target_out, source_out, 1, 1]`)
/// starts as the selection matrix of the channel mapping — `weight[o, mapping.output[o], 0, 0] = 1`,
/// zeros elsewhere — so that, before any training step, `adapter.forward(&teacher_out)` equals
/// `teacher_out.index_select(1, &kept)` exactly (for finite inputs, on the CPU). It is trainable.
#[derive(Debug)]
pub struct Conv2DAdapter {
    ws: Tensor,
    mapping: ChannelMapping,
    tap: TapId,
}

/// Widens a pruned student conv's output back to its teacher conv's channels: a 1×1 conv without bias,
/// `target` (student) output channels → `source` (teacher) output channels.
///
/// Built by [`inverted_conv2d_adapter`]. Its weight (variable `weight`, shape
/// `[source_out, target_out, 1, 1]`) starts as `weight[mapping.output[o], o, 0, 0] = 1`, zeros
/// elsewhere: each student channel `o` lands at its teacher index `mapping.output[o]`, and the teacher
/// channels the student does not have are zero. It is trainable.
#[derive(Debug)]
pub struct InvertedConv2DAdapter {
    ws: Tensor,
    mapping: ChannelMapping,
    tap: TapId,
}

tappable_leaf!(Conv2DAdapter);
tappable_leaf!(InvertedConv2DAdapter);

/// The selection adapter from the `source` (teacher) conv to the `target` (student) conv that was
/// pruned from it, as in the seed: `conv2d_adapter(source=teacher_conv, target=student_conv)`.
///
/// The kept channels are recovered from the two weights with [`find_conv2d_mapping`] (input channels
/// may be pruned too; any order). The adapter's variable is `weight` under `path`.
///
/// # Errors
/// Those of [`find_conv2d_mapping`]: the target is wider than the source
/// ([`DistillError::TargetWider`]), the kernel sizes differ ([`DistillError::InvalidArgument`]), or
/// the target is not a channel slice of the source ([`DistillError::NoChannelMapping`]).
pub fn conv2d_adapter<'a, P: Borrow<Path<'a>>>(path: P, source: &Conv2D, target: &Conv2D) -> Result<Conv2DAdapter> {
    let mapping = find_conv2d_mapping(&source.ws, &target.ws)?;
    let (source_out, target_out) = (source.ws.size()[0], target.ws.size()[0]);
    let ws = selection(path.borrow(), target_out, source_out, &mapping.output, false)?;
    Ok(Conv2DAdapter { ws, mapping, tap: TapId::fresh() })
}

/// The inverted selection adapter: from the `target` (student) conv's channels back to the `source`
/// (teacher) conv's, for `criterion(adapter(student_out), teacher_out)`. Arguments, variable and
/// errors as [`conv2d_adapter`].
pub fn inverted_conv2d_adapter<'a, P: Borrow<Path<'a>>>(
    path: P,
    source: &Conv2D,
    target: &Conv2D,
) -> Result<InvertedConv2DAdapter> {
    let mapping = find_conv2d_mapping(&source.ws, &target.ws)?;
    let (source_out, target_out) = (source.ws.size()[0], target.ws.size()[0]);
    let ws = selection(path.borrow(), source_out, target_out, &mapping.output, true)?;
    Ok(InvertedConv2DAdapter { ws, mapping, tap: TapId::fresh() })
}

/// Creates the variable `weight` (`[out, in, 1, 1]`) under `path` and sets it to the selection matrix
/// of `picked`: `weight[o, picked[o]] = 1` (or, `transposed`, `weight[picked[i], i] = 1`).
fn selection(path: &Path<'_>, out: i64, inp: i64, picked: &[i64], transposed: bool) -> Result<Tensor> {
    let (count, width) = if transposed { (inp, out) } else { (out, inp) };
    if picked.len() as i64 != count {
        return Err(DistillError::InvalidArgument(format!(
            "a selection of {} channels cannot fill a side of {count} channels",
            picked.len()
        )));
    }
    // Row r of `one_hot` is the unit vector of `picked[r]`: [count, width].
    let one_hot = Tensor::f_eye(width, (Kind::Float, Device::Cpu))?.f_index_select(0, &Tensor::from_slice(picked))?;
    let matrix = if transposed { one_hot.f_transpose(0, 1)? } else { one_hot };
    let mut ws = path.f_var("weight", &[out, inp, 1, 1], Init::Const(0.0))?;
    tch::no_grad(|| ws.f_copy_(&matrix.f_reshape([out, inp, 1, 1])?))?;
    Ok(ws)
}

macro_rules! selection_adapter_impls {
    ($ty:ident) => {
        impl $ty {
            /// The channel mapping found between the source and target weights.
            pub fn mapping(&self) -> &ChannelMapping {
                &self.mapping
            }

            /// The adapter's weight (`[out, in, 1, 1]`), a variable of the `VarStore` it was built in.
            pub fn weight(&self) -> &Tensor {
                &self.ws
            }

            /// [`Module::forward`] with a typed error when `xs` is not `[N, in, H, W]`.
            pub fn f_forward(&self, xs: &Tensor) -> Result<Tensor> {
                pointwise(&self.ws, xs)
            }
        }

        impl Module for $ty {
            /// # Panics
            /// When `xs` is not `[N, in, H, W]`; [`f_forward`](Self::f_forward) returns the error instead.
            fn forward(&self, xs: &Tensor) -> Tensor {
                record(self.tap, xs, |xs| self.f_forward(xs).unwrap_or_else(|err| panic!("{err}")))
            }
        }
    };
}

selection_adapter_impls!(Conv2DAdapter);
selection_adapter_impls!(InvertedConv2DAdapter);
