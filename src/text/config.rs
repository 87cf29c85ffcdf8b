//! The shape of a LLaMA-family decoder, read from a Hugging Face `config.json` or from GGUF metadata.

use std::path::Path;

use serde::{Deserialize, Deserializer};

use super::ModelError;
use crate::error::Result;

/// The hyper-parameters of a LLaMA-family causal decoder: what Hugging Face's `LlamaConfig` holds
/// and [`LlamaForCausalLM::new`](super::LlamaForCausalLM::new) builds from.
///
/// Any size is accepted as long as it is consistent: `hidden_size` is `num_attention_heads ·
/// head_dim` or `head_dim` is given, and `num_attention_heads` is a multiple of
/// `num_key_value_heads` (grouped-query attention; equal counts are multi-head attention).
///
/// ```no_run
/// # fn main() -> Result<(), distill::DistillError> {
/// let config = distill::text::LlamaConfig::from_json_file("SmolLM2-135M/config.json")?;
/// assert_eq!(config.num_hidden_layers, 30);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Rows of the token embedding and outputs of `lm_head`.
    pub vocab_size: i64,
    /// Width of the residual stream.
    pub hidden_size: i64,
    /// Inner width of the SwiGLU MLP.
    pub intermediate_size: i64,
    /// Number of decoder layers (`model.layers.0` … `model.layers.{n-1}`).
    pub num_hidden_layers: i64,
    /// Query heads per layer.
    pub num_attention_heads: i64,
    /// Key/value heads per layer; each serves `num_attention_heads / num_key_value_heads` query heads.
    pub num_key_value_heads: i64,
    /// Width of one head (`hidden_size / num_attention_heads` unless the checkpoint says otherwise).
    pub head_dim: i64,
    /// The longest sequence the model was trained for, its context (at least 1). The forwards compute
    /// positions past it, as transformers' do (rotary embeddings extend past it); `generate` does not
    /// run the model past it.
    pub max_position_embeddings: i64,
    /// ε of every RMSNorm.
    pub rms_norm_eps: f64,
    /// Base of the rotary embedding frequencies (θ).
    pub rope_theta: f64,
    /// `lm_head` shares the token embedding's weight (no `lm_head.weight` in the checkpoint).
    pub tie_word_embeddings: bool,
    /// The q/k/v/o projections have biases.
    pub attention_bias: bool,
    /// The gate/up/down projections have biases.
    pub mlp_bias: bool,
    /// The beginning-of-sequence token, if the checkpoint names one.
    pub bos_token_id: Option<i64>,
    /// The end-of-sequence token, if the checkpoint names one.
    pub eos_token_id: Option<i64>,
}

impl Default for LlamaConfig {
    /// Hugging Face's `LlamaConfig()` defaults (LLaMA-7B's shape).
    fn default() -> Self {
        LlamaConfig {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 32,
            head_dim: 128,
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            tie_word_embeddings: false,
            attention_bias: false,
            mlp_bias: false,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
        }
    }
}

/// `config.json` as Hugging Face writes it; absent keys take the defaults of the transformers config
/// class of its `model_type` ([`Family::defaults`]).
#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    vocab_size: Option<i64>,
    hidden_size: Option<i64>,
    intermediate_size: Option<i64>,
    num_hidden_layers: Option<i64>,
    num_attention_heads: Option<i64>,
    /// Absent and `null` differ for Mistral: absent is its default 8, `null` one per query head.
    #[serde(default, deserialize_with = "present")]
    num_key_value_heads: Option<Option<i64>>,
    /// Mistral's attention window: absent is transformers' default 4096, `null` none.
    #[serde(default, deserialize_with = "present")]
    sliding_window: Option<Option<i64>>,
    head_dim: Option<i64>,
    max_position_embeddings: Option<i64>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    /// transformers 5 keeps θ and the rotary variant here.
    rope_parameters: Option<RopeParameters>,
    /// transformers 4 names a non-default rotary variant here.
    rope_scaling: Option<RopeParameters>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    bos_token_id: Option<TokenIds>,
    eos_token_id: Option<TokenIds>,
}

/// A key that is present (`Some`, its value possibly `null`), as opposed to absent (`None`, through
/// `#[serde(default)]`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(value: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(value).map(Some)
}

/// The `model_type`s read as this decoder: those whose transformers model computes what this
/// decoder computes, for every config the reader accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// `llama`, or no `model_type` (as transformers' `LlamaConfig.from_pretrained` reads one).
    Llama,
    /// `mistral`: LLaMA's layers without biases; accepted only without a sliding window.
    Mistral,
}

