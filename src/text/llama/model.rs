//! The decoder stack and the causal language model, as transformers' `LlamaModel` and
//! `LlamaForCausalLM`.

use std::borrow::Borrow;
use std::sync::atomic::{AtomicU64, Ordering};

use tch::nn::{Module, ModuleT, Path};
use tch::Tensor;

use super::attention::AttentionImplementation;
use super::block::LlamaDecoderLayer;
use super::cache::{CacheFit, KvCache};
use super::embedding::{output_head, token_embedding};
use super::inputs::{build_mask, positions, AttentionContext, LlamaInputs};
use super::rms_norm::{rms_norm, RmsNorm};
use super::rotary::RotaryEmbedding;
use crate::capture::record;
use crate::error::Result;
use crate::module::Recordable;
use crate::text::LlamaConfig;
use crate::{nn, Distillable};

/// The decoder stack: `embed_tokens`, `layers`, the final `norm`. Its output is the normalised last
/// hidden state (transformers' `last_hidden_state`).
#[derive(Debug, Distillable)]
pub struct LlamaModel {
    /// Token ids → hidden states.
    pub embed_tokens: nn::Embedding,
    /// The decoder layers; each is a distillation point (`model.layers.3`) recording the layer's
    /// input and output hidden states.
    pub layers: nn::Seq<LlamaDecoderLayer>,
    /// The final RMSNorm.
    pub norm: RmsNorm,
    /// The rotary frequencies (no variables).
    #[distill(skip)]
    pub rotary_emb: RotaryEmbedding,
    /// Which attention kernel the layers use.
    #[distill(skip)]
    pub attention_implementation: AttentionImplementation,
}

/// What [`LlamaForCausalLM::forward_hidden`] returns: the output of every decoder layer and the
/// normalised last hidden state.
#[derive(Debug)]
pub struct HiddenStates {
    /// The output of each decoder layer `[B, T, hidden]` (before the final norm), in order.
    pub layers: Vec<Tensor>,
    /// The final norm's output `[B, T, hidden]`: what `lm_head` reads.
    pub last: Tensor,
}

impl LlamaModel {
    /// The decoder stack of `config` under `p` (`embed_tokens.weight`, `layers.{i}.…`, `norm.weight`).
    pub fn new(p: &Path, config: &LlamaConfig) -> LlamaModel {
        LlamaModel {
            embed_tokens: token_embedding(&(p / "embed_tokens"), config.vocab_size, config.hidden_size),
            layers: (0..config.num_hidden_layers)
                .map(|i| LlamaDecoderLayer::new(&(p / "layers" / i), config))
                .collect(),
            norm: rms_norm(p / "norm", config.hidden_size, config.rms_norm_eps),
            rotary_emb: RotaryEmbedding::new(config.head_dim, config.rope_theta, p.device()),
            attention_implementation: AttentionImplementation::default(),
        }
    }

    /// Runs the stack; pushes each layer's output to `layers_out` when given.
    fn run(
        &self,
        inputs: &LlamaInputs,
        mut cache: Option<&mut KvCache>,
        mut layers_out: Option<&mut Vec<Tensor>>,
    ) -> Tensor {
        let past = cache.as_ref().map_or(0, |cache| cache.len());
        let ids = inputs.input_ids;
        let (batch, len) = (ids.size()[0], ids.size()[1]);
        let device = ids.device();
        let mut xs = self.embed_tokens.forward(ids);
        let position_ids = positions(inputs, past, batch, len, device);
        let (cos, sin) = self.rotary_emb.cos_sin(&position_ids, xs.kind());
        let context = AttentionContext { cos, sin, mask: build_mask(inputs, past, len, device) };
        for layer in self.layers.elements() {
            let index = layer.index();
            let layer_cache = cache.as_deref_mut().map(|cache| (cache, index));
            xs = layer.call(&xs, |block, xs| block.run(xs, &context, layer_cache, self.attention_implementation));
            if let Some(out) = layers_out.as_deref_mut() {
                out.push(xs.shallow_clone());
            }
        }
        self.norm.forward(&xs)
    }
}

