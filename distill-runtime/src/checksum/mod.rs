//! Safetensors files that carry a checksum of their tensors and metadata: checkpoints, prune
//! records and teacher-cache shards.
//!
//! The checksum is a CRC-32 (IEEE) over every tensor in name order — its name, dtype, shape and
//! bytes — and then over this library's metadata entries (every key that starts with `distill.`,
//! such as a cache shard's manifest hash and inputs CRC, but the checksum's own), stored as
//! `"crc32+metadata:<8 hex digits>"` under the metadata key `distill.crc32`. Files written by
//! versions before the metadata was covered carry `"crc32:<8 hex digits>"`, a CRC of their tensors
//! alone, and still read, checked as they were written. A damaged current file cannot pass for one
//! of those: the two forms differ in length, so no flipped byte turns one into the other, and the
//! CRC of a current file does not match its tensors alone. The files stay ordinary safetensors
//! files (`VarStore::load`, Python's `safetensors` read them and ignore the metadata). Files are
//! written atomically: to a temporary name, fsynced, then renamed.
//!
//! Reading a file checks its checksum: one CRC pass over its bytes, which runs at several GB/s
//! (the `crc32fast` crate uses the CPU's carry-less multiply), next to reading the file itself.
//! A CRC-32 detects every burst error up to 32 bits and any other corruption with probability
//! 1 − 2⁻³²; it is not a defence against deliberate tampering.
//!
//! Every metadata key this library writes starts with `distill.`. A file without a checksum is
//! read unchecked only when no key of its metadata does (a file other tools wrote): one that has
//! such a key was written by this library, which gives every file a checksum, so its checksum's
//! key was damaged — and with it unchecked, damaged tensors would read as if intact.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};
use tch::{Kind, Tensor};

use crate::atomic::{self, io_error};
use crate::error::{DistillError, Result};

mod scheme;
mod streamed;
mod verify;

pub use crate::error::ChecksumError;
pub(crate) use scheme::{covers_metadata, FileCrc};
pub(crate) use streamed::Streamed;
pub use verify::verify;

/// The metadata key of the checksum.
pub(crate) const CHECKSUM_KEY: &str = "distill.crc32";

/// The start of every metadata key this library writes: a file with one was written by it.
const OWN_KEY_PREFIX: &str = "distill.";

/// A tensor's bytes as safetensors writes them.
struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// The CRC-32 of raw bytes, as `"crc32:<hex>"` (used for inputs and manifests).
pub(crate) fn crc_of_bytes(parts: &[&[u8]]) -> String {
    let mut crc = crc32fast::Hasher::new();
    for part in parts {
        crc.update(part);
    }
    format!("crc32:{:08x}", crc.finalize())
}

/// A tensor's bytes on the CPU, contiguous, in its own dtype.
pub(crate) fn tensor_bytes(tensor: &Tensor) -> Result<Vec<u8>> {
    let cpu = tch::no_grad(|| tensor.f_to_device(tch::Device::Cpu)?.f_contiguous())?;
    let numel = cpu.numel();
    let mut data = vec![0u8; numel * cpu.kind().elt_size_in_bytes()];
    cpu.f_copy_data_u8(&mut data, numel)?;
    Ok(data)
}

