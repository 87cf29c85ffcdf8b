//! The LLaMA-family decoder, module by module.

mod attention;
mod block;
mod cache;
mod embedding;
mod inputs;
mod mlp;
mod model;
mod rms_norm;
mod rotary;

pub use attention::{AttentionImplementation, LlamaAttention};
pub use block::LlamaDecoderLayer;
pub use cache::KvCache;
pub use inputs::LlamaInputs;
pub use mlp::LlamaMlp;
pub use model::{HiddenStates, LlamaForCausalLM, LlamaModel};
pub use rms_norm::{rms_norm, RmsNorm};
pub use rotary::RotaryEmbedding;

use tch::nn::{LinearConfig, Path};

use crate::nn;

/// A projection as transformers' `nn.Linear(in, out, bias)` inside a LLaMA model (weight `[out, in]`
/// initialised `N(0, 0.02²)`, bias zero).
pub(crate) fn linear(p: &Path, in_dim: i64, out_dim: i64, bias: bool) -> nn::Linear {
    let bs_init = bias.then_some(tch::nn::Init::Const(0.0));
    nn::linear(p, in_dim, out_dim, LinearConfig { ws_init: embedding::INIT, bs_init, bias })
}