/// A LLaMA-family causal language model with Hugging Face's module tree and parameter names:
/// `model.embed_tokens`, `model.layers.{i}.{input_layernorm, self_attn.{q,k,v,o}_proj,
/// post_attention_layernorm, mlp.{gate,up,down}_proj}`, `model.norm`, `lm_head`.
///
/// Every module is a distillation point, reached as in PyTorch: `student.model.layers[3].mlp` in
/// `distill!`, `"model.layers.3.mlp"` in a `Mapping`. `forward_t` maps token ids `[B, T]` to logits
/// `[B, T, vocab]` with causal attention; [`forward_inputs`](Self::forward_inputs) adds padding and
/// packed-document masks, [`forward_cached`](Self::forward_cached) a key/value cache, and
/// [`forward_hidden`](Self::forward_hidden) returns the hidden states.
///
/// It computes what transformers 5's `LlamaForCausalLM` computes (tested to 1e-4 on a random model
/// and on SmolLM2-135M), with these differences, none of which changes a parameter name: activations
/// are out of place; a padded query with nothing to attend (left padding) attends to itself rather
/// than to nothing.
///
/// Inputs are at least one sequence of at least one token: `[0, T]` and `[B, 0]` are
/// [`ModelError::NoTokens`](crate::text::ModelError::NoTokens) (transformers fails on both). The
/// forwards do not check the context length: as transformers' forward, they compute positions past
/// `max_position_embeddings` with the rotary formula continued, where the model was never trained
/// and its results are not to be trusted. [`generate`](Self::generate) refuses to go there.
///
/// ```no_run
/// # fn main() -> Result<(), distill::DistillError> {
/// use distill::text::{LlamaConfig, LlamaForCausalLM};
/// let vs = tch::nn::VarStore::new(tch::Device::Cpu);
/// let config = LlamaConfig { vocab_size: 256, hidden_size: 64, intermediate_size: 128,
///     num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16,
///     ..Default::default() };
/// let model = LlamaForCausalLM::new(vs.root(), &config)?;
/// let logits = model.forward(&tch::Tensor::from_slice2(&[[1_i64, 2, 3]]))?; // [1, 3, 256]
/// # Ok(()) }
/// ```
#[derive(Debug, Distillable)]
pub struct LlamaForCausalLM {
    /// The decoder stack; records the token ids and the normalised last hidden state.
    pub model: nn::Tap<LlamaModel>,
    /// hidden → vocabulary logits; shares `model.embed_tokens.weight` when the embeddings are tied.
    pub lm_head: nn::Linear,
    #[distill(skip)]
    config: LlamaConfig,
    /// This model's identity, which a [`KvCache`] it fills records.
    #[distill(skip)]
    id: u64,
}

