//! TorchScript models as distillation sides: a teacher trained and exported in PyTorch, used as is.
//!
//! A TorchScript module has no Rust fields to name, so its endpoints are its **named outputs**: the
//! keys of the dict it returns (what torchvision's `create_feature_extractor` builds, by fx node
//! name — ENOT's distillation maps fx graph nodes the same way), the positions `0`, `1`, … of a
//! tuple, or — for a module returning one tensor — only the module's own output. Export a teacher's
//! features like this:
//!
//! ```python
//! from torchvision.models.feature_extraction import create_feature_extractor
//! fx = create_feature_extractor(model.eval(), {"layer3": "layer3", "fc": "logits"})
//! torch.jit.trace(fx, example, strict=False).save("teacher.pt")
//! ```
//!
//! and load it with [`Module::load`], which reads the output names from the archive's code, so that
//! a misspelt name is an error when the pair is added, with a suggestion.
//!
//! **A TorchScript file is code**: loading one runs what it contains. Load only files you trust;
//! `safetensors` weights loaded into a Rust model (`distill::vision`) carry no code.

mod archive;
mod layout;
mod side;

use std::cell::Cell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tch::{CModule, Device, IValue, Tensor, TrainableCModule};

use crate::captured::Captured;
use crate::endpoint::{Endpoint, ResolvedEndpoint, Target};
use crate::error::{DistillError, PathError, Result};

pub use crate::error::JitError;
use crate::point::{Port, Side};
pub use layout::OutputLayout;

/// A TorchScript module loaded from a `torch.jit.save` file, usable as the teacher (or, when loaded
/// with [`Module::load_trainable`], the student) of a distillation.
///
/// Its endpoints are its named outputs ([`outputs`](Self::outputs)); the bare model — `""` in a
/// `Mapping`, `teacher` alone in `distill!` — is its single tensor output, or the output chosen with
/// [`with_output`](Self::with_output).
pub struct Module {
    inner: Mutex<Inner>,
    /// Whether the module is in training mode now (it starts in evaluation mode).
    training: Cell<bool>,
    layout: OutputLayout,
    main_output: Option<usize>,
    file: PathBuf,
}

enum Inner {
    Frozen(CModule),
    Trainable(TrainableCModule),
}

impl Module {
    /// Loads a TorchScript file on `device`, in evaluation mode, and reads the names of its outputs
    /// from the code in the archive. A CUDA device this process does not have is
    /// [`DistillError::NoCudaDevice`].
    ///
    /// An archive whose `forward` returns something else than a tensor, a tuple of tensors or a dict
    /// of tensors whose keys its code shows (literals, string variables, keys added by `d[k] = v` or
    /// `d.update(…)`) is an error; [`load_with_outputs`](Self::load_with_outputs) names the outputs
    /// for such a file. Every entry of the archive is read once through its zip CRC-32 first (one
    /// pass over the file), so a damaged file is an error naming the entry.
    pub fn load(file: impl AsRef<Path>, device: Device) -> Result<Module> {
        let file = file.as_ref();
        crate::device::check_device(device)?;
        archive::check_crcs(file).map_err(|reason| archive_error(file, reason))?;
        let layout = archive::read_output_layout(file).map_err(|reason| archive_error(file, reason))?;
        let module = CModule::load_on_device(file, device).map_err(|e| torch_error(file, e))?;
        Module::new(Inner::Frozen(module), layout, file)
    }

    /// Loads a TorchScript file whose outputs are the dict keys `names`, for archives whose code does
    /// not spell them out. The names are checked against every value the module returns; a name
    /// given twice is [`JitError::DuplicateOutput`] here, since no dict could match the list.
    pub fn load_with_outputs(file: impl AsRef<Path>, device: Device, names: &[&str]) -> Result<Module> {
        let file = file.as_ref();
        for (again, name) in names.iter().enumerate() {
            if let Some(first) = names.iter().take(again).position(|other| other == name) {
                let (file, name) = (file.display().to_string(), (*name).to_owned());
                return Err(JitError::DuplicateOutput { file, name, first, again }.into());
            }
        }
        crate::device::check_device(device)?;
        let layout = OutputLayout::Dict(names.iter().map(|name| (*name).to_owned()).collect());
        archive::check_crcs(file).map_err(|reason| archive_error(file, reason))?;
        let module = CModule::load_on_device(file, device).map_err(|e| torch_error(file, e))?;
        Module::new(Inner::Frozen(module), layout, file)
    }

