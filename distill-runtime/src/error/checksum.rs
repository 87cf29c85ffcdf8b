//! What goes wrong when a checksummed safetensors file is written.

use tch::Kind;

/// A checksummed safetensors file that cannot be written as asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChecksumError {
    /// A tensor of a kind the safetensors format has no dtype for.
    #[error("`{name}` is a {kind:?} tensor, which a safetensors file cannot hold")]
    UnsupportedKind {
        /// The tensor's name.
        name: String,
        /// Its kind.
        kind: Kind,
    },
    /// Two tensors of one file share a name.
    #[error("two tensors are named `{name}`")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// More bytes appended to a streamed tensor than it holds.
    #[error("`{name}` holds {len} bytes; {extra} more after {written} overrun it")]
    Overrun {
        /// The tensor's name.
        name: String,
        /// Its size in bytes.
        len: usize,
        /// The bytes appended.
        extra: usize,
        /// The bytes already written.
        written: usize,
    },
    /// A streamed tensor not completely written when the file was finished.
    #[error("`{name}` got {written} of its {len} bytes")]
    Incomplete {
        /// The tensor's name.
        name: String,
        /// The bytes written.
        written: usize,
        /// Its size in bytes.
        len: usize,
    },
    /// A streamed file used after it was finished.
    #[error("the file is finished")]
    Finished,
    /// The header with the checksum is not as long as the one the data was placed after.
    #[error("a safetensors header changed length")]
    HeaderLength,
    /// The header could not be serialised.
    #[error("a safetensors header could not be written: {0}")]
    Header(#[source] serde_json::Error),
}
