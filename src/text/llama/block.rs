//! One decoder layer, as transformers' `LlamaDecoderLayer`.

use tch::nn::{Module, Path};
use tch::Tensor;

use super::attention::{AttentionImplementation, LlamaAttention};
use super::cache::KvCache;
use super::inputs::AttentionContext;
use super::mlp::LlamaMlp;
use super::rms_norm::{rms_norm, RmsNorm};
use crate::capture::record;
use crate::module::Recordable;
use crate::text::LlamaConfig;
use crate::{nn, Distillable};

/// `h = x + self_attn(input_layernorm(x))`, then `h + mlp(post_attention_layernorm(h))`. The
/// residual additions are out of place, so every captured tensor stays as recorded.
#[derive(Debug, Distillable)]
pub struct LlamaDecoderLayer {
    /// Attention; records its (normalised) input and its output.
    pub self_attn: nn::Tap<LlamaAttention>,
    /// The feed-forward block; records its (normalised) input and its output.
    pub mlp: nn::Tap<LlamaMlp>,
    /// RMSNorm before attention.
    pub input_layernorm: RmsNorm,
    /// RMSNorm before the MLP.
    pub post_attention_layernorm: RmsNorm,
}

impl LlamaDecoderLayer {
    /// Layer `p` (`model.layers.{i}`) of `config`.
    pub fn new(p: &Path, config: &LlamaConfig) -> LlamaDecoderLayer {
        LlamaDecoderLayer {
            self_attn: nn::Tap::new(LlamaAttention::new(&(p / "self_attn"), config)),
            mlp: nn::Tap::new(LlamaMlp::new(&(p / "mlp"), config)),
            input_layernorm: rms_norm(p / "input_layernorm", config.hidden_size, config.rms_norm_eps),
            post_attention_layernorm: rms_norm(p / "post_attention_layernorm", config.hidden_size, config.rms_norm_eps),
        }
    }

    /// The layer on `xs` `[B, T, hidden]`.
    pub(crate) fn run(
        &self,
        xs: &Tensor,
        context: &AttentionContext,
        cache: Option<(&mut KvCache, usize)>,
        implementation: AttentionImplementation,
    ) -> Tensor {
        let normed = self.input_layernorm.forward(xs);
        let attended = record(self.self_attn.tap_id(), &normed, |normed| {
            self.self_attn.attend(normed, context, cache, implementation)
        });
        let hidden = xs + attended;
        let normed = self.post_attention_layernorm.forward(&hidden);
        let mlp = nn::ModuleT::forward_t(&self.mlp, &normed, false);
        hidden + mlp
    }
}
