//! Learned adapters: regressors between layers of unrelated widths, from a random init.

use std::borrow::Borrow;

use tch::nn::{init::DEFAULT_KAIMING_UNIFORM, Path};
use tch::Tensor;

use super::adapt::adapter_forward;
use super::AdapterError;
use super::{out_channels, pointwise};
use crate::error::Result;
use crate::nn::capture::TapId;
use crate::nn::leaf::tappable_leaf;
use crate::nn::{Conv2D, Linear};

/// A learned 1×1 convolution without bias from `in` to `out` channels (the FitNets regressor).
///
/// Variable `weight`, shape `[out, in, 1, 1]`, initialised like tch's `nn::conv2d` weights:
/// Kaiming-uniform with fan-in `in` and ReLU gain (`U(−b, b)` with `b = √(6 / in)`). No bias, so
/// a zero feature maps to zero, as with the selection adapters.
#[derive(Debug)]
pub struct Conv1x1Adapter {
    ws: Tensor,
    tap: TapId,
}

/// A learned linear map without bias from `in` to `out` features.
///
/// Variable `weight`, shape `[out, in]`, initialised like tch's `nn::linear` weights: Kaiming-uniform
/// with fan-in `in` and ReLU gain (`U(−b, b)` with `b = √(6 / in)`). No bias.
#[derive(Debug)]
pub struct LinearAdapter {
    ws: Tensor,
    tap: TapId,
}

tappable_leaf!(Conv1x1Adapter);
tappable_leaf!(LinearAdapter);

/// A learned 1×1 conv adapter from `in_channels` to `out_channels` under `path` (variable `weight`).
///
/// # Errors
/// [`AdapterError::EmptyWidth`] when a channel count is not positive.
pub fn conv1x1_adapter<'a, P: Borrow<Path<'a>>>(
    path: P,
    in_channels: i64,
    out_channels: i64,
) -> Result<Conv1x1Adapter> {
    check_width(in_channels, out_channels)?;
    let ws = path.borrow().f_var("weight", &[out_channels, in_channels, 1, 1], DEFAULT_KAIMING_UNIFORM)?;
    Ok(Conv1x1Adapter { ws, tap: TapId::fresh() })
}

/// A learned linear adapter from `in_features` to `out_features` under `path` (variable `weight`).
///
/// # Errors
/// [`AdapterError::EmptyWidth`] when a feature count is not positive.
pub fn linear_adapter<'a, P: Borrow<Path<'a>>>(path: P, in_features: i64, out_features: i64) -> Result<LinearAdapter> {
    check_width(in_features, out_features)?;
    let ws = path.borrow().f_var("weight", &[out_features, in_features], DEFAULT_KAIMING_UNIFORM)?;
    Ok(LinearAdapter { ws, tap: TapId::fresh() })
}

/// A learned 1×1 conv adapter from the `teacher` conv's output channels to the `student`
/// conv's, for `criterion(student_out, adapter(teacher_out))`; random init (see
/// [`Conv1x1Adapter`]). Same call shape as [`conv2d_adapter`](super::conv2d_adapter), for layers
/// that are not pruned copies.
pub fn learned_conv2d_adapter<'a, P: Borrow<Path<'a>>>(
    path: P,
    teacher: &Conv2D,
    student: &Conv2D,
) -> Result<Conv1x1Adapter> {
    conv1x1_adapter(path, out_channels(&teacher.ws, "teacher")?, out_channels(&student.ws, "student")?)
}

/// A learned 1×1 conv adapter from the `student` conv's output channels to the `teacher`
/// conv's, for `criterion(adapter(student_out), teacher_out)`: the FitNets hint regressor;
/// random init (see [`Conv1x1Adapter`]).
pub fn learned_inverted_conv2d_adapter<'a, P: Borrow<Path<'a>>>(
    path: P,
    teacher: &Conv2D,
    student: &Conv2D,
) -> Result<Conv1x1Adapter> {
    conv1x1_adapter(path, out_channels(&student.ws, "student")?, out_channels(&teacher.ws, "teacher")?)
}

/// A learned linear adapter from the `teacher` layer's output features to the `student`
/// layer's; random init (see [`LinearAdapter`]).
pub fn learned_linear_adapter<'a, P: Borrow<Path<'a>>>(
    path: P,
    teacher: &Linear,
    student: &Linear,
) -> Result<LinearAdapter> {
    linear_adapter(path, out_channels(&teacher.ws, "teacher")?, out_channels(&student.ws, "student")?)
}

/// A learned linear adapter from the `student` layer's output features to the `teacher`
/// layer's; random init (see [`LinearAdapter`]).
pub fn learned_inverted_linear_adapter<'a, P: Borrow<Path<'a>>>(
    path: P,
    teacher: &Linear,
    student: &Linear,
) -> Result<LinearAdapter> {
    linear_adapter(path, out_channels(&student.ws, "student")?, out_channels(&teacher.ws, "teacher")?)
}

fn check_width(inp: i64, out: i64) -> Result<()> {
    if inp < 1 || out < 1 {
        return Err(AdapterError::EmptyWidth { input: inp, output: out }.into());
    }
    Ok(())
}

impl Conv1x1Adapter {
    /// The adapter's weight (`[out, in, 1, 1]`), a variable of the `VarStore` it was built in.
    pub fn weight(&self) -> &Tensor {
        &self.ws
    }

    /// `xs` through the adapter, with a typed error when `xs` is not `[N, in, H, W]`.
    fn f_forward(&self, xs: &Tensor) -> Result<Tensor> {
        pointwise(&self.ws, xs)
    }
}

adapter_forward!(Conv1x1Adapter);

impl LinearAdapter {
    /// The adapter's weight (`[out, in]`), a variable of the `VarStore` it was built in.
    pub fn weight(&self) -> &Tensor {
        &self.ws
    }

    /// `xs` through the adapter, with a typed error when the last dimension of `xs` is not `in`.
    fn f_forward(&self, xs: &Tensor) -> Result<Tensor> {
        let features = self.ws.size().get(1).copied().unwrap_or_default();
        let size = if xs.defined() { xs.size() } else { Vec::new() };
        if size.last() != Some(&features) {
            return Err(AdapterError::InputFeatures { adapter: "adapter", features, got: size }.into());
        }
        Ok(xs.f_linear(&self.ws, None::<&Tensor>)?)
    }
}

adapter_forward!(LinearAdapter);
