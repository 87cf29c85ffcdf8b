//! [`SideResolver`]: a side's endpoint resolution, as `Mapping` and the `new()` that `distill!`
//! generates reach it. Glue reached through `__private`, not public API.

use super::Resolution;
use crate::endpoint::{Endpoint, ResolvedEndpoint};
use crate::error::Result;

/// Checks endpoints against one side's model; see [`SideModel::resolver`](super::SideModel::resolver). Used by `Mapping` and by
/// the `new()` that `distill!` generates.
///
/// Each side brings its own resolution: a model's endpoints are its modules, a TorchScript module's
/// its named outputs, a teacher cache's the tensors it stores.
#[doc(hidden)]
pub struct SideResolver<'m> {
    resolution: Box<dyn Resolution + 'm>,
    /// The model's address and type, to tell whether a mapping is used with the models it was built
    /// for.
    identity: (usize, &'static str),
}

impl std::fmt::Debug for SideResolver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideResolver").field("model", &self.identity.1).finish_non_exhaustive()
    }
}

impl<'m> SideResolver<'m> {
    /// A resolver for `model` that resolves with `resolve`: a side's own resolution, for a side
    /// whose endpoints are not its modules (a TorchScript module's named outputs, what a teacher
    /// cache stores).
    pub(crate) fn own<M: ?Sized>(
        model: &'m M,
        resolve: impl Fn(&Endpoint<'_>) -> Result<ResolvedEndpoint> + 'm,
    ) -> Self {
        SideResolver::with(model, resolve)
    }

    /// A resolver for `model` that resolves with `resolution`.
    pub(super) fn with<M: ?Sized>(model: &'m M, resolution: impl Resolution + 'm) -> Self {
        SideResolver { resolution: Box::new(resolution), identity: identity(model) }
    }

    /// Checks `endpoint` against the model and finds what to capture.
    pub fn resolve(&self, endpoint: &Endpoint<'_>) -> Result<ResolvedEndpoint> {
        self.resolution.resolve(endpoint)
    }

    /// Whether this resolver was made for `model`.
    pub(crate) fn is_for<M: ?Sized>(&self, model: &M) -> bool {
        self.identity == identity(model)
    }

    /// Frees what made resolving fast; the next resolution does that work again.
    pub(crate) fn forget_index(&mut self) {
        self.resolution.forget_index();
    }
}

fn identity<M: ?Sized>(model: &M) -> (usize, &'static str) {
    ((model as *const M).cast::<()>() as usize, std::any::type_name::<M>())
}
