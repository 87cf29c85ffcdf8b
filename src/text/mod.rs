//! Language models: a LLaMA-family causal decoder on `distill::nn`, every module a distillation
//! point, every parameter named as in Hugging Face transformers' `state_dict()`.
//!
//! ```no_run
//! # fn main() -> Result<(), distill::DistillError> {
//! use distill::text;
//! let teacher = text::load_pretrained("SmolLM2-135M", tch::Device::Cpu)?; // config.json + safetensors
//! let ids = tch::Tensor::from_slice2(&[[1_i64, 504, 3458, 314]]);
//! let logits = teacher.model.forward(&ids)?; // [1, 4, 49152]
//! # Ok(()) }
//! ```
//!
//! Paths read as in PyTorch: `student.model.layers[3].mlp` in `distill!`, `"model.layers.3.mlp"`
//! in a `Mapping`, down to `model.layers.3.self_attn.q_proj` and `model.norm`. A padded batch or a
//! packed one (several documents per row, block-diagonal causal attention, positions restarting per
//! document) goes through [`LlamaInputs`]; [`KvCache`] holds the keys and values of incremental
//! decoding.
//!
//! The decoder computes what transformers 5's `LlamaForCausalLM` computes, tested to 1e-4 against
//! vectors transformers wrote. Differences that change no parameter name or result on real tokens:
//! activations are out of place (an in-place op would overwrite a capture), and a padded query
//! attends to itself rather than to nothing.

mod config;
mod generate;
pub mod llama;
mod load;

pub use config::LlamaConfig;
pub use generate::{GenerateConfig, Generation, Sampling};
pub use llama::{
    AttentionImplementation, HiddenStates, KvCache, LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM, LlamaInputs,
    LlamaMlp, LlamaModel, RmsNorm,
};
pub use load::{load_pretrained, load_safetensors, Pretrained};
