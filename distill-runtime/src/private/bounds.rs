//! The traits and helpers that `distill!` and `#[derive(Distillable)]` generate calls to.
//!
//! Each trait a mapped endpoint, an index or an adapter must satisfy carries a
//! `#[diagnostic::on_unimplemented]` message that says what to use instead, so that a mistake in a
//! `distill!` block is a compile error at the user's token with advice. The generated code calls the
//! functions here with every token spanned at the user's, for the same reason.

use std::borrow::Borrow;

use tch::nn::Path;
use tch::Tensor;

use crate::adapter::{Adapter, Conv2DAdapter, Conv2DAdapterBuilder, InvertedConv2DAdapter};
use crate::criterion::Criterion;
use crate::endpoint::{Endpoint, IntoEndpoint};
use crate::error::{DistillError, PathError, Result};
use crate::module::{Distillable, Recordable};
use crate::nn::{Seq, Sequential, Tap};
use crate::point::Side;
use crate::side::{SideModel, SideResolver};

// ---- models ------------------------------------------------------------------------------------

/// A model that `distill!` can distill: a model of `distill::nn` layers (tch's `ModuleT` and
/// `Distillable`) or a TorchScript `distill::jit::Module`. Generated code reaches it through this
/// trait, at the span of the type in the `distill!` header, so a model that is neither is one error
/// there.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be distilled: it must implement tch's `ModuleT` and `Distillable`, or be a \
               `distill::jit::Module`",
    label = "not a distillable model",
    note = "derive `Distillable` with `#[derive(Distillable)]` and implement `tch::nn::ModuleT` (its forward)"
)]
pub trait Model {
    /// A resolver of endpoints against the model as the `side` model.
    fn resolver(&self, side: Side) -> SideResolver<'_>;
    /// The model as a side of the engine.
    fn as_side(&self) -> &dyn SideModel;
}

#[diagnostic::do_not_recommend]
impl<M: SideModel> Model for M {
    fn resolver(&self, side: Side) -> SideResolver<'_> {
        SideModel::resolver(self, side)
    }
    fn as_side(&self) -> &dyn SideModel {
        self
    }
}

// ---- endpoints ---------------------------------------------------------------------------------

/// A container whose `[i]`, as the last segment of a `distill!` endpoint, is a distillation point:
/// `nn::Seq<T>` and `nn::Sequential` (which record each element's call), and `Vec`s and arrays of
/// modules that record themselves.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no elements that `[i]` could select as a distillation point",
    label = "cannot be indexed here",
    note = "`[i]` selects an element of a `distill::nn::Seq`, a `distill::nn::Sequential`, or a `Vec`/array of \
            `distill::nn` layers; name a field with `.field` instead"
)]
pub trait SlotIndex {
    /// The distillation point of element `index`, `None` when out of range.
    fn slot_endpoint(&self, index: usize) -> Option<Endpoint<'static>>;
    /// The number of elements.
    fn slot_count(&self) -> usize;
}

/// An element type of a `Vec` or an array that can be a distillation point: it records itself.
#[diagnostic::on_unimplemented(
    message = "a `Vec` or an array of `{Self}` cannot record its elements' outputs",
    label = "elements of this type do not record themselves",
    note = "hold them in `distill::nn::Seq<{Self}>`, which records each element's call, or wrap each in \
            `distill::nn::Tap<{Self}>`"
)]
pub trait RecordedElement {
    /// The element as an endpoint.
    fn element_endpoint(&self) -> Endpoint<'static>;
}

#[diagnostic::do_not_recommend]
impl<T: Recordable + Distillable> RecordedElement for T {
    fn element_endpoint(&self) -> Endpoint<'static> {
        Endpoint::module(self)
    }
}

impl<T> SlotIndex for Seq<T> {
    fn slot_endpoint(&self, index: usize) -> Option<Endpoint<'static>> {
        (index < self.len()).then(|| self.slot(index).into_endpoint())
    }
    fn slot_count(&self) -> usize {
        self.len()
    }
}

