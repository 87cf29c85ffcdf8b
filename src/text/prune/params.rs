//! Parameter counts of a decoder shape, split as pruning papers report them.

use crate::text::LlamaConfig;

/// The parameters of a [`LlamaConfig`]'s model, split into the embeddings and the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParameterCounts {
    /// `embed_tokens` and, when not tied to it, `lm_head`: `vocab × hidden` each.
    pub embedding: i64,
    /// Everything else: every layer's projections (and their biases) and norms, the final norm.
    pub non_embedding: i64,
}

impl ParameterCounts {
    /// The counts of a model of `config`.
    pub fn of(config: &LlamaConfig) -> ParameterCounts {
        let (h, d, inner) = (config.hidden_size, config.head_dim, config.intermediate_size);
        let (q, kv) = (config.num_attention_heads * d, config.num_key_value_heads * d);
        let attention_bias = if config.attention_bias { q + 2 * kv + h } else { 0 };
        let mlp_bias = if config.mlp_bias { 2 * inner + h } else { 0 };
        let attention = h * q + 2 * h * kv + q * h + attention_bias;
        let mlp = 3 * h * inner + mlp_bias;
        let layer = attention + mlp + 2 * h;
        let heads = if config.tie_word_embeddings { 1 } else { 2 };
        ParameterCounts {
            embedding: heads * config.vocab_size * h,
            non_embedding: config.num_hidden_layers * layer + h,
        }
    }

    /// Both counts together.
    pub fn total(&self) -> i64 {
        self.embedding + self.non_embedding
    }
}
