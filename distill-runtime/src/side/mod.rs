//! What can be one side of a distillation: a model of `distill::nn` layers, whose endpoints are its
//! modules, a TorchScript [`jit::Module`](crate::jit::Module), whose endpoints are its named
//! outputs, or a source of stored teacher tensors. This module implements [`SideModel`] for the
//! models of modules; the TorchScript module and the caches implement it in their own modules, each
//! resolving its own endpoints. Every front end (`Mapping`, `distill!`, a config) and the engine
//! reach a side only through [`SideModel`].

use tch::nn::ModuleT;
use tch::Tensor;

use crate::captured::Captured;
use crate::criterion::TeacherEncoding;
use crate::endpoint::{Endpoint, ResolvedEndpoint};
use crate::error::{CaptureError, Result};
use crate::module::Distillable;
use crate::nn::capture::{arm, TapRequest};
use crate::point::{Port, Side};
use crate::resolver::Resolver;

mod private;

pub use private::SideResolver;

/// A model that can be the student or the teacher of a distillation.
///
/// Implemented for every `tch::nn::ModuleT + Distillable` model (its endpoints are its modules, named
/// by path, by reference or by slot), for [`jit::Module`](crate::jit::Module) (its endpoints are its
/// named outputs) and for the teacher caches (their endpoints are what they store). A model of
/// one's own is a side by being a `ModuleT + Distillable` model; the trait's resolver is glue of this
/// crate, not an extension point.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a side of a distillation",
    label = "not a distillable model",
    note = "a side is a model that implements tch's `ModuleT` and `Distillable` (`#[derive(Distillable)]`), or a \
            TorchScript `distill::jit::Module`"
)]
pub trait SideModel {
    /// A resolver that checks endpoints against this model as the `side` model. Glue of `Mapping`
    /// and of the `new()` that `distill!` generates.
    #[doc(hidden)]
    fn resolver(&self, side: Side) -> SideResolver<'_>;

    /// Runs the model on `xs` with the `train` flag and captures `endpoints` (resolved by this model's
    /// resolver): returns the model's own output and one capture per endpoint.
    fn run(&self, xs: &Tensor, train: bool, endpoints: &[ResolvedEndpoint]) -> Result<(Tensor, Vec<Captured>)>;

    /// Checks that this side gives the endpoint `endpoint` (resolved by its resolver) in the form
    /// the criterion of the pair `label` reads (`reads`). A model gives its tensors as they are and
    /// accepts every pair (the default); a teacher cache that stores a distribution in a reduced
    /// form accepts only the criterion that reads that form at the stored temperature.
    ///
    /// # Errors
    /// [`DistillError::CacheMismatch`](crate::DistillError::CacheMismatch) naming the pair, what is
    /// stored and what the criterion reads.
    fn check_encoding(&self, label: &str, endpoint: &ResolvedEndpoint, reads: TeacherEncoding) -> Result<()> {
        let _ = (label, endpoint, reads);
        Ok(())
    }
}

impl<M: ModuleT + Distillable> SideModel for M {
    fn resolver(&self, side: Side) -> SideResolver<'_> {
        SideResolver::with(self, Resolver::new(self, side))
    }

    fn run(&self, xs: &Tensor, train: bool, endpoints: &[ResolvedEndpoint]) -> Result<(Tensor, Vec<Captured>)> {
        run_modules(self, xs, train, endpoints)
    }
}

/// A teacher that runs: a model (`ModuleT + Distillable`) or a TorchScript module, as opposed to a
/// teacher cache, which stands for a teacher that is not loaded. The `forward_t`, `forward_t_with`
/// and `dry_run` of a `distill!` model and of a [`DistillModel`](crate::DistillModel) exist only
/// when the teacher is one, so that a forward of a distillation over a cache is a compile error
/// naming `forward_cached`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is a teacher cache: a distillation over it does not run the teacher",
    label = "not a teacher that runs",
    note = "read the teacher's side from a batch of the cache: `forward_cached(&xs, &cache.batch(…)?, train)`, and \
            `dry_run_cached(&xs, &batch)` to fit the adapters and check the pairs"
)]
pub trait LiveTeacher {}

#[diagnostic::do_not_recommend]
impl<M: ModuleT + Distillable> LiveTeacher for M {}