    /// Loads a TorchScript file as a trainable module whose parameters are variables under `path`
    /// (so an optimizer on that `VarStore` trains them), in training mode: a TorchScript *student*.
    pub fn load_trainable(file: impl AsRef<Path>, path: tch::nn::Path) -> Result<Module> {
        let file = file.as_ref();
        archive::check_crcs(file).map_err(|reason| archive_error(file, reason))?;
        let layout = archive::read_output_layout(file).map_err(|reason| archive_error(file, reason))?;
        let module = TrainableCModule::load(file, path).map_err(|e| torch_error(file, e))?;
        let module = Module::new(Inner::Trainable(module), layout, file)?;
        module.set_training(true)?;
        Ok(module)
    }

    fn new(inner: Inner, layout: OutputLayout, file: &Path) -> Result<Module> {
        let main_output = (layout == OutputLayout::Tensor).then_some(0);
        let module =
            Module { inner: Mutex::new(inner), training: Cell::new(true), layout, main_output, file: file.into() };
        module.set_training(false)?;
        Ok(module)
    }

    /// Makes output `name` the module's own output: what the bare model stands for as an endpoint
    /// and what a distillation returns as the teacher's (or student's) output. A module returning
    /// several outputs has none until one is chosen: that output is then an undefined tensor (and
    /// the bare model no endpoint).
    pub fn with_output(mut self, name: &str) -> Result<Module> {
        let index = self.output_index(name).ok_or_else(|| self.unknown_output(name))?;
        self.main_output = Some(index);
        Ok(self)
    }

    /// The names of the module's endpoints, in the order it returns them: dict keys, or `0`, `1`, …
    /// for a tuple; empty for a module returning one tensor.
    pub fn outputs(&self) -> Vec<String> {
        self.layout.names()
    }

    /// What the module returns.
    pub fn layout(&self) -> &OutputLayout {
        &self.layout
    }

    /// The file it was loaded from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The name of the module's own output, if it has one (a single tensor, or
    /// [`with_output`](Self::with_output)).
    pub fn main_output(&self) -> Option<String> {
        match (&self.layout, self.main_output) {
            (OutputLayout::Tensor, _) => Some(String::new()),
            (_, Some(index)) => self.layout.names().into_iter().nth(index),
            (_, None) => None,
        }
    }

    /// The position of output `name` among [`outputs`](Self::outputs).
    pub(crate) fn output_index(&self, name: &str) -> Option<usize> {
        self.layout.names().iter().position(|output| output == name)
    }

    /// Runs the module on `xs` (training mode if `train`) and returns every output, in the order of
    /// [`outputs`](Self::outputs) (the single tensor for a module returning one).
    pub fn forward_outputs(&self, xs: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        self.set_training(train)?;
        let input = [IValue::Tensor(xs.shallow_clone())];
        let value = {
            let inner = self.lock();
            match &*inner {
                Inner::Frozen(module) => module.forward_is(&input),
                Inner::Trainable(module) => module.forward_is(&input),
            }
        }
        .map_err(|e| torch_error(&self.file, e))?;
        let file = self.file.display().to_string();
        self.layout.split(value).map_err(|reason| JitError::Outputs { file, reason }.into())
    }

