//! What can be one side of a distillation: a model of `distill::nn` layers, whose endpoints are its
//! modules, or a TorchScript [`jit::Module`], whose endpoints are its named
//! outputs. Both front ends (`Mapping`, `distill!`) and the engine reach a side only through
//! [`SideModel`].

use tch::nn::ModuleT;
use tch::Tensor;

use crate::cache::Manifest;
use crate::capture::{arm, TapRequest};
use crate::captured::Captured;
use crate::endpoint::{Endpoint, ResolvedEndpoint, Target};
use crate::error::{DistillError, Result};
use crate::jit;
use crate::module::Distillable;
use crate::point::{Port, Side};
use crate::resolver::Resolver;

/// A model that can be the student or the teacher of a distillation.
///
/// Implemented for every `tch::nn::ModuleT + Distillable` model (its endpoints are its modules, named
/// by path, by reference or by slot) and for [`jit::Module`] (its endpoints are its named outputs).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a side of a distillation",
    label = "not a distillable model",
    note = "a side is a model that implements tch's `ModuleT` and `Distillable` (`#[derive(Distillable)]`), or a \
            TorchScript `distill::jit::Module`"
)]
pub trait SideModel {
    /// A resolver that checks endpoints against this model as the `side` model.
    fn resolver(&self, side: Side) -> SideResolver<'_>;

    /// Runs the model on `xs` with the `train` flag and captures `endpoints` (resolved by this model's
    /// resolver): returns the model's own output and one capture per endpoint.
    fn run(&self, xs: &Tensor, train: bool, endpoints: &[ResolvedEndpoint]) -> Result<(Tensor, Vec<Captured>)>;
}

impl<M: ModuleT + Distillable> SideModel for M {
    fn resolver(&self, side: Side) -> SideResolver<'_> {
        SideResolver::new(self, Kind::Modules(Resolver::new(self, side)))
    }

    fn run(&self, xs: &Tensor, train: bool, endpoints: &[ResolvedEndpoint]) -> Result<(Tensor, Vec<Captured>)> {
        run_modules(self, xs, train, endpoints)
    }
}

impl SideModel for jit::Module {
    fn resolver(&self, side: Side) -> SideResolver<'_> {
        SideResolver::new(self, Kind::Outputs { module: self, side })
    }

    fn run(&self, xs: &Tensor, train: bool, endpoints: &[ResolvedEndpoint]) -> Result<(Tensor, Vec<Captured>)> {
        self.run_endpoints(xs, train, endpoints)
    }
}

/// Checks endpoints against one side's model; see [`SideModel::resolver`]. Used by `Mapping` and by
/// the `new()` that `distill!` generates.
#[derive(Debug)]
pub struct SideResolver<'m> {
    kind: Kind<'m>,
    /// The model's address and type, to tell whether a mapping is used with the models it was built
    /// for.
    identity: (usize, &'static str),
}

