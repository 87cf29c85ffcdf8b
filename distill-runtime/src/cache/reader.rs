//! [`TeacherCache`]: a written cache, opened for training from its memory-mapped shards.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::tensor::Dtype;
use tch::{Kind, Tensor};

use super::augment::VIEW_PARAMS;
use super::batch::CachedBatch;
use super::files::cache_error;
use super::hash::TeacherHash;
use super::listed::{locate, Listed};
use super::manifest::{record_bytes, Encoding, Manifest, MANIFEST_FILE, TOP_K_INDEX_KIND};
use super::mapped::{tensor_bytes_mut, ShardSet};
use super::prefetch::Prefetch;
use crate::cache::CacheError;
use crate::criterion::TeacherEncoding;
use crate::endpoint::ResolvedEndpoint;
use crate::error::{DistillError, Result};
use crate::point::Side;
use crate::side::{SideModel, SideResolver};
use crate::Captured;

/// A teacher cache opened for reading: its manifest, and its shards memory-mapped.
///
/// Opening reads the manifest and each shard's safetensors header only; a batch copies its samples'
/// records straight from the mapped files, so the process holds the batch, not the cache: a cache
/// larger than memory reads like a small one. The pages a batch touches stay mapped until they
/// exceed the [resident limit](Self::with_resident_limit) (128 MiB by default), and are then
/// released to the operating system's page cache, from which later batches map them again without
/// reading the disk. How the shards are checked (their checksum on first read, their length before
/// and their identity and times after every read) is described under [`open`](Self::open).
///
/// As a side of a distillation, a `TeacherCache` stands for the teacher: `Mapping::new(&student,
/// &cache)` checks teacher endpoints against the stored ones, and `DistillModel::forward_cached`
/// reads them from a [`CachedBatch`].
#[derive(Debug)]
pub struct TeacherCache {
    store: Store,
}

/// The mapped shards and where each stored tensor is in them, shared with a prefetching thread.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) dir: PathBuf,
    pub(crate) manifest: Arc<Manifest>,
    shards: Arc<ShardSet>,
    layout: Arc<Layout>,
}

/// Where the records of each stored tensor are.
#[derive(Debug)]
struct Layout {
    /// Shard indices by increasing first sample, with each one's `start..end`.
    order: Vec<(usize, usize, usize)>,
    /// One column per stored endpoint (for top-k logits, the log-probabilities).
    endpoints: Vec<Column>,
    /// For each top-k endpoint, its class indices.
    indices: Vec<Option<Column>>,
    /// The views' parameters.
    params: Column,
}

/// A `[samples, views, …]` tensor stored in every shard: one record per sample and view.
#[derive(Debug)]
struct Column {
    kind: Kind,
    /// The shape of one record.
    shape: Vec<i64>,
    /// Bytes per record.
    record: usize,
    /// Per shard (manifest order), the offset of the tensor in the file.
    offsets: Vec<usize>,
}

