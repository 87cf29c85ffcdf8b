//! `Tap<M>`: makes any module a distillation point.

use std::ops::{Deref, DerefMut};

use tch::nn::ModuleT;
use tch::Tensor;

use crate::module::{Child, Distillable, Recordable};
use crate::nn::capture::{record, TapId};
use crate::schema::{Schema, StaticSchema};

/// Wraps a module — a tch layer or a user struct — so that its calls can be captured.
/// Transparent otherwise: derefs to the module, and its children keep their paths.
#[derive(Debug)]
pub struct Tap<M> {
    module: M,
    tap: TapId,
}

/// Wraps `module` in a [`Tap`].
pub fn tap<M>(module: M) -> Tap<M> {
    Tap::new(module)
}

impl<M> Tap<M> {
    /// Wraps `module`, giving it a fresh tap.
    pub fn new(module: M) -> Self {
        Tap { module, tap: TapId::fresh() }
    }

    /// The wrapped module.
    pub fn into_inner(self) -> M {
        self.module
    }
}

impl<M> Deref for Tap<M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.module
    }
}

impl<M> DerefMut for Tap<M> {
    fn deref_mut(&mut self) -> &mut M {
        &mut self.module
    }
}

impl<M: ModuleT> ModuleT for Tap<M> {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        record(self.tap, xs, |xs| self.module.forward_t(xs, train))
    }
}

impl<M: Distillable> Distillable for Tap<M> {
    fn visit_children<'a>(&'a self, visit: &mut dyn FnMut(Child<'a>)) {
        self.module.visit_children(visit)
    }
    fn own_tap(&self) -> Option<TapId> {
        Some(self.tap)
    }
    fn module_type(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
    /// The wrapped module's: a `Tap` adds a capture point, not variables.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        self.module.as_any()
    }
}

/// `M`'s tree, recording its own output.
impl<M: StaticSchema> StaticSchema for Tap<M> {
    const SCHEMA: Schema = M::SCHEMA.recording();
}

impl<M> Recordable for Tap<M> {
    fn tap_id(&self) -> TapId {
        self.tap
    }
}