#[derive(Debug)]
enum Kind<'m> {
    Modules(Resolver<'m>),
    Outputs { module: &'m jit::Module, side: Side },
    Cached { manifest: &'m Manifest, dir: &'m std::path::Path, side: Side },
}

impl<'m> SideResolver<'m> {
    fn new<M: ?Sized>(model: &'m M, kind: Kind<'m>) -> Self {
        SideResolver { kind, identity: identity(model) }
    }

    /// A resolver against the endpoints a teacher cache stores.
    pub(crate) fn cached<M: ?Sized>(
        model: &'m M,
        manifest: &'m Manifest,
        dir: &'m std::path::Path,
        side: Side,
    ) -> Self {
        SideResolver::new(model, Kind::Cached { manifest, dir, side })
    }

    /// Checks `endpoint` against the model and finds what to capture.
    pub fn resolve(&self, endpoint: &Endpoint<'_>) -> Result<ResolvedEndpoint> {
        match &self.kind {
            Kind::Modules(resolver) => resolver.resolve(endpoint),
            Kind::Outputs { module, side } => module.resolve_endpoint(endpoint, *side),
            Kind::Cached { manifest, dir, side } => resolve_cached(manifest, dir, *side, endpoint),
        }
    }

    /// Whether this resolver was made for `model`.
    pub(crate) fn is_for<M: ?Sized>(&self, model: &M) -> bool {
        self.identity == identity(model)
    }

    /// Frees what made resolving fast; the next resolution does that work again.
    pub(crate) fn forget_index(&mut self) {
        if let Kind::Modules(resolver) = &mut self.kind {
            resolver.forget_index();
        }
    }
}

/// A path endpoint that the cache stores; other endpoints name modules a cache does not have.
fn resolve_cached(
    manifest: &Manifest,
    dir: &std::path::Path,
    side: Side,
    endpoint: &Endpoint<'_>,
) -> Result<ResolvedEndpoint> {
    let Target::Path(path) = &endpoint.target else {
        return Err(DistillError::InvalidArgument(
            "a teacher cache holds no modules to refer to: name its endpoints by path (`\"features.1\"`)".to_owned(),
        ));
    };
    if endpoint.all_calls {
        return Err(DistillError::InvalidArgument(format!(
            "the cached endpoint `{path}` cannot capture all calls: a teacher cache stores one call"
        )));
    }
    let Some((index, _)) = manifest.endpoint(path, endpoint.port) else {
        return Err(crate::cache::missing_endpoint(dir, manifest, path, endpoint.port));
    };
    Ok(ResolvedEndpoint {
        side,
        path: path.to_string(),
        tap: None,
        container: None,
        output: Some(index),
        port: endpoint.port,
        all_calls: false,
    })
}

fn identity<M: ?Sized>(model: &M) -> (usize, &'static str) {
    ((model as *const M).cast::<()>() as usize, std::any::type_name::<M>())
}

/// One model's forward with its endpoints armed; checks call counts and in-place edits.
fn run_modules<M: ModuleT + ?Sized>(
    model: &M,
    xs: &Tensor,
    train: bool,
    endpoints: &[ResolvedEndpoint],
) -> Result<(Tensor, Vec<Captured>)> {
    let guard = arm(endpoints.iter().filter_map(|e| e.tap.map(|tap| TapRequest { tap, port: e.port })));
    let output = model.forward_t(xs, train);
    let recordings = guard.finish();
    let captures = endpoints
        .iter()
        .map(|endpoint| {
            let Some(tap) = endpoint.tap else {
                return Ok(Captured::one(match endpoint.port {
                    Port::Output => output.shallow_clone(),
                    Port::Input => xs.shallow_clone(),
                }));
            };
            let calls = recordings.get(TapRequest { tap, port: endpoint.port });
            let not_called = || match &endpoint.container {
                Some(container) => DistillError::ElementNotRecorded {
                    side: endpoint.side,
                    path: endpoint.path.clone(),
                    container: container.clone(),
                },
                None => {
                    DistillError::NotCalled { side: endpoint.side, path: endpoint.path.clone(), port: endpoint.port }
                }
            };
            match calls.len() {
                0 => return Err(not_called()),
                1 => {}
                n if !endpoint.all_calls => {
                    return Err(DistillError::CalledMoreThanOnce {
                        side: endpoint.side,
                        path: endpoint.path.clone(),
                        calls: n,
                    })
                }
                _ => {}
            }
            let mut tensors = Vec::with_capacity(calls.len());
            for call in calls {
                if let Some(now) = call.modified_since_capture() {
                    return Err(DistillError::ModifiedInPlace {
                        side: endpoint.side,
                        path: endpoint.path.clone(),
                        port: endpoint.port,
                        captured: call.version,
                        now,
                    });
                }
                tensors.push(call.tensor.shallow_clone());
            }
            Ok(Captured::calls_of(tensors))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((output, captures))
}
