//! [`TokenCacheWriter`]: stores a teacher's per-token distributions, from its logits, in shards.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use tch::{Device, Kind, Tensor};

use super::encode::{encode, encode_hidden};
use super::manifest::{
    hidden_problem, shard_tensors, StoredHidden, TokenCacheSpec, TokenManifest, TOKEN_MANIFEST_FILE,
};
use crate::cache::files::{cache_source, is_whole, refuse_other_kind, shard_file, ShardLock};
use crate::cache::manifest::Precision;
use crate::cache::manifest::MANIFEST_FILE;
use crate::cache::writer::MANIFEST_KEY;
use crate::cache::CacheError;
use crate::checksum::Streamed;
use crate::error::{DistillError, Result};

/// Writes a token-level teacher cache: for every token of sequences `0..N`, the teacher's
/// distribution as [`TokenEncoding`](super::TokenEncoding) says, computed from teacher logits
/// `[B, T, V]` that the caller supplies per batch of sequence ids — so any teacher works.
///
/// Shard `i` of `n` holds sequences `i·N/n .. (i+1)·N/n`. [`write`](Self::write) fills every
/// pending shard from a closure; [`open_shard`](Self::open_shard) gives a [`TokenShardWriter`] to
/// push batches into from a loop of the caller's. As in the image cache, each shard is written under
/// a temporary name unique to its writer and renamed when complete, with the hash of its manifest and
/// a CRC-32 of its tensors and that hash in its metadata, under an OS lock on the shard; independent
/// processes may write disjoint shards (`shard(i)`), a rerun skips complete shards (and writes again
/// one whose header no longer accounts for its length; a folder that holds an image teacher cache is
/// refused), and a rerun with another
/// [`TokenCacheSpec`] than the manifest records is a [`DistillError::CacheMismatch`] naming the
/// difference, before anything is written. The manifest is published once, by the first writer,
/// and never replaced: a concurrent writer of another spec that started before it existed gets the
/// same error instead of replacing it. A shard is streamed to disk as it is pushed: the
/// writer's memory is one batch, not one shard.
///
/// Positions where the mask given with the logits is 0 (padding) are stored as a point mass on
/// token 0 (top-k: ids `0, 1, …`, log-probabilities `0, −∞, …`, tail `−∞`; sampled: token 0 with
/// log-probability 0 and weight `1/n`) and marked invalid, so that whatever the teacher computed
/// there — even NaN — never reaches a loss; read them with the batch's
/// [`valid`](super::CachedTokens::valid) mask.
#[derive(Clone, Debug)]
pub struct TokenCacheWriter {
    dir: PathBuf,
    spec: TokenCacheSpec,
    shards: usize,
    only: Option<usize>,
    hidden: Vec<StoredHidden>,
}

/// What [`TokenCacheWriter::write`] did: the shards written and skipped, and the manifest.
pub type TokenWriteReport = crate::cache::WriteReport<TokenManifest>;

/// What the teacher gives for one batch of sequences, as [`TokenCacheWriter::write`] and
/// [`TokenShardWriter::push`] take it: usually written as a tuple, `(logits, mask)` or, for a
/// cache that stores hidden states, `(logits, mask, hidden)`; the logits alone are a batch without
/// padding.
#[derive(Debug)]
pub struct TeacherTokens {
    /// The teacher's logits `[B, T, V]` (any floating-point kind, any device).
    pub logits: Tensor,
    /// The mask `[B, T]`: non-zero for a token, 0 for padding; `None`: every token.
    pub valid: Option<Tensor>,
    /// The teacher's hidden states `[B, T, width]`, one per hidden state the cache stores
    /// ([`TokenCacheWriter::hidden_state`]), in declaration order; empty for a cache without them.
    pub hidden: Vec<Tensor>,
}

impl From<Tensor> for TeacherTokens {
    fn from(logits: Tensor) -> Self {
        TeacherTokens { logits, valid: None, hidden: Vec::new() }
    }
}

impl From<(Tensor, Option<Tensor>)> for TeacherTokens {
    fn from((logits, valid): (Tensor, Option<Tensor>)) -> Self {
        TeacherTokens { logits, valid, hidden: Vec::new() }
    }
}

