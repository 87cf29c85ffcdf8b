//! [`TeacherCache`]: a written cache, loaded for training.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tch::{Kind, Tensor};

use super::augment::VIEW_PARAMS;
use super::batch::CachedBatch;
use super::files::cache_error;
use super::hash::TeacherHash;
use super::manifest::{Encoding, Manifest, MANIFEST_FILE, TOP_K_INDEX_KIND};
use super::prefetch::Prefetch;
use super::writer::MANIFEST_KEY;
use crate::checksum::Missing;
use crate::endpoint::ResolvedEndpoint;
use crate::error::{DistillError, Result};
use crate::point::Side;
use crate::side::{SideModel, SideResolver};
use crate::Captured;

/// A teacher cache opened for reading: the manifest, and every shard's tensors in memory.
///
/// Shards are read fully into memory when the cache is opened (not memory-mapped): a training loop
/// asks for batches of arbitrary sample ids in a shuffled order, which in memory is one gather per
/// endpoint, and the file is then closed, so a writer may replace it later without affecting a
/// running job. A cache larger than memory should be split into several caches over subsets.
///
/// As a side of a distillation, a `TeacherCache` stands for the teacher: `Mapping::new(&student,
/// &cache)` checks teacher endpoints against the stored ones, and `DistillModel::forward_cached`
/// reads them from a [`CachedBatch`].
#[derive(Debug)]
pub struct TeacherCache {
    store: Store,
}

/// The loaded tensors, shared (shallowly) with a prefetching thread.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) dir: PathBuf,
    pub(crate) manifest: Arc<Manifest>,
    /// One `[num_samples, views, …]` tensor per stored endpoint (for top-k logits, the
    /// `[num_samples, views, k]` log-probabilities).
    endpoints: Vec<Tensor>,
    /// For each top-k endpoint, its `[num_samples, views, k]` class indices.
    indices: Vec<Option<Tensor>>,
    /// `[num_samples, views, VIEW_PARAMS]`.
    params: Tensor,
}