/// How one side finds what an endpoint captures.
pub(crate) trait Resolution {
    /// The endpoint resolved against the side, or why it is not one of the side's.
    fn resolve(&self, endpoint: &Endpoint<'_>) -> Result<ResolvedEndpoint>;

    /// Frees what made resolving fast (a model's index of its module tree); nothing by default.
    fn forget_index(&mut self) {}
}

/// A side's resolution as a function: a TorchScript module's (its named outputs), a cache's (the
/// endpoints it stores).
impl<F: Fn(&Endpoint<'_>) -> Result<ResolvedEndpoint>> Resolution for F {
    fn resolve(&self, endpoint: &Endpoint<'_>) -> Result<ResolvedEndpoint> {
        self(endpoint)
    }
}

/// A model's resolution: its modules, by path, reference or slot.
impl Resolution for Resolver<'_> {
    fn resolve(&self, endpoint: &Endpoint<'_>) -> Result<ResolvedEndpoint> {
        Resolver::resolve(self, endpoint)
    }

    fn forget_index(&mut self) {
        Resolver::forget_index(self);
    }
}

/// One model's forward with its endpoints armed; checks call counts and in-place edits.
fn run_modules<M: ModuleT + ?Sized>(
    model: &M,
    xs: &Tensor,
    train: bool,
    endpoints: &[ResolvedEndpoint],
) -> Result<(Tensor, Vec<Captured>)> {
    run_forward(xs, endpoints, || Ok(model.forward_t(xs, train)))
}

/// `forward` — a model of `distill::nn` modules run on `xs`, by its `forward_t` or by a call of the
/// user's that gives it more than `xs` — with `endpoints` armed: the model's output and one capture
/// per endpoint, call counts and in-place edits checked. The root endpoint is `forward`'s output, or
/// `xs` for its input.
///
/// # Errors
/// What `forward` fails with; a capture problem; [`CaptureError::NotTapped`] for an endpoint that is
/// neither the root nor a tapped module (a TorchScript model's named output, which only its own
/// forward gives).
pub(crate) fn run_forward(
    xs: &Tensor,
    endpoints: &[ResolvedEndpoint],
    forward: impl FnOnce() -> Result<Tensor>,
) -> Result<(Tensor, Vec<Captured>)> {
    let guard = arm(endpoints.iter().filter_map(|e| e.tap.map(|tap| TapRequest { tap, port: e.port })));
    let output = forward();
    let recordings = guard.finish();
    let output = output?;
    let captures = endpoints
        .iter()
        .map(|endpoint| {
            let Some(tap) = endpoint.tap else {
                if !endpoint.path.is_empty() {
                    return Err(CaptureError::NotTapped { side: endpoint.side, path: endpoint.path.clone() }.into());
                }
                return Ok(Captured::one(match endpoint.port {
                    Port::Output => output.shallow_clone(),
                    Port::Input => xs.shallow_clone(),
                }));
            };
            let calls = recordings.get(TapRequest { tap, port: endpoint.port });
            let not_called = || match &endpoint.container {
                Some(container) => CaptureError::ElementNotRecorded {
                    side: endpoint.side,
                    path: endpoint.path.clone(),
                    container: container.clone(),
                },
                None => {
                    CaptureError::NotCalled { side: endpoint.side, path: endpoint.path.clone(), port: endpoint.port }
                }
            };
            match calls.len() {
                0 => return Err(not_called().into()),
                1 => {}
                n if !endpoint.all_calls => {
                    return Err(CaptureError::CalledMoreThanOnce {
                        side: endpoint.side,
                        path: endpoint.path.clone(),
                        calls: n,
                    }
                    .into())
                }
                _ => {}
            }
            let mut tensors = Vec::with_capacity(calls.len());
            for call in calls {
                if let Some(now) = call.modified_since_capture() {
                    return Err(CaptureError::ModifiedInPlace {
                        side: endpoint.side,
                        path: endpoint.path.clone(),
                        port: endpoint.port,
                        captured: call.version,
                        now,
                    }
                    .into());
                }
                tensors.push(call.tensor.shallow_clone());
            }
            Ok(Captured::calls_of(tensors))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((output, captures))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DistillError;

    fn endpoint(path: &str) -> ResolvedEndpoint {
        ResolvedEndpoint {
            side: Side::Student,
            path: path.to_owned(),
            tap: None,
            container: None,
            output: Some(1),
            port: Port::Output,
            all_calls: false,
        }
    }

    #[test]
    fn a_forward_of_the_callers_gives_the_root_and_refuses_an_untapped_output() {
        let xs = Tensor::from_slice(&[1.0f32, 2.0]);
        let (output, captures) = run_forward(&xs, &[endpoint("")], || Ok(&xs * 3.0)).unwrap();
        assert!(captures[0].tensor().equal(&output) && output.equal(&(&xs * 3.0)));
        // A TorchScript student's named output: only the module's own forward gives it, so the
        // caller's forward cannot stand in for it.
        let err = run_forward(&xs, &[endpoint("logits")], || Ok(xs.shallow_clone())).unwrap_err();
        assert!(
            matches!(err, DistillError::Capture(CaptureError::NotTapped { ref path, .. }) if path == "logits"),
            "{err}"
        );
    }
}
