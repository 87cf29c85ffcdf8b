//! What a forward pass reads besides the token ids: padding, document boundaries, positions.

use tch::{Device, Kind, Tensor};

use crate::error::Result;
use crate::text::ModelError;

/// The inputs of one forward pass of a [`LlamaForCausalLM`](super::LlamaForCausalLM): token ids
/// `[B, T]` (`B ≥ 1` and `T ≥ 1`: an empty batch or sequence is
/// [`ModelError::NoTokens`](crate::text::ModelError::NoTokens)) and, optionally, what shapes the
/// attention.
///
/// - `attention_mask` `[B, S]` (1 for a token, 0 for padding, `S` the cached plus new tokens): no
///   token attends to padding. As in transformers, positions still count padded slots unless
///   `position_ids` are given, so right padding leaves the real tokens' results unchanged.
/// - `document_ids` `[B, S]`: a packed sequence of several documents; a token attends only to the
///   earlier tokens of its own document (the attention is block-diagonal and causal) and positions
///   restart at 0 where the id changes. The results for each document equal running it alone.
/// - `position_ids` `[B, T]`: explicit rotary positions, overriding the two rules above.
///
/// A padded query position attends as transformers' does, to the earlier real tokens of its row
/// (and document), and to itself only when nothing else is allowed (left padding), so its result
/// is finite (and meaningless, as in any padded model).
///
/// ```no_run
/// # fn main() -> Result<(), distill::DistillError> {
/// use tch::Tensor;
/// let model = distill::text::load_pretrained("SmolLM2-135M", tch::Device::Cpu)?.model;
/// let ids = Tensor::from_slice2(&[[1_i64, 2, 3, 4], [5, 6, 0, 0]]);
/// let mask = Tensor::from_slice2(&[[1_i64, 1, 1, 1], [1, 1, 0, 0]]);
/// let logits = model.forward_inputs(&distill::text::LlamaInputs::new(&ids).attention_mask(&mask))?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct LlamaInputs<'a> {
    /// Token ids `[B, T]`, integers.
    pub input_ids: &'a Tensor,
    /// 1 for tokens, 0 for padding, `[B, S]`.
    pub attention_mask: Option<&'a Tensor>,
    /// Document of each token of a packed sequence, `[B, S]`.
    pub document_ids: Option<&'a Tensor>,
    /// Rotary positions `[B, T]`.
    pub position_ids: Option<&'a Tensor>,
}

impl<'a> LlamaInputs<'a> {
    /// Token ids `[B, T]` with causal attention over all of them.
    pub fn new(input_ids: &'a Tensor) -> Self {
        LlamaInputs { input_ids, attention_mask: None, document_ids: None, position_ids: None }
    }

    /// With a padding mask `[B, S]` (1 keeps a token, 0 masks it).
    pub fn attention_mask(mut self, mask: &'a Tensor) -> Self {
        self.attention_mask = Some(mask);
        self
    }

    /// With the document id of every token of a packed sequence `[B, S]`.
    pub fn document_ids(mut self, ids: &'a Tensor) -> Self {
        self.document_ids = Some(ids);
        self
    }

    /// With explicit rotary positions `[B, T]`.
    pub fn position_ids(mut self, ids: &'a Tensor) -> Self {
        self.position_ids = Some(ids);
        self
    }

    /// `(B, T)`, after checking every shape and kind against a cache holding `past` tokens.
    pub(crate) fn check(&self, past: i64, vocab_size: i64) -> Result<(i64, i64)> {
        let ids = self.input_ids;
        let &[batch, len] = ids.size().as_slice() else {
            return Err(ModelError::InputIdsShape { shape: ids.size() }.into());
        };
        if ids.is_floating_point() || ids.kind() == Kind::Bool {
            return Err(ModelError::NotIntegers { what: "input_ids", kind: ids.kind() }.into());
        }
        // An empty batch and empty sequences alike: neither has a token to compute anything from.
        if batch == 0 || len == 0 {
            return Err(ModelError::NoTokens { shape: ids.size() }.into());
        }
        let (lo, hi) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
        if lo < 0 || hi >= vocab_size {
            let found = if lo < 0 { lo } else { hi };
            return Err(ModelError::TokenOutOfRange { vocab: vocab_size, found }.into());
        }
        for (what, tensor, expected) in [
            ("attention_mask", self.attention_mask, [batch, past + len]),
            ("document_ids", self.document_ids, [batch, past + len]),
            ("position_ids", self.position_ids, [batch, len]),
        ] {
            let Some(tensor) = tensor else { continue };
            if tensor.size() != expected {
                return Err(ModelError::InputShape { what, expected: expected.to_vec(), got: tensor.size() }.into());
            }
            if tensor.is_floating_point() {
                return Err(ModelError::NotIntegers { what, kind: tensor.kind() }.into());
            }
        }
        Ok((batch, len))
    }
}

