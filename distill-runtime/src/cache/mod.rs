//! The teacher cache: run the teacher side of a distillation once over a dataset, store its
//! captures, and train the student from them — the teacher does not run again, and need not be in
//! memory.
//!
//! - [`CacheWriter`] runs the teacher endpoints of a distillation (a `Mapping`'s, or a `distill!`
//!   model's through `engine()`) over samples `0..N`, for each of `V` augmentation views, and stores
//!   the captures in safetensors shards (f32, f16 or bf16, per endpoint) with a JSON [`Manifest`].
//!   Shards are written by one process or by independent ones (`shard(i)` of `shards(n)`), each
//!   atomically (a temporary name unique to its writer, fsynced and renamed when complete) under an
//!   OS lock on the shard, with a CRC-32 of its tensors, of its inputs, and the hash of its manifest
//!   in its metadata.
//! - [`TeacherCache::open`] reads a complete cache into memory; [`TeacherCache::batch`] and
//!   [`TeacherCache::prefetch`] give a [`CachedBatch`] for the sample ids of a training batch, in the
//!   loader's order, at view `epoch % V`. A `DistillModel` or a `distill!` model then runs
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
//! [`TeacherCache::open`] verifies what it reads: shards that cover the samples exactly once, at
//! least one view, each shard's CRC-32 and the manifest it was written for (see its documentation
//! for the cost); a damaged shard or an edited manifest is a
//! [`DistillError::Corrupt`](crate::DistillError).
//!
//! A cache that does not match the distillation reading it — other teacher weights, an endpoint it
//! does not store, another input shape — is a [`DistillError::CacheMismatch`](crate::DistillError)
//! naming the difference; a shard that was not completely written is
//! [`DistillError::CacheIncomplete`](crate::DistillError).

mod augment;
mod batch;
mod files;
mod hash;
mod manifest;
mod mismatch;
mod prefetch;
mod reader;
mod writer;

pub use augment::{Augment, VIEW_PARAMS};
pub use batch::CachedBatch;
pub use hash::TeacherHash;
pub use manifest::{
    Encoding, EndpointEntry, Manifest, Precision, RunMode, ShardEntry, StoredPort, FORMAT_VERSION, MANIFEST_FILE,
};
pub use prefetch::Prefetch;
pub use reader::TeacherCache;
pub use writer::{CacheWriter, WriteReport};

pub(crate) use batch::missing_endpoint;