impl TeacherCache {
    /// Opens the cache in `dir`: reads its manifest and every shard, and verifies them.
    ///
    /// Verified on open: the manifest's shards cover the samples `0..num_samples` exactly once and
    /// it stores at least one view; each shard's tensors have the names, shapes and dtypes the
    /// manifest says; and (layout version 3) each shard's CRC-32 matches its tensors and the shard
    /// was written for this very manifest (the hash of the manifest it records), so a manifest
    /// edited after the fact — its augmentation, its sample count — is refused. The CRC-32 costs one
    /// pass over the bytes read, at several GB/s, small next to reading them from disk.
    ///
    /// # Errors
    /// [`DistillError::CacheIncomplete`] naming the first shard that is missing (its writer did not
    /// finish); [`DistillError::Corrupt`] naming a shard whose bytes do not match its checksum, or
    /// the manifest when it is not the one the shards were written for; [`DistillError::Cache`] for
    /// a file that cannot be read or does not hold what the manifest says.
    pub fn open(dir: impl AsRef<Path>) -> Result<TeacherCache> {
        let dir = dir.as_ref();
        let manifest = Manifest::load(dir)?;
        let shards = manifest.shards.len();
        let checked = manifest.format >= 3;
        let identity = manifest.identity()?;
        // Each shard is copied into tensors for the whole cache and dropped before the next is read,
        // so reading needs the cache's size plus one shard, not twice the cache.
        let whole = |shape: &[i64], kind: Kind| {
            let size = [vec![manifest.num_samples as i64, manifest.views as i64], shape.to_vec()].concat();
            // Zeros, not uninitialised memory: the manifest's check that the shards cover every
            // sample exactly once means each value is overwritten, and nothing else is ever read.
            Tensor::f_zeros(size, (kind, tch::Device::Cpu))
        };
        let endpoints = manifest
            .endpoints
            .iter()
            .map(|e| whole(&e.encoding.stored_shape(&e.shape), e.encoding.kind()))
            .collect::<Result<Vec<_>, _>>()?;
        let indices = manifest
            .endpoints
            .iter()
            .map(|e| match e.encoding {
                Encoding::TopK { k, .. } => whole(&[k], TOP_K_INDEX_KIND).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let params = whole(&[VIEW_PARAMS as i64], Kind::Int64)?;
        for (index, shard) in manifest.shards.iter().enumerate() {
            let path = dir.join(&shard.file);
            if shard.start > shard.end || shard.end > manifest.num_samples {
                return Err(cache_error(
                    &path,
                    format!("samples {}..{} are not in 0..{}", shard.start, shard.end, manifest.num_samples),
                ));
            }
            if !path.exists() {
                return Err(DistillError::CacheIncomplete { dir: dir.display().to_string(), shard: index, shards });
            }
            let missing = if checked { Missing::Refuse } else { Missing::Accept };
            let read = crate::checksum::read(&path, missing)?;
            if checked && read.metadata.get(MANIFEST_KEY) != Some(&identity) {
                return Err(DistillError::Corrupt {
                    file: dir.join(MANIFEST_FILE).display().to_string(),
                    reason: format!(
                        "it is not the manifest the shard `{}` was written for (that one hashed to {}, this one to                          {identity}): it was edited after the cache was written; write the cache again",
                        shard.file,
                        read.metadata.get(MANIFEST_KEY).map_or("nothing", String::as_str)
                    ),
                });
            }
            let mut tensors: HashMap<String, Tensor> = read.tensors.into_iter().collect();
            let len = (shard.end - shard.start) as i64;
            let views = manifest.views as i64;
            let mut take = |name: &str, shape: Vec<i64>, kind: Kind| {
                let tensor = tensors.remove(name).ok_or_else(|| cache_error(&path, format!("no tensor `{name}`")))?;
                if tensor.size() != shape || tensor.kind() != kind {
                    return Err(cache_error(
                        &path,
                        format!(
                            "`{name}` is {:?} {:?}, the manifest says {kind:?} {shape:?}",
                            tensor.kind(),
                            tensor.size()
                        ),
                    ));
                }
                Ok(tensor)
            };
            let start = shard.start as i64;
            let part = take("views", vec![len, views, VIEW_PARAMS as i64], Kind::Int64)?;
            params.f_narrow(0, start, len)?.f_copy_(&part)?;
            for (j, ((entry, stored), stored_indices)) in
                manifest.endpoints.iter().zip(&endpoints).zip(&indices).enumerate()
            {
                let shape = [vec![len, views], entry.encoding.stored_shape(&entry.shape)].concat();
                let part = take(&format!("endpoint.{j}"), shape.clone(), entry.encoding.kind())?;
                stored.f_narrow(0, start, len)?.f_copy_(&part)?;
                if let Some(stored_indices) = stored_indices {
                    let part = take(&format!("endpoint.{j}.indices"), shape, TOP_K_INDEX_KIND)?;
                    stored_indices.f_narrow(0, start, len)?.f_copy_(&part)?;
                }
            }
        }
        let store = Store { dir: dir.to_path_buf(), manifest: Arc::new(manifest), endpoints, indices, params };
        Ok(TeacherCache { store })
    }

    /// The cache's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.store.manifest
    }

    /// The directory the cache was read from.
    pub fn dir(&self) -> &Path {
        &self.store.dir
    }

    /// Checks that the cache was written with the teacher weights that hash to `expected`.
    ///
    /// # Errors
    /// [`DistillError::CacheMismatch`] showing both hashes.
    pub fn check_teacher(&self, expected: &TeacherHash) -> Result<()> {
        if self.manifest().teacher_hash == expected.as_str() {
            Ok(())
        } else {
            Err(self.store.mismatch(
                "the teacher weights' hash",
                self.manifest().teacher_hash.clone(),
                expected.to_string(),
            ))
        }
    }

    /// The stored captures of the samples `ids` (an integer tensor `[B]`, in the order the batch
    /// is trained in) for `epoch`, which reads view `epoch % views`.
    pub fn batch(&self, ids: &Tensor, epoch: usize) -> Result<CachedBatch> {
        self.store.batch(ids, epoch)
    }

    /// A reader that gathers the batches `ids` (one id tensor per batch, in training order) of
    /// `epoch` on a background thread, up to `depth` batches ahead of the training loop.
    pub fn prefetch(&self, ids: Vec<Tensor>, epoch: usize, depth: usize) -> Prefetch {
        Prefetch::start(self.store.shallow_clone(), ids, epoch, depth)
    }
}

impl Store {
    pub(crate) fn shallow_clone(&self) -> Store {
        Store {
            dir: self.dir.clone(),
            manifest: Arc::clone(&self.manifest),
            endpoints: self.endpoints.iter().map(Tensor::shallow_clone).collect(),
            indices: self.indices.iter().map(|t| t.as_ref().map(Tensor::shallow_clone)).collect(),
            params: self.params.shallow_clone(),
        }
    }