impl SlotIndex for Sequential {
    fn slot_endpoint(&self, index: usize) -> Option<Endpoint<'static>> {
        (index < self.len()).then(|| self.slot(index).into_endpoint())
    }
    fn slot_count(&self) -> usize {
        self.len()
    }
}

impl<T: RecordedElement> SlotIndex for [T] {
    fn slot_endpoint(&self, index: usize) -> Option<Endpoint<'static>> {
        self.get(index).map(RecordedElement::element_endpoint)
    }
    fn slot_count(&self) -> usize {
        self.len()
    }
}

impl<T: RecordedElement> SlotIndex for Vec<T> {
    fn slot_endpoint(&self, index: usize) -> Option<Endpoint<'static>> {
        self.as_slice().slot_endpoint(index)
    }
    fn slot_count(&self) -> usize {
        self.len()
    }
}

impl<T: RecordedElement, const N: usize> SlotIndex for [T; N] {
    fn slot_endpoint(&self, index: usize) -> Option<Endpoint<'static>> {
        self.as_slice().slot_endpoint(index)
    }
    fn slot_count(&self) -> usize {
        N
    }
}

impl<C: SlotIndex + ?Sized> SlotIndex for Box<C> {
    fn slot_endpoint(&self, index: usize) -> Option<Endpoint<'static>> {
        (**self).slot_endpoint(index)
    }
    fn slot_count(&self) -> usize {
        (**self).slot_count()
    }
}

impl<C: SlotIndex> SlotIndex for Tap<C> {
    fn slot_endpoint(&self, index: usize) -> Option<Endpoint<'static>> {
        (**self).slot_endpoint(index)
    }
    fn slot_count(&self) -> usize {
        (**self).slot_count()
    }
}

/// A container whose elements have a static type, so that a `distill!` endpoint can go on after
/// `[i]` (`features[0].conv`) or hand the element to an adapter.
#[diagnostic::on_unimplemented(
    message = "the elements of `{Self}` have no static type to continue the path with",
    label = "cannot go inside an element of this",
    note = "`[i]` followed by more segments (or under an adapter) needs a `distill::nn::Seq<T>`, a `Vec<T>` or an \
            array; to reach inside an element of a heterogeneous `distill::nn::Sequential`, use a string path such \
            as `\"layers.0.conv\"`"
)]
pub trait ChildAt {
    /// The element type.
    type Element: ?Sized;
    /// Element `index`, if in range.
    fn child_at(&self, index: usize) -> Option<&Self::Element>;
    /// The number of elements.
    fn child_count(&self) -> usize;
}

impl<T> ChildAt for Seq<T> {
    type Element = T;
    fn child_at(&self, index: usize) -> Option<&T> {
        self.get(index)
    }
    fn child_count(&self) -> usize {
        self.len()
    }
}

impl<T> ChildAt for [T] {
    type Element = T;
    fn child_at(&self, index: usize) -> Option<&T> {
        self.get(index)
    }
    fn child_count(&self) -> usize {
        self.len()
    }
}

impl<T> ChildAt for Vec<T> {
    type Element = T;
    fn child_at(&self, index: usize) -> Option<&T> {
        self.get(index)
    }
    fn child_count(&self) -> usize {
        self.len()
    }
}

impl<T, const N: usize> ChildAt for [T; N] {
    type Element = T;
    fn child_at(&self, index: usize) -> Option<&T> {
        self.get(index)
    }
    fn child_count(&self) -> usize {
        N
    }
}

impl<C: ChildAt + ?Sized> ChildAt for Box<C> {
    type Element = C::Element;
    fn child_at(&self, index: usize) -> Option<&C::Element> {
        (**self).child_at(index)
    }
    fn child_count(&self) -> usize {
        (**self).child_count()
    }
}

impl<C: ChildAt> ChildAt for Tap<C> {
    type Element = C::Element;
    fn child_at(&self, index: usize) -> Option<&C::Element> {
        (**self).child_at(index)
    }
    fn child_count(&self) -> usize {
        (**self).child_count()
    }
}

