//! Safetensors files that carry a checksum of their tensors: checkpoints and teacher-cache shards.
//!
//! The checksum is a CRC-32 (IEEE) over every tensor in name order — its name, dtype, shape and
//! bytes — stored as `"crc32:<8 hex digits>"` under the metadata key `distill.crc32`. The files
//! stay ordinary safetensors files (`VarStore::load`, Python's `safetensors` read them and ignore
//! the metadata). Files are written atomically: to a temporary name, fsynced, then renamed.
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

mod streamed;

pub use crate::error::ChecksumError;
pub(crate) use streamed::Streamed;

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

/// The checksum of tensors given as `(name, dtype, shape, bytes)`, in any order.
fn checksum<'a>(tensors: impl IntoIterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>) -> String {
    let mut sorted: Vec<_> = tensors.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut crc = crc32fast::Hasher::new();
    for (name, dtype, shape, data) in sorted {
        checksum_prefix(&mut crc, name, dtype, shape);
        crc.update(data);
    }
    format_crc(crc)
}

/// What the checksum hashes of one tensor before its bytes: its name, dtype and shape. The
/// checksum of a file is, for each tensor in name order, this prefix and then the tensor's bytes.
pub(crate) fn checksum_prefix(crc: &mut crc32fast::Hasher, name: &str, dtype: Dtype, shape: &[usize]) {
    crc.update(&(name.len() as u64).to_le_bytes());
    crc.update(name.as_bytes());
    crc.update(format!("{dtype:?}").as_bytes());
    crc.update(&(shape.len() as u64).to_le_bytes());
    for dim in shape {
        crc.update(&(*dim as u64).to_le_bytes());
    }
}