    pub(crate) fn mismatch(&self, what: &str, cached: String, expected: String) -> DistillError {
        DistillError::CacheMismatch { dir: self.dir.display().to_string(), what: what.to_owned(), cached, expected }
    }

    pub(crate) fn batch(&self, ids: &Tensor, epoch: usize) -> Result<CachedBatch> {
        if ids.is_floating_point() || ids.kind() == Kind::Bool || ids.is_complex() {
            return Err(DistillError::InvalidArgument(format!(
                "sample ids must be integers, got a {:?} tensor (a float id would be truncated)",
                ids.kind()
            )));
        }
        if ids.dim() != 1 {
            return Err(DistillError::InvalidArgument(format!(
                "sample ids must be a 1-D tensor [B], got the shape {:?}",
                ids.size()
            )));
        }
        let ids = ids.f_to_device(tch::Device::Cpu)?.f_to_kind(Kind::Int64)?;
        let n = self.manifest.num_samples as i64;
        let list = Vec::<i64>::try_from(&ids)?;
        if let Some(bad) = list.iter().find(|&&id| id < 0 || id >= n) {
            return Err(DistillError::InvalidArgument(format!(
                "sample id {bad} is not in the teacher cache `{}` (ids 0..{n})",
                self.dir.display()
            )));
        }
        let view = (epoch % self.manifest.views) as i64;
        let gather = |stored: &Tensor| -> Result<Tensor> {
            Ok(stored.f_select(1, view)?.f_index_select(0, &ids)?.f_to_kind(Kind::Float)?)
        };
        // Top-k logits are read as the packed `[B, 2, k]` tensor that `TopKKlDiv` reads: the
        // log-probabilities, then the class indices as floats (exact: at most 2^24 classes).
        let tensors = self
            .endpoints
            .iter()
            .zip(&self.indices)
            .map(|(stored, indices)| match indices {
                Some(indices) => Ok(Tensor::f_stack(&[gather(stored)?, gather(indices)?], 1)?),
                None => gather(stored),
            })
            .collect::<Result<Vec<_>>>()?;
        let params = self.params.f_select(1, view)?.f_index_select(0, &ids)?;
        Ok(CachedBatch::new(self.dir.clone(), Arc::clone(&self.manifest), ids, view as usize, tensors, params))
    }
}

impl SideModel for TeacherCache {
    fn resolver(&self, side: Side) -> SideResolver<'_> {
        SideResolver::cached(self, &self.store.manifest, &self.store.dir, side)
    }

    fn run(&self, _xs: &Tensor, _train: bool, _endpoints: &[ResolvedEndpoint]) -> Result<(Tensor, Vec<Captured>)> {
        Err(DistillError::InvalidArgument(
            "a teacher cache does not run: call `forward_cached` (and `dry_run_cached`, to fit adapters and check \
             the pairs) with a batch from `TeacherCache::batch` or `TeacherCache::prefetch`"
                .to_owned(),
        ))
    }
}