/// Writes `tensors` to the safetensors `path` atomically, with `metadata` (keys that start with
/// `distill.`, which the checksum covers) and their checksum in its metadata.
///
/// # Errors
/// [`ChecksumError::UnsupportedKind`] for a tensor of a kind safetensors cannot store;
/// [`DistillError::Io`] naming the file when it cannot be written.
pub(crate) fn write(path: &Path, tensors: &[(String, Tensor)], metadata: BTreeMap<String, String>) -> Result<()> {
    let bytes = tensors
        .iter()
        .map(|(name, tensor)| {
            let dtype = Dtype::try_from(tensor.kind()).map_err(|_| {
                DistillError::from(ChecksumError::UnsupportedKind { name: name.clone(), kind: tensor.kind() })
            })?;
            let shape = tensor.size().iter().map(|&d| d as usize).collect();
            Ok((name.as_str(), Bytes { dtype, shape, data: tensor_bytes(tensor)? }))
        })
        .collect::<Result<Vec<_>>>()?;
    debug_assert!(metadata.keys().all(|key| key.starts_with(OWN_KEY_PREFIX)), "a key the checksum leaves out");
    let mut sorted: Vec<&(&str, Bytes)> = bytes.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut crc = FileCrc::default();
    for (name, b) in sorted {
        crc.tensor(name, b.dtype, &b.shape);
        crc.update(&b.data);
    }
    let mut metadata = metadata;
    let stored = crc.finish(&metadata);
    metadata.insert(CHECKSUM_KEY.to_owned(), stored);
    let specs: Vec<(&str, Dtype, &[usize], usize)> =
        bytes.iter().map(|(name, b)| (*name, b.dtype, b.shape.as_slice(), b.data.len())).collect();
    let (header, order) = header(&specs, &metadata)?;
    atomic::write_with(path, |tmp| {
        let mut file = std::io::BufWriter::new(std::fs::File::create(tmp).map_err(|e| io_error("create", tmp, e))?);
        let mut put = |data: &[u8]| file.write_all(data).map_err(|e| io_error("write", tmp, e));
        put(&(header.len() as u64).to_le_bytes())?;
        put(&header)?;
        for i in order {
            put(&bytes[i].1.data)?;
        }
        file.flush().map_err(|e| io_error("write", tmp, e))
    })
}

/// The safetensors header of `tensors` (padded with spaces to a multiple of 8 bytes, as the format
/// asks), and the order their bytes follow it in: by decreasing alignment, then by name, as the
/// `safetensors` crate writes them. Keys are written in sorted order, so equal tensors and metadata
/// give equal files in every process.
fn header(
    tensors: &[(&str, Dtype, &[usize], usize)],
    metadata: &BTreeMap<String, String>,
) -> Result<(Vec<u8>, Vec<usize>)> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| tensors[b].1.cmp(&tensors[a].1).then(tensors[a].0.cmp(tensors[b].0)));
    let mut entries = serde_json::Map::new();
    entries.insert("__metadata__".to_owned(), serde_json::to_value(metadata).map_err(json_error)?);
    let mut offset = 0;
    for &i in &order {
        let (name, dtype, shape, len) = tensors[i];
        let end = offset + len;
        let entry = serde_json::json!({
            "dtype": serde_json::to_value(dtype).map_err(json_error)?,
            "shape": shape,
            "data_offsets": [offset, end],
        });
        if entries.insert(name.to_owned(), entry).is_some() {
            return Err(ChecksumError::DuplicateName { name: name.to_owned() }.into());
        }
        offset = end;
    }
    let mut header = serde_json::to_vec(&entries).map_err(json_error)?;
    header.resize(header.len().div_ceil(8) * 8, b' ');
    Ok((header, order))
}

fn json_error(error: serde_json::Error) -> DistillError {
    ChecksumError::Header(error).into()
}

/// A safetensors file read by [`read`].
pub(crate) struct Checked {
    /// The tensors, in no particular order.
    pub(crate) tensors: Vec<(String, Tensor)>,
}

/// Whether a file without a checksum is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Missing {
    /// A file written by other tools (no metadata key starts with `distill.`) reads unchecked; one
    /// with such a key was written by this library, and is refused without its checksum.
    Accept,
    /// The file must carry a checksum.
    Refuse,
}

