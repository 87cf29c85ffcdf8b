//! Language models: the files and text they are read from.
//!
//! - [`gguf`]: a memory-mapped reader of GGUF files (llama.cpp's format): metadata, tensor infos,
//!   tensors dequantised to f32 in PyTorch's shape order.

pub mod gguf;

pub use gguf::{GgufError, GgufFile};
