//! [`ShardSet`]: the mapped shards of one cache with their resident limit, and [`Reader`], one read
//! of a batch across them (its length checked before the copy, the file after it, resident size
//! accounted).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use std::fs::File;

use super::{dst_len, MappedShard, DEFAULT_RESIDENT_LIMIT, FAULT_AROUND, PARALLEL_COPY};
use crate::cache::CacheError;
use crate::error::Result;

/// The shards of one cache (`None` for a shard this reader does not read) and the resident limit.
#[derive(Debug)]
pub(crate) struct ShardSet {
    shards: Vec<Option<MappedShard>>,
    mapped: usize,
    limit: AtomicUsize,
    /// Bytes read (rounded out to fault-around windows) since the resident size was last looked at.
    charged: AtomicUsize,
    /// The process's file-backed resident bytes after the last release (other files' pages), or,
    /// where that cannot be measured, the bytes read since the last release.
    baseline: AtomicUsize,
}

impl ShardSet {
    pub(crate) fn new(shards: Vec<Option<MappedShard>>) -> ShardSet {
        let mapped = shards.iter().flatten().map(MappedShard::len).sum();
        ShardSet {
            shards,
            mapped,
            limit: AtomicUsize::new(DEFAULT_RESIDENT_LIMIT),
            charged: AtomicUsize::new(0),
            baseline: AtomicUsize::new(file_resident().unwrap_or(0)),
        }
    }

    pub(crate) fn get(&self, index: usize) -> Option<&MappedShard> {
        self.shards.get(index).and_then(Option::as_ref)
    }

    pub(crate) fn set_limit(&self, bytes: usize) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Verifies every mapped shard's checksum now, even one a read verified already: the file may
    /// have been damaged since.
    pub(crate) fn verify_all(&self) -> Result<()> {
        self.shards.iter().flatten().try_for_each(MappedShard::verify_now)
    }

    /// Starts a read of the shards `touched`: each verified and unchanged.
    ///
    /// # Errors
    /// As [`MappedShard::verify`]; [`DistillError::Corrupt`] for a shard changed since it was opened.
    pub(crate) fn reader(&self, touched: &[usize]) -> Result<Reader<'_>> {
        for &index in touched {
            let shard = self.get(index).ok_or(CacheError::ShardNotMapped { index })?;
            shard.verify()?;
            // Not a byte of a shorter file is touched; whether it is otherwise unchanged, and still
            // named by its path, is checked after the copy, which decides whether the batch is used.
            shard.long_enough()?;
        }
        Ok(Reader { set: self, touched: touched.to_vec(), charged: Cell::new(0) })
    }

    /// Counts `bytes` read; past a 32nd of the limit, looks at the resident size and releases every
    /// mapping when it exceeds the limit.
    ///
    /// What a read makes resident is measured, not estimated: the kernel may map a whole large
    /// page-cache folio (up to 2 MiB) around a touched page, several times the bytes read. The
    /// measure is the process's file-backed resident size (`/proc/self/statm`) over its value after
    /// the last release; where it is not available, the bytes read count instead.
    fn charge(&self, bytes: usize) {
        let limit = self.limit();
        if self.mapped <= limit {
            return;
        }
        let total = self.charged.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if total < (limit / 32).max(1)
            || self.charged.compare_exchange(total, 0, Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            return;
        }
        let over = match file_resident() {
            Some(now) => now.saturating_sub(self.baseline.load(Ordering::Acquire)) > limit,
            None => self.baseline.fetch_add(total, Ordering::AcqRel) + total > limit,
        };
        if over {
            for shard in self.shards.iter().flatten() {
                shard.release();
            }
            self.baseline.store(file_resident().unwrap_or(0), Ordering::Release);
        }
    }
}

/// The system's page size.
pub(super) fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        #[cfg(unix)]
        {
            // SAFETY: sysconf only reads a system constant.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            if page > 0 {
                return page as usize;
            }
        }
        4096
    })
}

