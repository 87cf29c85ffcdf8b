//! [`TeacherHash`]: which teacher weights a cache was written with.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};
use tch::{Kind, Tensor};

use super::files::cache_source;
use crate::cache::CacheError;
use crate::error::Result;

/// The SHA-256 of a teacher's weights, recorded in a cache's manifest and compared when reading.
///
/// [`of_tensors`](Self::of_tensors) hashes, in name order, every variable's name, shape, dtype and
/// bytes (0-dim variables included); [`of_file`](Self::of_file) hashes a weights file as it is on disk. Both are shown as
/// `sha256:<hex>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TeacherHash(String);

impl TeacherHash {
    /// The hash of named tensors (a `VarStore`'s variables, a TorchScript module's
    /// `named_parameters`), independent of their order.
    pub fn of_tensors<'t, I, S>(named: I) -> Result<TeacherHash>
    where
        I: IntoIterator<Item = (S, &'t Tensor)>,
        S: AsRef<str>,
    {
        let mut named: Vec<(String, &Tensor)> = named.into_iter().map(|(n, t)| (n.as_ref().to_owned(), t)).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut hasher = Sha256::new();
        for (name, tensor) in named {
            hasher.update((name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
            let size = tensor.size();
            hasher.update((size.len() as u64).to_le_bytes());
            for dim in &size {
                hasher.update(dim.to_le_bytes());
            }
            let kind = format!("{:?}", tensor.kind());
            hasher.update((kind.len() as u64).to_le_bytes());
            hasher.update(kind.as_bytes());
            // Flattened before the bytes are viewed: libtorch cannot view a 0-dim tensor (a learnable
            // scalar) as bytes when its elements are wider than one byte. Flattening a contiguous
            // tensor keeps its bytes and their order, so every other tensor hashes as it always has.
            let bytes = tch::no_grad(|| {
                tensor.f_to_device(tch::Device::Cpu)?.f_contiguous()?.f_reshape([-1])?.f_view_dtype(Kind::Uint8)
            })?;
            hasher.update(Vec::<u8>::try_from(&bytes)?);
        }
        Ok(TeacherHash::from_digest(hasher.finalize().as_slice()))
    }

    /// The hash of every variable of `vs` (a VarStore that holds the teacher only).
    pub fn of_var_store(vs: &tch::nn::VarStore) -> Result<TeacherHash> {
        let variables = vs.variables();
        TeacherHash::of_tensors(variables.iter().map(|(name, tensor)| (name.as_str(), tensor)))
    }

    /// The hash of a TorchScript teacher's `named_parameters`. A module loaded with
    /// `jit::Module::load_trainable` keeps its parameters in the VarStore it was given: hash that
    /// with [`of_var_store`](Self::of_var_store).
    pub fn of_jit(module: &crate::jit::Module) -> Result<TeacherHash> {
        let parameters = module.frozen_parameters().ok_or(CacheError::TrainableTorchScript)??;
        TeacherHash::of_tensors(parameters.iter().map(|(name, tensor)| (name.as_str(), tensor)))
    }

    /// The hash of a weights file's bytes (e.g. the teacher's `.safetensors` or `.pt`).
    pub fn of_file(path: impl AsRef<Path>) -> Result<TeacherHash> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| cache_source(path, "cannot read the file to hash", e))?;
        Ok(TeacherHash::from_digest(Sha256::digest(&bytes).as_slice()))
    }

    /// A hash given as text, e.g. one printed by an earlier run (`sha256:…`).
    pub fn from_text(text: impl Into<String>) -> TeacherHash {
        TeacherHash(text.into())
    }

    /// The hash as the manifest stores it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_digest(digest: &[u8]) -> TeacherHash {
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        TeacherHash(format!("sha256:{hex}"))
    }
}

impl fmt::Display for TeacherHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
