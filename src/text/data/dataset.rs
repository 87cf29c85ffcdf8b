//! A tokenized corpus cut into fixed-length sequences, split into train and validation by document.

use super::sequences::TokenSequences;
use super::{DataError, Document, PAD};
use crate::text::tokenizer::Tokenizer;

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
    /// The share of documents held out for validation, in [0, 1); 0 for no validation split. Above
    /// 0, at least one document must fall under it.
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
    /// Neither split is ever silently empty: the training split holds at least one sequence, and so
    /// does the validation split when `validation_fraction` is above 0 (at 0 it is empty, as asked).
    ///
    /// # Errors
    /// [`DataError::SeqLen`] for `seq_len` < 2, [`DataError::ValidationFraction`] for a fraction outside
    /// [0, 1), [`DataError::NoEosId`] for EOS asked for and unknown, [`DataError::NoPadId`] for no
    /// padding id (the tokenizer's padding id, else its EOS);
    /// [`DataError::Tokenizer`] if encoding fails; [`DataError::EmptySplit`] for no document with a
    /// token (none given, say), or a split above that holds no sequence.
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
        let mut with_tokens = 0;
        for (index, document) in documents.iter().enumerate() {
            let mut ids = tokenizer.encode(&document.text, false)?;
            ids.extend(eos);
            let document_id = u32::try_from(index).map_err(|_| DataError::TooManyDocuments)?;
            with_tokens += usize::from(!ids.is_empty());
            if in_validation(&document.text, config.seed, config.validation_fraction) {
                validation.push(document_id, &ids);
            } else {
                train.push(document_id, &ids);
            }
        }
        let (train, validation) = (train.finish(), validation.finish());
        let empty = |split| DataError::EmptySplit {
            split,
            documents: with_tokens,
            validation_fraction: config.validation_fraction,
        };
        if train.is_empty() {
            return Err(empty("training"));
        }
        if validation.is_empty() && config.validation_fraction > 0.0 {
            return Err(empty("validation"));
        }
        Ok(TokenDataset { train, validation })
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
        TokenSequences::new(self.seq_len, self.ids, self.documents, self.positions)
    }
}
