//! File naming, the per-shard writer lock, and the removal of what killed writers left: a file
//! appears under its final name only when it is complete and on disk ([`crate::atomic`]), so an
//! interrupted writer never leaves a file that reads as complete.

use std::fmt::Display;
use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};

use crate::atomic::{io_error, TEMPORARY_INFIX};
use crate::cache::CacheError;
use crate::error::{DistillError, Result};

/// The file name of shard `index` of `count`.
pub(crate) fn shard_file(index: usize, count: usize) -> String {
    format!("shard-{index:05}-of-{count:05}.safetensors")
}

/// An exclusive lock on writing one shard: `<shard>.lock`, locked with the operating system's
/// advisory file lock, which the kernel releases when its process dies, so a killed writer never
/// leaves a shard locked. The lock file is removed when the lock is released.
#[derive(Debug)]
pub(crate) struct ShardLock {
    path: PathBuf,
    /// Held open: closing the file releases the lock.
    _file: File,
}

/// How many times [`ShardLock::acquire`] takes a lock whose file then turns out to have lost its
/// name before it gives up. A lock file loses its name only when its holder releases it between this
/// writer's open and lock, which a few writers of one shard cannot make happen this often in a row.
const LOCK_ATTEMPTS: usize = 64;

impl ShardLock {
    /// Locks the writing of the shard at `shard`, or names the writer that holds it.
    ///
    /// # Errors
    /// [`CacheError::File`] when another writer holds the lock, or when the lock file still does not
    /// keep its name after [`LOCK_ATTEMPTS`] tries; [`DistillError::Io`] when it cannot be created or
    /// locked.
    pub(crate) fn acquire(shard: &Path, index: usize) -> Result<ShardLock> {
        ShardLock::acquire_named(shard, index, still_named)
    }

    /// [`acquire`](Self::acquire), with `named` telling whether a path names an open file.
    fn acquire_named(shard: &Path, index: usize, named: impl Fn(&File, &Path) -> bool) -> Result<ShardLock> {
        let mut name = shard.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".lock");
        let path = shard.with_file_name(name);
        for _ in 0..LOCK_ATTEMPTS {
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| io_error("create the lock file", &path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(cache_error(
                        &path,
                        format!(
                            "another writer is writing shard {index} now (it holds this lock); run one writer per \
                             shard, or wait for it to finish and run again: complete shards are skipped"
                        ),
                    ))
                }
                Err(TryLockError::Error(e)) => return Err(io_error("lock", &path, e)),
            }
            // The previous holder removes the file when it unlocks: a lock taken on a file that no
            // longer has this name locks nothing another writer would see, so take it again.
            if named(&file, &path) {
                return Ok(ShardLock { path, _file: file });
            }
        }
        // Bounded: where the file system gives the open file another identity (device, inode) than
        // its path, the file never seems to keep its name, and retrying would spin forever.
        Err(cache_error(
            &path,
            format!(
                "the lock file of shard {index} did not keep its name after being locked, {LOCK_ATTEMPTS} times in a \
                 row: the file system reports another device or inode for the open file than for its path (or \
                 writers keep releasing it), so the lock cannot be known to be held; write the cache on a local \
                 file system"
            ),
        ))
    }

    /// Removes the temporary files of `shard` that earlier writers left when they were killed: with
    /// the lock held, no live writer is writing them.
    pub(crate) fn remove_stale_temporaries(&self, shard: &Path) -> Result<()> {
        let (Some(dir), Some(name)) = (shard.parent(), shard.file_name()) else { return Ok(()) };
        let prefix = format!("{}{TEMPORARY_INFIX}", name.to_string_lossy());
        for entry in fs::read_dir(dir).map_err(|e| cache_source(dir, "cannot list the directory", e))? {
            let entry = entry.map_err(|e| cache_source(dir, "cannot list the directory", e))?;
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                match fs::remove_file(entry.path()) {
                    // Gone since it was listed: another cleanup of killed writers' files got there first.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    result => result.map_err(|e| {
                        cache_source(&entry.path(), "cannot remove a killed writer's temporary file", e)
                    })?,
                }
            }
        }
        Ok(())
    }
}

impl Drop for ShardLock {
    fn drop(&mut self) {
        // Removed while still locked (the file closes after this): a writer waiting on this file
        // sees that it lost its name and locks a new one.
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether `path` names the open `file`.
#[cfg(unix)]
fn still_named(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// Whether `path` names the open `file` (assumed where files have no inode number to compare).
#[cfg(not(unix))]
fn still_named(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// An error when `dir` holds a cache of the other kind, whose manifest is `other` (`manifest.json`
/// for an image teacher cache, `token-manifest.json` for a token cache): both kinds name their
/// shards alike, so a writer of one kind would replace the other's shards.
pub(crate) fn refuse_other_kind(dir: &Path, other: &str, kind: &str, ours: &str) -> Result<()> {
    if !dir.join(other).exists() {
        return Ok(());
    }
    Err(cache_error(
        dir,
        format!(
            "it holds {kind} (`{other}`), whose shards this writer would replace: write {ours} in a folder of its own"
        ),
    ))
}

/// Whether the shard at `path` is whole: a safetensors header that reads and accounts for the
/// file's length. Shards are written under a temporary name and renamed once complete, so a shard
/// that is not whole was damaged afterwards (truncated, cut short by a copy) and a writer may
/// write it again; one that is whole is the writer's to skip (its checksum is checked when read).
///
/// # Errors
/// [`DistillError::Io`] when the file cannot be opened or mapped: a shard the writer cannot judge
/// is not replaced.
pub(crate) fn is_whole(path: &Path) -> Result<bool> {
    match super::mapped::MappedShard::open(path) {
        Ok(_) => Ok(true),
        Err(DistillError::Corrupt { .. }) => Ok(false),
        Err(error) => Err(error),
    }
}

/// A [`CacheError::File`] about `path`.
pub(crate) fn cache_error(path: &Path, reason: impl Display) -> DistillError {
    CacheError::File { path: path.display().to_string(), reason: reason.to_string(), source: None }.into()
}

/// A [`CacheError::File`] for `path`: `doing` failed with `source` (an I/O or JSON error), kept as
/// the error's source.
pub(crate) fn cache_source(
    path: &Path,
    doing: &str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> DistillError {
    CacheError::File {
        path: path.display().to_string(),
        reason: format!("{doing}: {source}"),
        source: Some(Box::new(source)),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_that_never_keeps_its_name_is_an_error_not_an_endless_loop() {
        let dir = std::env::temp_dir().join(format!("distill-shard-lock-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let shard = dir.join(shard_file(0, 1));
        // What a file system whose `stat` and `fstat` disagree on the inode looks like to `acquire`.
        let (sender, receiver) = std::sync::mpsc::channel();
        let attempt = shard.clone();
        std::thread::spawn(move || {
            let _ = sender.send(ShardLock::acquire_named(&attempt, 0, |_, _| false).map(|_| ()));
        });
        let outcome = receiver.recv_timeout(std::time::Duration::from_secs(20)).expect("acquire returned");
        let error = outcome.unwrap_err().to_string();
        assert!(error.contains("did not keep its name") && error.contains("64 times"), "{error}");
        // A file system that agrees: the lock is taken, and its file removed when released.
        let lock = ShardLock::acquire(&shard, 0).unwrap();
        assert!(dir.join("shard-00000-of-00001.safetensors.lock").exists());
        drop(lock);
        assert!(!dir.join("shard-00000-of-00001.safetensors.lock").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
