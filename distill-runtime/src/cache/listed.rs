//! Opening the shards a cache's manifest lists, for both caches (image and token): each must exist,
//! carry a checksum and the hash of the manifest it was written for, and hold its tensors where and
//! as the manifest says.

use std::path::Path;

use safetensors::tensor::Dtype;

use super::files::cache_error;
use super::mapped::MappedShard;
use super::writer::MANIFEST_KEY;
use crate::cache::CacheError;
use crate::checksum::{covers_metadata, CHECKSUM_KEY};
use crate::error::{DistillError, Result};

/// A shard a manifest lists: the file `file` of the cache in `dir`, shard `index` of `count`.
pub(crate) struct Listed<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) file: &'a str,
    pub(crate) index: usize,
    pub(crate) count: usize,
}

impl Listed<'_> {
    /// Maps the shard, which must have been written for the manifest whose hash is `identity`
    /// (`manifest_file` names the manifest in the error).
    ///
    /// A shard that records a manifest hash in its metadata (every shard of layout version 3 or
    /// later, the layout that introduced it) is held to it whatever layout version the manifest
    /// declares: it must carry a checksum and `identity`, so that a manifest edited to declare an
    /// older layout is refused like any other edit. A shard without one, from an older layout, passes
    /// unless `current` says the manifest declares the current layout, whose shards all have one.
    ///
    /// # Errors
    /// [`CacheError::Incomplete`] for a missing shard (its writer did not finish);
    /// [`DistillError::Corrupt`] for a shard without a checksum or whose header cannot be read; for
    /// a shard that records another manifest's hash, naming the shard when it fails its checksum
    /// (its recorded hash was damaged: one pass over the shard, on this error only) and the
    /// manifest otherwise (it was edited).
    pub(crate) fn open(&self, identity: &str, current: bool, manifest_file: &str) -> Result<MappedShard> {
        let path = self.dir.join(self.file);
        if !path.exists() {
            return Err(CacheError::Incomplete {
                dir: self.dir.display().to_string(),
                shard: self.index,
                shards: self.count,
            }
            .into());
        }
        let shard = MappedShard::open(&path)?;
        if !current && !shard.metadata().contains_key(MANIFEST_KEY) {
            return Ok(shard);
        }
        if !shard.metadata().contains_key(CHECKSUM_KEY) {
            return Err(DistillError::Corrupt {
                file: path.display().to_string(),
                reason: format!("it has no checksum (`{CHECKSUM_KEY}` in its metadata)"),
            });
        }
        let recorded = shard.metadata().get(MANIFEST_KEY);
        if recorded.map(String::as_str) != Some(identity) {
            // The shard's checksum tells which file is at fault: a shard whose recorded hash was
            // damaged fails it (it covers the metadata), so the shard is named, not the manifest.
            shard.verify_now()?;
            // Intact, its recorded hash included; unless its checksum, of an earlier version, does
            // not cover its metadata.
            let covered = shard.metadata().get(CHECKSUM_KEY).is_some_and(|stored| covers_metadata(stored));
            let damaged = if covered { "" } else { ", or the shard's metadata was damaged" };
            return Err(DistillError::Corrupt {
                file: self.dir.join(manifest_file).display().to_string(),
                reason: format!(
                    "it is not the manifest the shard `{}` was written for (that one hashed to {}, this one to \
                     {identity}): it was edited after the cache was written{damaged}; write the cache again",
                    self.file,
                    recorded.map_or("nothing", String::as_str)
                ),
            });
        }
        Ok(shard)
    }
}

/// The file offset of the tensor `name` of `shard` (the file `path`), which must be `dtype` of
/// `shape` as the manifest says.
///
/// # Errors
/// [`CacheError::File`](crate::cache::CacheError::File) naming the file and the tensor that is missing or of another kind or
/// shape.
pub(crate) fn locate(shard: &MappedShard, path: &Path, name: &str, dtype: Dtype, shape: &[usize]) -> Result<usize> {
    let slot = shard.slot(name).ok_or_else(|| cache_error(path, format!("no tensor `{name}`")))?;
    if slot.dtype != dtype || slot.shape != shape {
        return Err(cache_error(
            path,
            format!("`{name}` is {:?} {:?}, the manifest says {dtype:?} {shape:?}", slot.dtype, slot.shape),
        ));
    }
    Ok(slot.offset)
}
