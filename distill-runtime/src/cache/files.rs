//! File naming and atomic writes: a file appears under its final name only when it is complete and
//! on disk, so an interrupted writer never leaves a file that reads as complete.

use std::fmt::Display;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::DistillError;
use crate::error::Result;

/// The file name of shard `index` of `count`.
pub(crate) fn shard_file(index: usize, count: usize) -> String {
    format!("shard-{index:05}-of-{count:05}.safetensors")
}

/// The temporary name a file is written under before it is renamed to `path`: unique per process,
/// so two writers never write the same temporary file.
pub(crate) fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Removes temporary files left for `path` by interrupted writers.
pub(crate) fn remove_stale_temporaries(path: &Path) -> Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return Ok(()) };
    let prefix = format!("{}.tmp-", name.to_string_lossy());
    for entry in fs::read_dir(dir).map_err(|e| cache_error(dir, e))? {
        let entry = entry.map_err(|e| cache_error(dir, e))?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            fs::remove_file(entry.path()).map_err(|e| cache_error(&entry.path(), e))?;
        }
    }
    Ok(())
}

/// Makes the file written at `temporary` durable and gives it its final name `path`: fsync of the
/// file, rename, fsync of the directory (so the rename itself survives a crash).
pub(crate) fn publish(temporary: &Path, path: &Path) -> Result<()> {
    File::open(temporary).and_then(|file| file.sync_all()).map_err(|e| cache_error(temporary, e))?;
    fs::rename(temporary, path).map_err(|e| cache_error(path, e))?;
    if let Some(dir) = path.parent() {
        // Directories cannot be opened for syncing on every platform; where they can, this makes
        // the new name durable.
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary(path);
    File::create(&tmp).and_then(|mut file| file.write_all(bytes)).map_err(|e| cache_error(&tmp, e))?;
    publish(&tmp, path)
}

/// A [`DistillError::Cache`] about `path`.
pub(crate) fn cache_error(path: &Path, reason: impl Display) -> DistillError {
    DistillError::Cache { path: path.display().to_string(), reason: reason.to_string() }
}
