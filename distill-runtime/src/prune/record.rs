//! [`PruneRecord`]: the kept channels of a model's pruned convs, by module path, saved beside a
//! checkpoint and attached again to a student built fresh.

use std::collections::BTreeMap;
use std::path::Path;

use tch::{Kind, Tensor};

use super::{PruneError, RecordProblem};
use crate::channels::KeptChannels;
use crate::error::{DistillError, Result};
use crate::nn::Conv;

/// The metadata [`PruneRecord::save`] marks its file with: read without its checksum, a file so
/// marked is refused (see [`crate::checksum`]).
const MARKER: (&str, &str) = ("distill.record", "prune");

/// Suffixes of the three tensors a layer's record is saved as, after its module path and a `/`.
const SOURCE_SHAPE: &str = "source_shape";
const KEPT_OUTPUT: &str = "kept_output";
const KEPT_INPUT: &str = "kept_input";

/// The kept channels of a model's channel-pruned convs, by module path (`"features.1.conv"`).
///
/// Pruning is done once; training changes the student's weights, after which they no longer show
/// which teacher channels the student kept. The pruned convs carry their record
/// ([`Conv::pruned_from`]); this collects them so they can be saved with the student's checkpoint and
/// attached to a student built fresh — build, attach, `Kd::new`, `vs.load`:
///
/// ```no_run
/// # extern crate distill_runtime as distill;
/// # fn main() -> Result<(), distill::DistillError> {
/// use distill::{nn, prune};
/// # let (teacher_vs, vs) = (nn::VarStore::new(tch::Device::Cpu), nn::VarStore::new(tch::Device::Cpu));
/// let teacher = nn::conv2d(teacher_vs.root() / "conv", 3, 64, 3, Default::default());
/// let keep = prune::l1_keep(&teacher.ws, 16)?;
/// let student = prune::prune_conv2d(vs.root() / "conv", &teacher, &keep, None)?;
/// let mut record = prune::PruneRecord::new();
/// record.insert_conv("conv", &student)?;
/// record.save("student.prune.safetensors")?;
///
/// // Later: the same architecture built fresh, its record attached before the adapters are built.
/// let mut fresh = nn::conv2d(vs.root() / "fresh", 3, 16, 3, Default::default());
/// prune::PruneRecord::load("student.prune.safetensors")?.attach("conv", &mut fresh)?;
/// assert_eq!(fresh.pruned_from().map(|kept| kept.output()), Some(keep.as_slice()));
/// # Ok(()) }
/// ```
///
/// The file is a safetensors file of `i64` tensors, three per layer: `<path>/source_shape`,
/// `<path>/kept_output` and `<path>/kept_input`; its metadata holds their checksum and
/// `"distill.record": "prune"`.
///
/// [`Conv::pruned_from`]: crate::nn::Conv::pruned_from
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneRecord {
    layers: BTreeMap<String, KeptChannels>,
}

impl PruneRecord {
    /// An empty record.
    pub fn new() -> PruneRecord {
        PruneRecord::default()
    }

    /// Records `kept` for the layer at `path`, returning the record it replaces.
    ///
    /// # Errors
    /// [`PruneError::PathWithSlash`] when `path` contains `/` (the separator of the saved names).
    pub fn insert(&mut self, path: impl Into<String>, kept: KeptChannels) -> Result<Option<KeptChannels>> {
        let path = path.into();
        if path.contains('/') {
            return Err(PruneError::PathWithSlash { path }.into());
        }
        Ok(self.layers.insert(path, kept))
    }

    /// Records the kept channels that the pruned `conv` carries, for the layer at `path`.
    ///
    /// # Errors
    /// [`PruneError::NotPruned`] when `conv` carries no record (it was not made by
    /// `prune_conv2d`, nor given one), or as [`insert`](Self::insert).
    pub fn insert_conv<ND>(&mut self, path: impl Into<String>, conv: &Conv<ND>) -> Result<()> {
        let path = path.into();
        let Some(kept) = conv.pruned_from() else {
            return Err(PruneError::NotPruned { path }.into());
        };
        self.insert(path, kept.clone())?;
        Ok(())
    }

    /// The record of the layer at `path`, if any.
    pub fn get(&self, path: &str) -> Option<&KeptChannels> {
        self.layers.get(path)
    }

    /// Attaches the record of the layer at `path` to `conv` ([`Conv::set_pruned_from`]).
    ///
    /// # Errors
    /// [`PruneError::UnknownLayer`] when there is no record for `path` (the message lists the recorded
    /// paths), [`PruneError::Attach`] when it does not fit `conv`'s weight shape.
    ///
    /// [`Conv::set_pruned_from`]: crate::nn::Conv::set_pruned_from
    pub fn attach<ND>(&self, path: &str, conv: &mut Conv<ND>) -> Result<()> {
        let Some(kept) = self.layers.get(path) else {
            let known = self.layers.keys().cloned().collect();
            return Err(PruneError::UnknownLayer { path: path.to_owned(), known }.into());
        };
        conv.set_pruned_from(kept.clone())
            .map_err(|err| PruneError::Attach { path: path.to_owned(), source: Box::new(err) }.into())
    }

