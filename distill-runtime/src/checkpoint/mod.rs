//! Checkpoints of a distillation: the student alone (no adapter, no teacher variable), and the
//! student with its adapters and the step, to resume a run exactly.
//!
//! A distillation usually keeps the student and its adapters in one `VarStore` (the optimizer trains
//! both), sometimes the teacher too. [`Owners`] tells whose each variable of the store is: the
//! student's and the teacher's by identity — a variable belongs to a model when one of the model's
//! layers holds that very tensor, found by walking its module tree — and the adapters' by the path
//! the distillation built them under (the `path` given to a `distill!` model's `new()` or to
//! `Config::distill`). A variable that is none of these, or more than one, is an error naming it:
//! the checkpoint never guesses.
//!
//! ```no_run
//! # extern crate distill_runtime as distill;
//! # use distill::{checkpoint::Owners, nn, Result};
//! # fn run(vs: &nn::VarStore, student: &dyn distill::Distillable, step: u64) -> Result<()> {
//! let kd_path = vs.root() / "kd";          // where the distillation's adapters live
//! let owners = Owners::new(vs, student).adapters(&kd_path);
//! owners.save_student("student.safetensors")?;           // the student alone, for deployment
//! owners.save_training("resume.safetensors", step)?;     // student + adapters + step
//! // … later, in a fresh process with the models and the distillation built the same way:
//! let resumed = owners.load_training("resume.safetensors")?;
//! assert_eq!(resumed.step, step);
//! # Ok(()) }
//! ```
//!
//! What a checkpoint does not hold: the optimizer's state (tch's optimizers cannot export it, so
//! momentum buffers and Adam moments restart from zero: a run resumes exactly with plain SGD), the
//! random generator's state (reseed with `tch::manual_seed`), and the teacher (frozen, it is loaded
//! from its own file; a teacher trained with the student is saved with its own `VarStore`).

mod layers;

use std::collections::{BTreeMap, HashMap};
use std::path::Path as FilePath;

use tch::nn::{Path, VarStore};
use tch::{Kind, Tensor};

use self::layers::{layer_tensors, same_variable, LayerTensor};
use crate::checksum;
pub use crate::error::{CheckpointError, CheckpointProblem, StateDictProblems};
use crate::error::{DistillError, Result};
use crate::module::Distillable;

/// The name under which [`Owners::save_training`] stores the step.
pub const STEP_KEY: &str = "__distill__.step";

/// Whose each variable of a `VarStore` is — the student's, the teacher's, or a distillation's
/// adapters' — to save or restore the student's and the adapters' alone. See the [module](self).
pub struct Owners<'a> {
    vs: &'a VarStore,
    student: &'a dyn Distillable,
    teachers: Vec<&'a dyn Distillable>,
    adapters: Vec<String>,
}

/// The variables of the store, by owner: `(name in the store, tensor)`, sorted by name.
#[derive(Debug, Default)]
pub struct Variables {
    /// The student's.
    pub student: Vec<(String, Tensor)>,
    /// The adapters'.
    pub adapters: Vec<(String, Tensor)>,
    /// The teachers' (those given, which share the store).
    pub teacher: Vec<(String, Tensor)>,
}

/// The metadata naming what a checkpoint holds (`"student"` or `"training"`).
fn kind_metadata(kind: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("distill.checkpoint".to_owned(), kind.to_owned())])
}

/// What a training checkpoint restores besides the variables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrainingState {
    /// The step the run had reached (the one given to [`Owners::save_training`]): the argument of
    /// step-dependent weights, the learning-rate schedule's position.
    pub step: u64,
}

impl<'a> Owners<'a> {
    /// The owners of `vs`'s variables, `student` being the model whose variables it holds.
    pub fn new(vs: &'a VarStore, student: &'a dyn Distillable) -> Self {
        Owners { vs, student, teachers: Vec::new(), adapters: Vec::new() }
    }

    /// A teacher whose variables are in the same store (a teacher in a store of its own needs no
    /// mention); call it once per such teacher.
    pub fn teacher(mut self, teacher: &'a dyn Distillable) -> Self {
        self.teachers.push(teacher);
        self
    }

    /// A path a distillation built its adapters under: the `path` given to a `distill!` model's
    /// `new()` or to `Config::distill`. Every variable of the store under it is an adapter's.
    pub fn adapters(mut self, path: &Path<'_>) -> Self {
        self.adapters.push(path.components().collect::<Vec<_>>().join("."));
        self
    }

    /// Sorts every variable of the store by owner.
    ///
    /// # Errors
    /// [`DistillError::Checkpoint`] (with `file` empty) for adapters given the store's root (their
    /// variables could not be told from the student's), a variable that belongs to no owner or to
    /// two, and a layer of the student whose variable is not in the store.
    pub fn variables(&self) -> Result<Variables> {
        self.classify("")
    }

