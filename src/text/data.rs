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

use std::path::{Path, PathBuf};

use distill_runtime::__private::SplitMix64;
use tch::{Device, Kind, Tensor};

use super::tokenizer::{Tokenizer, TokenizerError};

/// The document id of padding tokens in [`TokenBatch::document_ids`].
pub const PAD_DOCUMENT: i64 = -1;

/// The target of a token with no next token of its document ([`TokenBatch::targets`]): PyTorch's
/// `ignore_index` of `cross_entropy`.
pub const IGNORE_TARGET: i64 = -100;

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

impl From<DataError> for crate::DistillError {
    fn from(error: DataError) -> Self {
        crate::DistillError::Text(Box::new(error))
    }
}

/// One text: a fortune, an article, a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Where it came from (`/usr/share/games/fortunes/riddles#12`: the file, and the index of the
    /// document in it when a file holds several).
    pub source: String,
    /// The text.
    pub text: String,
}

/// The text files of a fortune directory (`/usr/share/games/fortunes`), sorted by name: every
/// regular file except the `.dat` indexes and the `.u8` links.
///
/// # Errors
/// [`DataError::Io`] when the directory cannot be listed.
pub fn fortune_files(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>, DataError> {
    let dir = dir.as_ref();
    let io = |source| DataError::Io { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let is_index = matches!(path.extension().and_then(|e| e.to_str()), Some("dat" | "u8"));
        if !is_index && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads text files into documents: each file whole, or, with a `separator`, split at every line
/// that is exactly the separator (`%` in fortune files). Empty and all-whitespace documents are left
/// out; a trailing newline before a separator is part of the document.
///
/// # Errors
/// [`DataError::Io`] for a file that cannot be read; [`DataError::NotUtf8`] for one that is not UTF-8.
pub fn read_documents(paths: &[impl AsRef<Path>], separator: Option<&str>) -> Result<Vec<Document>, DataError> {
    let mut documents = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
        let text = String::from_utf8(bytes)
            .map_err(|e| DataError::NotUtf8 { path: path.to_path_buf(), offset: e.utf8_error().valid_up_to() })?;
        let pieces: Vec<String> = match separator {
            None => vec![text],
            Some(separator) => split_at_lines(&text, separator),
        };
        let several = pieces.len() > 1;
        for (index, piece) in pieces.into_iter().enumerate().filter(|(_, p)| !p.trim().is_empty()) {
            let source = if several { format!("{}#{index}", path.display()) } else { path.display().to_string() };
            documents.push(Document { source, text: piece });
        }
    }
    Ok(documents)
}

/// The pieces of `text` between lines that equal `separator` (a final `\r` ignored).
fn split_at_lines(text: &str, separator: &str) -> Vec<String> {
    let mut pieces = vec![String::new()];
    for line in text.split_inclusive('\n') {
        if line.trim_end_matches('\n').trim_end_matches('\r') == separator {
            pieces.push(String::new());
        } else if let Some(last) = pieces.last_mut() {
            last.push_str(line);
        }
    }
    pieces
}

/// How documents become fixed-length sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Packing {
    /// Documents concatenated and cut every `seq_len` tokens, with per-token document ids; only the
    /// last sequence of a split has padding.
    #[default]
    Packed,
    /// One document per sequence (a longer one continues in the next), padded at the end.
    Padded,
}

/// How a [`TokenDataset`] is built.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenDatasetConfig {
    /// Tokens per sequence (≥ 2, so that a sequence has a next-token target).
    pub seq_len: usize,
    /// Packed with document boundaries, or padded.
    pub packing: Packing,
    /// The share of documents held out for validation, in [0, 1).
    pub validation_fraction: f64,
    /// Seeds the train/validation split.
    pub seed: u64,
    /// Whether each document ends with the tokenizer's EOS token (so a model learns where texts end).
    pub append_eos: bool,
}

impl Default for TokenDatasetConfig {
    /// 256 tokens, packed, 10 % of the documents for validation, seed 0, EOS after each document.
    fn default() -> Self {
        TokenDatasetConfig {
            seq_len: 256,
            packing: Packing::Packed,
            validation_fraction: 0.1,
            seed: 0,
            append_eos: true,
        }
    }
}

/// A tokenized corpus cut into fixed-length sequences, split into train and validation.
#[derive(Debug, Clone)]
pub struct TokenDataset {
    train: TokenSequences,
    validation: TokenSequences,
}

