//! A selection adapter over the last dimension: a teacher's features narrowed to the ones a pruned
//! student kept (hidden states `[B, T, hidden]` of a width-pruned language model, for example).

use std::borrow::Borrow;

use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

use super::adapt::adapter_forward;
use super::AdapterError;
use crate::channels::{check_indices, KeptChannels};
use crate::error::Result;
use crate::nn::capture::TapId;
use crate::nn::leaf::tappable_leaf;

/// Narrows the last dimension of a teacher's tensor (`[.., teacher features]`) to the features its pruned
/// student kept (`[.., kept]`): a linear map without bias whose weight (variable `weight`,
/// `[kept, teacher features]`) starts as the selection matrix, `weight[o, kept[o]] = 1` and zeros elsewhere.
///
/// Before any training step `adapter.forward(&xs)` equals `xs.index_select(-1, &kept)` exactly for
/// finite inputs: every output is one input times 1 plus products with 0, which round to nothing.
/// It is trainable; to keep it a fixed selection, freeze it (`set_requires_grad(false)` on its
/// weight, or leave it out of the optimizer's `VarStore`).
///
/// Built by [`linear_selection_adapter`] or [`LinearSelectionAdapter::from_kept`].
#[derive(Debug)]
pub struct LinearSelectionAdapter {
    ws: Tensor,
    kept: Vec<i64>,
    tap: TapId,
}

tappable_leaf!(LinearSelectionAdapter);

/// A [`LinearSelectionAdapter`] under `path` from `teacher_features` features to the `kept` ones (in
/// that order).
///
/// # Errors
/// [`AdapterError::NoTeacherFeatures`] for `teacher_features < 1`, [`ChannelMapError::NoneKept`](super::ChannelMapError::NoneKept)
/// for an empty `kept`; [`ChannelMapError::ChannelOutOfRange`](super::ChannelMapError::ChannelOutOfRange) and
/// [`ChannelMapError::DuplicateChannel`](super::ChannelMapError::DuplicateChannel) for a bad index.
pub fn linear_selection_adapter<'a, P: Borrow<Path<'a>>>(
    path: P,
    teacher_features: i64,
    kept: &[i64],
) -> Result<LinearSelectionAdapter> {
    if teacher_features < 1 {
        return Err(AdapterError::NoTeacherFeatures { features: teacher_features }.into());
    }
    check_indices(kept, teacher_features, "feature")?;
    let path = path.borrow();
    let mut ws = path.f_var("weight", &[kept.len() as i64, teacher_features], Init::Const(0.0))?;
    let device = ws.device();
    let picked = Tensor::from_slice(kept).f_to_device(device)?;
    let one_hot = Tensor::f_eye(teacher_features, (Kind::Float, device))?.f_index_select(0, &picked)?;
    tch::no_grad(|| ws.f_copy_(&one_hot))?;
    Ok(LinearSelectionAdapter { ws, kept: kept.to_vec(), tap: TapId::fresh() })
}

impl LinearSelectionAdapter {
    /// The adapter of [`linear_selection_adapter`] from a pruning record: the record's kept output
    /// features (`kept.output()`) of a layer with `kept.source_shape()[0]` output features.
    ///
    /// # Errors
    /// As [`linear_selection_adapter`].
    pub fn from_kept<'a, P: Borrow<Path<'a>>>(path: P, kept: &KeptChannels) -> Result<LinearSelectionAdapter> {
        linear_selection_adapter(path, kept.source_shape()[0], kept.output())
    }

    /// For each output feature, the teacher feature it selects.
    pub fn kept(&self) -> &[i64] {
        &self.kept
    }

    /// The adapter's weight (`[kept, teacher features]`), a variable of the `VarStore` it was built in.
    pub fn weight(&self) -> &Tensor {
        &self.ws
    }

    /// `xs` through the adapter, with a typed error when the last dimension of `xs` is not the teacher's.
    fn f_forward(&self, xs: &Tensor) -> Result<Tensor> {
        let features = self.ws.size()[1];
        let size = if xs.defined() { xs.size() } else { Vec::new() };
        if size.last() != Some(&features) {
            let adapter = "selection adapter";
            return Err(AdapterError::InputFeatures { adapter, features, got: size }.into());
        }
        Ok(xs.f_linear(&self.ws, None::<&Tensor>)?)
    }
}

adapter_forward!(LinearSelectionAdapter);
