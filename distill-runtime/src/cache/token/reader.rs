//! [`TokenCache`]: a token cache opened for training, read through memory-mapped shards, and the
//! teacher side of one batch, [`CachedTokens`].

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use super::batch::{CachedTokens, TokenTeacher};
use super::manifest::{shard_tensors, IdWidth, TokenCacheSpec, TokenEncoding, TokenManifest};
use crate::cache::listed::{locate, Listed};
use crate::cache::mapped::{tensor_bytes_mut, MappedShard, Reader, ShardSet};
use crate::cache::CacheError;
use crate::cache::Prefetch;

use super::manifest::TOKEN_MANIFEST_FILE;
use crate::criterion::{SampledLogits, TopKTail};
use crate::error::{DistillError, Result};
use crate::rng::SplitMix64;

/// A token-level teacher cache opened for reading: the manifest, and the shards this reader reads
/// memory-mapped.
///
/// [`batch`](Self::batch) gives, for a batch of sequence ids, the teacher's encoding of every token
/// as the criteria take it — a [`TopKTail`] for [`TopKKl`](crate::criterion::TopKKl), a
/// [`SampledLogits`] for [`SampledKl`](crate::criterion::SampledKl) — with the token mask, in
/// [`CachedTokens`]. Each sequence's records are copied from the mapped shards; the process holds
/// the batch, not the cache (see [`TeacherCache`](crate::cache::TeacherCache) for the resident
/// limit and for how shards are checked: the same reader serves both caches).
///
/// A data-parallel rank opens the cache with [`open_rank`](Self::open_rank) and maps only its own
/// shards: rank `r` of `W` reads the `r`-th of `W` equal runs of shards, i.e. a contiguous `1/W` of
/// the sequence ids.
///
/// Cloning is cheap (the mapped shards are shared).
#[derive(Clone, Debug)]
pub struct TokenCache {
    pub(super) store: Arc<TokenStore>,
}

#[derive(Debug)]
pub(super) struct TokenStore {
    pub(super) dir: PathBuf,
    pub(super) manifest: TokenManifest,
    shards: ShardSet,
    /// The shards read, by increasing first sequence: `(index, start, end)`.
    order: Vec<(usize, usize, usize)>,
    /// Per shard (manifest order), the file offsets of its tensors in [`shard_tensors`] order:
    /// `ids`, `log_probs`, `tail`/`weights`, `valid`, then the hidden states (empty for a shard not
    /// read).
    offsets: Vec<Vec<usize>>,
    rank: Option<(usize, usize)>,
    sequences: Range<usize>,
    /// The most sequences any rank reads (every rank's epoch is padded to it).
    per_rank: usize,
}

impl TokenCache {
    /// Opens the cache in `dir` to read every sequence.
    ///
    /// Checked on open: the manifest's layout, sizes and encoding, and that its shards cover the
    /// sequences exactly once; every shard exists and its safetensors header accounts for its length
    /// and holds the tensors, shapes and dtypes the manifest says; every shard was written for this
    /// manifest; it holds at least one sequence. The CRC-32 of a shard is verified when a batch first
    /// reads it ([`verify`](Self::verify) checks them all now); before every batch its shards must be
    /// no shorter than when opened, and after it, before the batch is returned, still the files
    /// opened with their length and times of then. A cache for another teacher, tokenizer, dataset,
    /// shape or encoding is found by [`check`](Self::check).
    ///
    /// # Errors
    /// [`CacheError::Incomplete`](crate::cache::CacheError::Incomplete) naming the first missing shard; [`DistillError::Corrupt`]
    /// for a shard whose header cannot be read, that has no checksum, or that was written for
    /// another manifest (an edited manifest); [`CacheError::File`](crate::cache::CacheError::File) for a manifest that cannot be
    /// read or a shard that does not hold what it says.
    pub fn open(dir: impl AsRef<Path>) -> Result<TokenCache> {
        TokenCache::open_shards(dir.as_ref(), None)
    }

