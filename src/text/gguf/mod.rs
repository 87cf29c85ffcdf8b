//! A reader of GGUF files (version 3, and 2, which has the same layout): llama.cpp's format for a
//! model's weights, configuration and tokenizer in one file.
//!
//! ```no_run
//! # fn main() -> Result<(), distill::text::gguf::GgufError> {
//! use distill::text::gguf::GgufFile;
//! let gguf = GgufFile::open("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let layers = gguf.get_u32("llama.block_count")?;               // 30
//! let embedding = gguf.tensor("token_embd.weight", tch::Device::Cpu)?; // [49152, 576], f32
//! # Ok(()) }
//! ```
//!
//! The file is memory-mapped: opening it reads the header, the metadata and the tensor infos, and a
//! tensor's bytes are read only when that tensor is asked for, then dequantised to f32 (`F32`,
//! `F16`, `BF16`, `Q8_0`, `Q4_0`, `Q4_1`). Every count, length, offset and size in the file is
//! checked against the file's size before it is used, so a truncated or corrupted file is a
//! [`GgufError::Malformed`] naming the file and the byte offset, never a panic, an out-of-bounds
//! read or an allocation larger than a small multiple of the file.

mod dequant;
mod error;
mod metadata;
mod reader;
mod storage;
mod tensor_info;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Device, Tensor};

pub use error::GgufError;
pub use metadata::{MetadataArray, MetadataValue, ValueType};
pub use tensor_info::{GgmlType, TensorInfo};

use reader::Reader;
use storage::Storage;

/// The four bytes every GGUF file starts with.
const MAGIC: &[u8; 4] = b"GGUF";

/// The alignment of the data region and of every tensor in it when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The metadata key that overrides [`DEFAULT_ALIGNMENT`].
const ALIGNMENT_KEY: &str = "general.alignment";

/// The fewest bytes a metadata entry takes: key length (u64), value type (u32), a one-byte value.
const MIN_KV_BYTES: usize = 8 + 4 + 1;

/// The fewest bytes a tensor info takes: name length (u64), dimension count (u32), type (u32),
/// offset (u64).
const MIN_TENSOR_INFO_BYTES: usize = 8 + 4 + 4 + 8;

