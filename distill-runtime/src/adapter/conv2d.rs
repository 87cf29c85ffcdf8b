//! Selection adapters between a conv and its channel-pruned copy.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;

use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

use super::adapt::adapter_forward;
use super::channel_map::{find_layer_mapping, ChannelMapping, Tolerance};
use super::pointwise;
use super::ChannelMapError;
use crate::channels::KeptChannels;
use crate::error::Result;
use crate::nn::capture::TapId;
use crate::nn::leaf::tappable_leaf;
use crate::nn::Conv2D;

/// Narrows a teacher conv's output to the channels its pruned student conv kept: a 1×1 conv without
/// bias, `teacher` output channels → `student` output channels.
///
/// Built by [`conv2d_adapter`] or [`Conv2DAdapter::from_kept`]. Its weight (variable `weight`,
/// shape `[student_out, teacher_out, 1, 1]`) starts as the selection matrix of the channel mapping
/// — `weight[o, mapping.output[o], 0, 0] = 1`, zeros elsewhere — so that, before any training step,
/// `adapter.forward(&teacher_out)` equals `teacher_out.index_select(1, &kept)` exactly (for finite
/// inputs, on the CPU). It is trainable.
#[derive(Debug)]
pub struct Conv2DAdapter {
    ws: Tensor,
    mapping: ChannelMapping,
    tap: TapId,
}

/// Widens a pruned student conv's output back to its teacher conv's channels: a 1×1 conv without bias,
/// `student` output channels → `teacher` output channels.
///
/// Built by [`inverted_conv2d_adapter`] or [`InvertedConv2DAdapter::from_kept`]. Its weight
/// (variable `weight`, shape `[teacher_out, student_out, 1, 1]`) starts as
/// `weight[mapping.output[o], o, 0, 0] = 1`, zeros elsewhere: each student channel `o` lands at its
/// teacher index `mapping.output[o]`, and the teacher channels the student does not have are zero.
/// It is trainable.
#[derive(Debug)]
pub struct InvertedConv2DAdapter {
    ws: Tensor,
    mapping: ChannelMapping,
    tap: TapId,
}

tappable_leaf!(Conv2DAdapter);
tappable_leaf!(InvertedConv2DAdapter);

/// The selection adapter from the `teacher` conv to the `student` conv that was
/// pruned from it, as ENOT's `conv2d_adapter(source=teacher_conv, target=student_conv)`; the
/// returned builder's [`build`](Conv2DAdapterBuilder::build) creates it:
/// `conv2d_adapter(p, &teacher, &student).build()?`.
///
/// The kept channels come from the pruning's record when `student` carries one
/// ([`Conv::pruned_from`]: a conv made by `prune_conv2d`, or given a saved record), checked against
/// `teacher`'s weight shape; the weights are then not compared at all, so a student trained or
/// changed since its pruning gets the right channels. Without a record they are recovered from the
/// two weights (and biases) with [`find_conv2d_mapping`](super::find_conv2d_mapping): input channels
/// may be pruned too, in any order, and weights that fit several selections are an error, never a
/// guess. The adapter's variable is `weight` under `path`. With only a record at hand, and no
/// layers, [`Conv2DAdapter::from_kept`] builds the same adapter.
///
/// In `distill!`, wrap the teacher endpoint: `conv2d_adapter(teacher.features[0].conv)`, with
/// options after it: `conv2d_adapter(teacher.features[0].conv).tolerance(Tolerance::new(1e-4, 1e-3))`.
///
/// # Errors
/// From [`build`](Conv2DAdapterBuilder::build):
/// - [`ChannelMapError::ConvNot4d`] when a weight is not 4-D, [`ChannelMapError::RecordSourceMismatch`] or
///   [`ChannelMapError::RecordPrunedMismatch`] when `student`'s record does not fit
///   `teacher`'s and `student`'s weight shapes, [`ChannelMapError::InvalidTolerance`] for an invalid
///   tolerance;
/// - without a record, those of [`find_conv2d_mapping`](super::find_conv2d_mapping), among them
///   [`ChannelMapError::IncompatibleShapes`] (kernel sizes differ), [`ChannelMapError::EmptyWeights`],
///   [`ChannelMapError::ComplexWeights`], [`ChannelMapError::BiasShape`],
///   [`ChannelMapError::StudentWider`], [`ChannelMapError::NoChannelMapping`],
///   [`ChannelMapError::Ambiguous`] and [`ChannelMapError::Undecided`].
///
/// [`Conv::pruned_from`]: crate::nn::Conv::pruned_from
pub fn conv2d_adapter<'a, 'm, P: Borrow<Path<'a>>>(
    path: P,
    teacher: &'m Conv2D,
    student: &'m Conv2D,
) -> Conv2DAdapterBuilder<'m, P, Conv2DAdapter> {
    Conv2DAdapterBuilder::new(path, teacher, student)
}