/// Reads the safetensors `path` and checks its checksum.
///
/// # Errors
/// [`DistillError::Io`] when the file cannot be read; [`DistillError::Corrupt`] naming the file
/// when it is not a safetensors file, its checksum does not match its tensors, it has none while
/// its metadata says this library wrote it (or, with [`Missing::Refuse`], at all), or a tensor has
/// a dtype or a shape libtorch cannot hold.
pub(crate) fn read(path: &Path, missing: Missing) -> Result<Checked> {
    let file = std::fs::read(path).map_err(|e| io_error("read", path, e))?;
    let corrupt = |reason: String| DistillError::Corrupt { file: path.display().to_string(), reason };
    let parsed = checked(path, &file, missing)?;
    let tensors = parsed
        .tensors()
        .iter()
        .map(|(name, view)| {
            let kind = Kind::try_from(view.dtype()).map_err(|_| {
                corrupt(format!("`{name}` has the dtype {:?}, which libtorch cannot hold", view.dtype()))
            })?;
            // A dimension past `i64::MAX` fits a zero-sized tensor's header (`[0, 2^63]`), but no
            // libtorch size: the file is not one this crate or PyTorch wrote.
            let size =
                view.shape().iter().map(|&d| i64::try_from(d)).collect::<std::result::Result<Vec<i64>, _>>().map_err(
                    |_| corrupt(format!("`{name}` has the shape {:?}, past libtorch's sizes", view.shape())),
                )?;
            Ok((name.clone(), Tensor::f_from_data_size(view.data(), &size, kind)?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Checked { tensors })
}

/// The safetensors file `file` (the bytes of `path`), parsed, once its checksum is checked over its
/// tensors' views — names, dtypes, shapes and bytes as stored, whatever their dtype — and its
/// metadata.
///
/// # Errors
/// As [`read`], except for the dtypes and shapes libtorch cannot hold, which pass here.
fn checked<'a>(path: &Path, file: &'a [u8], missing: Missing) -> Result<SafeTensors<'a>> {
    let corrupt = |reason: String| DistillError::Corrupt { file: path.display().to_string(), reason };
    let parsed = SafeTensors::deserialize(file)
        .map_err(|e| corrupt(format!("it is not a readable safetensors file ({e:?})")))?;
    let (_, header) =
        SafeTensors::read_metadata(file).map_err(|e| corrupt(format!("its header cannot be read ({e:?})")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    match metadata.get(CHECKSUM_KEY) {
        Some(stored) => {
            let mut views = parsed.tensors();
            views.sort_by(|a, b| a.0.cmp(&b.0));
            let mut crc = FileCrc::default();
            for (name, view) in &views {
                crc.tensor(name, view.dtype(), view.shape());
                crc.update(view.data());
            }
            crc.check(stored, &metadata).map_err(corrupt)?;
        }
        None if missing == Missing::Refuse => {
            return Err(corrupt(format!("it has no checksum (`{CHECKSUM_KEY}` in its metadata)")))
        }
        None => {
            // The first in sorted order, so that the message is the same on every read.
            if let Some(own) = metadata.keys().filter(|key| key.starts_with(OWN_KEY_PREFIX)).min() {
                return Err(corrupt(format!(
                    "it has no checksum (`{CHECKSUM_KEY}` in its metadata), yet its metadata (`{own}`) says this \
                     library wrote it, which writes a checksum into every file: the checksum's key was damaged or \
                     removed, so its tensors cannot be known to be intact"
                )));
            }
        }
    }
    Ok(parsed)
}

/// The metadata of the safetensors `path`, reading its header only.
///
/// # Errors
/// As [`read`], without the checksum check.
pub(crate) fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let corrupt = |reason: String| DistillError::Corrupt { file: path.display().to_string(), reason };
    let mut file = std::fs::File::open(path).map_err(|e| io_error("read", path, e))?;
    let len = file.metadata().map_err(|e| io_error("read the metadata of", path, e))?.len();
    let header = verify::header_json(&mut file, len).map_err(corrupt)?;
    #[derive(serde::Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__", default)]
        metadata: HashMap<String, String>,
    }
    let header: Header =
        serde_json::from_slice(&header).map_err(|e| corrupt(format!("its header is not valid JSON ({e})")))?;
    Ok(header.metadata)
}

#[cfg(test)]
mod tests;