/// The endpoint of a module given by reference: it must record itself.
pub fn module<M: Recordable + Distillable + ?Sized>(module: &M) -> Endpoint<'static> {
    Endpoint::module(module)
}

/// The endpoint `container[index]`; an index out of range is `PathError::IndexOutOfRange` naming
/// `container` (its path as written in `distill!`).
pub fn slot<C: SlotIndex + ?Sized>(
    container: &C,
    index: usize,
    side: Side,
    path: &'static str,
) -> Result<Endpoint<'static>> {
    container.slot_endpoint(index).ok_or_else(|| {
        PathError::IndexOutOfRange { side, container: path.to_owned(), index, len: container.slot_count() }.into()
    })
}

/// `container[index]` as a typed reference; out of range is `PathError::IndexOutOfRange`, never a panic.
pub fn child<'a, C: ChildAt + ?Sized>(
    container: &'a C,
    index: usize,
    side: Side,
    path: &'static str,
) -> Result<&'a C::Element> {
    container.child_at(index).ok_or_else(|| {
        PathError::IndexOutOfRange { side, container: path.to_owned(), index, len: container.child_count() }.into()
    })
}

// ---- adapters and criteria ---------------------------------------------------------------------

/// What an adapter constructor returns: `Result<A, E>` with `A` an [`Adapter`] (an adapter of
/// `distill::adapter`, a type of one's own, or a tch module in a `ModuleAdapter`) and `E`
/// convertible into [`DistillError`], or the builder of a selection adapter (`conv2d_adapter(…)`
/// with its options), which `new()` builds.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not what an adapter constructor returns",
    label = "not `Result<impl distill::adapter::Adapter, DistillError>` nor an adapter builder",
    note = "an adapter is `fn(path, &TeacherModule, &StudentModule) -> Result<A, DistillError>` with \
            `A: distill::adapter::Adapter`, like `learned_conv2d_adapter`, or a builder that `new()` builds, like `conv2d_adapter`'s; a tch module is one in a `ModuleAdapter`"
)]
pub trait IntoAdapter<'m> {
    /// The adapter, boxed, or the constructor's error.
    fn into_adapter(self) -> Result<Box<dyn Adapter + 'm>>;
}

impl<'m, A: Adapter + 'm, E: Into<DistillError>> IntoAdapter<'m> for std::result::Result<A, E> {
    fn into_adapter(self) -> Result<Box<dyn Adapter + 'm>> {
        match self {
            Ok(adapter) => Ok(Box::new(adapter)),
            Err(error) => Err(error.into()),
        }
    }
}

impl<'a, 'm, P: Borrow<Path<'a>>> IntoAdapter<'m> for Conv2DAdapterBuilder<'_, P, Conv2DAdapter> {
    fn into_adapter(self) -> Result<Box<dyn Adapter + 'm>> {
        Ok(Box::new(self.build()?))
    }
}

impl<'a, 'm, P: Borrow<Path<'a>>> IntoAdapter<'m> for Conv2DAdapterBuilder<'_, P, InvertedConv2DAdapter> {
    fn into_adapter(self) -> Result<Box<dyn Adapter + 'm>> {
        Ok(Box::new(self.build()?))
    }
}

/// Boxes an adapter constructor's result.
pub fn adapter<'m, R: IntoAdapter<'m>>(result: R) -> Result<Box<dyn Adapter + 'm>> {
    result.into_adapter()
}

/// Boxes a criterion.
pub fn criterion<'m, C: Criterion + 'm>(criterion: C) -> Box<dyn Criterion + 'm> {
    Box::new(criterion)
}

/// Boxes a closure criterion; the `Fn` bound lets `|s, t| …` infer its parameter types.
pub fn closure_criterion<'m, F>(criterion: F) -> Box<dyn Criterion + 'm>
where
    F: Fn(&Tensor, &Tensor) -> Tensor + 'm,
{
    Box::new(criterion)
}
