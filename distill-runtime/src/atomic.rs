//! Atomic file writes: every file the library writes (checkpoints, cache shards and manifests, prune
//! records) first goes to a temporary name in the same directory, is flushed to disk, and only then
//! renamed over the final name. A process killed at any point leaves either the previous file or the
//! new one under the final name, never a part of one.
//!
//! The temporary name is `<name>.tmp-<pid>-<n>` (`n` counts the writes of this process), unique per
//! writer, so two writers never write, or delete, each other's temporary file. A writer killed
//! mid-write leaves its temporary file behind; it is never read.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{DistillError, Result};

/// The part of a temporary file's name after the final name: `<name>.tmp-…`.
pub(crate) const TEMPORARY_INFIX: &str = ".tmp-";

/// A temporary name beside `path`, unique to this process and this write.
pub(crate) fn temporary(path: &Path) -> PathBuf {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!("{TEMPORARY_INFIX}{}-{n}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `path` atomically: `write` fills the temporary file whose path it is given; the file is
/// then fsynced, renamed to `path`, and the directory fsynced (so the rename survives a crash). On
/// any error the temporary file is removed and `path` is left as it was.
///
/// # Errors
/// The error of `write`; [`DistillError::Io`] naming the file when it cannot be synced or renamed.
pub(crate) fn write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temporary(path);
    let result = write(&tmp).and_then(|()| publish(&tmp, path));
    if result.is_err() {
        // Best effort: the error being reported matters more than a leftover temporary file.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to `path` atomically.
///
/// # Errors
/// [`DistillError::Io`] naming the file that could not be written.
pub(crate) fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |tmp| {
        File::create(tmp).and_then(|mut file| file.write_all(bytes)).map_err(|e| io_error("write", tmp, e))
    })
}

/// fsync of `tmp`, rename to `path`, fsync of the directory.
pub(crate) fn publish(tmp: &Path, path: &Path) -> Result<()> {
    File::open(tmp).and_then(|file| file.sync_all()).map_err(|e| io_error("sync", tmp, e))?;
    fs::rename(tmp, path).map_err(|e| io_error("rename a temporary file to", path, e))?;
    sync_directory(path);
    Ok(())
}

/// Publishes `bytes` as `path` only if no file has that name yet: `true` when this call created
/// it, `false` when one was there (left as it is). A cache's manifest is published this way, so the
/// first writer's stands and a concurrent writer finds it instead of replacing it.
///
/// The bytes go to a temporary file, fsynced, which is then hard-linked to `path`: the link fails if
/// the name exists, so of concurrent writers exactly one creates the file, and it appears complete.
/// On a file system without hard links the temporary file is renamed to `path` if `path` does not
/// exist: there, and only there, a window is left — a file another writer publishes between that
/// check and the rename (microseconds apart) is replaced, and the shards that writer then writes
/// for it are refused when the cache is opened.
///
/// # Errors
/// [`DistillError::Io`] naming the file that could not be written, linked or renamed.
pub(crate) fn publish_new(path: &Path, bytes: &[u8]) -> Result<bool> {
    use std::io::Write;
    let tmp = temporary(path);
    let published = File::create(&tmp)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()))
        .map_err(|e| io_error("write", &tmp, e))
        .and_then(|()| match fs::hard_link(&tmp, path) {
            Ok(()) => {
                sync_directory(path);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists || path.exists() => Ok(false),
            // No hard links here (the error varies by file system): an atomic write of its own
            // (temporary file, fsync, rename), with the window above.
            Err(_) => write_bytes(path, bytes).map(|()| true),
        });
    // The temporary name is this call's alone: remove it whatever happened (after a link, `path`
    // keeps the file).
    let _ = fs::remove_file(&tmp);
    published
}

/// Makes a new name in `path`'s directory durable. Directories cannot be opened for syncing on
/// every platform; where they cannot, the rename is still atomic, only not yet durable.
fn sync_directory(path: &Path) {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// A [`DistillError::Io`] for `action` on `path`.
pub(crate) fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> DistillError {
    DistillError::Io { action, path: path.display().to_string(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_unique_and_beside_the_file() {
        let path = Path::new("/some/dir/file.safetensors");
        let (a, b) = (temporary(path), temporary(path));
        assert_ne!(a, b);
        assert_eq!(a.parent(), path.parent());
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&format!("file.safetensors{TEMPORARY_INFIX}{}-", std::process::id())), "{name}");
    }

    #[test]
    fn a_failed_write_leaves_the_previous_file_and_no_temporary() {
        let dir = std::env::temp_dir().join(format!("distill-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("data.bin");
        write_bytes(&file, b"first").unwrap();
        let err = write_with(&file, |tmp| {
            fs::write(tmp, b"half").unwrap();
            Err(DistillError::ModelMismatch)
        });
        assert!(err.is_err());
        assert_eq!(fs::read(&file).unwrap(), b"first");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "the temporary file was removed");
        write_bytes(&file, b"second").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"second");
        fs::remove_dir_all(&dir).unwrap();
    }
}
