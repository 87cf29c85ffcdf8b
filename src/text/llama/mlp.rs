//! The SwiGLU feed-forward block, as transformers' `LlamaMLP`.

use tch::nn::{Module, ModuleT, Path};
use tch::Tensor;

use super::linear;
use crate::text::LlamaConfig;
use crate::{nn, Distillable};

/// `down_proj(act_fn(gate_proj(x)) · up_proj(x))` with SiLU as `act_fn`; every part a distillation
/// point (`model.layers.3.mlp.act_fn` is the gate's activation).
#[derive(Debug, Distillable)]
pub struct LlamaMlp {
    /// hidden → intermediate, through the activation.
    pub gate_proj: nn::Linear,
    /// hidden → intermediate, the multiplied branch.
    pub up_proj: nn::Linear,
    /// intermediate → hidden.
    pub down_proj: nn::Linear,
    /// SiLU, out of place.
    pub act_fn: nn::SiLU,
}

impl LlamaMlp {
    /// The MLP of `config` under `p` (`gate_proj.weight`, `up_proj.weight`, `down_proj.weight`).
    pub fn new(p: &Path, config: &LlamaConfig) -> LlamaMlp {
        let (hidden, inner, bias) = (config.hidden_size, config.intermediate_size, config.mlp_bias);
        LlamaMlp {
            gate_proj: linear(&(p / "gate_proj"), hidden, inner, bias),
            up_proj: linear(&(p / "up_proj"), hidden, inner, bias),
            down_proj: linear(&(p / "down_proj"), inner, hidden, bias),
            act_fn: nn::silu(),
        }
    }
}

impl ModuleT for LlamaMlp {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let gate = self.act_fn.forward(&self.gate_proj.forward(xs));
        self.down_proj.forward(&(gate * self.up_proj.forward(xs)))
    }
}
