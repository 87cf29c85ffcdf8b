//! What goes wrong while a token dataset is built or read.

use std::path::PathBuf;

use crate::text::tokenizer::TokenizerError;

/// What went wrong while building or reading a token dataset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A text file or a directory could not be read.
    #[error("`{}`: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A text file is not UTF-8.
    #[error("`{}` is not UTF-8 text (invalid byte at offset {offset})", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// Tokenizing failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// A sequence length below 2 (a sequence needs an input and a next token).
    #[error("seq_len is {seq_len}; it must be at least 2")]
    SeqLen {
        /// The length given.
        seq_len: usize,
    },
    /// A validation fraction outside `[0, 1)`.
    #[error("validation_fraction is {fraction}; it must be in [0, 1)")]
    ValidationFraction {
        /// The fraction given.
        fraction: f64,
    },
    /// EOS asked for, and the tokenizer has no EOS id.
    #[error("append_eos is set and the tokenizer has no EOS id (`Tokenizer::with_special_ids` sets one)")]
    NoEosId,
    /// The tokenizer has no id to pad sequences with.
    #[error("the tokenizer has no padding or EOS id to pad sequences with (`Tokenizer::with_special_ids` sets one)")]
    NoPadId,
    /// A split the configuration asks for holds no sequence: the training split always, the
    /// validation split when `validation_fraction` is above 0. The corpus has no document with a
    /// token (an empty list, or texts that encode to nothing), every document went to validation,
    /// or none did. Training or evaluating on no sequence would give no loss, or a NaN one.
    #[error("{}", empty_split_message(split, *documents, *validation_fraction))]
    EmptySplit {
        /// `"training"` or `"validation"`.
        split: &'static str,
        /// The documents that hold a token (empty ones are in neither split).
        documents: usize,
        /// The configuration's `validation_fraction`.
        validation_fraction: f64,
    },
    /// More documents than 32-bit document ids number.
    #[error("more than 2^32 documents")]
    TooManyDocuments,
    /// A batch size of 0.
    #[error("batch_size must be at least 1")]
    ZeroBatchSize,
    /// A batch of no sequence.
    #[error("a batch needs at least one sequence")]
    EmptyBatch,
    /// A sequence index past the end.
    #[error("sequence {index} is out of range: there are {len}")]
    SequenceOutOfRange {
        /// The index given.
        index: usize,
        /// How many sequences there are.
        len: usize,
    },
    /// libtorch failed to build a batch's tensors.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// The message of [`DataError::EmptySplit`], with what to change.
fn empty_split_message(split: &str, documents: usize, fraction: f64) -> String {
    if documents == 0 {
        return "no document holds a token: a token dataset needs at least one non-empty document".to_owned();
    }
    let change = if split == "validation" {
        "use more documents, a larger validation_fraction, or 0 for no validation split"
    } else {
        "use more documents or a smaller validation_fraction"
    };
    format!(
        "the {split} split holds no sequence: the {documents} document(s) with tokens all went to the other split \
         (validation_fraction {fraction}); {change}"
    )
}

impl From<DataError> for crate::DistillError {
    fn from(error: DataError) -> Self {
        crate::DistillError::Text(Box::new(error))
    }
}
