//! Grouped-query self-attention with rotary embeddings, as transformers' `LlamaAttention`.

use tch::nn::{Module, Path};
use tch::{Kind, Tensor};

use super::cache::KvCache;
use super::inputs::{AttentionContext, Mask};
use super::linear;
use super::rotary::apply_rotary;
use crate::text::LlamaConfig;
use crate::{nn, Distillable};

/// How attention scores are turned into outputs. Both compute transformers' eager attention; they
/// differ only in rounding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionImplementation {
    /// libtorch's fused `scaled_dot_product_attention` (a flash-attention kernel on CPU: no `[T, S]`
    /// score matrix in memory), with grouped-query heads handled inside the kernel.
    #[default]
    Sdpa,
    /// `softmax(q kᵀ / √d + mask) v` with the key/value heads repeated, as transformers' `eager`.
    Eager,
}

/// Self-attention: `q_proj`, `k_proj`, `v_proj` (to `num_key_value_heads` heads), rotary embeddings
/// on queries and keys, causal (and padding or document) masking, `o_proj`. Each projection is a
/// distillation point; `self_attn` itself records the layer-normalised input and the `o_proj`
/// output.
#[derive(Debug, Distillable)]
pub struct LlamaAttention {
    /// hidden → heads · head_dim.
    pub q_proj: nn::Linear,
    /// hidden → KV heads · head_dim.
    pub k_proj: nn::Linear,
    /// hidden → KV heads · head_dim.
    pub v_proj: nn::Linear,
    /// heads · head_dim → hidden.
    pub o_proj: nn::Linear,
    #[distill(skip)]
    heads: i64,
    #[distill(skip)]
    kv_heads: i64,
    #[distill(skip)]
    head_dim: i64,
}

impl LlamaAttention {
    /// The attention of `config` under `p`.
    pub fn new(p: &Path, config: &LlamaConfig) -> LlamaAttention {
        let (hidden, d, bias) = (config.hidden_size, config.head_dim, config.attention_bias);
        let (heads, kv_heads) = (config.num_attention_heads, config.num_key_value_heads);
        LlamaAttention {
            q_proj: linear(&(p / "q_proj"), hidden, heads * d, bias),
            k_proj: linear(&(p / "k_proj"), hidden, kv_heads * d, bias),
            v_proj: linear(&(p / "v_proj"), hidden, kv_heads * d, bias),
            o_proj: linear(&(p / "o_proj"), heads * d, hidden, config.attention_bias),
            heads,
            kv_heads,
            head_dim: d,
        }
    }

    /// Attention over `xs` `[B, T, hidden]`; with a cache, over its tokens too (this layer's entry,
    /// `layer`, grows by `T`).
    pub(crate) fn attend(
        &self,
        xs: &Tensor,
        context: &AttentionContext,
        cache: Option<(&mut KvCache, usize)>,
        implementation: AttentionImplementation,
    ) -> Tensor {
        let (batch, len) = (xs.size()[0], xs.size()[1]);
        let heads = |t: Tensor, n: i64| t.view([batch, len, n, self.head_dim]).transpose(1, 2);
        let q = heads(self.q_proj.forward(xs), self.heads);
        let k = heads(self.k_proj.forward(xs), self.kv_heads);
        let v = heads(self.v_proj.forward(xs), self.kv_heads);
        let q = apply_rotary(&q, &context.cos, &context.sin);
        let k = apply_rotary(&k, &context.cos, &context.sin);
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        let out = match implementation {
            AttentionImplementation::Sdpa => self.sdpa(&q, &k, &v, &context.mask),
            AttentionImplementation::Eager => self.eager(&q, &k, &v, &context.mask),
        };
        let out = out.transpose(1, 2).reshape([batch, len, self.heads * self.head_dim]);
        self.o_proj.forward(&out)
    }

    fn sdpa(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: &Mask) -> Tensor {
        let gqa = self.heads != self.kv_heads;
        let (mask, causal) = match mask {
            Mask::Causal => (None, true),
            Mask::Full => (None, false),
            Mask::Explicit(mask) => (Some(mask), false),
        };
        Tensor::scaled_dot_product_attention(q, k, v, mask, 0.0, causal, None, gqa)
    }

    fn eager(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: &Mask) -> Tensor {
        let groups = self.heads / self.kv_heads;
        let (k, v) = (repeat_kv(k, groups), repeat_kv(v, groups));
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = q.matmul(&k.transpose(-2, -1)) * scale;
        let scores = match mask {
            Mask::Full => scores,
            Mask::Causal => {
                let (t, s) = (q.size()[2], k.size()[2]);
                let allowed = Tensor::ones([t, s], (Kind::Bool, q.device())).tril(s - t);
                scores.masked_fill(&allowed.logical_not(), f64::NEG_INFINITY)
            }
            Mask::Explicit(allowed) => scores.masked_fill(&allowed.logical_not(), f64::NEG_INFINITY),
        };
        let probs = scores.softmax(-1, Kind::Float).to_kind(q.kind());
        probs.matmul(&v)
    }
}

/// Each of the `[B, KV, S, d]` heads repeated `groups` times in place: `[B, KV · groups, S, d]`, head
/// `h` serving query heads `h · groups …`.
fn repeat_kv(xs: &Tensor, groups: i64) -> Tensor {
    if groups == 1 {
        return xs.shallow_clone();
    }
    let size = xs.size();
    let (b, kv, s, d) = (size[0], size[1], size[2], size[3]);
    xs.unsqueeze(2).expand([b, kv, groups, s, d], false).reshape([b, kv * groups, s, d])
}