impl TokenDataset {
    /// Tokenizes `documents` (without BOS/EOS from the post-processor; EOS appended when
    /// `config.append_eos`), splits them by document and cuts each split into sequences.
    ///
    /// # Errors
    /// [`DataError::SeqLen`] for `seq_len` < 2, [`DataError::ValidationFraction`] for a fraction outside
    /// [0, 1), [`DataError::NoEosId`] for EOS asked for and unknown, [`DataError::NoPadId`] for no
    /// padding id (the tokenizer's padding id, else its EOS);
    /// [`DataError::Tokenizer`] if encoding fails.
    pub fn build(
        documents: &[Document],
        tokenizer: &Tokenizer,
        config: &TokenDatasetConfig,
    ) -> Result<Self, DataError> {
        if config.seq_len < 2 {
            return Err(DataError::SeqLen { seq_len: config.seq_len });
        }
        if !(0.0..1.0).contains(&config.validation_fraction) {
            return Err(DataError::ValidationFraction { fraction: config.validation_fraction });
        }
        let eos = match (config.append_eos, tokenizer.eos_id()) {
            (false, _) => None,
            (true, Some(eos)) => Some(eos),
            (true, None) => return Err(DataError::NoEosId),
        };
        let pad = tokenizer.pad_id().or(tokenizer.eos_id()).ok_or(DataError::NoPadId)?;
        let mut train = Builder::new(config.seq_len, config.packing, pad);
        let mut validation = Builder::new(config.seq_len, config.packing, pad);
        for (index, document) in documents.iter().enumerate() {
            let mut ids = tokenizer.encode(&document.text, false)?;
            ids.extend(eos);
            let document_id = u32::try_from(index).map_err(|_| DataError::TooManyDocuments)?;
            if in_validation(&document.text, config.seed, config.validation_fraction) {
                validation.push(document_id, &ids);
            } else {
                train.push(document_id, &ids);
            }
        }
        Ok(TokenDataset { train: train.finish(), validation: validation.finish() })
    }

    /// The training sequences.
    pub fn train(&self) -> &TokenSequences {
        &self.train
    }

    /// The validation sequences.
    pub fn validation(&self) -> &TokenSequences {
        &self.validation
    }
}

/// FNV-1a 64 over the split seed's bytes, then the text's.
fn fnv1a(seed: u64, text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.to_le_bytes().iter().chain(text.as_bytes()) {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Whether a document goes to validation: its hash, as a uniform number in [0, 1), is below the
/// fraction.
fn in_validation(text: &str, seed: u64, fraction: f64) -> bool {
    // The top 53 bits as an exact f64 in [0, 1).
    let uniform = (fnv1a(seed, text) >> 11) as f64 / (1u64 << 53) as f64;
    uniform < fraction
}

/// The document id stored for padding.
const PAD: u32 = u32::MAX;

/// Appends documents' tokens to fixed-length sequences.
struct Builder {
    seq_len: usize,
    packing: Packing,
    pad: u32,
    ids: Vec<u32>,
    documents: Vec<u32>,
    positions: Vec<u32>,
}

impl Builder {
    fn new(seq_len: usize, packing: Packing, pad: u32) -> Self {
        Builder { seq_len, packing, pad, ids: Vec::new(), documents: Vec::new(), positions: Vec::new() }
    }

    fn push(&mut self, document: u32, ids: &[u32]) {
        if ids.is_empty() {
            return;
        }
        if self.packing == Packing::Padded {
            self.pad_to_sequence_end();
        }
        // Positions count from the document's start, or from the sequence's start for the part of
        // a document that continues into a new sequence (earlier tokens are not visible there).
        let mut position = 0;
        for &id in ids {
            if self.ids.len().is_multiple_of(self.seq_len) {
                position = 0;
            }
            self.ids.push(id);
            self.documents.push(document);
            self.positions.push(position);
            position += 1;
        }
    }

    fn pad_to_sequence_end(&mut self) {
        while !self.ids.len().is_multiple_of(self.seq_len) {
            self.ids.push(self.pad);
            self.documents.push(PAD);
            self.positions.push(0);
        }
    }

    fn finish(mut self) -> TokenSequences {
        self.pad_to_sequence_end();
        TokenSequences { seq_len: self.seq_len, ids: self.ids, documents: self.documents, positions: self.positions }
    }
}

/// Fixed-length token sequences, numbered from 0, with each token's document and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSequences {
    seq_len: usize,
    ids: Vec<u32>,
    documents: Vec<u32>,
    positions: Vec<u32>,
}

/// One sequence's tokens, documents (`None` for padding) and positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceView<'a> {
    /// Token ids (padding included).
    pub ids: &'a [u32],
    documents: &'a [u32],
    /// Position ids: 0 at each document start and at the sequence start.
    pub positions: &'a [u32],
}

impl SequenceView<'_> {
    /// The index of the document token `i` belongs to (in the list given to
    /// [`TokenDataset::build`]), or `None` for padding.
    pub fn document(&self, i: usize) -> Option<usize> {
        self.documents.get(i).filter(|&&d| d != PAD).map(|&d| d as usize)
    }

    /// How many tokens are not padding.
    pub fn token_count(&self) -> usize {
        self.documents.iter().filter(|&&d| d != PAD).count()
    }
}

