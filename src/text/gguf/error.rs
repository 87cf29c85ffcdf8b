//! The error of reading a GGUF file.

use std::fmt;
use std::path::PathBuf;

/// What went wrong while reading a GGUF file or one of its tensors.
///
/// Every variant names the file; a malformed file also names the byte offset at which reading
/// stopped, so that a truncated or corrupted download can be told from a bug.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened or mapped into memory.
    #[error("GGUF file `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes at `offset` are not what the GGUF format allows there: the file is truncated,
    /// corrupted, or not a GGUF file.
    #[error("GGUF file `{}`: at byte offset {offset}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Byte offset from the start of the file where the problem was found.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// A tensor is stored in a ggml type this reader does not dequantise.
    #[error(
        "GGUF file `{}`: tensor `{tensor}` is stored as {ggml_type}, which is not supported; the supported types are {}",
        path.display(),
        SupportedTypes
    )]
    UnsupportedType {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The ggml type's name (`Q4_K`, `IQ2_XS`…), or `type N` for an id ggml does not define.
        ggml_type: String,
    },
    /// No tensor of this name is in the file.
    #[error("GGUF file `{}` has no tensor `{name}` (it has {count} tensors; `GgufFile::tensor_names` lists them)", path.display())]
    UnknownTensor {
        /// The file.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// How many tensors the file has.
        count: usize,
    },
    /// A metadata key that a reader needs is absent.
    #[error("GGUF file `{}` has no metadata key `{key}`", path.display())]
    MissingMetadata {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A metadata value has another type than the one asked for.
    #[error("GGUF file `{}`: metadata `{key}` is {found}, not {expected}", path.display())]
    MetadataType {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The type asked for (`u32`, `string`, `array of string`…).
        expected: &'static str,
        /// The type stored.
        found: String,
    },
    /// libtorch failed to build the tensor.
    #[error("GGUF file `{}`: tensor `{tensor}`: {source}", path.display())]
    Torch {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// libtorch's error.
        #[source]
        source: tch::TchError,
    },
}

impl From<GgufError> for crate::DistillError {
    fn from(error: GgufError) -> Self {
        crate::DistillError::Text(Box::new(error))
    }
}

/// The supported ggml types, listed in messages.
struct SupportedTypes;

impl fmt::Display for SupportedTypes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = super::GgmlType::SUPPORTED.iter().map(|t| t.name()).collect();
        f.write_str(&names.join(", "))
    }
}