/// The inverted selection adapter: from the `student` conv's channels back to the `teacher`
/// conv's, for `criterion(adapter(student_out), teacher_out)`. Channels, variable, options and errors
/// as [`conv2d_adapter`]; in `distill!`, wrap the student endpoint:
/// `inverted_conv2d_adapter(student.features[1].conv)`.
pub fn inverted_conv2d_adapter<'a, 'm, P: Borrow<Path<'a>>>(
    path: P,
    teacher: &'m Conv2D,
    student: &'m Conv2D,
) -> Conv2DAdapterBuilder<'m, P, InvertedConv2DAdapter> {
    Conv2DAdapterBuilder::new(path, teacher, student)
}

/// A selection adapter between a teacher conv and its pruned student copy, not created yet: what
/// [`conv2d_adapter`] (building a [`Conv2DAdapter`]) and [`inverted_conv2d_adapter`] (building an
/// [`InvertedConv2DAdapter`]) return. Options go on it, then [`build`](Self::build) finds the kept
/// channels and creates the adapter's variable.
#[must_use = "the adapter is only created by `build()`"]
pub struct Conv2DAdapterBuilder<'m, P, A> {
    path: P,
    teacher: &'m Conv2D,
    student: &'m Conv2D,
    tolerance: Tolerance,
    adapter: PhantomData<fn() -> A>,
}

impl<'a, 'm, P: Borrow<Path<'a>>, A> Conv2DAdapterBuilder<'m, P, A> {
    fn new(path: P, teacher: &'m Conv2D, student: &'m Conv2D) -> Self {
        Conv2DAdapterBuilder { path, teacher, student, tolerance: Tolerance::default(), adapter: PhantomData }
    }

    /// Compares the weights with `tolerance` (default [`Tolerance::default`]) when `student` carries no
    /// pruning record: a student perturbed slightly after pruning, for example. Not used to compare
    /// anything when it carries one, though an invalid tolerance is an error of `build` all the same.
    pub fn tolerance(self, tolerance: Tolerance) -> Self {
        Conv2DAdapterBuilder { tolerance, ..self }
    }

    /// The channel mapping from `teacher` to `student` (from `student`'s record, else from the
    /// weights), and `teacher`'s output channel count.
    fn mapping(&self) -> Result<(ChannelMapping, i64)> {
        self.tolerance.validate()?;
        let teacher_shape = conv_shape(self.teacher, "teacher")?;
        let student_shape = conv_shape(self.student, "student")?;
        let mapping = match self.student.pruned_from() {
            Some(kept) => {
                kept.check_layers(&teacher_shape, &student_shape)?;
                kept.mapping()
            }
            None => {
                let (teacher, student) = (self.teacher, self.student);
                find_layer_mapping(&teacher.ws, teacher.bs.as_ref(), &student.ws, student.bs.as_ref(), self.tolerance)?
            }
        };
        Ok((mapping, teacher_shape[0]))
    }
}

impl<P, A> fmt::Debug for Conv2DAdapterBuilder<'_, P, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conv2DAdapterBuilder").field("tolerance", &self.tolerance).finish_non_exhaustive()
    }
}

impl<'a, P: Borrow<Path<'a>>> Conv2DAdapterBuilder<'_, P, Conv2DAdapter> {
    /// Finds the kept channels and creates the adapter under the path.
    ///
    /// # Errors
    /// See [`conv2d_adapter`].
    pub fn build(self) -> Result<Conv2DAdapter> {
        let (mapping, teacher_out) = self.mapping()?;
        narrowing(self.path.borrow(), mapping, teacher_out)
    }
}

impl<'a, P: Borrow<Path<'a>>> Conv2DAdapterBuilder<'_, P, InvertedConv2DAdapter> {
    /// Finds the kept channels and creates the adapter under the path.
    ///
    /// # Errors
    /// See [`conv2d_adapter`].
    pub fn build(self) -> Result<InvertedConv2DAdapter> {
        let (mapping, teacher_out) = self.mapping()?;
        widening(self.path.borrow(), mapping, teacher_out)
    }
}