impl From<(Tensor, Option<Tensor>, Vec<Tensor>)> for TeacherTokens {
    fn from((logits, valid, hidden): (Tensor, Option<Tensor>, Vec<Tensor>)) -> Self {
        TeacherTokens { logits, valid, hidden }
    }
}

impl TokenCacheWriter {
    /// A writer of the cache `spec` into `dir` (created if missing), in one shard.
    pub fn new(dir: impl Into<PathBuf>, spec: TokenCacheSpec) -> Self {
        TokenCacheWriter { dir: dir.into(), spec, shards: 1, only: None, hidden: Vec::new() }
    }

    /// Splits the cache into `count` shards. A data-parallel job of `W` ranks reads it with
    /// [`TokenCache::open_rank`](super::TokenCache::open_rank) when `count` is a multiple of `W`.
    pub fn shards(mut self, count: usize) -> Self {
        self.shards = count;
        self
    }

    /// Writes only shard `index` (from 0) of the [`shards`](Self::shards).
    pub fn shard(mut self, index: usize) -> Self {
        self.only = Some(index);
        self
    }

    /// Also stores, for every token, the teacher's hidden state at the module `path` (`[B, T,
    /// width]` per batch, given to [`write`](Self::write) or [`TokenShardWriter::push`] in the
    /// order of these calls) in `values` precision, so that a pair reads it as the teacher endpoint
    /// `path` (`teacher["model.layers.12"]`). Each costs `width × 2` bytes per token in f16.
    /// Padding positions are stored as zeros.
    pub fn hidden_state(mut self, path: impl Into<String>, width: i64, values: Precision) -> Self {
        self.hidden.push(StoredHidden { path: path.into(), width, values });
        self
    }

    /// The manifest this writer writes.
    pub fn manifest(&self) -> TokenManifest {
        let mut manifest = TokenManifest::new(&self.spec, self.shards);
        manifest.hidden = self.hidden.clone();
        manifest
    }

    /// Prepares the cache directory and lists the shards this writer still has to write: its
    /// selected shards (all, or [`shard`](Self::shard)) whose file is not complete yet.
    ///
    /// # Errors
    /// [`CacheError`] for a spec out of range or a shard that does not exist;
    /// [`DistillError::CacheMismatch`] when the directory holds a cache of another spec.
    pub fn pending(&self) -> Result<Vec<usize>> {
        self.prepare()?;
        Ok(self.selected().into_iter().filter(|&i| !self.dir.join(shard_file(i, self.shards)).exists()).collect())
    }

    /// Starts writing shard `index`: takes its lock, clears what killed writers left, and gives the
    /// writer to push its sequences into — or `None` when the shard is complete already.
    ///
    /// # Errors
    /// As [`pending`](Self::pending); [`CacheError::File`](crate::cache::CacheError::File) when another writer holds the shard;
    /// [`DistillError::Corrupt`] for a complete shard that was written for another manifest.
    pub fn open_shard(&self, index: usize) -> Result<Option<TokenShardWriter>> {
        let (manifest, identity) = self.prepare()?;
        if index >= self.shards {
            return Err(CacheError::ShardOutOfRange { index, shards: self.shards }.into());
        }
        let path = self.dir.join(shard_file(index, self.shards));
        let lock = ShardLock::acquire(&path, index)?;
        // A shard that is there and whole is done; one damaged since it was written (not whole)
        // is written again, under the lock, replacing it atomically.
        if path.exists() && is_whole(&path)? {
            let recorded = crate::checksum::read_metadata(&path)?.remove(MANIFEST_KEY);
            if recorded.as_deref() != Some(identity.as_str()) {
                // A shard whose recorded hash was damaged fails its checksum (it covers the
                // metadata): say so rather than that it belongs to another cache.
                crate::checksum::verify(&path)?;
                return Err(DistillError::Corrupt {
                    file: path.display().to_string(),
                    reason: format!(
                        "it was written for another manifest (hash {}, the cache's is {identity}): remove it and \
                         write it again",
                        recorded.as_deref().unwrap_or("not recorded")
                    ),
                });
            }
            return Ok(None);
        }
        lock.remove_stale_temporaries(&path)?;
        let entry = &manifest.shards[index];
        let metadata = BTreeMap::from([(MANIFEST_KEY.to_owned(), identity)]);
        let stream = Streamed::create(&path, shard_tensors(&manifest, entry.end - entry.start), metadata)?;
        Ok(Some(TokenShardWriter {
            range: entry.start..entry.end,
            next: entry.start,
            index,
            manifest,
            stream,
            _lock: lock,
        }))
    }