    /// Opens the shards of rank `rank` of `world_size` in `dir`: the `rank`-th of `world_size` equal
    /// runs of shards (contiguous sequence ids), checked as [`open`](Self::open) checks them; the
    /// other shards are not opened, and need not be on this machine.
    ///
    /// # Errors
    /// As [`open`](Self::open); [`CacheError::RankOutOfRange`](crate::cache::CacheError::RankOutOfRange) when `rank` is not below
    /// `world_size`, or the shard count is not a multiple of `world_size` (write the cache in
    /// `k · world_size` shards).
    pub fn open_rank(dir: impl AsRef<Path>, rank: usize, world_size: usize) -> Result<TokenCache> {
        TokenCache::open_shards(dir.as_ref(), Some((rank, world_size)))
    }

    fn open_shards(dir: &Path, rank: Option<(usize, usize)>) -> Result<TokenCache> {
        let manifest = TokenManifest::load(dir)?;
        let count = manifest.shards.len();
        let mut all: Vec<(usize, usize, usize)> =
            manifest.shards.iter().enumerate().map(|(i, s)| (i, s.start, s.end)).collect();
        all.sort_by_key(|&(_, start, _)| start);
        let (order, per_rank) = match rank {
            None => (all, manifest.num_sequences),
            Some((rank, world)) => {
                if world == 0 || rank >= world {
                    return Err(CacheError::RankOutOfRange { rank, world }.into());
                }
                if count % world != 0 {
                    let dir = dir.display().to_string();
                    return Err(CacheError::UnevenShards { dir, shards: count, world }.into());
                }
                let per = count / world;
                let sizes = all.chunks(per).map(|run| run.iter().map(|&(_, s, e)| e - s).sum::<usize>());
                let most = sizes.max().unwrap_or(0);
                (all[rank * per..(rank + 1) * per].to_vec(), most)
            }
        };
        let identity = manifest.identity()?;
        let mut shards: Vec<Option<MappedShard>> = (0..count).map(|_| None).collect();
        let mut offsets = vec![Vec::new(); count];
        for &(index, start, end) in &order {
            let entry = &manifest.shards[index];
            let path = dir.join(&entry.file);
            let listed = Listed { dir, file: &entry.file, index, count };
            let shard = listed.open(&identity, true, TOKEN_MANIFEST_FILE)?;
            for (name, dtype, shape) in shard_tensors(&manifest, end - start) {
                offsets[index].push(locate(&shard, &path, &name, dtype, &shape)?);
            }
            shards[index] = Some(shard);
        }
        let sequences = match (order.first(), order.last()) {
            (Some(&(_, start, _)), Some(&(_, _, end))) => start..end,
            _ => 0..0,
        };
        let store = TokenStore {
            dir: dir.to_path_buf(),
            manifest,
            shards: ShardSet::new(shards),
            order,
            offsets,
            rank,
            sequences,
            per_rank,
        };
        Ok(TokenCache { store: Arc::new(store) })
    }

    /// The cache's manifest.
    pub fn manifest(&self) -> &TokenManifest {
        &self.store.manifest
    }

    /// The sequence ids this reader reads: all of them, or its rank's.
    pub fn sequences(&self) -> Range<usize> {
        self.store.sequences.clone()
    }

    /// The rank and world size given to [`open_rank`](Self::open_rank), if any.
    pub fn rank(&self) -> Option<(usize, usize)> {
        self.store.rank
    }

    /// Checks that the cache is the one `spec` describes: teacher weights, tokenizer, token dataset,
    /// sequence count and length, vocabulary and encoding.
    ///
    /// # Errors
    /// [`DistillError::CacheMismatch`] naming the first difference, with both values.
    pub fn check(&self, spec: &TokenCacheSpec) -> Result<()> {
        match self.store.manifest.difference(spec) {
            None => Ok(()),
            Some((what, cached, expected)) => {
                Err(DistillError::CacheMismatch { dir: self.store.dir.display().to_string(), what, cached, expected })
            }
        }
    }

    /// Checks that a criterion at `temperature` reads the stored distributions at theirs.
    ///
    /// # Errors
    /// [`DistillError::CacheMismatch`] showing both temperatures.
    pub fn check_temperature(&self, temperature: f64) -> Result<()> {
        let stored = self.store.manifest.encoding.temperature();
        if stored == temperature {
            return Ok(());
        }
        Err(DistillError::CacheMismatch {
            dir: self.store.dir.display().to_string(),
            what: "the temperature of the stored distributions".to_owned(),
            cached: stored.to_string(),
            expected: format!("{temperature} (the criterion's)"),
        })
    }