impl TokenSequences {
    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.ids.len() / self.seq_len
    }

    /// Whether there is no sequence.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Tokens per sequence.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Tokens that are not padding, over all sequences.
    pub fn token_count(&self) -> usize {
        self.documents.iter().filter(|&&d| d != PAD).count()
    }

    /// Sequence `index`, if there is one.
    pub fn sequence(&self, index: usize) -> Option<SequenceView<'_>> {
        if index >= self.len() {
            return None;
        }
        let range = index * self.seq_len..(index + 1) * self.seq_len;
        Some(SequenceView {
            ids: &self.ids[range.clone()],
            documents: &self.documents[range.clone()],
            positions: &self.positions[range],
        })
    }

    /// A hash of every sequence's tokens, documents and positions (FNV-1a 64, hex): equal for equal
    /// sequences on every machine, so a cache can tell which dataset it was written for.
    pub fn content_hash(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let words =
            [self.seq_len as u32].into_iter().chain(self.ids.iter().copied()).chain(self.documents.iter().copied());
        for word in words.chain(self.positions.iter().copied()) {
            for byte in word.to_le_bytes() {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{hash:016x}")
    }

    /// The sequence numbers of one epoch in a seeded random order (the same on every machine),
    /// cut into batches of `batch_size` (the last may be smaller).
    ///
    /// # Errors
    /// [`DataError::ZeroBatchSize`] for a batch size of 0.
    pub fn epoch_batches(&self, batch_size: usize, seed: u64, epoch: u64) -> Result<Vec<Vec<usize>>, DataError> {
        if batch_size == 0 {
            return Err(DataError::ZeroBatchSize);
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        let mut rng = SplitMix64::new(seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        // Fisher–Yates with SplitMix64; the modulo bias (n / 2^64) is immaterial for a shuffle.
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        Ok(order.chunks(batch_size).map(<[usize]>::to_vec).collect())
    }

    /// The sequences `indices` as tensors on `device`.
    ///
    /// # Errors
    /// [`DataError::EmptyBatch`] for an empty list, [`DataError::SequenceOutOfRange`] for an index past
    /// the end;
    /// [`DataError::Torch`] if libtorch fails.
    pub fn batch(&self, indices: &[usize], device: Device) -> Result<TokenBatch, DataError> {
        if indices.is_empty() {
            return Err(DataError::EmptyBatch);
        }
        let t = self.seq_len;
        let mut ids = Vec::with_capacity(indices.len() * t);
        let mut documents = Vec::with_capacity(indices.len() * t);
        let mut positions = Vec::with_capacity(indices.len() * t);
        let mut targets = Vec::with_capacity(indices.len() * t);
        for &index in indices {
            let sequence =
                self.sequence(index).ok_or_else(|| DataError::SequenceOutOfRange { index, len: self.len() })?;
            for i in 0..t {
                let document = sequence.document(i);
                ids.push(i64::from(sequence.ids[i]));
                documents.push(document.map_or(PAD_DOCUMENT, |d| d as i64));
                positions.push(i64::from(sequence.positions[i]));
                // The next token is a target when it continues the same document in this sequence.
                let next_same = i + 1 < t && document.is_some() && sequence.document(i + 1) == document;
                targets.push(if next_same { i64::from(sequence.ids[i + 1]) } else { IGNORE_TARGET });
            }
        }
        let shape = [indices.len() as i64, t as i64];
        let tensor = |values: &[i64]| -> Result<Tensor, DataError> {
            Ok(Tensor::f_from_slice(values)?.f_reshape(shape)?.f_to_device(device)?)
        };
        let document_ids = tensor(&documents)?;
        let attention_mask = document_ids.f_ne(PAD_DOCUMENT)?.f_to_kind(Kind::Int64)?;
        Ok(TokenBatch {
            sequence_ids: indices.to_vec(),
            input_ids: tensor(&ids)?,
            attention_mask,
            position_ids: tensor(&positions)?,
            document_ids,
            targets: tensor(&targets)?,
        })
    }
}

/// A batch of sequences as `[B, T]` int64 tensors.
#[derive(Debug)]
pub struct TokenBatch {
    /// The sequence numbers, in batch order (what a cache keys on).
    pub sequence_ids: Vec<usize>,
    /// Token ids.
    pub input_ids: Tensor,
    /// 1 for a token, 0 for padding.
    pub attention_mask: Tensor,
    /// Position ids for the rotary embedding: 0 at each document start and at the sequence start.
    pub position_ids: Tensor,
    /// The index of each token's document, [`PAD_DOCUMENT`] for padding.
    pub document_ids: Tensor,
    /// Each token's next token when it is of the same document, else [`IGNORE_TARGET`]: the labels
    /// of next-token prediction, already shifted.
    pub targets: Tensor,
}

impl TokenBatch {
    /// Which key each query may attend to: `[B, 1, T, T]` booleans, true where the key is not after
    /// the query and of the same document (padding attends to padding, so no row is empty). The
    /// shape broadcasts over heads in `scaled_dot_product_attention`'s `attn_mask`.
    ///
    /// # Errors
    /// [`DataError::Torch`] if libtorch fails.
    pub fn attention_allowed(&self) -> Result<Tensor, DataError> {
        let t = self.document_ids.size()[1];
        let same = self.document_ids.f_unsqueeze(2)?.f_eq_tensor(&self.document_ids.f_unsqueeze(1)?)?;
        let causal = Tensor::f_ones([t, t], (Kind::Bool, self.document_ids.device()))?.f_tril(0)?;
        Ok(same.f_logical_and(&causal)?.f_unsqueeze(1)?)
    }
}
