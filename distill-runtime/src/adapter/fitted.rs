//! Learned adapters whose widths come from the pair they serve, measured by a dry run: an adapter for
//! any endpoint — a user's block, a `Seq` element — without writing its widths down.

use std::cell::OnceCell;
use std::fmt;

use tch::nn::Path;
use tch::Tensor;

use super::AdapterError;
use crate::error::{DistillError, Result};

/// Which axis a [`FittedAdapter`] maps, and with what layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FittedKind {
    /// A linear layer over the last dimension (`[…, in]` → `[…, out]`), with bias.
    Linear,
    /// A 1×1 convolution over the channels (`[N, in, H, W]` → `[N, out, H, W]`), without bias.
    Conv1x1,
}

impl FittedKind {
    /// The dimension of a tensor of `rank` that this kind maps, if the tensor fits at all.
    pub(crate) fn axis(self, rank: usize) -> Option<usize> {
        match self {
            FittedKind::Linear => rank.checked_sub(1),
            FittedKind::Conv1x1 => (rank == 4).then_some(1),
        }
    }

    /// The constructor's name, for messages.
    pub(crate) fn constructor(self) -> &'static str {
        match self {
            FittedKind::Linear => "fitted_linear_adapter",
            FittedKind::Conv1x1 => "fitted_conv1x1_adapter",
        }
    }
}

/// A learned adapter that takes its widths from a dry run of the distillation it belongs to: its
/// input width from the tensor of the side it wraps, its output width from the other side's tensor.
///
/// In `distill!` it wraps any endpoint — `fitted_linear_adapter(teacher.blocks[1])` — and the
/// generated model's `dry_run(&sample)` creates its parameters under `path / "<label>"`, initialised
/// as tch's `linear` and `conv2d` are and as the width-given [`linear_adapter`](super::linear_adapter)
/// and [`conv1x1_adapter`](super::conv1x1_adapter) are: the weight Kaiming-uniform (uniform in
/// ±√(6 / in)), the linear kind's bias uniform in ±1/√in. Call `dry_run` once before building the optimizer and
/// before loading a checkpoint into the `VarStore`, so that both see the adapter's variables; a
/// forward before that is an [`AdapterError::NotFitted`], never a silent skip.
///
/// The adapter does not borrow the `VarStore` (so that `vs.load` works while the distillation
/// lives): `new()` registers its variables under the path it was given as empty placeholders, and the
/// dry run gives them their shape and initial values in place. The optimizer and `vs.load` then see
/// them as any other variable; a checkpoint loaded before the dry run does not fit the placeholders
/// and is an error.
///
/// For the dynamic `Mapping`, whose payloads the user applies, the width-given
/// [`linear_adapter`](super::linear_adapter) and [`conv1x1_adapter`](super::conv1x1_adapter) take
/// the widths that `DistillModel::dry_run` reports.
pub struct FittedAdapter {
    kind: FittedKind,
    /// `weight` (and `bias` for a linear map): variables of the user's store, empty until fitted.
    ws: Tensor,
    bs: Option<Tensor>,
    widths: OnceCell<(i64, i64)>,
}

/// A [`FittedAdapter`] that maps the last dimension with a linear layer. The modules are those of the
/// pair's endpoints (any types): only their tensors' widths matter.
pub fn fitted_linear_adapter<'a, P, T, S>(path: P, _teacher: &T, _student: &S) -> Result<FittedAdapter>
where
    P: std::borrow::Borrow<Path<'a>>,
    T: ?Sized,
    S: ?Sized,
{
    Ok(FittedAdapter::new(path.borrow(), FittedKind::Linear))
}

/// A [`FittedAdapter`] that maps the channels of `[N, C, H, W]` tensors with a 1×1 convolution.
pub fn fitted_conv1x1_adapter<'a, P, T, S>(path: P, _teacher: &T, _student: &S) -> Result<FittedAdapter>
where
    P: std::borrow::Borrow<Path<'a>>,
    T: ?Sized,
    S: ?Sized,
{
    Ok(FittedAdapter::new(path.borrow(), FittedKind::Conv1x1))
}

impl FittedAdapter {
    /// An adapter of `kind` whose variables `weight` (and `bias`) are registered under `path`, empty
    /// until the distillation's dry run fits them to the pair's widths.
    pub fn new(path: &Path<'_>, kind: FittedKind) -> Self {
        let (ws_shape, bs) = match kind {
            FittedKind::Linear => (&[0i64, 0][..], Some(path.zeros("bias", &[0]))),
            FittedKind::Conv1x1 => (&[0i64, 0, 1, 1][..], None),
        };
        FittedAdapter { kind, ws: path.zeros("weight", ws_shape), bs, widths: OnceCell::new() }
    }

