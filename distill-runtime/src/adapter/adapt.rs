//! [`Adapter`]: what a pair runs on one side's tensor before its criterion compares the two.

use std::fmt;

use tch::nn::ModuleT;
use tch::Tensor;

use crate::error::Result;

/// A map from one side's tensor of a pair to the form the other side's has: the adapters of this
/// module, a type of one's own, or any tch module wrapped in a [`ModuleAdapter`].
///
/// The forward is fallible: an adapter of this module given a tensor it cannot take returns an
/// error, which a distillation reports naming the pair and the side (each adapter of this module
/// also implements tch's `Module`, whose `forward` panics on such an input, as tch's layers do).
/// An adapter whose widths come from the pair's tensors (a [`FittedAdapter`](super::FittedAdapter))
/// is sized by the distillation's dry run through [`fit_shapes`](Self::fit_shapes).
pub trait Adapter: fmt::Debug {
    /// `xs` through the adapter (with `train`, for a module with a training mode), or the error
    /// when it cannot take `xs`.
    fn f_adapt(&self, xs: &Tensor, train: bool) -> Result<Tensor>;

    /// Sizes the adapter from the pair's tensors on a sample batch: `input` is the shape of the
    /// tensor it takes, `other` the shape of the other side's tensor (after that side's adapter).
    /// Nothing for an adapter whose widths are known when it is built (the default).
    ///
    /// # Errors
    /// When the shapes do not fit what the adapter maps, or it was sized to other widths before.
    fn fit_shapes(&self, input: &[i64], other: &[i64]) -> Result<()> {
        let _ = (input, other);
        Ok(())
    }
}

/// A shared adapter: one adapter serves several pairs (the same channel selection on every layer
/// of a width-pruned model) without a copy of its variables per pair. A fitted adapter shared by
/// pairs of other widths is an error of the dry run, as when it is refitted.
impl<A: Adapter + ?Sized> Adapter for &A {
    fn f_adapt(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        (**self).f_adapt(xs, train)
    }

    fn fit_shapes(&self, input: &[i64], other: &[i64]) -> Result<()> {
        (**self).fit_shapes(input, other)
    }
}

/// A tch module (`nn::linear(…)`, a module of one's own) as an [`Adapter`]: its `forward_t`, which
/// panics on an input it cannot take. The adapters of this module implement [`Adapter`] themselves,
/// with a fallible forward; a type of one's own can too.
#[derive(Debug)]
pub struct ModuleAdapter<M>(pub M);

impl<M: ModuleT> Adapter for ModuleAdapter<M> {
    fn f_adapt(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        Ok(self.0.forward_t(xs, train))
    }
}

/// `forward` (an adapter's own fallible forward) on `xs`, recorded as the output of the adapter's
/// tap when a forward is capturing it (an adapter held in a model can be a distillation endpoint).
pub(super) fn recorded(
    tap: crate::point::TapId,
    xs: &Tensor,
    forward: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let output = forward(xs)?;
    Ok(crate::nn::capture::record(tap, xs, |_| output))
}

/// The [`Adapter`] impl (fallible) and tch's `Module` (whose `forward` panics where `f_adapt`
/// fails, as tch's layers do) of an adapter type with a `tap` and a private
/// `f_forward(&self, &Tensor) -> Result<Tensor>`; both record the output when a forward captures
/// the adapter.
macro_rules! adapter_forward {
    ($ty:ident) => {
        impl tch::nn::Module for $ty {
            /// # Panics
            /// Where [`Adapter::f_adapt`](crate::adapter::Adapter::f_adapt) fails (an input of
            /// another shape than the adapter takes), as tch's layers do; a distillation calls the
            /// fallible `f_adapt` instead.
            fn forward(&self, xs: &tch::Tensor) -> tch::Tensor {
                $crate::adapter::Adapter::f_adapt(self, xs, false).unwrap_or_else(|error| panic!("{error}"))
            }
        }

        impl $crate::adapter::Adapter for $ty {
            fn f_adapt(&self, xs: &tch::Tensor, _train: bool) -> $crate::error::Result<tch::Tensor> {
                $crate::adapter::adapt::recorded(self.tap, xs, |xs| self.f_forward(xs))
            }
        }
    };
}
pub(super) use adapter_forward;
