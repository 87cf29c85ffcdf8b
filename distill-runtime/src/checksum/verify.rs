//! [`verify`]: a file's checksum checked by reading its tensors in pieces, never the whole file.
//!
//! The check reads with `read`, not through a memory map: it holds one piece at a time, the file's
//! pages stay in the page cache (not in the process), and a file truncated while it is read fails a
//! read instead of raising `SIGBUS`. It sits in this module, below the caches, which map their
//! shards for their own `verify`.

use std::fs::{File, Metadata as FileMetadata};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::Path;

use safetensors::tensor::Metadata;

use super::{FileCrc, CHECKSUM_KEY};
use crate::atomic::io_error;
use crate::error::{DistillError, Result};

/// Bytes read and hashed at a time: what the check holds in memory, whatever the file's size.
const PIECE: usize = 8 << 20;

/// safetensors' own limit on a header's length.
const HEADER_LIMIT: u64 = 100_000_000;

/// Checks the checksum of a safetensors file written by this library — a checkpoint, a prune
/// record, a shard of a teacher cache or of a token cache — without loading it into a model: the
/// tensors are hashed as stored and never converted, so any dtype passes, the 16-bit token ids of a
/// token cache's shards included, and so is this library's metadata (a cache shard's manifest hash
/// and inputs CRC, a checkpoint's kind). Files written before the metadata was covered carry a
/// checksum of their tensors alone, which is checked as it was written.
///
/// The tensors are read in pieces of 8 MiB, so the process's memory does not grow with the file. A
/// file truncated, rewritten or replaced while it is checked fails the check.
///
/// # Errors
/// [`DistillError::Io`] when the file cannot be read; [`DistillError::Corrupt`] naming the file
/// when it is not a safetensors file, its tensors or metadata do not match its checksum, it has
/// none, or it changed while it was checked.
pub fn verify(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let corrupt = |reason: String| DistillError::Corrupt { file: path.display().to_string(), reason };
    let mut file = File::open(path).map_err(|e| io_error("read", path, e))?;
    let before = file.metadata().map_err(|e| io_error("read the metadata of", path, e))?;
    if before.is_dir() {
        return Err(io_error("read", path, ErrorKind::IsADirectory.into()));
    }
    let (data_start, header) = read_header(&mut file, before.len()).map_err(corrupt)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let Some(stored) = metadata.get(CHECKSUM_KEY) else {
        return Err(corrupt(format!("it has no checksum (`{CHECKSUM_KEY}` in its metadata)")));
    };
    let mut tensors: Vec<_> = header.tensors().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let largest = tensors.iter().map(|(_, info)| info.data_offsets.1 - info.data_offsets.0).max().unwrap_or(0);
    let mut piece = vec![0u8; largest.min(PIECE)];
    let mut crc = FileCrc::default();
    let truncated = || corrupt("it was truncated while its checksum was verified".to_owned());
    for (name, info) in &tensors {
        crc.tensor(name, info.dtype, &info.shape);
        let (start, end) = info.data_offsets;
        file.seek(SeekFrom::Start(data_start + start as u64)).map_err(|e| io_error("read", path, e))?;
        let mut left = end - start;
        while left > 0 {
            let len = left.min(PIECE);
            file.read_exact(&mut piece[..len]).map_err(|e| match e.kind() {
                ErrorKind::UnexpectedEof => truncated(),
                _ => io_error("read", path, e),
            })?;
            crc.update(&piece[..len]);
            left -= len;
        }
    }
    let after = file.metadata().map_err(|e| io_error("read the metadata of", path, e))?;
    if !same_file_state(&before, &after) || !still_named(path, &after) {
        return Err(corrupt("it was changed or replaced while its checksum was verified".to_owned()));
    }
    crc.check(stored, &metadata).map_err(corrupt)
}

/// The offset of the data section and the parsed header of a safetensors file of `len` bytes,
/// read from its start; checks that the tensors tile the data section to the file's end, as
/// safetensors' own reader does.
fn read_header(file: &mut File, len: u64) -> std::result::Result<(u64, Metadata), String> {
    let header = header_json(file, len)?;
    let header_len = header.len() as u64;
    let parsed: Metadata =
        serde_json::from_slice(&header).map_err(|e| format!("its safetensors header cannot be read ({e})"))?;
    let data_len = len - 8 - header_len;
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for (name, info) in parsed.tensors() {
        let (start, end) = info.data_offsets;
        let elements = info.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
        let bytes = elements.and_then(|n| n.checked_mul(info.dtype.size() as u64));
        if end < start || bytes != Some((end - start) as u64) {
            return Err(format!("its header gives the tensor `{name}` offsets that do not match its shape and dtype"));
        }
        spans.push((start, end));
    }
    spans.sort_unstable();
    let mut at = 0;
    for &(start, end) in &spans {
        if start != at {
            return Err("its header's tensors leave gaps or overlap in the data".to_owned());
        }
        at = end;
    }
    if at as u64 != data_len {
        return Err(format!("its tensors hold {at} bytes of data, but the file has {data_len} after its header"));
    }
    Ok((8 + header_len, parsed))
}

/// The JSON header of the safetensors file `file`, `len` bytes long, read from its start.
pub(super) fn header_json(file: &mut File, len: u64) -> std::result::Result<Vec<u8>, String> {
    let mut size = [0u8; 8];
    file.read_exact(&mut size).map_err(|_| format!("it is {len} bytes long, shorter than a safetensors header"))?;
    let header_len = u64::from_le_bytes(size);
    if header_len > HEADER_LIMIT || 8 + header_len > len {
        return Err(format!("its header claims {header_len} bytes, in a file of {len}"));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|_| "its header is cut short".to_owned())?;
    Ok(header)
}

/// Whether the file kept its length and modification time while it was read.
fn same_file_state(before: &FileMetadata, after: &FileMetadata) -> bool {
    before.len() == after.len() && before.modified().ok() == after.modified().ok()
}

/// Whether `path` still names the file that was read (not a file renamed over it meanwhile).
#[cfg(unix)]
fn still_named(path: &Path, read: &FileMetadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|now| now.dev() == read.dev() && now.ino() == read.ino())
}

/// Whether `path` still names the file that was read: not knowable without inode numbers.
#[cfg(not(unix))]
fn still_named(_path: &Path, _read: &FileMetadata) -> bool {
    true
}