    fn classify(&self, file: &str) -> Result<Variables> {
        let error = |problem| DistillError::from(CheckpointError::Invalid { file: file.to_owned(), problem });
        if self.adapters.iter().any(String::is_empty) {
            return Err(error(CheckpointProblem::AdaptersAtRoot));
        }
        let student = Index::new(layer_tensors(self.student));
        let teacher = Index::new(self.teachers.iter().flat_map(|teacher| layer_tensors(*teacher)).collect());
        let mut sorted = Variables::default();
        let mut found = vec![false; student.tensors.len()];
        let mut variables: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, tensor) in variables {
            let in_student = student.find(&tensor);
            let in_teacher = teacher.find(&tensor);
            let adapter =
                self.adapters.iter().find(|prefix| name == **prefix || name.starts_with(&format!("{prefix}.")));
            let owners: Vec<String> = [
                in_student.map(|layer| format!("the student's `{}`", student.describe(layer))),
                in_teacher.map(|layer| format!("the teacher's `{}`", teacher.describe(layer))),
                adapter.map(|prefix| format!("the adapters under `{prefix}`")),
            ]
            .into_iter()
            .flatten()
            .collect();
            match (owners.len(), in_student, in_teacher) {
                (0, ..) => {
                    return Err(error(CheckpointProblem::Unowned { name, with_teacher: !self.teachers.is_empty() }))
                }
                (1, Some(layer), _) => {
                    found[layer] = true;
                    sorted.student.push((name, tensor));
                }
                (1, None, Some(_)) => sorted.teacher.push((name, tensor)),
                (1, None, None) => sorted.adapters.push((name, tensor)),
                _ => return Err(error(CheckpointProblem::SharedVariable { name, owners })),
            }
        }
        // A layer held twice in the tree (a shared module) lists its tensors twice; one found is enough.
        let missing = (0..found.len()).find(|&i| {
            !found[i]
                && !(0..found.len())
                    .any(|j| found[j] && same_variable(&student.tensors[i].tensor, &student.tensors[j].tensor))
        });
        if let Some(missing) = missing {
            return Err(error(CheckpointProblem::NotInStore { layer: student.describe(missing) }));
        }
        Ok(sorted)
    }

    /// Saves the student's variables alone — no adapter, no teacher — to the safetensors `file`,
    /// under their names in the store (which `VarStore::load` of a store built like the student's
    /// expects), and returns those names, sorted.
    ///
    /// The file is written atomically — under a temporary name in the same directory, fsynced, then
    /// renamed — so a process killed during the save leaves the previous file intact — and carries
    /// in its metadata a CRC-32 of its tensors and that metadata ([`checksum`]), which
    /// [`checksum::verify`] checks.
    ///
    /// # Errors
    /// As [`variables`](Self::variables), and [`DistillError::Io`] naming the file when it cannot
    /// be written.
    pub fn save_student(&self, file: impl AsRef<FilePath>) -> Result<Vec<String>> {
        let file = file.as_ref();
        let variables = self.classify(&file.display().to_string())?;
        checksum::write(file, &variables.student, kind_metadata("student"))?;
        Ok(variables.student.into_iter().map(|(name, _)| name).collect())
    }

    /// Saves what resuming the run needs — the student's and the adapters' variables, and `step` —
    /// to the safetensors `file`, atomically and with a checksum, as
    /// [`save_student`](Self::save_student).
    ///
    /// # Errors
    /// As [`save_student`](Self::save_student); [`DistillError::Checkpoint`] naming an adapter
    /// variable that is empty (a fitted adapter before the dry run sized it), whose checkpoint no
    /// fitted adapter could load; nothing is written then.
    pub fn save_training(&self, file: impl AsRef<FilePath>, step: u64) -> Result<()> {
        let file = file.as_ref();
        let variables = self.classify(&file.display().to_string())?;
        if let Some((name, tensor)) = variables.adapters.iter().find(|(_, tensor)| tensor.numel() == 0) {
            let problem = CheckpointProblem::Unfitted { name: name.clone(), shape: tensor.size() };
            return Err(CheckpointError::Invalid { file: file.display().to_string(), problem }.into());
        }
        let step = i64::try_from(step).map_err(|_| CheckpointError::Invalid {
            file: file.display().to_string(),
            problem: CheckpointProblem::StepTooLarge { step },
        })?;
        let mut tensors: Vec<(String, Tensor)> = variables.student;
        tensors.extend(variables.adapters);
        tensors.push((STEP_KEY.to_owned(), Tensor::from(step)));
        checksum::write(file, &tensors, kind_metadata("training"))
    }

    /// Restores a checkpoint of [`save_training`](Self::save_training) into the student's and the
    /// adapters' variables (built the same way: same architecture, same paths, same kinds; fitted
    /// adapters fitted by a dry run first) and returns the step it was saved at. The file must hold
    /// exactly those variables, with their shapes and kinds; nothing is changed otherwise.
    ///
    /// # Errors
    /// As [`variables`](Self::variables); [`DistillError::Checkpoint`] for a variable missing from
    /// the file, a name in the file that is not the student's or an adapter's, a shape or a kind
    /// (`Float`, `Half`, `Int64`…) that differs, or a missing step; [`DistillError::Io`] when the
    /// file cannot be read; [`DistillError::Corrupt`] naming the file when its tensors do not match
    /// the checksum it was saved with (checked before anything is restored: one CRC-32 pass over
    /// the file's bytes), or has none although its metadata says this library wrote it (a damaged
    /// key). A file without this library's metadata (written by other tools) is read unchecked.
    pub fn load_training(&self, file: impl AsRef<FilePath>) -> Result<TrainingState> {
        let file = file.as_ref();
        let name = file.display().to_string();
        let error = |problem| DistillError::from(CheckpointError::Invalid { file: name.clone(), problem });
        let variables = self.classify(&name)?;
        let mut saved: BTreeMap<String, Tensor> =
            checksum::read(file, checksum::Missing::Accept)?.tensors.into_iter().collect();
        let step = saved.remove(STEP_KEY).ok_or_else(|| error(CheckpointProblem::NoStep { key: STEP_KEY }))?;
        let step = match (step.kind(), step.size().as_slice()) {
            (Kind::Int64, []) => {
                u64::try_from(step.int64_value(&[])).map_err(|_| error(CheckpointProblem::NegativeStep))?
            }
            (kind, size) => {
                let (key, shape) = (STEP_KEY, size.to_vec());
                return Err(error(CheckpointProblem::StepTensor { key, kind, shape }));
            }
        };
        let targets: Vec<&(String, Tensor)> = variables.student.iter().chain(&variables.adapters).collect();
        for (name, target) in &targets {
            let value = saved.get(name).ok_or_else(|| error(CheckpointProblem::Missing { name: name.clone() }))?;
            if value.size() != target.size() {
                let (name, file, model) = (name.clone(), value.size(), target.size());
                return Err(error(CheckpointProblem::Shape { name, file, model }));
            }
            // `copy_` would convert any kind into the variable's (booleans, integers, another
            // precision): a run resumed from values rounded or truncated so is not the run saved,
            // and a file of another kind was saved from a model built otherwise.
            if value.kind() != target.kind() {
                let (name, file, model) = (name.clone(), value.kind(), target.kind());
                return Err(error(CheckpointProblem::Kind { name, file, model }));
            }
        }
        if let Some(extra) = saved.keys().find(|key| !targets.iter().any(|(name, _)| name == *key)) {
            return Err(error(CheckpointProblem::Unexpected { name: extra.clone() }));
        }
        tch::no_grad(|| -> Result<()> {
            for (name, target) in targets {
                target.shallow_clone().f_copy_(&saved[name])?;
            }
            Ok(())
        })?;
        Ok(TrainingState { step })
    }
}

