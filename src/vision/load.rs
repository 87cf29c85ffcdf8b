//! Loading a PyTorch `state_dict` saved as safetensors, strictly.

use std::collections::{BTreeMap, HashMap};

use tch::nn::VarStore;
use tch::Tensor;

use crate::checkpoint::{CheckpointError, StateDictProblems};
use crate::error::Result;

/// The buffer torchvision's batch norms keep beside `running_mean` and `running_var`: a step count
/// that only matters when `momentum=None`; tch's batch norm has no such variable.
const NUM_BATCHES_TRACKED: &str = "num_batches_tracked";

/// Loads the safetensors file `path` — a PyTorch `state_dict` saved with
/// `safetensors.torch.save_file(model.state_dict(), path)` — into the variables of `vs`, as
/// PyTorch's `load_state_dict(strict=True)` would.
///
/// `VarStore::load` also reads such a file, but it ignores the file's extra keys and copies with
/// broadcasting, so the weights of another model can load without an error (ResNet-34's file into a
/// ResNet-18, a `[1]` tensor into a `[64]` variable). Here every variable must be in the file with
/// the same shape, and every key of the file must be a variable; the only keys allowed beyond the
/// variables are the `num_batches_tracked` buffers of batch norms whose `running_mean` is a variable.
/// Values are converted to each variable's kind (a half-precision file loads into f32 variables).
///
/// # Errors
/// [`CheckpointError::StateDict`] listing the missing variables, the unexpected keys and the
/// shape mismatches (nothing is copied then); [`DistillError::Torch`](crate::DistillError::Torch) when the file cannot be read.
pub fn load_torchvision<P: AsRef<std::path::Path>>(vs: &mut VarStore, path: P) -> Result<()> {
    load_torchvision_under(vs, "", path)
}

/// [`load_torchvision`] for a model built under `prefix` (`vs.root() / "teacher"` → `"teacher"`):
/// the file's key `conv1.weight` goes to the variable `teacher.conv1.weight`, and only variables
/// under `prefix` are loaded (all must be in the file). An empty prefix is the root.
///
/// # Errors
/// As [`load_torchvision`].
pub fn load_torchvision_under<P: AsRef<std::path::Path>>(vs: &mut VarStore, prefix: &str, path: P) -> Result<()> {
    let path = path.as_ref();
    let file: HashMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
    load_strict(vs, prefix, path, &file, &is_tracked_count)
}

/// Copies `file` into the variables of `vs` under `prefix`, after checking that every variable has
/// a tensor of its shape and kind and every tensor a variable, except keys `ignored(key, variables)`
/// allows; `path` names the source in the error.
pub(crate) fn load_strict(
    vs: &mut VarStore,
    prefix: &str,
    path: &std::path::Path,
    file: &HashMap<String, Tensor>,
    ignored: &dyn Fn(&str, &BTreeMap<String, Tensor>) -> bool,
) -> Result<()> {
    let shapes = file.iter().map(|(key, t)| (key.clone(), (t.size(), t.is_floating_point()))).collect();
    load_strict_with(vs, prefix, path, &shapes, ignored, &mut |key| Ok(file[key].shallow_clone()))
}

/// [`load_strict`] for a source described by the shape and floating-pointness of each of its
/// tensors, read one at a time by `read` only after the check passed (so that a large checkpoint
/// is never held whole beside the variables).
pub(crate) fn load_strict_with(
    vs: &mut VarStore,
    prefix: &str,
    path: &std::path::Path,
    file: &HashMap<String, (Vec<i64>, bool)>,
    ignored: &dyn Fn(&str, &BTreeMap<String, Tensor>) -> bool,
    read: &mut dyn FnMut(&str) -> Result<Tensor>,
) -> Result<()> {
    let variables: BTreeMap<String, Tensor> = vs
        .variables()
        .into_iter()
        .filter_map(|(name, var)| strip(&name, prefix).map(|key| (key.to_string(), var)))
        .collect();

    let mut problems = StateDictProblems::default();
    for (key, var) in &variables {
        match file.get(key) {
            None => problems.missing.push(key.clone()),
            Some((size, _)) if *size != var.size() => {
                problems.shapes.push(format!("`{key}`: {size:?} in the file, {:?} in the model", var.size()))
            }
            Some((_, float)) if *float != var.is_floating_point() => problems.kinds.push(format!(
                "`{key}`: {} in the file, {:?} in the model",
                if *float { "floating point" } else { "integer" },
                var.kind()
            )),
            Some(_) => {}
        }
    }
    let mut unexpected: Vec<&String> = file.keys().filter(|key| !variables.contains_key(*key)).collect();
    unexpected.retain(|key| !ignored(key, &variables));
    unexpected.sort();
    problems.unexpected = unexpected.into_iter().cloned().collect();
    if !problems.is_empty() {
        let (file, prefix) = (path.display().to_string(), prefix.to_owned());
        return Err(CheckpointError::StateDict { file, prefix, problems: Box::new(problems) }.into());
    }

    tch::no_grad(|| -> Result<()> {
        for (key, var) in &variables {
            let mut var = var.shallow_clone();
            var.f_copy_(&read(key)?)?;
        }
        Ok(())
    })
}

/// `name` without `prefix.` (or `name` itself for an empty prefix); `None` when it is not under it.
fn strip<'n>(name: &'n str, prefix: &str) -> Option<&'n str> {
    if prefix.is_empty() {
        return Some(name);
    }
    name.strip_prefix(prefix)?.strip_prefix('.')
}

/// Whether `key` is the `num_batches_tracked` of a batch norm the model has.
fn is_tracked_count(key: &str, variables: &BTreeMap<String, Tensor>) -> bool {
    let Some(module) = key.strip_suffix(NUM_BATCHES_TRACKED) else {
        return false;
    };
    variables.contains_key(&format!("{module}running_mean"))
}
