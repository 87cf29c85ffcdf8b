//! Adapters: small trainable layers that make a student's and a teacher's tensors comparable.
//!
//! When the student is a channel-pruned copy of the teacher, a conv of the student has fewer output
//! channels than its teacher conv. [`conv2d_adapter`] narrows the teacher's output to the student's
//! channels, and [`inverted_conv2d_adapter`] widens the student's output to the teacher's; both are
//! 1×1 convs initialised from the pruning itself, so distillation starts from an exact
//! correspondence instead of noise. The kept channels come from the pruning's record, which a conv
//! made by `distill::prune::prune_conv2d` carries (or one attached from a saved
//! `distill::prune::PruneRecord`); without one they are recovered from the weights by
//! [`find_conv2d_mapping`], which says when the weights cannot tell. Both constructors return a
//! [`Conv2DAdapterBuilder`]: options such as [`tolerance`](Conv2DAdapterBuilder::tolerance), then
//! `build()` (`conv2d_adapter(p, &teacher, &student).build()?`); a record alone, with no layers at
//! hand, builds through [`Conv2DAdapter::from_kept`].
//! For layers that are not pruned copies, the learned adapters ([`learned_conv2d_adapter`],
//! [`conv1x1_adapter`], [`linear_adapter`]…) start from tch's default random init.
//! [`linear_selection_adapter`] selects kept features along the last dimension (the hidden states of
//! a width-pruned language model).
//!
//! Every adapter creates its parameters under the `nn::Path` it is given, so an optimizer built on
//! that path's `VarStore` trains it, and implements [`Adapter`], whose forward is fallible. The
//! adapters whose widths are known when they are built also implement tch's `Module` and are
//! [`Distillable`] leaves that record their own output, so they can sit in a user's
//! `#[derive(Distillable)]` struct; a [`FittedAdapter`], sized by the dry run, is an [`Adapter`]
//! only. A tch module of one's own is an adapter in a [`ModuleAdapter`].
//!
//! The constructors that read layers take `(path, teacher, student)`: the teacher's layer first,
//! then the student's, in the order of ENOT's `conv2d_adapter(source=teacher_conv,
//! target=student_conv)`; the width-given ones take `(path, in, out)`, and
//! [`linear_selection_adapter`] takes the teacher's width and the kept features. In `distill!`,
//! an endpoint written as a string path (`teacher["conv2"]`) has no typed module: its side of the
//! call receives a [`StringPath`], which the fitted adapters accept and the adapters that read a
//! module's weights do not.
//!
//! `Module::forward` of an adapter panics on an input it cannot take, as tch's layers do; its
//! fallible forward, [`Adapter::f_adapt`], returns the error instead, and a distillation reports it
//! as an error naming the pair and the side.
//!
//! [`Distillable`]: crate::module::Distillable

mod adapt;
pub(crate) mod channel_map;
mod conv2d;
mod fitted;
mod learned;
mod linear_selection;
mod string_path;

pub use crate::channels::KeptChannels;
pub use adapt::{Adapter, ModuleAdapter};
pub use channel_map::{find_channel_mapping, find_conv2d_mapping, ChannelMapError, ChannelMapping, Tolerance};
pub use conv2d::{conv2d_adapter, inverted_conv2d_adapter, Conv2DAdapter, Conv2DAdapterBuilder, InvertedConv2DAdapter};
pub use fitted::{fitted_conv1x1_adapter, fitted_linear_adapter, FittedAdapter, FittedKind};
pub use learned::{
    conv1x1_adapter, learned_conv2d_adapter, learned_inverted_conv2d_adapter, learned_inverted_linear_adapter,
    learned_linear_adapter, linear_adapter, Conv1x1Adapter, LinearAdapter,
};
pub use linear_selection::{linear_selection_adapter, LinearSelectionAdapter};
pub use string_path::StringPath;

use tch::Tensor;

pub use crate::error::AdapterError;
use crate::error::Result;

/// `xs` (`[N, in, H, W]`) through a 1×1 convolution without bias with weight `ws` (`[out, in, 1, 1]`),
/// with a typed error instead of a libtorch panic when the input does not fit.
fn pointwise(ws: &Tensor, xs: &Tensor) -> Result<Tensor> {
    let channels = ws.size().get(1).copied().unwrap_or_default();
    let size = if xs.defined() { xs.size() } else { Vec::new() };
    if size.len() != 4 || size[1] != channels {
        return Err(AdapterError::InputChannels { channels, got: size }.into());
    }
    Ok(xs.f_conv2d(ws, None::<&Tensor>, [1, 1], [0, 0], [1, 1], 1)?)
}

/// The number of output channels of a layer's weight `[out, …]`.
fn out_channels(weight: &Tensor, role: &'static str) -> Result<i64> {
    if !weight.defined() {
        return Err(AdapterError::UndefinedWeight { role }.into());
    }
    match weight.size().first() {
        Some(&out) if out > 0 => Ok(out),
        _ => Err(AdapterError::NoOutputChannels { role, shape: weight.size() }.into()),
    }
}