    /// This cache with at most `bytes` of its mapped pages resident before they are released to
    /// the page cache (default [`DEFAULT_RESIDENT_LIMIT`](crate::cache::DEFAULT_RESIDENT_LIMIT));
    /// shared by every clone.
    pub fn with_resident_limit(self, bytes: usize) -> TokenCache {
        self.store.shards.set_limit(bytes);
        self
    }

    /// Verifies the CRC-32 of every shard this reader maps now, each call, including shards a batch
    /// verified already. A shard that fails it fails every later batch that reads it.
    ///
    /// # Errors
    /// [`DistillError::Corrupt`] naming the first shard whose bytes do not match its checksum, that
    /// changed since the cache was opened, or that failed an earlier verification.
    pub fn verify(&self) -> Result<()> {
        self.store.shards.verify_all()
    }

    /// This reader's sequence ids for `epoch`, shuffled (SplitMix64 of `seed` and the epoch, the
    /// same on every machine) and cut into batches of `batch_size` (the last may be smaller). A rank
    /// reader's list is padded, by repeating its start, to the most sequences any rank reads, so
    /// that every rank of a data-parallel job takes the same number of steps.
    ///
    /// # Errors
    /// [`CacheError::ZeroCount`](crate::cache::CacheError::ZeroCount) for a batch size of 0.
    pub fn epoch_batches(&self, batch_size: usize, seed: u64, epoch: u64) -> Result<Vec<Vec<usize>>> {
        if batch_size == 0 {
            return Err(CacheError::ZeroCount { what: "the batch size" }.into());
        }
        let mut order: Vec<usize> = self.sequences().collect();
        let mut rng = SplitMix64::new(seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let own = order.len();
        for k in 0..self.store.per_rank.saturating_sub(own) {
            order.push(order[k % own.max(1)]);
        }
        Ok(order.chunks(batch_size).map(<[usize]>::to_vec).collect())
    }

    /// The teacher's stored distributions of the sequences `ids`, in that order.
    ///
    /// # Errors
    /// [`CacheError`](crate::cache::CacheError) for an empty list or an id this reader does not read
    /// (outside the cache, or another rank's); [`DistillError::Corrupt`] for a shard that fails its
    /// checksum or changed since the cache was opened.
    pub fn batch(&self, ids: &[usize]) -> Result<CachedTokens> {
        self.store.batch(ids)
    }

    /// A reader that gathers `batches` (lists of sequence ids, in training order) on a background
    /// thread, up to `depth` batches ahead of the training loop.
    pub fn prefetch(&self, batches: Vec<Vec<usize>>, depth: usize) -> Prefetch<CachedTokens> {
        let store = Arc::clone(&self.store);
        let mut batches = batches.into_iter();
        Prefetch::start(depth, move || batches.next().map(|ids| store.batch(&ids)))
    }
}

impl TokenStore {
    fn locate(&self, id: usize) -> Result<(usize, usize)> {
        let n = self.manifest.num_sequences;
        if id >= n {
            return Err(CacheError::SequenceNotCached { id, dir: self.dir.display().to_string(), count: n }.into());
        }
        let at = self.order.partition_point(|&(_, start, _)| start <= id);
        match at.checked_sub(1).map(|i| self.order[i]) {
            Some((shard, start, end)) if id < end => Ok((shard, id - start)),
            _ => {
                let (rank, world) = self.rank.unwrap_or((0, 1));
                let (dir, start, end) = (self.dir.display().to_string(), self.sequences.start, self.sequences.end);
                Err(CacheError::SequenceOnOtherRank { id, dir, rank, world, start, end }.into())
            }
        }
    }