    /// The recorded layers, by path in lexicographic order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &KeptChannels)> {
        self.layers.iter().map(|(path, kept)| (path.as_str(), kept))
    }

    /// The number of recorded layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether no layer is recorded.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Writes the record to `file` (safetensors; see the type's documentation), atomically (a
    /// temporary file renamed over `file` once on disk) and with a checksum.
    ///
    /// # Errors
    /// [`DistillError::Io`] when the file cannot be written.
    pub fn save(&self, file: impl AsRef<Path>) -> Result<()> {
        let mut tensors = Vec::with_capacity(3 * self.layers.len());
        for (path, kept) in &self.layers {
            tensors.push((format!("{path}/{SOURCE_SHAPE}"), Tensor::from_slice(kept.source_shape())));
            tensors.push((format!("{path}/{KEPT_OUTPUT}"), Tensor::from_slice(kept.output())));
            tensors.push((format!("{path}/{KEPT_INPUT}"), Tensor::from_slice(kept.input())));
        }
        let metadata = BTreeMap::from([(MARKER.0.to_owned(), MARKER.1.to_owned())]);
        crate::checksum::write(file.as_ref(), &tensors, metadata)
    }

    /// Reads a record written by [`save`](Self::save), checking every layer's record.
    ///
    /// # Errors
    /// [`DistillError::Io`] when the file cannot be read; [`DistillError::Corrupt`] naming the file
    /// when it does not match its checksum, or has none although its metadata says this library
    /// wrote it (a file without this library's metadata, written by other tools, is read
    /// unchecked); [`PruneError::NotARecord`] naming the file when a tensor is unexpected or
    /// missing, or a record is invalid.
    pub fn load(file: impl AsRef<Path>) -> Result<PruneRecord> {
        let file = file.as_ref();
        let bad = |problem| DistillError::from(PruneError::NotARecord { file: file.display().to_string(), problem });
        let mut parts: BTreeMap<String, [Option<Vec<i64>>; 3]> = BTreeMap::new();
        for (name, tensor) in crate::checksum::read(file, crate::checksum::Missing::Accept)?.tensors {
            let Some((path, part)) = name.rsplit_once('/') else {
                return Err(bad(RecordProblem::UnexpectedTensor { name }));
            };
            let slot = match part {
                SOURCE_SHAPE => 0,
                KEPT_OUTPUT => 1,
                KEPT_INPUT => 2,
                _ => return Err(bad(RecordProblem::UnexpectedTensor { name })),
            };
            if tensor.kind() != Kind::Int64 || tensor.dim() != 1 {
                return Err(bad(RecordProblem::NotIndices { name }));
            }
            parts.entry(path.to_owned()).or_default()[slot] = Some(Vec::<i64>::try_from(&tensor)?);
        }
        let mut record = PruneRecord::new();
        for (path, [shape, output, input]) in parts {
            let (Some(shape), Some(output), Some(input)) = (shape, output, input) else {
                return Err(bad(RecordProblem::Incomplete { path }));
            };
            let invalid = |err| bad(RecordProblem::InvalidLayer { path: path.clone(), source: Box::new(err) });
            let kept = KeptChannels::new(&shape, output, input).map_err(invalid)?;
            // A path that `save` could not have written (one with a `/`) is the file's problem too.
            record.insert(path.clone(), kept).map_err(invalid)?;
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_loads_and_rejects_foreign_files() {
        let dir = std::env::temp_dir().join(format!("distill-prune-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut record = PruneRecord::new();
        record.insert("features.0.conv", KeptChannels::new(&[8, 3, 3, 3], vec![5, 1], vec![0, 1, 2]).unwrap()).unwrap();
        record.insert("features.1.conv", KeptChannels::new(&[16, 8, 1, 1], vec![0], vec![5, 1]).unwrap()).unwrap();
        assert!(record.insert("a/b", KeptChannels::new(&[1, 1], vec![0], vec![0]).unwrap()).is_err());
        let file = dir.join("record.safetensors");
        record.save(&file).unwrap();
        assert_eq!(PruneRecord::load(&file).unwrap(), record);

        let foreign = dir.join("foreign.safetensors");
        Tensor::write_safetensors(&[("weight", Tensor::from_slice(&[1.0f32]))], &foreign).unwrap();
        let err = PruneRecord::load(&foreign).unwrap_err().to_string();
        assert!(err.contains("foreign.safetensors") && err.contains("`weight`"), "{err}");
        Tensor::write_safetensors(&[("conv/kept_output", Tensor::from_slice(&[1i64]))], &foreign).unwrap();
        let err = PruneRecord::load(&foreign).unwrap_err().to_string();
        assert!(err.contains("`conv`") && err.contains("incomplete"), "{err}");
        let layer = |path: &str, part: &str, values: &[i64]| (format!("{path}/{part}"), Tensor::from_slice(values));
        let slashed =
            [layer("a/b", SOURCE_SHAPE, &[1, 1]), layer("a/b", KEPT_OUTPUT, &[0]), layer("a/b", KEPT_INPUT, &[0])];
        Tensor::write_safetensors(&slashed, &foreign).unwrap();
        let err = PruneRecord::load(&foreign).unwrap_err();
        assert!(
            matches!(&err, DistillError::Prune(PruneError::NotARecord { problem: RecordProblem::InvalidLayer { path, .. }, .. }) if path == "a/b"),
            "{err:?}"
        );
        assert!(err.to_string().contains("foreign.safetensors"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