impl TeacherCache {
    /// Opens the cache in `dir`: reads its manifest, maps every shard and reads their headers.
    ///
    /// Checked on open: the manifest's shards cover the samples `0..num_samples` exactly once and it
    /// stores at least one view; every shard exists, and its safetensors header accounts for its
    /// length exactly and holds the tensors, shapes and dtypes the manifest says; and each shard
    /// that records the hash of the manifest it was written for (every shard of layout version 3)
    /// was written for this very manifest, whatever layout version the manifest declares, so a
    /// manifest edited after the fact — its augmentation, its sample count, its version — is refused.
    /// A manifest of layout version 3 needs every shard to record it; shards of versions 1 and 2,
    /// which record nothing, are read without this check. This reads the first pages of each file,
    /// not the cache.
    ///
    /// Checked on read: each shard's CRC-32 (layout version 3) the first time a batch touches it
    /// (one pass over the shard at several GB/s from the page cache; [`verify`](Self::verify) checks
    /// every shard now); before every batch, that the shards it reads are no shorter than when
    /// opened; after it, before the batch is returned, that their paths still name the files opened
    /// and those have their length, modification and change times of then: a shard truncated,
    /// rewritten, replaced or removed while a job reads it is a [`DistillError::Corrupt`] naming it,
    /// never a crash or other data. A file renamed over a shard (as the cache writer replaces files)
    /// leaves the opened file mapped and intact, but the batch is refused all the same: the
    /// directory no longer holds what the job reads, and reopening the cache reads the new one.
    ///
    /// # Errors
    /// [`CacheError::Incomplete`] naming the first shard that is missing (its writer did not
    /// finish); [`DistillError::Corrupt`] naming a shard whose header cannot be read, or the manifest
    /// when it is not the one the shards were written for; [`CacheError::File`](crate::cache::CacheError::File) for a shard that
    /// does not hold what the manifest says.
    pub fn open(dir: impl AsRef<Path>) -> Result<TeacherCache> {
        let dir = dir.as_ref();
        let manifest = Manifest::load(dir)?;
        let count = manifest.shards.len();
        // Shards of layout 3 record the manifest's hash; older ones are checked only if they do.
        let current = manifest.format >= 3;
        let identity = manifest.identity()?;
        let views = manifest.views as i64;
        let mut shards = Vec::with_capacity(count);
        let column = |kind: Kind, shape: Vec<i64>| -> Result<Column> {
            // Checked (a hand-made manifest of any layout can give any shape): an error, not an
            // overflow, for a record no file can hold.
            let record = record_bytes(kind, &shape).ok_or_else(|| {
                cache_error(&dir.join(MANIFEST_FILE), format!("a record of {kind:?} {shape:?} does not fit in memory"))
            })?;
            Ok(Column { kind, record, shape, offsets: Vec::with_capacity(count) })
        };
        let mut endpoints: Vec<Column> = manifest
            .endpoints
            .iter()
            .map(|e| column(e.encoding.kind(), e.encoding.stored_shape(&e.shape)))
            .collect::<Result<_>>()?;
        let mut indices: Vec<Option<Column>> = manifest
            .endpoints
            .iter()
            .map(|e| match e.encoding {
                Encoding::TopK { k, .. } => column(TOP_K_INDEX_KIND, vec![k]).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        let mut params = column(Kind::Int64, vec![VIEW_PARAMS as i64])?;
        for (index, entry) in manifest.shards.iter().enumerate() {
            let path = dir.join(&entry.file);
            let listed = Listed { dir, file: &entry.file, index, count };
            let shard = listed.open(&identity, current, MANIFEST_FILE)?;
            let len = (entry.end - entry.start) as i64;
            let locate = |name: &str, column: &mut Column| -> Result<()> {
                let dtype =
                    Dtype::try_from(column.kind).map_err(|_| cache_error(&path, format!("`{name}`: no dtype")))?;
                let shape: Vec<usize> =
                    [vec![len, views], column.shape.clone()].concat().iter().map(|&d| d as usize).collect();
                column.offsets.push(locate(&shard, &path, name, dtype, &shape)?);
                Ok(())
            };
            locate("views", &mut params)?;
            for (j, (stored, stored_indices)) in endpoints.iter_mut().zip(&mut indices).enumerate() {
                locate(&format!("endpoint.{j}"), stored)?;
                if let Some(stored_indices) = stored_indices {
                    locate(&format!("endpoint.{j}.indices"), stored_indices)?;
                }
            }
            shards.push(Some(shard));
        }
        let mut order: Vec<(usize, usize, usize)> =
            manifest.shards.iter().enumerate().map(|(i, s)| (i, s.start, s.end)).collect();
        order.sort_by_key(|&(_, start, _)| start);
        let store = Store {
            dir: dir.to_path_buf(),
            manifest: Arc::new(manifest),
            shards: Arc::new(ShardSet::new(shards)),
            layout: Arc::new(Layout { order, endpoints, indices, params }),
        };
        Ok(TeacherCache { store })
    }

    /// This cache with at most `bytes` of its mapped pages resident in the process before they are
    /// released to the page cache (default [`DEFAULT_RESIDENT_LIMIT`](super::DEFAULT_RESIDENT_LIMIT),
    /// 128 MiB). A cache no larger than the limit stays mapped whole once read; `usize::MAX` never
    /// releases. Shared with the readers of [`prefetch`](Self::prefetch).
    pub fn with_resident_limit(self, bytes: usize) -> TeacherCache {
        self.store.shards.set_limit(bytes);
        self
    }

    /// Verifies every shard's CRC-32 now: one pass over the whole cache (its pages are released as
    /// they are hashed), each call, including over shards a batch verified already. A shard that
    /// fails it fails every later batch that reads it.
    ///
    /// # Errors
    /// [`DistillError::Corrupt`] naming the first shard whose bytes do not match its checksum, that
    /// changed since the cache was opened, or that failed an earlier verification.
    pub fn verify(&self) -> Result<()> {
        self.store.shards.verify_all()
    }

    /// The cache's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.store.manifest
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
    ///
    /// # Errors
    /// [`CacheError`](crate::cache::CacheError) for ids that are not integers `[B]` in the cache;
    /// [`DistillError::Corrupt`] for a shard that fails its checksum or changed since the cache was
    /// opened (see [`open`](Self::open)).
    pub fn batch(&self, ids: &Tensor, epoch: usize) -> Result<CachedBatch> {
        self.store.batch(ids, epoch)
    }

    /// A reader that gathers the batches `ids` (one id tensor per batch, in training order) of
    /// `epoch` on a background thread, up to `depth` batches ahead of the training loop.
    pub fn prefetch(&self, ids: Vec<Tensor>, epoch: usize, depth: usize) -> Prefetch {
        let store = self.store.shallow_clone();
        let mut ids = ids.into_iter();
        Prefetch::start(depth, move || ids.next().map(|batch_ids| store.batch(&batch_ids, epoch)))
    }
}

impl Store {
    pub(crate) fn shallow_clone(&self) -> Store {
        Store {
            dir: self.dir.clone(),
            manifest: Arc::clone(&self.manifest),
            shards: Arc::clone(&self.shards),
            layout: Arc::clone(&self.layout),
        }
    }

    pub(crate) fn mismatch(&self, what: &str, cached: String, expected: String) -> DistillError {
        DistillError::CacheMismatch { dir: self.dir.display().to_string(), what: what.to_owned(), cached, expected }
    }

    /// The shard holding sample `id` (in the cache), and the sample's row in it.
    fn locate(&self, id: usize) -> (usize, usize) {
        let order = &self.layout.order;
        let at = order.partition_point(|&(_, start, _)| start <= id).saturating_sub(1);
        let (shard, start, _) = order[at];
        (shard, id - start)
    }

    pub(crate) fn batch(&self, ids: &Tensor, epoch: usize) -> Result<CachedBatch> {
        if ids.is_floating_point() || ids.kind() == Kind::Bool || ids.is_complex() {
            return Err(CacheError::IdKind { kind: ids.kind() }.into());
        }
        if ids.dim() != 1 {
            return Err(CacheError::IdShape { shape: ids.size() }.into());
        }
        let ids = ids.f_to_device(tch::Device::Cpu)?.f_to_kind(Kind::Int64)?;
        let n = self.manifest.num_samples as i64;
        let list = Vec::<i64>::try_from(&ids)?;
        if let Some(bad) = list.iter().find(|&&id| id < 0 || id >= n) {
            let (id, dir, count) = (*bad, self.dir.display().to_string(), self.manifest.num_samples);
            return Err(CacheError::SampleNotCached { id, dir, count }.into());
        }
        let view = epoch % self.manifest.views;
        let views = self.manifest.views;
        let rows: Vec<(usize, usize)> = list.iter().map(|&id| self.locate(id as usize)).collect();
        let mut touched: Vec<usize> = rows.iter().map(|&(shard, _)| shard).collect();
        touched.sort_unstable();
        touched.dedup();
        let reader = self.shards.reader(&touched)?;
        let batch = list.len() as i64;
        let gather = |column: &Column| -> Result<Tensor> {
            let size = [vec![batch], column.shape.clone()].concat();
            let mut out = Tensor::f_empty(size, (column.kind, tch::Device::Cpu))?;
            // SAFETY: a new contiguous CPU tensor, filled here before anything else sees it.
            let bytes = unsafe { tensor_bytes_mut(&mut out) };
            let records: Vec<(usize, usize)> = rows
                .iter()
                .map(|&(shard, row)| (shard, column.offsets[shard] + (row * views + view) * column.record))
                .collect();
            reader.copy_records(&records, bytes);
            Ok(out)
        };
        let stored: Vec<Tensor> = self.layout.endpoints.iter().map(gather).collect::<Result<_>>()?;
        let stored_indices: Vec<Option<Tensor>> =
            self.layout.indices.iter().map(|column| column.as_ref().map(gather).transpose()).collect::<Result<_>>()?;
        let params = gather(&self.layout.params)?;
        // Nothing copied is used unless every shard read is still the file opened.
        reader.finish()?;
        // Top-k logits are read as the packed `[B, 2, k]` tensor that `TopKKlDiv` reads: the
        // log-probabilities, then the class indices as floats (exact: at most 2^24 classes).
        let tensors = stored
            .into_iter()
            .zip(stored_indices)
            .map(|(values, indices)| {
                let values = values.f_to_kind(Kind::Float)?;
                Ok(match indices {
                    Some(indices) => Tensor::f_stack(&[values, indices.f_to_kind(Kind::Float)?], 1)?,
                    None => values,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CachedBatch::new(self.dir.clone(), Arc::clone(&self.manifest), ids, view, tensors, params))
    }
}

impl SideModel for TeacherCache {
    fn resolver(&self, side: Side) -> SideResolver<'_> {
        SideResolver::own(self, move |endpoint| {
            super::batch::resolve_stored(&self.store.manifest, &self.store.dir, side, endpoint)
        })
    }

    fn check_encoding(&self, label: &str, endpoint: &ResolvedEndpoint, reads: TeacherEncoding) -> Result<()> {
        super::batch::check_stored_encoding(&self.store.dir, &self.store.manifest, label, endpoint, reads)
    }

    fn run(&self, _xs: &Tensor, _train: bool, _endpoints: &[ResolvedEndpoint]) -> Result<(Tensor, Vec<Captured>)> {
        Err(CacheError::TeacherCacheDoesNotRun.into())
    }
}