impl std::fmt::Debug for Owners<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owners")
            .field("student", &self.student.module_type())
            .field("teachers", &self.teachers.iter().map(|teacher| teacher.module_type()).collect::<Vec<_>>())
            .field("adapters", &self.adapters)
            .finish()
    }
}

/// A model's layer tensors, found by storage address first.
struct Index {
    tensors: Vec<LayerTensor>,
    by_address: HashMap<usize, Vec<usize>>,
}

impl Index {
    fn new(tensors: Vec<LayerTensor>) -> Index {
        let mut by_address: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, layer) in tensors.iter().enumerate() {
            by_address.entry(layer.tensor.data_ptr() as usize).or_default().push(i);
        }
        Index { tensors, by_address }
    }

    /// The index of the layer tensor that is `tensor`, if any.
    fn find(&self, tensor: &Tensor) -> Option<usize> {
        let candidates = self.by_address.get(&(tensor.data_ptr() as usize))?;
        candidates.iter().copied().find(|&i| same_variable(&self.tensors[i].tensor, tensor))
    }

    /// `features.0.conv.weight` (`(model).weight` for the root).
    fn describe(&self, i: usize) -> String {
        let layer = &self.tensors[i];
        let path = if layer.layer.is_empty() { "(model)" } else { &layer.layer };
        format!("{path}.{}", layer.role)
    }
}