impl Conv2DAdapter {
    /// The adapter of [`conv2d_adapter`] from a pruning record alone: selects the record's kept output
    /// channels (`kept.output()`) of a conv with `kept.source_shape()[0]` output channels. No weights
    /// are read.
    ///
    /// # Errors
    /// [`DistillError::Torch`](crate::DistillError::Torch) when the variable cannot be created.
    pub fn from_kept<'a, P: Borrow<Path<'a>>>(path: P, kept: &KeptChannels) -> Result<Conv2DAdapter> {
        narrowing(path.borrow(), kept.mapping(), kept.source_shape()[0])
    }
}

impl InvertedConv2DAdapter {
    /// The adapter of [`inverted_conv2d_adapter`] from a pruning record alone (see
    /// [`Conv2DAdapter::from_kept`]).
    ///
    /// # Errors
    /// [`DistillError::Torch`](crate::DistillError::Torch) when the variable cannot be created.
    pub fn from_kept<'a, P: Borrow<Path<'a>>>(path: P, kept: &KeptChannels) -> Result<InvertedConv2DAdapter> {
        widening(path.borrow(), kept.mapping(), kept.source_shape()[0])
    }
}

/// A conv's weight shape, checked to be `[out, in, kh, kw]`.
fn conv_shape(conv: &Conv2D, role: &'static str) -> Result<Vec<i64>> {
    let shape = if conv.ws.defined() { conv.ws.size() } else { Vec::new() };
    if shape.len() != 4 {
        return Err(ChannelMapError::ConvNot4d { role, shape }.into());
    }
    Ok(shape)
}

fn narrowing(path: &Path<'_>, mapping: ChannelMapping, teacher_out: i64) -> Result<Conv2DAdapter> {
    let student_out = mapping.output.len() as i64;
    let ws = selection(path, student_out, teacher_out, &mapping.output, false)?;
    Ok(Conv2DAdapter { ws, mapping, tap: TapId::fresh() })
}

fn widening(path: &Path<'_>, mapping: ChannelMapping, teacher_out: i64) -> Result<InvertedConv2DAdapter> {
    let student_out = mapping.output.len() as i64;
    let ws = selection(path, teacher_out, student_out, &mapping.output, true)?;
    Ok(InvertedConv2DAdapter { ws, mapping, tap: TapId::fresh() })
}

/// Creates the variable `weight` (`[out, in, 1, 1]`) under `path` and sets it to the selection matrix
/// of `picked`: `weight[o, picked[o]] = 1` (or, `transposed`, `weight[picked[i], i] = 1`).
fn selection(path: &Path<'_>, out: i64, inp: i64, picked: &[i64], transposed: bool) -> Result<Tensor> {
    let (count, width) = if transposed { (inp, out) } else { (out, inp) };
    if picked.len() as i64 != count || picked.iter().any(|&p| !(0..width).contains(&p)) {
        return Err(ChannelMapError::SelectionDoesNotFit { picked: picked.to_vec(), count, width }.into());
    }
    let mut ws = path.f_var("weight", &[out, inp, 1, 1], Init::Const(0.0))?;
    // Row r of `one_hot` is the unit vector of `picked[r]`: [count, width], built where the weight
    // lives (index_select needs its index on the tensor's device).
    let device = ws.device();
    let picked = Tensor::from_slice(picked).f_to_device(device)?;
    let one_hot = Tensor::f_eye(width, (Kind::Float, device))?.f_index_select(0, &picked)?;
    let matrix = if transposed { one_hot.f_transpose(0, 1)? } else { one_hot };
    tch::no_grad(|| ws.f_copy_(&matrix.f_reshape([out, inp, 1, 1])?))?;
    Ok(ws)
}

macro_rules! selection_adapter_impls {
    ($ty:ident) => {
        impl $ty {
            /// Which channels the adapter selects: from the pruning's record, or found between the
            /// teacher and student weights.
            pub fn mapping(&self) -> &ChannelMapping {
                &self.mapping
            }

            /// The adapter's weight (`[out, in, 1, 1]`), a variable of the `VarStore` it was built in.
            pub fn weight(&self) -> &Tensor {
                &self.ws
            }

            /// `xs` through the adapter, with a typed error when `xs` is not `[N, in, H, W]`.
            fn f_forward(&self, xs: &Tensor) -> Result<Tensor> {
                pointwise(&self.ws, xs)
            }
        }

        adapter_forward!($ty);
    };
}

selection_adapter_impls!(Conv2DAdapter);
selection_adapter_impls!(InvertedConv2DAdapter);