    /// Writes every pending shard: `teacher(&ids)` returns what the teacher gives for the
    /// sequences `ids` (at most `batch_size`, consecutive, in order) as [`TeacherTokens`]: its logits
    /// `[B, T, V]` and, optionally, their mask `[B, T]` (non-zero for a token, 0 for padding;
    /// `None`: every token) — `Ok((logits, mask))` — and, for a cache that stores hidden states
    /// ([`hidden_state`](Self::hidden_state)), the hidden states `[B, T, width]` in declaration
    /// order — `Ok((logits, mask, hidden))`.
    ///
    /// # Errors
    /// As [`open_shard`](Self::open_shard) and [`TokenShardWriter::push`]; the teacher's errors.
    /// A shard interrupted by an error is not written; a rerun writes it.
    pub fn write<F, B>(&self, batch_size: usize, mut teacher: F) -> Result<TokenWriteReport>
    where
        F: FnMut(&[usize]) -> Result<B>,
        B: Into<TeacherTokens>,
    {
        if batch_size == 0 {
            return Err(CacheError::ZeroCount { what: "the batch size" }.into());
        }
        let (manifest, _) = self.prepare()?;
        let mut report = TokenWriteReport { written: Vec::new(), skipped: Vec::new(), manifest };
        for index in self.selected() {
            let Some(mut shard) = self.open_shard(index)? else {
                report.skipped.push(index);
                continue;
            };
            let range = shard.sequences();
            let mut first = range.start;
            while first < range.end {
                let last = (first + batch_size).min(range.end);
                let ids: Vec<usize> = (first..last).collect();
                shard.push(&ids, teacher(&ids)?)?;
                first = last;
            }
            shard.finish()?;
            report.written.push(index);
        }
        Ok(report)
    }

    fn selected(&self) -> Vec<usize> {
        match self.only {
            Some(index) => vec![index],
            None => (0..self.shards).collect(),
        }
    }

    /// Validates the writer, creates the directory and publishes the manifest, or checks the one there.
    fn prepare(&self) -> Result<(TokenManifest, String)> {
        self.spec.validate()?;
        let shards = self.shards;
        let problem = if shards == 0 {
            Some(CacheError::NoShards)
        } else if let Some(index) = self.only.filter(|&i| i >= shards) {
            Some(CacheError::ShardOutOfRange { index, shards })
        } else if self.spec.num_sequences < shards {
            Some(CacheError::TooFewToShard { count: self.spec.num_sequences, items: "sequences", shards })
        } else {
            None
        };
        if let Some(problem) = problem.or_else(|| hidden_problem(&self.hidden)) {
            return Err(problem.into());
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| cache_source(&self.dir, "cannot create the directory", e))?;
        refuse_other_kind(&self.dir, MANIFEST_FILE, "an image teacher cache", "a token cache")?;
        let ours = self.manifest();
        // The first writer's manifest stands: published only where there is none, and otherwise
        // compared — also when another writer published its own between this one's look and its
        // publication, so that two writers of different specs never both write shards.
        if self.dir.join(TOKEN_MANIFEST_FILE).exists() || !ours.publish(&self.dir)? {
            let cached = TokenManifest::load(&self.dir)?;
            let paths = |hidden: &[StoredHidden]| format!("{:?}", hidden.iter().map(|h| &h.path).collect::<Vec<_>>());
            let difference = cached
                .difference(&self.spec)
                .or_else(|| {
                    (cached.shards.len() != self.shards).then(|| {
                        ("the number of shards".to_owned(), cached.shards.len().to_string(), self.shards.to_string())
                    })
                })
                .or_else(|| {
                    (cached.hidden != self.hidden).then(|| {
                        ("the list of stored hidden states".to_owned(), paths(&cached.hidden), paths(&self.hidden))
                    })
                });
            if let Some((what, cached, expected)) = difference {
                return Err(DistillError::CacheMismatch {
                    dir: self.dir.display().to_string(),
                    what,
                    cached,
                    expected,
                });
            }
        }
        let identity = ours.identity()?;
        Ok((ours, identity))
    }
}