/// The process's resident file-backed and shared memory in bytes (`/proc/self/statm`, third field,
/// in pages), where the system tells.
fn file_resident() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::io::Read;
        let mut text = [0u8; 256];
        let mut file = File::open("/proc/self/statm").ok()?;
        let len = file.read(&mut text).ok()?;
        let pages: usize = std::str::from_utf8(&text[..len]).ok()?.split_whitespace().nth(2)?.parse().ok()?;
        Some(pages * page_size())
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// One read of a [`ShardSet`]: copies, then [`finish`](Self::finish) checks the shards again.
pub(crate) struct Reader<'s> {
    set: &'s ShardSet,
    touched: Vec<usize>,
    charged: Cell<usize>,
}

impl<'s> Reader<'s> {
    /// The bytes `offset..offset + len` of shard `shard` (one of those the reader was started for).
    pub(crate) fn bytes(&self, shard: usize, offset: usize, len: usize) -> &'s [u8] {
        debug_assert!(self.touched.contains(&shard));
        let first = offset / FAULT_AROUND;
        let last = (offset + len).div_ceil(FAULT_AROUND).max(first + 1);
        self.charged.set(self.charged.get() + (last - first) * FAULT_AROUND);
        self.set.shards[shard].as_ref().map_or(&[], |s| s.bytes(offset, len))
    }

    /// Copies, for each `(shard, offset)` of `records`, that record of `dst.len() / records.len()`
    /// bytes into the next part of `dst`. A copy of more than [`PARALLEL_COPY`] bytes is split over
    /// libtorch's intra-op thread count, as libtorch's own gathers are.
    pub(crate) fn copy_records(&self, records: &[(usize, usize)], dst: &mut [u8]) {
        if records.is_empty() || dst.is_empty() {
            return;
        }
        let record = dst.len() / records.len();
        let pairs: Vec<(&[u8], &mut [u8])> = records
            .iter()
            .zip(dst.chunks_exact_mut(record))
            .map(|(&(shard, offset), dst)| (self.bytes(shard, offset, record), dst))
            .collect();
        let threads = usize::try_from(tch::get_num_threads()).unwrap_or(1).clamp(1, 8);
        if threads == 1 || dst_len(&pairs) < PARALLEL_COPY {
            pairs.into_iter().for_each(|(src, dst)| dst.copy_from_slice(src));
            return;
        }
        let per = pairs.len().div_ceil(threads);
        let mut pairs = pairs;
        std::thread::scope(|scope| {
            let mut rest = pairs.as_mut_slice();
            while rest.len() > per {
                let (part, tail) = rest.split_at_mut(per);
                scope.spawn(move || part.iter_mut().for_each(|(src, dst)| dst.copy_from_slice(src)));
                rest = tail;
            }
            rest.iter_mut().for_each(|(src, dst)| dst.copy_from_slice(src));
        });
    }

    /// Checks that every shard read is still as it was opened and that no read faulted, then
    /// counts the pages read against the resident limit.
    ///
    /// # Errors
    /// [`DistillError::Corrupt`] naming a shard changed during the read: what was copied must not
    /// be used.
    pub(crate) fn finish(self) -> Result<()> {
        for &index in &self.touched {
            if let Some(shard) = self.set.get(index) {
                shard.unchanged()?;
            }
        }
        self.set.charge(self.charged.get());
        Ok(())
    }
}

/// The bytes of a new contiguous CPU tensor, to fill.
///
/// # Safety
/// `tensor` must be a contiguous CPU tensor that nothing else reads or writes while the slice lives.
pub(crate) unsafe fn tensor_bytes_mut(tensor: &mut tch::Tensor) -> &mut [u8] {
    let len = tensor.numel() * tensor.kind().elt_size_in_bytes();
    if len == 0 {
        return &mut [];
    }
    // SAFETY: the caller guarantees a contiguous CPU tensor of `len` bytes, not shared.
    unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr().cast::<u8>(), len) }
}
