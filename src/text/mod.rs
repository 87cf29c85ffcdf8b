//! Language models: the files and text they are read from.
//!
//! - [`gguf`]: a memory-mapped reader of GGUF files (llama.cpp's format): metadata, tensor infos,
//!   tensors dequantised to f32 in PyTorch's shape order;
//! - [`Tokenizer`]: Hugging Face's `tokenizers`, built from a GGUF file's `tokenizer.ggml.*`
//!   metadata as `transformers` builds it, or read from a `tokenizer.json`.

pub mod gguf;
mod tokenizer;

pub use gguf::{GgufError, GgufFile};
pub use tokenizer::{Tokenizer, TokenizerError};