/// An open GGUF file: its metadata and tensor infos, read and checked; tensors read on demand.
pub struct GgufFile {
    path: PathBuf,
    storage: Storage,
    version: u32,
    metadata: Vec<(String, MetadataValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

impl GgufFile {
    /// Opens and memory-maps `path`, and reads its header, metadata and tensor infos.
    ///
    /// # Errors
    /// [`GgufError::Io`] when the file cannot be opened or mapped; [`GgufError::Malformed`], with
    /// the byte offset, when it is not a GGUF file of version 2 or 3 or is truncated or corrupted
    /// (a count larger than the file, a string that is not UTF-8, a duplicated key or tensor name,
    /// a tensor past the end of the file, an alignment that is not a power of two…).
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| GgufError::Io { path: path.clone(), source };
        let file = std::fs::File::open(&path).map_err(io)?;
        // A directory opens, but mapping it fails with "No such device": say what it is instead.
        if file.metadata().map_err(io)?.is_dir() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "it is a directory, not a GGUF file",
            )));
        }
        // SAFETY: the map is read-only and private to this value. Like every reader of a mapped
        // file, it assumes no other process truncates or rewrites the file while it is open (the
        // contract of `memmap2::Mmap::map`); the bytes are never trusted, only bounds-checked.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        GgufFile::parse(path, Storage::Mapped(map))
    }

    /// Reads a GGUF file held in memory; `name` stands for the file in messages.
    ///
    /// # Errors
    /// As [`GgufFile::open`], without the I/O errors.
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        GgufFile::parse(name.into(), Storage::Owned(bytes))
    }

    fn parse(path: PathBuf, storage: Storage) -> Result<GgufFile, GgufError> {
        let mut reader = Reader::new(&storage, &path);
        let magic = reader.take(4, "the magic number")?;
        if magic != MAGIC {
            return Err(reader.error_at(0, format!("not a GGUF file: it starts with {magic:02x?}, not \"GGUF\"")));
        }
        let version = reader.u32("the version")?;
        match version {
            2 | 3 => {}
            v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
                return Err(reader.error_at(4, "a big-endian GGUF file: only little-endian files are read"));
            }
            v => return Err(reader.error_at(4, format!("GGUF version {v} is not supported (versions 2 and 3 are)"))),
        }
        let tensor_count = reader.count(MIN_TENSOR_INFO_BYTES, "the tensor count")?;
        let kv_count = reader.count(MIN_KV_BYTES, "the metadata entry count")?;

        let mut metadata = Vec::with_capacity(kv_count);
        let mut metadata_index = HashMap::with_capacity(kv_count);
        for _ in 0..kv_count {
            let at = reader.position();
            let key = reader.string("a metadata key")?;
            let value_type = metadata::read_type(&mut reader, "a metadata value's type")?;
            let value = metadata::read_value(&mut reader, value_type)?;
            if metadata_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(reader.error_at(at, format!("the metadata key `{key}` appears twice")));
            }
            metadata.push((key, value));
        }

        let alignment = match metadata_index.get(ALIGNMENT_KEY).map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(MetadataValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
            Some(other) => {
                return Err(reader.error_at(
                    reader.position(),
                    format!("`{ALIGNMENT_KEY}` is {other:?}; it must be a u32 power of two"),
                ))
            }
        };

        let mut tensors = Vec::with_capacity(tensor_count);
        let mut tensor_index = HashMap::with_capacity(tensor_count);
        let mut info_offsets = Vec::with_capacity(tensor_count);
        for _ in 0..tensor_count {
            let at = reader.position();
            let info = tensor_info::read_tensor_info(&mut reader)?;
            if tensor_index.insert(info.name.clone(), tensors.len()).is_some() {
                return Err(reader.error_at(at, format!("the tensor name `{}` appears twice", info.name)));
            }
            info_offsets.push(at);
            tensors.push(info);
        }

        // The data region starts at the next multiple of the alignment.
        let end_of_infos = reader.position() as u64;
        let data_offset = end_of_infos.div_ceil(alignment) * alignment;
        let file_len = storage.len() as u64;
        if tensor_count > 0 && data_offset > file_len {
            return Err(reader.error_at(
                reader.position(),
                format!(
                    "the data region would start at byte {data_offset}, past the end of the file ({file_len} bytes)"
                ),
            ));
        }
        let data_len = file_len.saturating_sub(data_offset);
        for (info, &at) in tensors.iter().zip(&info_offsets) {
            if info.offset % alignment != 0 {
                return Err(reader.error_at(
                    at,
                    format!(
                        "tensor `{}` starts at data offset {}, not a multiple of the alignment {alignment}",
                        info.name, info.offset
                    ),
                ));
            }
            // Unsupported types' sizes are unknown here: their start must be inside the file.
            let size = match (info.ggml_type.is_supported(), info.byte_size()) {
                (true, None) => {
                    return Err(reader.error_at(at, format!("tensor `{}`: its size in bytes overflows", info.name)))
                }
                (_, size) => size.unwrap_or(0),
            };
            if info.offset.checked_add(size).is_none_or(|end| end > data_len) {
                return Err(reader.error_at(
                    at,
                    format!(
                        "tensor `{}` ({} bytes at data offset {}) ends past the end of the file: the data region has {data_len} bytes",
                        info.name, size, info.offset
                    ),
                ));
            }
        }
        Ok(GgufFile { path, storage, version, metadata, metadata_index, tensors, tensor_index, alignment, data_offset })
    }

    /// The file's path (or the name given to [`GgufFile::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of the data region and of each tensor in it (`general.alignment`, else 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the data region from the start of the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Every metadata entry, in file order.
    pub fn metadata_entries(&self) -> impl Iterator<Item = (&str, &MetadataValue)> {
        self.metadata.iter().map(|(key, value)| (key.as_str(), value))
    }

    /// The value of a metadata key, if the file has it.
    pub fn metadata(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn required(&self, key: &str) -> Result<&MetadataValue, GgufError> {
        self.metadata(key).ok_or_else(|| GgufError::MissingMetadata { path: self.path.clone(), key: key.to_owned() })
    }

    fn wrong_type(&self, key: &str, expected: &'static str, value: &MetadataValue) -> GgufError {
        GgufError::MetadataType {
            path: self.path.clone(),
            key: key.to_owned(),
            expected,
            found: match value.as_i64() {
                Some(v) => format!("{} {v}", value.type_description()),
                None => value.type_description(),
            },
        }
    }

    /// A metadata integer as `u32`: any integer type whose value fits (writers differ in the widths
    /// they use).
    ///
    /// # Errors
    /// [`GgufError::MissingMetadata`] when the key is absent, [`GgufError::MetadataType`] when the
    /// value is not an integer in `u32`'s range.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let value = self.required(key)?;
        value.as_u64().and_then(|v| u32::try_from(v).ok()).ok_or_else(|| self.wrong_type(key, "a u32", value))
    }

    /// A metadata integer as `u64` (any non-negative integer).
    ///
    /// # Errors
    /// As [`GgufFile::get_u32`].
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let value = self.required(key)?;
        value.as_u64().ok_or_else(|| self.wrong_type(key, "a u64", value))
    }

    /// A metadata integer as `i64` (any integer that fits).
    ///
    /// # Errors
    /// As [`GgufFile::get_u32`].
    pub fn get_i64(&self, key: &str) -> Result<i64, GgufError> {
        let value = self.required(key)?;
        value.as_i64().ok_or_else(|| self.wrong_type(key, "an i64", value))
    }

    /// A metadata float as `f32` (stored as `f32`, or as `f64` and rounded).
    ///
    /// # Errors
    /// As [`GgufFile::get_u32`], for a value that is not a float.
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let value = self.required(key)?;
        match *value {
            MetadataValue::F32(v) => Ok(v),
            MetadataValue::F64(v) => Ok(v as f32),
            _ => Err(self.wrong_type(key, "an f32", value)),
        }
    }

    /// A metadata float as `f64`.
    ///
    /// # Errors
    /// As [`GgufFile::get_f32`].
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        let value = self.required(key)?;
        value.as_f64().ok_or_else(|| self.wrong_type(key, "an f64", value))
    }

    /// A metadata boolean.
    ///
    /// # Errors
    /// As [`GgufFile::get_u32`], for a value that is not a bool.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let value = self.required(key)?;
        value.as_bool().ok_or_else(|| self.wrong_type(key, "a bool", value))
    }

    /// A metadata string.
    ///
    /// # Errors
    /// As [`GgufFile::get_u32`], for a value that is not a string.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let value = self.required(key)?;
        value.as_str().ok_or_else(|| self.wrong_type(key, "a string", value))
    }

    /// A metadata array of any element type.
    ///
    /// # Errors
    /// As [`GgufFile::get_u32`], for a value that is not an array.
    pub fn get_array(&self, key: &str) -> Result<&MetadataArray, GgufError> {
        let value = self.required(key)?;
        value.as_array().ok_or_else(|| self.wrong_type(key, "an array", value))
    }

    /// A metadata array of strings (`tokenizer.ggml.tokens`, `tokenizer.ggml.merges`).
    ///
    /// # Errors
    /// As [`GgufFile::get_u32`], for a value that is not an array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<&[String], GgufError> {
        let value = self.required(key)?;
        value
            .as_array()
            .and_then(MetadataArray::as_strings)
            .ok_or_else(|| self.wrong_type(key, "an array of string", value))
    }

    /// A metadata array of integers, of any width, as `i64` (`tokenizer.ggml.token_type`).
    ///
    /// # Errors
    /// As [`GgufFile::get_u32`], for a value that is not an array of integers that fit in `i64`.
    pub fn get_i64_array(&self, key: &str) -> Result<Vec<i64>, GgufError> {
        let value = self.required(key)?;
        value
            .as_array()
            .and_then(MetadataArray::to_i64_vec)
            .ok_or_else(|| self.wrong_type(key, "an array of integers", value))
    }

    /// A metadata array of floats (`f32` or `f64`) as `f64` (`tokenizer.ggml.scores`).
    ///
    /// # Errors
    /// As [`GgufFile::get_u32`], for a value that is not an array of floats.
    pub fn get_f64_array(&self, key: &str) -> Result<Vec<f64>, GgufError> {
        let value = self.required(key)?;
        value
            .as_array()
            .and_then(MetadataArray::to_f64_vec)
            .ok_or_else(|| self.wrong_type(key, "an array of floats", value))
    }

    /// The tensors' names, in file order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|info| info.name.as_str())
    }

    /// Every tensor info, in file order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of one tensor (dimensions in GGUF order, type, offset), if the file has it.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    fn supported_info(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        let info = self.tensor_info(name).ok_or_else(|| GgufError::UnknownTensor {
            path: self.path.clone(),
            name: name.to_owned(),
            count: self.tensors.len(),
        })?;
        if !info.ggml_type.is_supported() {
            return Err(GgufError::UnsupportedType {
                path: self.path.clone(),
                tensor: name.to_owned(),
                ggml_type: info.ggml_type.to_string(),
            });
        }
        Ok(info)
    }

    /// The stored bytes of a tensor of a supported type, as they are in the file (quantised).
    ///
    /// # Errors
    /// [`GgufError::UnknownTensor`], or [`GgufError::UnsupportedType`] (whose size this reader does not know).
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8], GgufError> {
        let info = self.supported_info(name)?;
        // Start and size were checked against the file's length at open (so the casts are exact).
        let start = (self.data_offset + info.offset) as usize;
        let size = info.byte_size().unwrap_or(0) as usize;
        Ok(&self.storage[start..start + size])
    }

    /// A tensor's values dequantised to f32, in PyTorch's row-major order for [`TensorInfo::shape`].
    ///
    /// # Errors
    /// As [`GgufFile::tensor_bytes`].
    pub fn tensor_values(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let info = self.supported_info(name)?;
        let bytes = self.tensor_bytes(name)?;
        let mut values = Vec::with_capacity(info.element_count() as usize);
        dequant::dequantize(info.ggml_type, bytes, &mut values);
        Ok(values)
    }

    /// A tensor dequantised to f32 on `device`, with PyTorch's shape (the GGUF dimensions reversed:
    /// `token_embd.weight`, stored as `[576, 49152]`, is `[49152, 576]`).
    ///
    /// # Errors
    /// [`GgufError::UnknownTensor`]; [`GgufError::UnsupportedType`] naming the type and the
    /// supported ones; [`GgufError::Torch`] when libtorch cannot allocate or move the tensor.
    pub fn tensor(&self, name: &str, device: Device) -> Result<Tensor, GgufError> {
        let info = self.supported_info(name)?;
        let values = self.tensor_values(name)?;
        let torch = |source| GgufError::Torch { path: self.path.clone(), tensor: name.to_owned(), source };
        Tensor::f_from_slice(&values)
            .and_then(|t| t.f_reshape(info.shape()))
            .and_then(|t| t.f_to_device(device))
            .map_err(torch)
    }
}
