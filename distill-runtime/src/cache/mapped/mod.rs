//! Memory-mapped safetensors shards, as both teacher caches read them.
//!
//! - **Opening** a shard maps the file and reads its header only (the first pages): the tensors'
//!   names, dtypes, shapes and offsets, and the metadata. The safetensors header must account for
//!   the file's length exactly, so a truncated or extended file is refused here.
//! - **The checksum** (CRC-32 of the tensors, in the metadata) is verified lazily, the first time a
//!   read touches the shard ([`MappedShard::verify`]): one sequential pass over the shard's bytes,
//!   at the CRC's speed (several GB/s) once the file is in the page cache, at the disk's otherwise.
//!   The pass runs in windows whose pages are released as soon as they are hashed, so it does not
//!   grow the process's resident memory. Reads keep the outcome of that first pass, so a damaged
//!   shard fails every read; [`MappedShard::verify_now`] (a cache's `verify()`) runs the pass again.
//! - **Around every read** of a shard ([`Reader`]): before the copy, the open file must be no
//!   shorter than when it was opened and no earlier read of it may have faulted (one `fstat`), so
//!   that a byte past a new end is never touched; after the copy, the path must still name the mapped
//!   file (one `stat`) and the open file must have the length, modification and change times seen on
//!   open, with no fault during the copy (one `fstat`), so that bytes changed during the copy are
//!   never returned. A shard truncated, rewritten in place, replaced (a file renamed over it) or
//!   removed since the cache was opened makes the read an error ([`DistillError::Corrupt`]). A
//!   replaced or removed file would still read correctly (the mapping keeps the file that was
//!   opened), but the directory no longer holds what the job reads, and the job is told so. A
//!   truncation racing with the copy itself, between the two checks, is caught by the `SIGBUS` guard
//!   ([`super::guard`]) on Linux.
//! - **Resident memory** stays bounded: after every few MiB read, the process's file-backed resident
//!   size is compared with its value after the last release, and when it has grown by more than the
//!   reader's resident limit ([`DEFAULT_RESIDENT_LIMIT`] unless set), every mapping's pages are
//!   released from the process (`madvise(MADV_DONTNEED)`). They stay in the operating system's page
//!   cache, so a later read maps them again without reading the disk; the cost is a minor page
//!   fault per folio touched again. A cache no larger than the limit is never released.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use memmap2::{Advice, Mmap, UncheckedAdvice};
use safetensors::tensor::{Dtype, SafeTensors};

use super::guard::Guard;
use crate::atomic::io_error;
use crate::checksum::{FileCrc, CHECKSUM_KEY};
use crate::error::{DistillError, Result};

mod set;

use set::page_size;
pub(crate) use set::{tensor_bytes_mut, Reader, ShardSet};

/// The resident limit of a reader unless set otherwise: 128 MiB of mapped shard pages.
pub const DEFAULT_RESIDENT_LIMIT: usize = 128 << 20;

/// The kernel maps up to this many bytes of page-cache pages around a faulting page (Linux's
/// `fault_around_bytes` default), so one read may make this much resident on either side.
const FAULT_AROUND: usize = 64 << 10;

/// A gather of more bytes than this is split over threads.
const PARALLEL_COPY: usize = 2 << 20;

/// The bytes to copy into.
fn dst_len(pairs: &[(&[u8], &mut [u8])]) -> usize {
    pairs.iter().map(|(_, dst)| dst.len()).sum()
}

/// The checksum pass hashes this many bytes before it releases their pages.
const VERIFY_WINDOW: usize = 32 << 20;

/// The checksum pass asks the kernel to read its next window in requests of this many bytes: Linux
/// reads at most the device's read-ahead size per request (128 KiB by default) and drops the rest,
/// and without the requests a mapping advised random-access reads one page per fault. Measured on
/// a 1 GiB shard evicted from the page cache: 0.7–0.85 s with them, 11 s with one request per
/// window, 15–18 s with none (reading the file whole with `read`: 0.75–2.4 s).
const READ_AHEAD_STEP: usize = 128 << 10;

/// Where a tensor's bytes are in a shard file.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    /// From the start of the file.
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