/// How the attention of one forward pass is restricted.
#[derive(Debug)]
pub(crate) enum Mask {
    /// Plain causal attention with no cached tokens: the fused kernel's `is_causal`.
    Causal,
    /// Every query may see every key (one new token after a cache).
    Full,
    /// `[B, 1, T, S]` booleans, true where a query may attend a key.
    Explicit(Tensor),
}

/// The per-forward state every layer shares: the rotation of each position and the mask.
#[derive(Debug)]
pub(crate) struct AttentionContext {
    pub cos: Tensor,
    pub sin: Tensor,
    pub mask: Mask,
}

/// Position of each token inside its run of equal `document_ids` (`[B, S]` → `[B, S]`), and the run
/// index of each token (documents as contiguous runs).
pub(crate) fn document_runs(document_ids: &Tensor) -> (Tensor, Tensor) {
    let (batch, len) = (document_ids.size()[0], document_ids.size()[1]);
    let device = document_ids.device();
    let changes = document_ids.narrow(1, 1, len - 1).ne_tensor(&document_ids.narrow(1, 0, len - 1));
    let starts = Tensor::cat(&[Tensor::ones([batch, 1], (Kind::Bool, device)), changes], 1);
    let index = Tensor::arange(len, (Kind::Int64, device)).unsqueeze(0).expand([batch, len], false);
    let start_of_run = (&index * starts.to_kind(Kind::Int64)).cummax(1).0;
    let run = starts.to_kind(Kind::Int64).cumsum(1, Kind::Int64);
    (index - start_of_run, run)
}

/// The mask for `len` new queries after `past` cached tokens.
pub(crate) fn build_mask(inputs: &LlamaInputs, past: i64, len: i64, device: Device) -> Mask {
    if inputs.attention_mask.is_none() && inputs.document_ids.is_none() {
        if past == 0 {
            return if len == 1 { Mask::Full } else { Mask::Causal };
        }
        if len == 1 {
            return Mask::Full;
        }
    }
    let total = past + len;
    let keys = Tensor::arange(total, (Kind::Int64, device)).view([1, -1]);
    let queries = Tensor::arange_start(past, total, (Kind::Int64, device)).view([-1, 1]);
    let causal = keys.le_tensor(&queries); // [T, S]
    let mut allowed = causal.view([1, 1, len, total]);
    if let Some(mask) = inputs.attention_mask {
        allowed = allowed.logical_and(&mask.ne(0).view([-1, 1, 1, total]));
    }
    if let Some(documents) = inputs.document_ids {
        let (_, run) = document_runs(documents);
        let query_runs = run.narrow(1, past, len).unsqueeze(-1);
        let same = query_runs.eq_tensor(&run.unsqueeze(1)).unsqueeze(1); // [B, 1, T, S]
        allowed = allowed.logical_and(&same);
    }
    // A query with nothing to attend (padding) attends to itself, so that no row is empty: an empty
    // row is NaN after the softmax, and a NaN value row would leak through `0 · NaN` into others.
    // Only such rows: a padded query with real tokens before it keeps transformers' result.
    let itself = keys.eq_tensor(&queries).view([1, 1, len, total]);
    let empty = allowed.any_dim(-1, true).logical_not(); // [B, 1, T, 1]
    Mask::Explicit(allowed.logical_or(&itself.logical_and(&empty)))
}

/// Rotary positions: given, per document, or `past..past + T`.
pub(crate) fn positions(inputs: &LlamaInputs, past: i64, batch: i64, len: i64, device: Device) -> Tensor {
    if let Some(ids) = inputs.position_ids {
        return ids.to_kind(Kind::Int64);
    }
    if let Some(documents) = inputs.document_ids {
        return document_runs(documents).0.narrow(1, past, len);
    }
    Tensor::arange_start(past, past + len, (Kind::Int64, device)).unsqueeze(0).expand([batch, len], false)
}
