//! A checksummed safetensors file written tensor by tensor, for files larger than memory.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::Dtype;

use super::scheme::WITH_METADATA;
use super::{header, ChecksumError, FileCrc, CHECKSUM_KEY};
use crate::atomic::{self, io_error};
use crate::error::Result;

/// A safetensors file with a checksum, written tensor by tensor without holding the tensors in
/// memory: the shapes are declared up front, each tensor's bytes are then appended in order (the
/// tensors interleaved as the caller likes), and [`finish`](Self::finish) writes the header with the
/// checksum and publishes the file atomically, as [`write`] does. The result is byte for byte the
/// file [`write`] gives for the same tensors and metadata.
///
/// The bytes go to a temporary file beside `path` (see [`crate::atomic`]); a writer dropped
/// without `finish`, or a process killed, leaves no file under `path`.
pub(crate) struct Streamed {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    /// Held until the file is published or removed.
    _claim: atomic::Claim,
    file: Option<std::fs::File>,
    tensors: Vec<StreamedTensor>,
    metadata: BTreeMap<String, String>,
    header_len: usize,
}

struct StreamedTensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    len: usize,
    /// Where the tensor's bytes start in the file.
    offset: u64,
    written: usize,
    crc: crc32fast::Hasher,
}

/// The checksum placeholder of a header whose length is computed before the checksum is known
/// (the same length as every real one: the form's prefix and 8 hex digits).
fn crc_placeholder() -> String {
    format!("{WITH_METADATA}00000000")
}

impl Streamed {
    /// Starts the file `path` with the tensors `(name, dtype, shape)` and `metadata` (keys that start
    /// with `distill.`, which the checksum covers; the checksum is added to it).
    ///
    /// # Errors
    /// [`ChecksumError::DuplicateName`] for two tensors of one name; [`DistillError::Io`] when
    /// the temporary file cannot be created.
    pub(crate) fn create(
        path: &Path,
        tensors: Vec<(String, Dtype, Vec<usize>)>,
        metadata: BTreeMap<String, String>,
    ) -> Result<Streamed> {
        debug_assert!(metadata.keys().all(|key| key.starts_with(super::OWN_KEY_PREFIX)), "a key left out");
        let mut metadata = metadata;
        metadata.insert(CHECKSUM_KEY.to_owned(), crc_placeholder());
        let specs: Vec<(&str, Dtype, &[usize], usize)> = tensors
            .iter()
            .map(|(name, dtype, shape)| {
                (name.as_str(), *dtype, shape.as_slice(), shape.iter().product::<usize>() * dtype.size())
            })
            .collect();
        let (header, order) = header(&specs, &metadata)?;
        let mut offsets = vec![0u64; tensors.len()];
        let mut offset = 8 + header.len() as u64;
        for &i in &order {
            offsets[i] = offset;
            offset += specs[i].3 as u64;
        }
        let tensors = tensors
            .into_iter()
            .zip(offsets)
            .map(|((name, dtype, shape), offset)| {
                let len = shape.iter().product::<usize>() * dtype.size();
                StreamedTensor { name, dtype, shape, len, offset, written: 0, crc: crc32fast::Hasher::new() }
            })
            .collect();
        let tmp = atomic::temporary(path);
        let claim = atomic::Claim::new(&tmp);
        let file = std::fs::File::create(&tmp).map_err(|e| io_error("create", &tmp, e))?;
        // The file has its final length from the start; what is not written yet reads as zeros.
        file.set_len(offset).map_err(|e| io_error("write", &tmp, e))?;
        Ok(Streamed {
            path: path.to_path_buf(),
            tmp,
            _claim: claim,
            file: Some(file),
            tensors,
            metadata,
            header_len: header.len(),
        })
    }

    /// Appends `bytes` to the tensor `index` (in the order given to [`create`](Self::create)).
    ///
    /// # Errors
    /// [`ChecksumError::Overrun`] when the bytes overrun the tensor; [`DistillError::Io`]
    /// when they cannot be written.
    pub(crate) fn append(&mut self, index: usize, bytes: &[u8]) -> Result<()> {
        let tensor = &mut self.tensors[index];
        if tensor.written + bytes.len() > tensor.len {
            let (name, len, extra, written) = (tensor.name.clone(), tensor.len, bytes.len(), tensor.written);
            return Err(ChecksumError::Overrun { name, len, extra, written }.into());
        }
        let file = self.file.as_ref().ok_or(ChecksumError::Finished)?;
        write_at(file, bytes, tensor.offset + tensor.written as u64).map_err(|e| io_error("write", &self.tmp, e))?;
        tensor.crc.update(bytes);
        tensor.written += bytes.len();
        Ok(())
    }

    /// Bytes still to append to the tensor `index`.
    pub(crate) fn remaining(&self, index: usize) -> usize {
        let tensor = &self.tensors[index];
        tensor.len - tensor.written
    }

    /// Writes the header with the checksum, and publishes the file under its final name (fsync,
    /// rename, directory fsync).
    ///
    /// # Errors
    /// [`ChecksumError::Incomplete`] naming a tensor not completely written;
    /// [`DistillError::Io`] when the file cannot be written, synced or renamed.
    pub(crate) fn finish(mut self) -> Result<()> {
        if let Some(short) = self.tensors.iter().find(|t| t.written != t.len) {
            let (name, written, len) = (short.name.clone(), short.written, short.len);
            return Err(ChecksumError::Incomplete { name, written, len }.into());
        }
        let mut sorted: Vec<&StreamedTensor> = self.tensors.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        let mut crc = FileCrc::default();
        for tensor in sorted {
            crc.tensor(&tensor.name, tensor.dtype, &tensor.shape);
            crc.combine(&tensor.crc);
        }
        // The placeholder under the checksum's key is not covered: only the other entries are.
        let stored = crc.finish(&self.metadata);
        self.metadata.insert(CHECKSUM_KEY.to_owned(), stored);
        let specs: Vec<(&str, Dtype, &[usize], usize)> =
            self.tensors.iter().map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice(), t.len)).collect();
        let (header, _) = header(&specs, &self.metadata)?;
        // Every checksum has the placeholder's length, so the header keeps the length the data was
        // placed after.
        debug_assert_eq!(header.len(), self.header_len);
        if header.len() != self.header_len {
            return Err(ChecksumError::HeaderLength.into());
        }
        let file = self.file.take().ok_or(ChecksumError::Finished)?;
        let mut start = (header.len() as u64).to_le_bytes().to_vec();
        start.extend_from_slice(&header);
        let written = write_at(&file, &start, 0).and_then(|()| file.sync_all());
        drop(file);
        let published =
            written.map_err(|e| io_error("write", &self.tmp, e)).and_then(|()| atomic::publish(&self.tmp, &self.path));
        if published.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        // Published or removed: nothing for `drop` to clear.
        self.tmp = std::path::PathBuf::new();
        published
    }
}

impl std::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamed").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        // Not finished: the temporary file is not a file of the cache. Best effort, as a killed
        // writer's leftovers are cleared by the next writer of the shard.
        if !self.tmp.as_os_str().is_empty() {
            self.file.take();
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes all of `bytes` at `offset` of `file`.
#[cfg(unix)]
fn write_at(file: &std::fs::File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(bytes, offset)
}

/// Writes all of `bytes` at `offset` of `file`.
#[cfg(not(unix))]
fn write_at(mut file: &std::fs::File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)
}