/// The writer of one shard of a token cache, from [`TokenCacheWriter::open_shard`]: push its
/// sequences in order, then [`finish`](Self::finish). Dropped unfinished, it leaves no shard (the
/// next writer of the shard starts it again).
#[derive(Debug)]
pub struct TokenShardWriter {
    range: Range<usize>,
    next: usize,
    index: usize,
    manifest: TokenManifest,
    stream: Streamed,
    /// Held until the shard is published or abandoned.
    _lock: ShardLock,
}

impl TokenShardWriter {
    /// The shard's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The sequence ids the shard holds.
    pub fn sequences(&self) -> Range<usize> {
        self.range.clone()
    }

    /// The id of the next sequence to push.
    pub fn next_sequence(&self) -> usize {
        self.next
    }

    /// Encodes and stores what the teacher gives for the sequences `ids` — the next `B` of the
    /// shard, in order — as [`TeacherTokens`]: its logits `[B, T, V]` (any floating-point kind, any
    /// device) with their mask `[B, T]` (non-zero for a token; `None`: every token), `(logits, mask)`,
    /// and for a cache that stores hidden states, those `[B, T, width]` in declaration order
    /// ([`TokenCacheWriter::hidden_state`]), `(logits, mask, hidden)`.
    ///
    /// # Errors
    /// [`CacheError`] for ids that are not the shard's next ones, logits or a mask of another shape,
    /// another number of hidden states than the cache stores or one of another shape
    /// ([`CacheError::HiddenCount`], [`CacheError::HiddenShape`]), or values that the encoding's
    /// precision cannot hold (sampled weights beyond f16's range); [`DistillError::Io`] when the
    /// shard file cannot be written.
    pub fn push(&mut self, ids: &[usize], teacher: impl Into<TeacherTokens>) -> Result<()> {
        let TeacherTokens { logits, valid, hidden } = teacher.into();
        let (logits, valid) = (&logits, valid.as_ref());
        let expected: Vec<usize> = (self.next..self.next + ids.len()).collect();
        if ids != expected.as_slice() || self.next + ids.len() > self.range.end || ids.is_empty() {
            let (start, end, next) = (self.range.start, self.range.end, self.next);
            let got = ids[..ids.len().min(8)].to_vec();
            return Err(CacheError::OutOfOrder { shard: self.index, start, end, next, got }.into());
        }
        let (t, v) = (self.manifest.seq_len, self.manifest.vocab);
        let b = ids.len() as i64;
        if logits.size() != [b, t, v] {
            return Err(CacheError::LogitsShape { expected: vec![b, t, v], got: logits.size() }.into());
        }
        let valid = match valid {
            Some(mask) => {
                if mask.size() != [b, t] {
                    return Err(CacheError::MaskShape { expected: vec![b, t], got: mask.size() }.into());
                }
                mask.f_to_device(Device::Cpu)?.f_ne(0)?
            }
            None => Tensor::f_ones([b, t], (Kind::Bool, Device::Cpu))?,
        };
        let hidden = tch::no_grad(|| encode_hidden(&self.manifest, &hidden, &valid))?;
        let encoded = tch::no_grad(|| encode(&self.manifest, ids, logits, &valid))?;
        for (index, tensor) in encoded.into_iter().chain(hidden).enumerate() {
            self.stream.append(index, &tensor)?;
        }
        self.next += ids.len();
        Ok(())
    }

    /// Publishes the shard: header with its checksum, fsync, rename to its final name.
    ///
    /// # Errors
    /// [`CacheError::ShardUnfinished`] when sequences are missing; [`DistillError::Io`] when the
    /// file cannot be written or renamed.
    pub fn finish(self) -> Result<()> {
        if self.next != self.range.end {
            let (start, end, next) = (self.range.start, self.range.end, self.next);
            return Err(CacheError::ShardUnfinished { shard: self.index, start, end, next }.into());
        }
        debug_assert_eq!(self.stream.remaining(0), 0);
        self.stream.finish()
    }
}
