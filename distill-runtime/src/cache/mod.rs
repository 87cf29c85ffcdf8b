//! The teacher cache: run the teacher side of a distillation once over a dataset, store its
//! captures, and train the student from them — the teacher does not run again, and need not be in
//! memory.
//!
//! - [`CacheWriter`] runs the teacher endpoints of a [`Distillation`](crate::Distillation) (a
//!   `distill!` model's or a `DistillModel`'s `distillation()`) over samples `0..N`, for each of `V`
//!   augmentation views, and stores the captures in safetensors shards (f32, f16 or bf16, per
//!   endpoint) with a JSON [`Manifest`]. Shards are written by one process or by independent ones
//!   (`shard(i)` of `shards(n)`), each atomically (a temporary name unique to its writer, fsynced
//!   and renamed when complete) under an OS lock on the shard, with the CRC-32 of its inputs and the
//!   hash of its manifest in its metadata, and a CRC-32 of its tensors and that metadata.
//! - [`TeacherCache::open`] opens a complete cache: it reads the manifest and memory-maps the shards,
//!   reading only their headers; [`TeacherCache::batch`] and [`TeacherCache::prefetch`] give a
//!   [`CachedBatch`] for the sample ids of a training batch, in the loader's order, at view
//!   `epoch % V`, copied from the mapped shards. A `DistillModel` or a `distill!` model then runs
//!   `forward_cached(&xs, &batch, train)`: the student sees the replayed view of `xs`, the teacher
//!   side comes from the batch.
//! - Logits may be stored as their top `k` classes at a temperature ([`Encoding::TopK`]): read back
//!   as the packed `[B, 2, k]` tensor of [`TopKKlDiv`](crate::criterion::TopKKlDiv); a pair whose
//!   criterion reads another temperature, or no top-k tensor, is a
//!   [`DistillError::CacheMismatch`](crate::DistillError).
//! - The teacher need not be in memory: declare the teacher side of a `distill!` model as
//!   `TeacherCache` with string paths (`teacher["features.1"]`) and build it with
//!   `new(path, &student, &cache)`, which checks the paths against the manifest. Teacher-side
//!   adapters that read the teacher's weights, like `conv2d_adapter`, need the teacher;
//!   student-side adapters work. Such a model trains with `forward_cached`; a plain `forward_t` is an
//!   error, since a cache cannot run.
//! - [`Augment`]: the views' parameters (crop box, flip), drawn from (seed, sample id, view) and
//!   replayed on the student's input.
//! - [`TeacherHash`] identifies the teacher's weights in the manifest.
//!
//! **The token-level cache** stores a language-model teacher's next-token distribution for every
//! token of a token dataset, keyed by sequence id and position. [`TokenCacheWriter`] takes teacher
//! logits `[B, T, V]` per batch of sequence ids (with the token mask), so any teacher works, and
//! stores per token the top-k ids (16-bit when `V ≤ 65 536`, else 32-bit), their log-probabilities
//! (f16, bf16 or f32) and the tail log-mass computed from the excluded logits (f32, as
//! [`TopKTail::f_encode`](crate::criterion::TopKTail::f_encode) does: the reader never rebuilds it
//! from the kept values) — 4·k + 5 bytes per token with 16-bit ids and f16 log-probabilities — or
//! [`SampledKl`](crate::criterion::SampledKl)'s sampled encoding ([`TokenEncoding`]). Its manifest
//! records the teacher weights' hash, the tokenizer's and the dataset's identities, k, T, V and the
//! encoding ([`TokenCacheSpec`]); [`TokenCache::check`] names the first difference. Shards are
//! written as the image cache's are (atomically, under a lock, with a CRC-32 and the manifest's
//! hash, resumable), streamed to disk batch by batch. [`TokenCache::batch`] gives the
//! [`TopKTail`](crate::criterion::TopKTail) or [`SampledLogits`](crate::criterion::SampledLogits)
//! that [`TopKKl`](crate::criterion::TopKKl) / [`SampledKl`](crate::criterion::SampledKl) take, and
//! the token mask; [`TokenCache::open_rank`] maps only a data-parallel rank's shards.
//!
//! Both caches — this one and the token cache below — are read through one memory-mapped reader,
//! so a job's resident memory does not grow with the cache:
//!
//! - **Open** reads the manifest and each shard's safetensors header: the shards cover the ids
//!   exactly once (at least one), every shard exists, its header accounts for its length exactly and
//!   holds the tensors the manifest says, and it was written for this very manifest — checked for
//!   every shard that records the manifest's hash (all of layout version 3 and of the token cache),
//!   whatever layout version the manifest declares (an edited manifest is a
//!   [`DistillError::Corrupt`](crate::DistillError)). This touches the first pages of each file.
//! - **The CRC-32** of a shard is verified the first time a batch reads it: one pass over the shard
//!   at several GB/s from the page cache (the disk's speed otherwise), its pages released as they are
//!   hashed; later batches rely on that outcome. `verify()` runs the pass over every shard again
//!   when called, even one a batch verified already. A shard that fails it fails every batch that
//!   reads it.
//! - **Around every batch**: before the copy, each shard it reads must be no shorter than when it was
//!   opened, with no earlier read of it faulted (one `fstat`); after the copy, before the batch is
//!   used, the path must still name the opened file and that file must have the length and the
//!   modification and change times it had when opened (one `stat` of the path, one `fstat` of the
//!   open file). A shard truncated, rewritten in place, removed or replaced since the cache was
//!   opened makes the batch a [`DistillError::Corrupt`](crate::DistillError) naming it, never a
//!   crash or other data. A file
//!   renamed over a shard (how writers replace files) leaves the opened file mapped and intact, but
//!   the batch is refused all the same: the directory no longer holds what the job reads; reopen the
//!   cache to read the new one. A truncation racing with the copy itself would raise `SIGBUS`: on
//!   Linux, the first cache opened installs a handler that answers faults inside the caches'
//!   mappings with zero pages and flags the shard, so the batch is the same error (every other
//!   `SIGBUS` goes to the handler installed before it).
//! - **Resident memory**: the pages batches touch stay mapped until the process's file-backed
//!   resident size has grown by the reader's resident limit ([`DEFAULT_RESIDENT_LIMIT`], 128 MiB,
//!   `with_resident_limit`) since the last release; then every mapping's pages are released to the
//!   operating system's page cache, from which later batches map them again without reading the
//!   disk. A cache smaller than the limit stays mapped whole.
//!
//! A cache that does not match the distillation reading it — other teacher weights, an endpoint it
//! does not store, another input shape — is a [`DistillError::CacheMismatch`](crate::DistillError)
//! naming the difference; a shard that was not completely written is
//! [`CacheError::Incomplete`].

mod augment;
mod batch;
mod files;
mod guard;
mod hash;
mod listed;
mod manifest;
mod mapped;
mod mismatch;
mod prefetch;
mod reader;
mod token;
mod writer;

pub use crate::error::CacheError;
pub use crate::teacher_batch::TeacherBatch;
pub use augment::Augment;
pub use batch::CachedBatch;
pub use hash::TeacherHash;
pub use manifest::{Encoding, EndpointEntry, Manifest, Precision, RunMode, ShardEntry};
pub use mapped::DEFAULT_RESIDENT_LIMIT;
pub use prefetch::Prefetch;
pub use reader::TeacherCache;
pub use token::{
    CachedTokens, IdWidth, StoredHidden, TeacherTokens, TokenCache, TokenCacheSpec, TokenCacheWriter, TokenEncoding,
    TokenManifest, TokenShardWriter, TokenTeacher, TokenWriteReport,
};
pub use writer::{CacheWriter, WriteReport};
