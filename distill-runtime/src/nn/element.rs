//! Calling one element of a `Seq` or `Sequential` by hand, recorded as the container would record it.

use tch::nn::ModuleT;
use tch::Tensor;

use crate::nn::capture::{record, TapId};

/// One element of a [`Seq`](super::Seq) or [`Sequential`](super::Sequential) as a call site that
/// records like the container's own forward does.
///
/// A container records each element only when *it* runs them. A model whose forward loops over the
/// elements itself (`for block in self.blocks.iter()`), or calls one with extra arguments, bypasses
/// that, and a distillation pair on `blocks.2` then reports that the element did not run. Call the
/// elements through this instead:
///
/// ```
/// # extern crate distill_runtime as distill;
/// # use distill::nn;
/// # use tch::{nn::ModuleT, Tensor};
/// # struct Net { blocks: nn::Seq<nn::Linear> }
/// # impl Net {
/// fn forward_masked(&self, mut xs: Tensor, mask: &Tensor, train: bool) -> Tensor {
///     for block in self.blocks.elements() {
///         // `call` records `xs` and what the closure returns as this element's call.
///         xs = block.call(&xs, |linear, xs| linear.forward_t(xs, train) * mask);
///     }
///     xs
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Element<'a, M: ?Sized> {
    module: &'a M,
    tap: TapId,
    index: usize,
}

impl<'a, M: ?Sized> Element<'a, M> {
    pub(crate) fn new(module: &'a M, tap: TapId, index: usize) -> Self {
        Element { module, tap, index }
    }

    /// The element's module. Calling it directly records nothing; use [`forward_t`](Self::forward_t)
    /// or [`call`](Self::call).
    pub fn module(&self) -> &'a M {
        self.module
    }

    /// The element's index in its container.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Runs `f(module, xs)` as this element's call: `xs` is recorded as its input and the result as
    /// its output when a distillation captures this element.
    pub fn call(&self, xs: &Tensor, f: impl FnOnce(&'a M, &Tensor) -> Tensor) -> Tensor {
        let module = self.module;
        record(self.tap, xs, |xs| f(module, xs))
    }
}

impl<M: ModuleT + ?Sized> Element<'_, M> {
    /// The element's `forward_t`, recorded as the container's forward would record it.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.call(xs, |module, xs| module.forward_t(xs, train))
    }
}
