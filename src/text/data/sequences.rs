//! Fixed-length token sequences, and the batches asked of them by sequence number.

use distill_runtime::__private::SplitMix64;
use tch::{Device, Kind, Tensor};

use super::{DataError, TokenBatch, IGNORE_TARGET, PAD, PAD_DOCUMENT};

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
    /// [`TokenDataset::build`](super::TokenDataset::build)), or `None` for padding.
    pub fn document(&self, i: usize) -> Option<usize> {
        self.documents.get(i).filter(|&&d| d != PAD).map(|&d| d as usize)
    }

    /// How many tokens are not padding.
    pub fn token_count(&self) -> usize {
        self.documents.iter().filter(|&&d| d != PAD).count()
    }
}

impl TokenSequences {
    /// Sequences of `seq_len` tokens from flat per-token lists whose length is a multiple of it.
    pub(super) fn new(seq_len: usize, ids: Vec<u32>, documents: Vec<u32>, positions: Vec<u32>) -> Self {
        TokenSequences { seq_len, ids, documents, positions }
    }

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