/// The next model's identity.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl LlamaForCausalLM {
    /// A randomly initialised model of `config` under `p` (transformers' initialisation: weights
    /// `N(0, 0.02²)`, norms 1).
    ///
    /// Memory is not checked: a config too large for it makes tch's variable allocation panic, as
    /// for any tch layer. [`load_gguf`](crate::text::load_gguf) and
    /// [`load_pretrained`](crate::text::load_pretrained) compare a file's config with its tensors
    /// before building.
    ///
    /// # Errors
    /// [`ModelError`](crate::text::ModelError) when `config` is
    /// inconsistent ([`LlamaConfig::validate`]).
    pub fn new<'a, P: Borrow<Path<'a>>>(p: P, config: &LlamaConfig) -> Result<LlamaForCausalLM> {
        config.validate()?;
        let p = p.borrow();
        let model = LlamaModel::new(&(p / "model"), config);
        let lm_head = output_head(
            &(p / "lm_head"),
            &model.embed_tokens,
            config.vocab_size,
            config.hidden_size,
            config.tie_word_embeddings,
        );
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Ok(LlamaForCausalLM { model: nn::Tap::new(model), lm_head, config: config.clone(), id })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Selects the attention kernel (default: the fused one).
    pub fn set_attention_implementation(&mut self, implementation: AttentionImplementation) {
        self.model.attention_implementation = implementation;
    }

    /// Logits `[B, T, vocab]` for token ids `[B, T]`, causal attention over all of them.
    ///
    /// # Errors
    /// [`ModelError`](crate::text::ModelError) when the ids are not
    /// `[B, T]` integers inside the vocabulary, or hold no token (`B` or `T` is 0).
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.forward_inputs(&LlamaInputs::new(input_ids))
    }

    /// Logits `[B, T, vocab]` with padding, documents or positions as [`LlamaInputs`] describes.
    ///
    /// # Errors
    /// [`ModelError`](crate::text::ModelError) when a shape or kind
    /// does not fit (ids `[B, T]` inside the vocabulary with `B, T ≥ 1`, masks `[B, T]`).
    pub fn forward_inputs(&self, inputs: &LlamaInputs) -> Result<Tensor> {
        inputs.check(0, self.config.vocab_size)?;
        Ok(self.logits(inputs, None, None))
    }

    /// Logits for the new tokens `inputs.input_ids` `[B, T]` after those already in `cache`, which
    /// then holds them too. A mask in `inputs` covers the cached and the new tokens (`[B, S + T]`).
    ///
    /// # Errors
    /// As [`forward_inputs`](Self::forward_inputs); [`ModelError::CacheMismatch`] when `cache`
    /// was filled by another model or for another batch size (or on another device or in another
    /// kind), checked before anything is appended to it.
    ///
    /// [`ModelError::CacheMismatch`]: crate::text::ModelError::CacheMismatch
    pub fn forward_cached(&self, inputs: &LlamaInputs, cache: &mut KvCache) -> Result<Tensor> {
        let (batch, _) = inputs.check(cache.len(), self.config.vocab_size)?;
        let weight = &self.model.embed_tokens.ws;
        cache.claim(&CacheFit {
            owner: self.id,
            batch,
            layers: self.model.layers.len(),
            kv_heads: self.config.num_key_value_heads,
            head_dim: self.config.head_dim,
            device: weight.device(),
            kind: weight.kind(),
        })?;
        Ok(self.logits(inputs, Some(cache), None))
    }

    /// Every decoder layer's output and the final normalised hidden state, without the logits.
    ///
    /// # Errors
    /// As [`forward_inputs`](Self::forward_inputs).
    pub fn forward_hidden(&self, inputs: &LlamaInputs) -> Result<HiddenStates> {
        inputs.check(0, self.config.vocab_size)?;
        let mut layers = Vec::with_capacity(self.model.layers.len());
        let last = record(self.model.tap_id(), inputs.input_ids, |_| self.model.run(inputs, None, Some(&mut layers)));
        Ok(HiddenStates { layers, last })
    }

    fn logits(&self, inputs: &LlamaInputs, cache: Option<&mut KvCache>, layers: Option<&mut Vec<Tensor>>) -> Tensor {
        let hidden = record(self.model.tap_id(), inputs.input_ids, |_| self.model.run(inputs, cache, layers));
        self.lm_head.forward(&hidden)
    }
}

/// Token ids `[B, T]` → logits `[B, T, vocab]` (causal attention, no padding), so that the model is
/// a student or teacher of `distill!` and `Mapping` as it is.
///
/// # Panics
/// When `xs` is not `[B, T]` integers inside the vocabulary with `B, T ≥ 1`, as tch's layers panic
/// on a bad input; [`LlamaForCausalLM::forward`] returns the error instead.
impl ModuleT for LlamaForCausalLM {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        match self.forward(xs) {
            Ok(logits) => logits,
            Err(error) => panic!("LlamaForCausalLM::forward_t: {error}"),
        }
    }
}