    /// Checks an endpoint against this module as the `side` model: a path is an output name (`""`
    /// the module's own output); modules given by reference or by slot are not part of it.
    pub(crate) fn resolve_endpoint(&self, endpoint: &Endpoint<'_>, side: Side) -> Result<ResolvedEndpoint> {
        let Target::Path(name) = &endpoint.target else {
            return Err(PathError::NotInModel { side, type_name: "module given by reference or by slot" }.into());
        };
        let output = if name.is_empty() {
            match (endpoint.port, self.main_output) {
                (Port::Input, _) => None,
                (Port::Output, Some(index)) => Some(index),
                (Port::Output, None) => return Err(self.no_main_output(side)),
            }
        } else {
            if endpoint.port == Port::Input {
                let (file, name) = (self.file.display().to_string(), name.to_string());
                return Err(JitError::OutputInput { file, name }.into());
            }
            Some(self.output_index(name).ok_or_else(|| self.unknown_output(name))?)
        };
        Ok(ResolvedEndpoint {
            side,
            path: name.to_string(),
            tap: None,
            container: None,
            output,
            port: endpoint.port,
            all_calls: endpoint.all_calls,
        })
    }

    /// Runs the module and hands out what `endpoints` (resolved by
    /// [`resolve_endpoint`](Self::resolve_endpoint)) name: its own output (undefined when it has
    /// none) and one capture per endpoint.
    pub(crate) fn run_endpoints(
        &self,
        xs: &Tensor,
        train: bool,
        endpoints: &[ResolvedEndpoint],
    ) -> Result<(Tensor, Vec<Captured>)> {
        let outputs = self.forward_outputs(xs, train)?;
        let pick = |index: Option<usize>| index.and_then(|index| outputs.get(index)).map(Tensor::shallow_clone);
        let captures = endpoints
            .iter()
            .map(|endpoint| match (endpoint.port, pick(endpoint.output)) {
                (Port::Input, _) => Ok(Captured::one(xs.shallow_clone())),
                (Port::Output, Some(tensor)) => Ok(Captured::one(tensor)),
                (Port::Output, None) => Err(self.unknown_output(&endpoint.path)),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((pick(self.main_output).unwrap_or_else(Tensor::new), captures))
    }

    fn no_main_output(&self, side: Side) -> DistillError {
        JitError::NoMainOutput { file: self.file.display().to_string(), side, layout: self.layout.to_string() }.into()
    }

    /// The error for an output name the module does not have, with the closest name.
    pub(crate) fn unknown_output(&self, name: &str) -> DistillError {
        let outputs = self.outputs();
        JitError::UnknownOutput {
            file: self.file.display().to_string(),
            name: name.to_owned(),
            suggestion: crate::suggest::closest(name, outputs.iter().map(String::as_str)).map(str::to_owned),
            outputs,
        }
        .into()
    }

    fn set_training(&self, train: bool) -> Result<()> {
        if self.training.get() == train {
            return Ok(());
        }
        let mut inner = self.lock();
        let result = match (&mut *inner, train) {
            (Inner::Frozen(module), true) => module.f_set_train(),
            (Inner::Frozen(module), false) => module.f_set_eval(),
            (Inner::Trainable(module), true) => module.f_set_train(),
            (Inner::Trainable(module), false) => module.f_set_eval(),
        };
        result.map_err(|e| torch_error(&self.file, e))?;
        self.training.set(train);
        Ok(())
    }

    /// The parameters of a module loaded with [`load`](Self::load), by name; `None` for one loaded
    /// with [`load_trainable`](Self::load_trainable), whose parameters are in the VarStore given.
    pub(crate) fn frozen_parameters(&self) -> Option<Result<Vec<(String, Tensor)>>> {
        match &*self.lock() {
            Inner::Frozen(module) => Some(module.named_parameters().map_err(|e| torch_error(&self.file, e))),
            Inner::Trainable(_) => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while the lock was held cannot leave the module half-updated: the lock only
        // serialises libtorch calls, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("jit::Module")
            .field("file", &self.file)
            .field("layout", &self.layout)
            .field("main_output", &self.main_output())
            .finish_non_exhaustive()
    }
}

fn archive_error(file: &Path, reason: String) -> DistillError {
    JitError::Archive { file: file.display().to_string(), reason }.into()
}

fn torch_error(file: &Path, source: tch::TchError) -> DistillError {
    JitError::Torch { file: file.display().to_string(), source }.into()
}