    fn batch(&self, ids: &[usize]) -> Result<CachedTokens> {
        if ids.is_empty() {
            return Err(CacheError::EmptyBatch.into());
        }
        let rows: Vec<(usize, usize)> = ids.iter().map(|&id| self.locate(id)).collect::<Result<_>>()?;
        let mut touched: Vec<usize> = rows.iter().map(|&(shard, _)| shard).collect();
        touched.sort_unstable();
        touched.dedup();
        let (b, t) = (ids.len() as i64, self.manifest.seq_len);
        let width = self.manifest.encoding.width();
        let per_token = [b, t, width];
        let reader = self.shards.reader(&touched)?;
        let id_tensor = self.gather_ids(&reader, &rows, &per_token)?;
        let value_kind = self.manifest.encoding.values().kind();
        let log_probs = self.gather(&reader, &rows, 1, &per_token, value_kind)?;
        let third = match self.manifest.encoding {
            TokenEncoding::TopK { .. } => self.gather(&reader, &rows, 2, &[b, t], Kind::Float)?,
            TokenEncoding::Sampled { .. } => self.gather(&reader, &rows, 2, &per_token, value_kind)?,
        };
        let valid = self.gather(&reader, &rows, 3, &[b, t], Kind::Uint8)?;
        let hidden = self
            .manifest
            .hidden
            .iter()
            .enumerate()
            .map(|(i, h)| Ok((h.path.clone(), self.gather(&reader, &rows, 4 + i, &[b, t, h.width], h.values.kind())?)))
            .collect::<Result<Vec<_>>>()?;
        // Nothing copied is used unless every shard read is still the file opened.
        reader.finish()?;
        let log_probs = log_probs.f_to_kind(Kind::Float)?;
        let hidden = hidden
            .into_iter()
            .map(|(path, values)| Ok((path, values.f_to_kind(Kind::Float)?)))
            .collect::<Result<Vec<_>>>()?;
        // The stored distributions remember the manifest's temperature: a criterion at another one
        // refuses them.
        let temperature = Some(self.manifest.encoding.temperature());
        let teacher = match self.manifest.encoding {
            TokenEncoding::TopK { .. } => {
                TokenTeacher::TopK(TopKTail { ids: id_tensor, log_probs, tail: third, temperature })
            }
            TokenEncoding::Sampled { .. } => TokenTeacher::Sampled(SampledLogits {
                ids: id_tensor,
                log_probs,
                weights: third.f_to_kind(Kind::Float)?,
                temperature,
            }),
        };
        Ok(CachedTokens {
            dir: self.dir.clone(),
            sequence_ids: ids.to_vec(),
            valid: valid.f_ne(0)?,
            teacher,
            encoding: self.manifest.encoding,
            hidden,
        })
    }

    /// Tensor `column` of each sequence of `rows`, as a `size` tensor of `kind` (the stored kind).
    fn gather(
        &self,
        reader: &Reader<'_>,
        rows: &[(usize, usize)],
        column: usize,
        size: &[i64],
        kind: Kind,
    ) -> Result<Tensor> {
        let mut out = Tensor::f_empty(size, (kind, Device::Cpu))?;
        let record = size[1..].iter().product::<i64>() as usize * kind.elt_size_in_bytes();
        let records: Vec<(usize, usize)> =
            rows.iter().map(|&(shard, row)| (shard, self.offsets[shard][column] + row * record)).collect();
        // SAFETY: a new contiguous CPU tensor, filled here before anything else sees it.
        reader.copy_records(&records, unsafe { tensor_bytes_mut(&mut out) });
        Ok(out)
    }

    /// The token ids of each sequence of `rows`, widened to `i64`.
    fn gather_ids(&self, reader: &Reader<'_>, rows: &[(usize, usize)], size: &[i64]) -> Result<Tensor> {
        let mut out = Tensor::f_empty(size, (Kind::Int64, Device::Cpu))?;
        let per_sequence = size[1..].iter().product::<i64>() as usize;
        let stored = self.manifest.ids.bytes();
        // SAFETY: a new contiguous CPU tensor, filled here before anything else sees it.
        let bytes = unsafe { tensor_bytes_mut(&mut out) };
        for (dst, &(shard, row)) in bytes.chunks_exact_mut(8 * per_sequence).zip(rows) {
            let src = reader.bytes(shard, self.offsets[shard][0] + row * per_sequence * stored, per_sequence * stored);
            let words = dst.chunks_exact_mut(8);
            match self.manifest.ids {
                IdWidth::U16 => {
                    for (word, id) in words.zip(src.chunks_exact(2)) {
                        word.copy_from_slice(&i64::from(u16::from_le_bytes([id[0], id[1]])).to_ne_bytes());
                    }
                }
                IdWidth::I32 => {
                    for (word, id) in words.zip(src.chunks_exact(4)) {
                        word.copy_from_slice(
                            &i64::from(i32::from_le_bytes([id[0], id[1], id[2], id[3]])).to_ne_bytes(),
                        );
                    }
                }
            }
        }
        Ok(out)
    }
}
