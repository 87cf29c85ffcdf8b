//! A batch of sequences as tensors, and the attention it allows.

use tch::{Kind, Tensor};

use super::DataError;

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
    /// The index of each token's document, [`PAD_DOCUMENT`](super::PAD_DOCUMENT) for padding.
    pub document_ids: Tensor,
    /// Each token's next token when it is of the same document, else [`IGNORE_TARGET`](super::IGNORE_TARGET): the labels
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
