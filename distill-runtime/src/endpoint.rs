//! Endpoints: how one side of a distillation pair is named — by reference, by slot or by path —
//! and their resolution against a model into a capture request.

use std::borrow::Cow;

use crate::capture::TapId;
use crate::error::{DistillError, Port, Result, Side};
use crate::module::{path_of_tap, resolve, Distillable, Recordable};
use crate::nn::Slot;

/// One side of a distillation pair, before it is checked against a model.
///
/// Usually built implicitly through [`IntoEndpoint`]: `&student.block.conv` (by reference),
/// `student.features.slot(3)` (a container element), `"features.5.conv"` (by name; `""` is the model
/// itself, i.e. its output). Options: [`input`](Endpoint::input), [`all_calls`](Endpoint::all_calls).
#[derive(Clone, Debug)]
pub struct Endpoint<'a> {
    target: Target<'a>,
    port: Port,
    all_calls: bool,
}

#[derive(Clone, Debug)]
enum Target<'a> {
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

    /// Checks the endpoint against `model` (the `side` model) and finds what to record.
    pub fn resolve(&self, model: &dyn Distillable, side: Side) -> Result<ResolvedEndpoint> {
        let (path, tap) = match &self.target {
            Target::Path(path) if path.is_empty() => (String::new(), None),
            Target::Path(path) => {
                let found = resolve(model, side, path)?;
                let tap = found.tap.ok_or_else(|| DistillError::NotRecordable {
                    side,
                    path: path.to_string(),
                    type_name: found.module.module_type(),
                })?;
                (path.to_string(), Some(tap))
            }
            Target::Tap { tap, type_name } => {
                let path = path_of_tap(model, *tap).ok_or(DistillError::NotInModel { side, type_name })?;
                (path, Some(*tap))
            }
            Target::Slot(slot) => {
                let container = path_of_tap(model, slot.container)
                    .ok_or(DistillError::NotInModel { side, type_name: "container slot" })?;
                let tap = slot.tap.ok_or(DistillError::IndexOutOfRange {
                    side,
                    container: container.clone(),
                    index: slot.index,
                    len: slot.len,
                })?;
                let path =
                    if container.is_empty() { slot.index.to_string() } else { format!("{container}.{}", slot.index) };
                (path, Some(tap))
            }
        };
        Ok(ResolvedEndpoint { side, path, tap, port: self.port, all_calls: self.all_calls })
    }
}

/// An endpoint checked against its model: what the capture engine arms and how it reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedEndpoint {
    /// The model it belongs to.
    pub side: Side,
    /// Its dotted path (`""` for the model itself).
    pub path: String,
    /// The tap that records it; `None` for the model itself, whose output the forward returns.
    pub tap: Option<TapId>,
    /// Input or output.
    pub port: Port,
    /// Whether every call is wanted.
    pub all_calls: bool,
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
