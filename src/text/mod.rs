//! Language models: the files and text they are read from.
//!
//! - [`gguf`]: a memory-mapped reader of GGUF files (llama.cpp's format): metadata, tensor infos,
//!   tensors dequantised to f32 in PyTorch's shape order;
//! - [`Tokenizer`]: Hugging Face's `tokenizers`, built from a GGUF file's `tokenizer.ggml.*`
//!   metadata as `transformers` builds it, or read from a `tokenizer.json`;
//! - [`data`]: text files → token ids → fixed-length training sequences, packed with document
//!   boundaries or padded with attention masks, split and batched deterministically.

pub mod data;
pub mod gguf;
mod tokenizer;

pub use gguf::{GgufError, GgufFile};
pub use tokenizer::{Tokenizer, TokenizerError};