/// What identifies the state of a file: its length, identity and times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    dev: u64,
    ino: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl Stamp {
    #[cfg(unix)]
    fn of(metadata: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            len: metadata.len(),
            dev: metadata.dev(),
            ino: metadata.ino(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }

    #[cfg(not(unix))]
    fn of(metadata: &std::fs::Metadata) -> Stamp {
        let modified = metadata
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or((0, 0), |d| (d.as_secs() as i64, i64::from(d.subsec_nanos())));
        Stamp { len: metadata.len(), dev: 0, ino: 0, modified, changed: (0, 0) }
    }
}

/// One shard file, mapped.
#[derive(Debug)]
pub(crate) struct MappedShard {
    path: PathBuf,
    file: File,
    /// Dropped before `map` (fields drop in order): unregistered before the mapping goes.
    guard: Guard,
    map: Mmap,
    stamp: Stamp,
    slots: HashMap<String, Slot>,
    metadata: HashMap<String, String>,
    /// The outcome of the checksum pass the reads rely on: `None` until a read or
    /// [`verify_now`](Self::verify_now) runs one; a failure, once found, stays.
    verified: Mutex<Option<std::result::Result<(), String>>>,
}

impl MappedShard {
    /// Maps the safetensors file `path` and reads its header.
    ///
    /// # Errors
    /// [`DistillError::Io`] when it cannot be opened or mapped; [`DistillError::Corrupt`] when its
    /// header cannot be read or does not account for the file's length.
    pub(crate) fn open(path: &Path) -> Result<MappedShard> {
        let file = File::open(path).map_err(|e| io_error("open", path, e))?;
        let stamp = Stamp::of(&file.metadata().map_err(|e| io_error("read the metadata of", path, e))?);
        let corrupt = |reason: String| DistillError::Corrupt { file: path.display().to_string(), reason };
        if stamp.len < 8 {
            return Err(corrupt(format!("it is {} bytes long, shorter than a safetensors header", stamp.len)));
        }
        // SAFETY: the file may change while mapped; every read goes through `Reader`, which checks
        // its length before and the file after, and the guard answers a truncation in between.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| io_error("map", path, e))?;
        let guard = Guard::register(map.as_ptr(), map.len());
        // Shuffled reads: read-ahead would read pages no batch asks for.
        let _ = map.advise(Advice::Random);
        let (header_len, header) = SafeTensors::read_metadata(&map).map_err(|e| {
            corrupt(format!("its safetensors header cannot be read or does not match its length ({e:?})"))
        })?;
        if guard.faults() > 0 {
            return Err(corrupt("it was truncated while its header was read".to_owned()));
        }
        let slots = header
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let (start, end) = info.data_offsets;
                let slot = Slot {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    offset: 8 + header_len + start,
                    len: end - start,
                };
                (name, slot)
            })
            .collect();
        let metadata = header.metadata().clone().unwrap_or_default();
        Ok(MappedShard {
            path: path.to_path_buf(),
            file,
            guard,
            map,
            stamp,
            slots,
            metadata,
            verified: Mutex::new(None),
        })
    }

    /// The mapped length.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The safetensors metadata.
    pub(crate) fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Where the tensor `name` is, if the shard has it.
    pub(crate) fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.get(name)
    }

    fn corrupt(&self, reason: impl Into<String>) -> DistillError {
        DistillError::Corrupt { file: self.path.display().to_string(), reason: reason.into() }
    }

    /// Verifies the shard's checksum for a read: the first call runs the pass (a shard without a
    /// checksum, from an older layout, passes), later ones give its outcome, so a read pays for the
    /// pass once. A file changed afterwards is found by the checks around each read (its length and
    /// times), not by this.
    ///
    /// # Errors
    /// [`DistillError::Corrupt`] when the tensors do not match the checksum.
    pub(crate) fn verify(&self) -> Result<()> {
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        verified.get_or_insert_with(|| self.checksum_outcome()).clone().map_err(|reason| self.corrupt(reason))
    }

    /// Runs the checksum pass now, whatever earlier passes found, and keeps a failure for the reads
    /// that follow. A shard that failed an earlier pass stays failed, even if its bytes match now: a
    /// read of it may already have been refused, and a file whose bytes come and go is not trusted.
    ///
    /// # Errors
    /// [`DistillError::Corrupt`] when the tensors do not match the checksum, the file changed since it
    /// was opened, or an earlier pass failed.
    pub(crate) fn verify_now(&self) -> Result<()> {
        // Outside the lock: reads of the shard go on with the earlier outcome during the pass.
        let outcome = self.checksum_outcome();
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = match verified.take() {
            Some(Err(earlier)) => Err(earlier),
            _ => outcome,
        };
        *verified = Some(kept.clone());
        kept.map_err(|reason| self.corrupt(reason))
    }

    fn checksum_outcome(&self) -> std::result::Result<(), String> {
        let Some(stored) = self.metadata.get(CHECKSUM_KEY) else { return Ok(()) };
        let mut names: Vec<&String> = self.slots.keys().collect();
        names.sort();
        let mut crc = FileCrc::default();
        for name in names {
            let slot = &self.slots[name];
            crc.tensor(name, slot.dtype, &slot.shape);
            let mut offset = slot.offset;
            let end = slot.offset + slot.len;
            // The mapping is advised random-access (no read-ahead) for the batches' reads: the pass
            // asks for each window ahead, so that the disk reads the next one while this one is
            // hashed instead of one page per fault.
            self.read_ahead(offset, end);
            while offset < end {
                let next = (offset + VERIFY_WINDOW).min(end);
                self.read_ahead(next, end);
                crc.update(&self.map[offset..next]);
                self.release_range(offset, next - offset);
                offset = next;
            }
        }
        if self.guard.faults() > 0 {
            return Err("it was truncated while its checksum was verified".to_owned());
        }
        self.unchanged().map_err(|e| e.to_string())?;
        crc.check(stored, &self.metadata).map_err(|reason| {
            format!(
                "{reason}; for a cache shard, remove it and run the writer again (it writes only the missing shards)"
            )
        })
    }

    /// An error unless the file is as it was when opened and the path still names it.
    fn unchanged(&self) -> Result<()> {
        self.named()?;
        self.intact()
    }

    /// An error unless the opened file has its length and times of when it was opened, and no read
    /// of it faulted (one `fstat`).
    fn intact(&self) -> Result<()> {
        if self.guard.faults() > 0 {
            return Err(self.corrupt(
                "it was truncated while it was read (the pages past its new end read as zeros and were not used)",
            ));
        }
        let now = Stamp::of(&self.file.metadata().map_err(|e| io_error("read the metadata of", &self.path, e))?);
        if now.len != self.stamp.len {
            return Err(self.corrupt(format!(
                "its length changed from {} to {} bytes since the cache was opened: the file was truncated or \
                 rewritten while this job reads it",
                self.stamp.len, now.len
            )));
        }
        if now != self.stamp {
            return Err(self.corrupt(
                "it was modified since the cache was opened (its modification time changed): the file was rewritten \
                 in place while this job reads it",
            ));
        }
        Ok(())
    }

    /// An error when the opened file is shorter than when it was opened, or a read of it faulted
    /// (one `fstat`).
    fn long_enough(&self) -> Result<()> {
        let len = self.file.metadata().map_err(|e| io_error("read the metadata of", &self.path, e))?.len();
        if self.guard.faults() > 0 || len < self.stamp.len {
            return self.intact();
        }
        Ok(())
    }

    /// An error unless the path still names the opened file (one `stat`).
    fn named(&self) -> Result<()> {
        // Checked before `intact`: a file renamed over the shard, or its removal, also changes the
        // opened file's change time (its link count), and is reported as what it is.
        match std::fs::metadata(&self.path) {
            Ok(named) => {
                let named = Stamp::of(&named);
                if (named.dev, named.ino) != (self.stamp.dev, self.stamp.ino) {
                    return Err(self.corrupt(
                        "another file was put in its place since the cache was opened (the job still maps the file it \
                         opened, which is intact, but the cache directory no longer holds it): open the cache again \
                         to read the new one",
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.corrupt(
                    "it was removed since the cache was opened (the job still maps the file it opened, but the cache \
                     directory no longer holds it)",
                ))
            }
            Err(e) => return Err(io_error("read the metadata of", &self.path, e)),
        }
        Ok(())
    }

    /// The mapped bytes `offset..offset + len` (read only through a [`Reader`]).
    fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        &self.map[offset..offset + len]
    }

    /// Asks the kernel to read the window of the checksum pass from `offset` (up to `end`) into the
    /// page cache, in the background.
    fn read_ahead(&self, offset: usize, end: usize) {
        let end = end.min(offset + VERIFY_WINDOW);
        let mut at = offset;
        while at < end {
            let step = READ_AHEAD_STEP.min(end - at);
            // Advice only: a failure costs speed, not correctness.
            let _ = self.map.advise_range(Advice::WillNeed, at, step);
            at += step;
        }
    }

    /// Releases the process's pages of `offset..offset + len` (the whole pages inside it).
    fn release_range(&self, offset: usize, len: usize) {
        let page = page_size();
        let start = offset.div_ceil(page) * page;
        let end = ((offset + len) / page * page).min(self.map.len());
        if end > start {
            // SAFETY: a read-only file mapping: dropping its pages loses nothing; they are read
            // again from the page cache when touched.
            let _ = unsafe { self.map.unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start) };
        }
    }

    /// Releases all of the process's pages of the mapping.
    fn release(&self) {
        // SAFETY: as in `release_range`.
        let _ = unsafe { self.map.unchecked_advise(UncheckedAdvice::DontNeed) };
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_shard_truncated_between_the_check_and_the_copy_fails_the_read_instead_of_crashing() {
        let dir = std::env::temp_dir().join(format!("distill-mapped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("shard.safetensors");
        let values = tch::Tensor::arange(1 << 16, (tch::Kind::Float, tch::Device::Cpu));
        crate::checksum::write(&path, &[("values".to_owned(), values)], Default::default()).unwrap();
        let set = ShardSet::new(vec![Some(MappedShard::open(&path).unwrap())]);
        let slot = set.get(0).unwrap().slot("values").unwrap().clone();
        // Checked (checksum, length, identity); then the file shrinks before the copy.
        let reader = set.reader(&[0]).unwrap();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(4096).unwrap();
        let mut copied = vec![1u8; 4096];
        reader.copy_records(&[(0, slot.offset + slot.len - 4096)], &mut copied);
        assert!(copied.iter().all(|&b| b == 0), "the lost page reads as zeros");
        let error = reader.finish().unwrap_err();
        assert!(error.to_string().contains("truncated while it was read"), "{error}");
        // And every later read of the shard fails.
        assert!(set.reader(&[0]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
