//! Endpoints: how one side of a distillation pair is named — by reference, by slot or by path —
//! and their resolution against a model into a capture request.

use std::borrow::Cow;

use crate::module::{Distillable, Recordable};
use crate::point::{Port, Side, Slot, TapId};

/// One side of a distillation pair, before it is checked against a model.
///
/// Usually built implicitly through [`IntoEndpoint`]: `&student.block.conv` (by reference),
/// `student.features.slot(3)` (a container element), `"features.5.conv"` (by name; `""` is the model
/// itself, i.e. its output). Options: [`input`](Endpoint::input), [`all_calls`](Endpoint::all_calls).
#[derive(Clone, Debug)]
pub struct Endpoint<'a> {
    pub(crate) target: Target<'a>,
    pub(crate) port: Port,
    pub(crate) all_calls: bool,
}

/// What an [`Endpoint`] names, before it is looked up in its model.
#[derive(Clone, Debug)]
pub(crate) enum Target<'a> {
    Path(Cow<'a, str>),
    Tap { tap: TapId, type_name: &'static str },
    Slot(Slot),
}

impl<'a> Endpoint<'a> {
    /// The module at a dotted path (`"features.5.conv"`; `""` is the model itself).
    pub fn path(path: impl Into<Cow<'a, str>>) -> Self {
        Self::with(Target::Path(path.into()))
    }

    /// A module given by reference; it must record itself ([`Recordable`]).
    pub fn module<M: Recordable + Distillable + ?Sized>(module: &M) -> Self {
        Self::with(Target::Tap { tap: module.tap_id(), type_name: module.module_type() })
    }

    /// The model itself: its output (or, with [`input`](Endpoint::input), the input it was given).
    pub fn root() -> Self {
        Self::path("")
    }

    /// Captures the tensor the module is called with instead of the one it returns.
    pub fn input(mut self) -> Self {
        self.port = Port::Input;
        self
    }

    /// Receives every call of a module that runs several times per forward, in call order, instead
    /// of an error.
    pub fn all_calls(mut self) -> Self {
        self.all_calls = true;
        self
    }

    fn with(target: Target<'a>) -> Self {
        Endpoint { target, port: Port::Output, all_calls: false }
    }
}

/// An endpoint checked against its model (by `Mapping::add`, or by the `new()` of a `distill!`
/// model): where it is and what it captures. Read it from [`Mapping::pairs`](crate::Mapping::pairs)
/// or [`Distillation::student_endpoints`](crate::Distillation::student_endpoints) and
/// [`teacher_endpoints`](crate::Distillation::teacher_endpoints).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedEndpoint {
    pub(crate) side: Side,
    pub(crate) path: String,
    /// The tap that records it; `None` for the model itself, whose output the forward returns.
    pub(crate) tap: Option<TapId>,
    /// The container (`Seq`, `Sequential`) whose slot records it, if it is recorded that way: such
    /// an element records nothing when the forward calls it directly.
    pub(crate) container: Option<String>,
    /// For a TorchScript side: the position of the named output among the module's outputs.
    pub(crate) output: Option<usize>,
    pub(crate) port: Port,
    pub(crate) all_calls: bool,
}

impl ResolvedEndpoint {
    /// Its dotted path in that model (`""` for the model itself).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether it captures the module's input or its output.
    pub fn port(&self) -> Port {
        self.port
    }

    /// Whether every call of the module is captured (see [`Endpoint::all_calls`]).
    pub fn all_calls(&self) -> bool {
        self.all_calls
    }
}

/// Anything that names one side of a distillation pair.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot name a distillation endpoint",
    label = "not an endpoint",
    note = "an endpoint is a module that records itself (`&model.block.conv`), a container slot \
            (`model.features.slot(3)`), a dotted path (`\"features.3\"`), or an `Endpoint`"
)]
pub trait IntoEndpoint<'a> {
    /// The endpoint.
    fn into_endpoint(self) -> Endpoint<'a>;
}

impl<'a> IntoEndpoint<'a> for Endpoint<'a> {
    fn into_endpoint(self) -> Endpoint<'a> {
        self
    }
}

impl<'a> IntoEndpoint<'a> for &'a str {
    fn into_endpoint(self) -> Endpoint<'a> {
        Endpoint::path(self)
    }
}

impl<'a> IntoEndpoint<'a> for &'a String {
    fn into_endpoint(self) -> Endpoint<'a> {
        Endpoint::path(self.as_str())
    }
}

impl<'a> IntoEndpoint<'a> for String {
    fn into_endpoint(self) -> Endpoint<'a> {
        Endpoint::path(self)
    }
}

impl<'a> IntoEndpoint<'a> for Slot {
    fn into_endpoint(self) -> Endpoint<'a> {
        Endpoint::with(Target::Slot(self))
    }
}

impl<'a, M: Recordable + Distillable + ?Sized> IntoEndpoint<'a> for &M {
    fn into_endpoint(self) -> Endpoint<'a> {
        Endpoint::module(self)
    }
}
