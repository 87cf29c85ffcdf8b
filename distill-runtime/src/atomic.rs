//! Atomic file writes: every file the library writes (checkpoints, cache shards and manifests, prune
//! records) first goes to a temporary name in the same directory, is flushed to disk, and only then
//! renamed over the final name. A process killed at any point leaves either the previous file or the
//! new one under the final name, never a part of one.
//!
//! The temporary name is `<name>.tmp-<pid>-<n>` (`n` counts the writes of this process), unique per
//! writer, so two writers never write each other's temporary file, and no writer deletes a live
//! one's. A writer killed mid-write leaves its temporary file behind; it is never read, and on Linux
//! the next [`write_with`] of the same file removes it, its process being gone
//! ([`remove_leftovers`]). Elsewhere there is no portable way to tell that a process is gone, and
//! such files stay until removed by hand.

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
/// any error the temporary file is removed and `path` is left as it was. The temporary files of
/// `path` that killed writers left are removed first ([`remove_leftovers`]).
///
/// # Errors
/// The error of `write`; [`DistillError::Io`] naming the file when it cannot be synced or renamed.
pub(crate) fn write_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    remove_leftovers(path);
    let tmp = temporary(path);
    let claim = Claim::new(&tmp);
    let result = write(&tmp).and_then(|()| publish(&tmp, path));
    if result.is_err() {
        // Best effort: the error being reported matters more than a leftover temporary file.
        let _ = fs::remove_file(&tmp);
    }
    drop(claim);
    result
}

/// A lock on a temporary file this process is writing, held until dropped: it tells
/// [`remove_leftovers`] in another process that the file is in use, even when that process cannot
/// see this one's pid (from another pid namespace, such as a container sharing the directory). The
/// lock is the system's advisory file lock, which the kernel releases when its process dies; the
/// file is created if there is none yet. Linux only, as the removal of leftovers is (on Windows a
/// file lock would block the writer's own writes through another handle).
pub(crate) struct Claim {
    #[cfg(target_os = "linux")]
    _file: Option<File>,
}

impl Claim {
    /// Claims the temporary file `tmp`. Best effort: where it cannot be locked, the write goes on,
    /// guarded by its pid alone.
    pub(crate) fn new(tmp: &Path) -> Claim {
        #[cfg(target_os = "linux")]
        {
            let file = File::options().write(true).create(true).truncate(false).open(tmp).ok();
            let _file = file.filter(|file| file.try_lock().is_ok());
            Claim { _file }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = tmp;
            Claim {}
        }
    }
}

/// Removes the temporary files of `path` (`<name>.tmp-<pid>-<n>`, exactly; see the module docs)
/// whose writing process no longer exists: killed mid-write, it left them behind, full size. A file
/// of a live process — a concurrent writer of `path`, this process's included — is never touched,
/// nor one some process holds a [`Claim`] on, nor any other name. A pid reused since by another
/// process keeps its leftover until that process ends too.
///
/// Linux only: a process is gone when `/proc/<pid>` is (and nothing is removed where `/proc` is
/// not mounted). Best effort: a file that cannot be listed, opened for writing, locked or removed
/// stays, as the write itself matters more.
#[cfg(target_os = "linux")]
fn remove_leftovers(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Some(name) = path.file_name() else { return };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Some(pid) = leftover_pid(name.as_bytes(), entry.file_name().as_bytes()) else { continue };
        if proc.join(pid.to_string()).exists() || !entry.file_type().is_ok_and(|kind| kind.is_file()) {
            continue;
        }
        let leftover = entry.path();
        let Ok(file) = File::options().write(true).open(&leftover) else { continue };
        // Locked by another process: a live writer whose pid this one cannot see.
        if file.try_lock().is_ok() {
            let _ = fs::remove_file(&leftover);
        }
    }
}

/// Elsewhere a process's end cannot be told portably: leftovers stay (see the module docs).
#[cfg(not(target_os = "linux"))]
fn remove_leftovers(_path: &Path) {}

/// The pid of `candidate` when it is a temporary name of the file `name`: `<name>.tmp-<pid>-<n>`,
/// both numbers decimal digits only.
#[cfg(target_os = "linux")]
fn leftover_pid(name: &[u8], candidate: &[u8]) -> Option<u32> {
    let rest = candidate.strip_prefix(name)?.strip_prefix(TEMPORARY_INFIX.as_bytes())?;
    let dash = rest.iter().position(|&b| b == b'-')?;
    let (pid, n) = (&rest[..dash], &rest[dash + 1..]);
    let digits = |part: &[u8]| !part.is_empty() && part.iter().all(u8::is_ascii_digit);
    if !digits(pid) || !digits(n) {
        return None;
    }
    std::str::from_utf8(pid).ok()?.parse().ok()
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
    let claim = Claim::new(&tmp);
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
    drop(claim);
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

    #[cfg(target_os = "linux")]
    #[test]
    fn only_the_exact_temporary_names_of_the_file_are_leftovers() {
        let pid = |candidate: &str| leftover_pid(b"a.bin", candidate.as_bytes());
        assert_eq!(pid("a.bin.tmp-123-0"), Some(123));
        assert_eq!(pid("a.bin.tmp-7-4567"), Some(7));
        for other in [
            "a.bin",
            "b.bin.tmp-123-0",
            "a.bin.x.tmp-123-0",
            "a.bin.tmp-123",
            "a.bin.tmp-123-",
            "a.bin.tmp--0",
            "a.bin.tmp-+1-0",
            "a.bin.tmp-1-0-0",
            "a.bin.tmp-1-0.bak",
            "a.bin.tmp-99999999999-0",
        ] {
            assert_eq!(pid(other), None, "{other}");
        }
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
