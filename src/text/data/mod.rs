//! Token datasets: text files → documents → token ids → fixed-length training sequences.
//!
//! ```no_run
//! # fn main() -> Result<(), distill::DistillError> {
//! use distill::text::data::{fortune_files, read_documents, Packing, TokenDataset, TokenDatasetConfig};
//! use distill::text::{GgufFile, Tokenizer};
//! let tokenizer = Tokenizer::from_gguf(&GgufFile::open("SmolLM2-135M-Instruct.Q4_1.gguf")?)?;
//! // Debian's `fortunes`: one document per fortune, separated by lines holding `%`.
//! let documents = read_documents(&fortune_files("/usr/share/games/fortunes")?, Some("%"))?;
//! let config = TokenDatasetConfig { seq_len: 128, packing: Packing::Packed, ..Default::default() };
//! let dataset = TokenDataset::build(&documents, &tokenizer, &config)?;
//! let batch = dataset.train().batch(&[0, 1, 2, 3], tch::Device::Cpu)?; // input_ids [4, 128], masks…
//! # Ok(()) }
//! ```
//!
//! - **Packed** sequences concatenate documents (each followed by EOS when asked) and cut the stream
//!   every `seq_len` tokens; every token carries its document's index, and position ids restart at
//!   each document start and at each sequence start, so that a model attends within a document only
//!   ([`TokenBatch::attention_allowed`]).
//! - **Padded** sequences hold one document each (a longer one continues in the next sequences),
//!   padded at the end with an attention mask of 0.
//! - The train/validation split is by document, decided by a hash of the document's text and the
//!   seed: the same on every machine and in every order of the files, and no document is on both
//!   sides.
//! - Sequences are numbered from 0 in each split, and a batch is asked for by sequence numbers, so a
//!   teacher cache can key its records on them.

mod batch;
mod dataset;
mod documents;
mod error;
mod sequences;

pub use batch::TokenBatch;
pub use dataset::{Packing, TokenDataset, TokenDatasetConfig};
pub use documents::{fortune_files, read_documents, Document};
pub use error::DataError;
pub use sequences::{SequenceView, TokenSequences};

/// The document id of padding tokens in [`TokenBatch::document_ids`].
pub const PAD_DOCUMENT: i64 = -1;

/// The target of a token with no next token of its document ([`TokenBatch::targets`]): PyTorch's
/// `ignore_index` of `cross_entropy`.
pub const IGNORE_TARGET: i64 = -100;

/// The document id stored for padding.
const PAD: u32 = u32::MAX;