impl Family {
    /// The family of a `model_type`. Others are refused even when their shapes would load: Qwen2
    /// has q/k/v biases without an `o_proj` bias, GPT-2 and BERT other layers altogether.
    fn of(model_type: Option<&str>) -> std::result::Result<Family, ModelError> {
        match model_type {
            None | Some("llama") => Ok(Family::Llama),
            Some("mistral") => Ok(Family::Mistral),
            Some(other) => Err(ModelError::ModelType { model_type: other.to_owned() }),
        }
    }

    /// The defaults of the family's transformers config class (`LlamaConfig()`, `MistralConfig()`).
    fn defaults(self) -> LlamaConfig {
        match self {
            Family::Llama => LlamaConfig::default(),
            Family::Mistral => LlamaConfig {
                intermediate_size: 14336,
                num_key_value_heads: 8,
                max_position_embeddings: 4096 * 32,
                ..LlamaConfig::default()
            },
        }
    }
}

/// transformers' `MistralConfig` default window, which an absent `sliding_window` means.
const MISTRAL_SLIDING_WINDOW: i64 = 4096;

#[derive(Deserialize)]
struct RopeParameters {
    rope_theta: Option<f64>,
    rope_type: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// A token id, or a list of them (the first is taken).
#[derive(Deserialize)]
#[serde(untagged)]
enum TokenIds {
    One(i64),
    Many(Vec<i64>),
}

impl TokenIds {
    fn first(self) -> Option<i64> {
        match self {
            TokenIds::One(id) => Some(id),
            TokenIds::Many(ids) => ids.first().copied(),
        }
    }
}

impl LlamaConfig {
    /// Reads a Hugging Face `config.json` of a LLaMA-family model: `model_type` `llama` (or none, as
    /// transformers' `LlamaConfig.from_pretrained` reads one), or `mistral` with
    /// `"sliding_window": null` (Mistral's layers are LLaMA's without biases, so its
    /// `attention_bias` and `mlp_bias` keys, which transformers ignores, are ignored). Absent keys
    /// take the defaults of that type's transformers config class.
    ///
    /// # Errors
    /// [`ModelError::ReadConfig`] when the file cannot be read; [`ModelError::Config`] naming the
    /// file when it is not JSON, names another `model_type` ([`ModelError::ModelType`]: `qwen2`,
    /// whose projections have other biases, `gpt2`, `bert`…), is a Mistral config with a sliding
    /// window ([`ModelError::SlidingWindow`]; an absent `sliding_window` is transformers' 4096),
    /// uses an activation other than SiLU or a rotary variant other than the default, or is
    /// inconsistent (see [`validate`](Self::validate)).
    pub fn from_json_file<P: AsRef<Path>>(path: P) -> Result<LlamaConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ModelError::ReadConfig { path: path.to_path_buf(), source })?;
        Self::parse(&text).map_err(|e| ModelError::Config { path: path.to_path_buf(), source: Box::new(e) }.into())
    }

    /// [`from_json_file`](Self::from_json_file) for the file's text.
    ///
    /// # Errors
    /// As [`from_json_file`](Self::from_json_file).
    pub fn from_json_str(json: &str) -> Result<LlamaConfig> {
        Ok(Self::parse(json)?)
    }

    /// [`from_json_str`](Self::from_json_str) with the typed error, which [`from_json_file`]
    /// wraps with the file's name.
    ///
    /// [`from_json_file`]: Self::from_json_file
    fn parse(json: &str) -> std::result::Result<LlamaConfig, ModelError> {
        let hf: HfConfig = serde_json::from_str(json).map_err(ModelError::NotHfConfig)?;
        let family = Family::of(hf.model_type.as_deref())?;
        if family == Family::Mistral {
            // transformers' Mistral masks to the window whenever `sliding_window` is not null
            // (`use_sliding_window` is Qwen2's key; Mistral's layers never read it).
            let window = hf.sliding_window.unwrap_or(Some(MISTRAL_SLIDING_WINDOW));
            if let Some(window) = window {
                return Err(ModelError::SlidingWindow { window });
            }
        }
        if let Some(act) = hf.hidden_act.as_deref() {
            if act != "silu" {
                return Err(ModelError::UnsupportedActivation { activation: act.to_owned() });
            }
        }
        let mut rope_theta = hf.rope_theta;
        for rope in [&hf.rope_parameters, &hf.rope_scaling].into_iter().flatten() {
            let kind = rope.rope_type.as_deref().or(rope.kind.as_deref()).unwrap_or("default");
            if kind != "default" {
                return Err(ModelError::UnsupportedRope { kind: kind.to_owned() });
            }
            rope_theta = rope_theta.or(rope.rope_theta);
        }
        let d = family.defaults();
        let hidden_size = hf.hidden_size.unwrap_or(d.hidden_size);
        let num_attention_heads = hf.num_attention_heads.unwrap_or(d.num_attention_heads);
        let head_dim = match hf.head_dim {
            Some(head_dim) => head_dim,
            None => {
                check_positive("num_attention_heads", num_attention_heads)?;
                hidden_size / num_attention_heads
            }
        };
        let config = LlamaConfig {
            vocab_size: hf.vocab_size.unwrap_or(d.vocab_size),
            hidden_size,
            intermediate_size: hf.intermediate_size.unwrap_or(d.intermediate_size),
            num_hidden_layers: hf.num_hidden_layers.unwrap_or(d.num_hidden_layers),
            num_attention_heads,
            num_key_value_heads: match hf.num_key_value_heads {
                Some(Some(kv_heads)) => kv_heads,
                Some(None) => num_attention_heads,
                // LLaMA's default is one per query head (`None`), Mistral's a number.
                None if family == Family::Llama => num_attention_heads,
                None => d.num_key_value_heads,
            },
            head_dim,
            max_position_embeddings: hf.max_position_embeddings.unwrap_or(d.max_position_embeddings),
            rms_norm_eps: hf.rms_norm_eps.unwrap_or(d.rms_norm_eps),
            rope_theta: rope_theta.unwrap_or(d.rope_theta),
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(d.tie_word_embeddings),
            // Mistral's projections have no biases whatever the keys say.
            attention_bias: family == Family::Llama && hf.attention_bias.unwrap_or(d.attention_bias),
            mlp_bias: family == Family::Llama && hf.mlp_bias.unwrap_or(d.mlp_bias),
            bos_token_id: hf.bos_token_id.and_then(TokenIds::first),
            eos_token_id: hf.eos_token_id.and_then(TokenIds::first),
        };
        config.check()?;
        Ok(config)
    }

    /// Checks that the sizes (and the context length) are positive and consistent: `head_dim` even
    /// (rotary embeddings rotate pairs), `num_attention_heads` a multiple of `num_key_value_heads`,
    /// `rms_norm_eps` and `rope_theta` positive and finite, and every weight's element count within
    /// `i64` (it is not a memory limit: a config that passes may still be too large to build).
    ///
    /// # Errors
    /// [`ModelError`] naming the first offending field.
    pub fn validate(&self) -> Result<()> {
        Ok(self.check()?)
    }

    /// [`validate`](Self::validate) with the typed error.
    pub(crate) fn check(&self) -> std::result::Result<(), ModelError> {
        for (what, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            check_positive(what, value)?;
        }
        if self.head_dim % 2 != 0 {
            return Err(ModelError::OddHeadDim { head_dim: self.head_dim });
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
            return Err(ModelError::HeadsNotMultiple { heads, kv_heads });
        }
        for (what, value) in [("rms_norm_eps", self.rms_norm_eps), ("rope_theta", self.rope_theta)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(ModelError::NotPositive { what, value });
            }
        }
        // The widths and element counts the layers multiply out, so that building a model never
        // overflows (a panic in a debug build, a negative size in a release one). The key/value
        // heads divide the query heads, so their products are no larger.
        let product = |what: &'static str, a: i64, b: i64| a.checked_mul(b).ok_or(ModelError::SizeOverflow { what });
        let width = product("num_attention_heads · head_dim", self.num_attention_heads, self.head_dim)?;
        product("num_attention_heads · head_dim · hidden_size", width, self.hidden_size)?;
        product("vocab_size · hidden_size", self.vocab_size, self.hidden_size)?;
        product("intermediate_size · hidden_size", self.intermediate_size, self.hidden_size)?;
        Ok(())
    }

    /// Query heads per key/value head.
    pub fn num_key_value_groups(&self) -> i64 {
        self.num_attention_heads / self.num_key_value_heads
    }
}

fn check_positive(what: &'static str, value: i64) -> std::result::Result<(), ModelError> {
    if value < 1 {
        return Err(ModelError::BelowOne { what, value });
    }
    Ok(())
}