/// A finished CRC as the metadata stores it: `crc32:<8 hex digits>` (always 14 characters).
pub(crate) fn format_crc(crc: crc32fast::Hasher) -> String {
    format!("crc32:{:08x}", crc.finalize())
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

/// Writes `tensors` to the safetensors `path` atomically, with their checksum and `metadata` in
/// its metadata.
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
    let mut metadata = metadata;
    metadata.insert(
        CHECKSUM_KEY.to_owned(),
        checksum(bytes.iter().map(|(name, b)| (*name, b.dtype, b.shape.as_slice(), b.data.as_slice()))),
    );
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
/// tensors' views: names, dtypes, shapes and bytes as stored, whatever their dtype.
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
            let views = parsed.tensors();
            let computed = checksum(views.iter().map(|(name, v)| (name.as_str(), v.dtype(), v.shape(), v.data())));
            if *stored != computed {
                return Err(corrupt(format!(
                    "its tensors do not match the checksum it was written with ({stored}, now {computed}): the \
                     file was damaged or changed after it was written"
                )));
            }
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
    use std::io::Read;
    let corrupt = |reason: String| DistillError::Corrupt { file: path.display().to_string(), reason };
    let mut file = std::fs::File::open(path).map_err(|e| io_error("read", path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| corrupt("it is shorter than a safetensors header".to_owned()))?;
    let len = u64::from_le_bytes(len);
    // safetensors' own limit on a header.
    if len > 100_000_000 {
        return Err(corrupt(format!("its header claims {len} bytes")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(|_| corrupt("its header is cut short".to_owned()))?;
    #[derive(serde::Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__", default)]
        metadata: HashMap<String, String>,
    }
    let header: Header =
        serde_json::from_slice(&header).map_err(|e| corrupt(format!("its header is not valid JSON ({e})")))?;
    Ok(header.metadata)
}

/// Checks the checksum of a safetensors file written by this library — a checkpoint, a prune
/// record, a shard of a teacher cache or of a token cache — without loading it into a model: the
/// tensors are hashed as stored and never converted, so any dtype passes, the 16-bit token ids of a
/// token cache's shards included. The file is read whole into memory; a cache's own
/// [`TeacherCache::verify`](crate::cache::TeacherCache::verify) and
/// [`TokenCache::verify`](crate::cache::TokenCache::verify) check its shards through memory maps.
///
/// # Errors
/// [`DistillError::Io`] when the file cannot be read; [`DistillError::Corrupt`] naming the file
/// when it is not a safetensors file, its tensors do not match its checksum, or it has none.
pub fn verify(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let file = std::fs::read(path).map_err(|e| io_error("read", path, e))?;
    checked(path, &file, Missing::Refuse).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_file_is_the_file_write_gives_for_the_same_tensors() {
        let dir = std::env::temp_dir().join(format!("distill-streamed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = Tensor::from_slice(&[1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0]).view([3, 2]);
        let b = Tensor::from_slice(&[1i64, 2, 3]);
        let c = Tensor::from_slice(&[4u8, 5, 6, 7, 8]);
        let named =
            vec![("b.first".to_owned(), b.shallow_clone()), ("a".to_owned(), a.shallow_clone()), ("c".to_owned(), c)];
        let metadata = BTreeMap::from([("distill.manifest".to_owned(), "crc32:01234567".to_owned())]);
        write(&dir.join("whole.safetensors"), &named, metadata.clone()).unwrap();
        let specs = named
            .iter()
            .map(|(name, t)| {
                (name.clone(), Dtype::try_from(t.kind()).unwrap(), t.size().iter().map(|&d| d as usize).collect())
            })
            .collect();
        let mut streamed = Streamed::create(&dir.join("streamed.safetensors"), specs, metadata).unwrap();
        // Interleaved appends, in pieces.
        let bytes: Vec<Vec<u8>> = named.iter().map(|(_, t)| tensor_bytes(t).unwrap()).collect();
        streamed.append(1, &bytes[1][..8]).unwrap();
        streamed.append(0, &bytes[0][..8]).unwrap();
        streamed.append(2, &bytes[2]).unwrap();
        streamed.append(1, &bytes[1][8..]).unwrap();
        assert!(streamed.append(2, &[0]).is_err(), "past the tensor's end");
        streamed.append(0, &bytes[0][8..]).unwrap();
        streamed.finish().unwrap();
        assert_eq!(
            std::fs::read(dir.join("streamed.safetensors")).unwrap(),
            std::fs::read(dir.join("whole.safetensors")).unwrap()
        );
        verify(dir.join("streamed.safetensors")).unwrap();
        // Unfinished, nothing is published and the temporary file is gone.
        let mut unfinished = Streamed::create(
            &dir.join("unfinished.safetensors"),
            vec![("x".into(), Dtype::U8, vec![4])],
            BTreeMap::new(),
        )
        .unwrap();
        unfinished.append(0, &[1, 2]).unwrap();
        drop(unfinished);
        let mut names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["streamed.safetensors", "whole.safetensors"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_checksum_covers_names_shapes_and_bytes_in_any_order() {
        let a: &[u8] = &[1, 2, 3, 4];
        let base = checksum([("a", Dtype::F32, &[1usize][..], a), ("b", Dtype::U8, &[0usize][..], &[][..])]);
        let reordered = checksum([("b", Dtype::U8, &[0usize][..], &[][..]), ("a", Dtype::F32, &[1usize][..], a)]);
        assert_eq!(base, reordered);
        let renamed = checksum([("c", Dtype::F32, &[1usize][..], a), ("b", Dtype::U8, &[0usize][..], &[][..])]);
        let reshaped = checksum([("a", Dtype::F32, &[1usize, 1][..], a), ("b", Dtype::U8, &[0usize][..], &[][..])]);
        let flipped =
            checksum([("a", Dtype::F32, &[1usize][..], &[1, 2, 3, 5][..]), ("b", Dtype::U8, &[0][..], &[][..])]);
        for other in [renamed, reshaped, flipped] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn verify_hashes_tensors_of_dtypes_libtorch_cannot_hold() {
        let path = std::env::temp_dir().join(format!("distill-u16-{}.safetensors", std::process::id()));
        let ids: Vec<u8> = [3u16, 65535, 0, 42].iter().flat_map(|id| id.to_le_bytes()).collect();
        let mut file = Streamed::create(&path, vec![("ids".into(), Dtype::U16, vec![2, 2])], BTreeMap::new()).unwrap();
        file.append(0, &ids).unwrap();
        file.finish().unwrap();
        verify(&path).unwrap();
        let err = read(&path, Missing::Refuse).map(drop).unwrap_err();
        assert!(err.to_string().contains("libtorch cannot hold"), "{err}");
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let err = verify(&path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(
            matches!(&err, DistillError::Corrupt { reason, .. } if reason.contains("do not match the checksum")),
            "{err}"
        );
    }

    #[test]
    fn a_file_without_a_checksum_reads_only_without_this_librarys_metadata() {
        let path = std::env::temp_dir().join(format!("distill-no-checksum-{}.safetensors", std::process::id()));
        let file_with = |metadata: &str| {
            let header =
                format!(r#"{{"__metadata__":{metadata},"x":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}}}"#);
            let mut file = (header.len() as u64).to_le_bytes().to_vec();
            file.extend_from_slice(header.as_bytes());
            file.extend_from_slice(&1f32.to_le_bytes());
            std::fs::write(&path, file).unwrap();
        };
        file_with(r#"{"format":"pt"}"#);
        assert_eq!(read(&path, Missing::Accept).unwrap().tensors.len(), 1);
        file_with(r#"{"format":"pt","distill.checkpoint":"training","distill.krc32":"crc32:00000000"}"#);
        let err = read(&path, Missing::Accept).map(drop).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(
            matches!(&err, DistillError::Corrupt { reason, .. }
                if reason.contains("no checksum") && reason.contains("`distill.checkpoint`")),
            "{err}"
        );
    }

    #[test]
    fn a_dimension_past_libtorchs_sizes_is_corrupt() {
        // A zero-sized tensor with a dimension of 2^63: a valid safetensors header, no libtorch size.
        let header = br#"{"x":{"dtype":"F32","shape":[0,9223372036854775808],"data_offsets":[0,0]}}"#;
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header);
        let path = std::env::temp_dir().join(format!("distill-huge-dim-{}.safetensors", std::process::id()));
        std::fs::write(&path, file).unwrap();
        let err = read(&path, Missing::Accept).map(drop).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(
            matches!(&err, DistillError::Corrupt { reason, .. } if reason.contains("past libtorch's sizes")),
            "{err}"
        );
    }
}