    /// What it maps, and how.
    pub fn kind(&self) -> FittedKind {
        self.kind
    }

    /// `(input width, output width)` once fitted.
    pub fn widths(&self) -> Option<(i64, i64)> {
        self.widths.get().copied()
    }

    /// Creates the parameters for `in_width` → `out_width`. Fitting again to the same widths does
    /// nothing; to other widths it is an error (the parameters exist and may be trained already).
    pub(crate) fn fit(&self, in_width: i64, out_width: i64) -> Result<()> {
        if in_width <= 0 || out_width <= 0 {
            return Err(AdapterError::FittedEmpty {
                constructor: self.kind.constructor(),
                input: in_width,
                output: out_width,
            }
            .into());
        }
        if let Some((fitted_in, fitted_out)) = self.widths() {
            if (fitted_in, fitted_out) == (in_width, out_width) {
                return Ok(());
            }
            return Err(AdapterError::Refitted {
                constructor: self.kind.constructor(),
                fitted_input: fitted_in,
                fitted_output: fitted_out,
                input: in_width,
                output: out_width,
            }
            .into());
        }
        // tch's default initialisation of `linear` and `conv2d`, as the width-given adapters have
        // it: the weight Kaiming-uniform with fan-in `in_width` (a 1×1 convolution's fan-in is its
        // input channels) and ReLU gain, so uniform in ±√(6 / in); the bias uniform in ±1/√in.
        let fan_in = in_width as f64;
        let (weight_bound, bias_bound) = ((6.0 / fan_in).sqrt(), 1.0 / fan_in.sqrt());
        let shape = match self.kind {
            FittedKind::Linear => vec![out_width, in_width],
            FittedKind::Conv1x1 => vec![out_width, in_width, 1, 1],
        };
        let options = (self.ws.kind(), self.ws.device());
        let uniform = |shape: &[i64], bound: f64| -> Result<Tensor> {
            Ok(Tensor::f_empty(shape, options)?.f_uniform_(-bound, bound)?)
        };
        tch::no_grad(|| -> Result<()> {
            self.ws.shallow_clone().f_set_data(&uniform(&shape, weight_bound)?)?;
            if let Some(bs) = &self.bs {
                bs.shallow_clone().f_set_data(&uniform(&[out_width], bias_bound)?)?;
            }
            Ok(())
        })?;
        // `self.widths()` was `None` and nothing else sets the cell on this thread (it is `!Sync`).
        let _already = self.widths.set((in_width, out_width));
        Ok(())
    }

    /// Applies the adapter; an error when it is not fitted yet or `xs` does not fit it.
    fn f_forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (in_width, _) = self
            .widths()
            .ok_or_else(|| DistillError::from(AdapterError::NotFitted { constructor: self.kind.constructor() }))?;
        let size = xs.size();
        let axis = self.kind.axis(size.len());
        if axis.map(|axis| size[axis]) != Some(in_width) {
            return Err(AdapterError::FittedInput {
                constructor: self.kind.constructor(),
                features: in_width,
                got: size,
            }
            .into());
        }
        Ok(match self.kind {
            FittedKind::Linear => xs.f_linear(&self.ws, self.bs.as_ref())?,
            FittedKind::Conv1x1 => xs.f_conv2d(&self.ws, None::<&Tensor>, [1, 1], [0, 0], [1, 1], 1)?,
        })
    }
}

impl super::Adapter for FittedAdapter {
    fn f_adapt(&self, xs: &Tensor, _train: bool) -> Result<Tensor> {
        self.f_forward(xs)
    }

    /// Fits the adapter from the width of `input` (the tensor it takes) to the width of `other`
    /// (the other side's), along the axis its kind maps.
    fn fit_shapes(&self, input: &[i64], other: &[i64]) -> Result<()> {
        let kind = self.kind;
        match kind.axis(input.len()).zip(kind.axis(other.len())) {
            Some((input_axis, other_axis)) => self.fit(input[input_axis], other[other_axis]),
            None => Err(AdapterError::FittedShapes {
                constructor: kind.constructor(),
                maps: match kind {
                    FittedKind::Linear => "the last dimension of tensors of any rank ≥ 1",
                    FittedKind::Conv1x1 => "the channels of [N, C, H, W] tensors",
                },
                input: input.to_vec(),
                other: other.to_vec(),
            }
            .into()),
        }
    }
}

impl fmt::Debug for FittedAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FittedAdapter").field("kind", &self.kind).field("widths", &self.widths()).finish()
    }
}
